"""``python -m paper_figures``: see :mod:`paper_figures.cli`."""

from .cli import main

raise SystemExit(main())
