"""Paper figures and tables, regenerated from the package code: ``python -m paper_figures``.

One module per figure (see :mod:`paper_figures.registry` for the interface and the list), writing
through :mod:`paper_figures.paths` into ``paper_figures/output/<name>/``.
"""
