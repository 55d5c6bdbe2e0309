"""``python -m flows.train``: the entry point of :mod:`flows.cli.train` (same options)."""

from flows.cli.train import main

if __name__ == "__main__":
    main()
