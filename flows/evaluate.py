"""``python -m flows.evaluate``: the entry point of :mod:`flows.cli.evaluate` (same options)."""

from flows.cli.evaluate import main

if __name__ == "__main__":
    main()
