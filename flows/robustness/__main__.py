"""``python -m flows.robustness``: the entry point of :mod:`flows.robustness.cli` (same options)."""

from flows.robustness.cli import main

if __name__ == "__main__":
    main()
