"""The registered paper figures and tables: name -> the module that makes it, and :func:`generate`.

Every module listed here provides the same small interface:

* ``NAME`` — its folder name under the output root (see :mod:`paper_figures.paths`);
* ``Config`` — a frozen dataclass of its parameters, with the paper's values as defaults;
* ``compute(config) -> dict`` — every number the figure draws (JSON-serialisable);
* ``plot(numbers, config) -> (fig, axes)`` — the picture, from those numbers only;
* optionally ``table_rows(numbers) -> list[dict]`` — the rows of its ``numbers.csv``.

The Section 6 items (:data:`NEEDS_DATA`) read the trained runs and the test sets that a
:class:`~paper_figures.context.Context` names: their ``compute(config, context)`` takes it, and
their ``default_config(context)`` gives the full configuration, or a small one when
``context.quick``. :func:`generate` computes, plots and writes any item.

To add a figure or table, write its module and add one line to :data:`FIGURES`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

from .common import write_figure
from .context import Context
from .paths import figure_paths

__all__ = ["FIGURES", "NEEDS_DATA", "default_config", "generate", "load"]

FIGURES: dict[str, str] = {
    "figure2": "paper_figures.figure2",
    "lambda_interval": "paper_figures.lambda_interval",
    "table1": "paper_figures.table1",
    "table2": "paper_figures.table2",
    "figure1": "paper_figures.figure1",
    "figure3": "paper_figures.figure3",
    "figure4": "paper_figures.figure4",
    "section4_eq5": "paper_figures.section4_eq5",
    "appendix_b": "paper_figures.appendix_b",
    "cw_detection": "paper_figures.cw_detection",
}

#: Items computed from the trained runs and the test sets (the others need neither).
NEEDS_DATA: frozenset[str] = frozenset(
    {
        "table1",
        "table2",
        "figure1",
        "figure3",
        "figure4",
        "section4_eq5",
        "appendix_b",
        "cw_detection",
    }
)


def load(name: str) -> ModuleType:
    """The module of the registered figure ``name``."""
    if name not in FIGURES:
        raise KeyError(f"unknown figure {name!r}; registered: {', '.join(FIGURES)}")
    return importlib.import_module(FIGURES[name])


def default_config(name: str, context: Context):
    """The configuration :func:`generate` uses by default (quick-mode aware for
    :data:`NEEDS_DATA`)."""
    module = load(name)
    return module.default_config(context) if name in NEEDS_DATA else module.Config()


def generate(
    name: str, context: Context, root: Path | str | None = None, config=None
) -> list[Path]:
    """Compute, plot and write item ``name`` under ``root`` (default ``paper_figures/output``).

    ``config``: the item's ``Config`` (default :func:`default_config`). Returns the written files:
    ``NAME.png``, ``NAME.pdf``, ``numbers.json``, ``params.json`` and, for items with
    ``table_rows``, ``numbers.csv``.
    """
    module = load(name)
    config = default_config(name, context) if config is None else config
    numbers = module.compute(config, context) if name in NEEDS_DATA else module.compute(config)
    fig, _ = module.plot(numbers, config)
    table = module.table_rows(numbers) if hasattr(module, "table_rows") else None
    return write_figure(figure_paths(module.NAME, root), fig, numbers, config, table=table)
