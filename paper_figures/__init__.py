"""Paper figures and tables, regenerated from the package code: ``python -m paper_figures``.

One module per figure (see :mod:`paper_figures.registry` for the interface, the list and
:func:`~paper_figures.registry.generate`), writing through :mod:`paper_figures.paths` into
``paper_figures/output/<name>/``. Where the data and the trained runs are, and whether to run small,
is one explicit :class:`~paper_figures.context.Context`.
"""

from .context import Context

__all__ = ["Context"]
