"""The registered paper figures and tables: name -> the module that makes it.

Every module listed here provides the same small interface:

* ``NAME`` — its folder name under the output root (see :mod:`paper_figures.paths`);
* ``Config`` — a frozen dataclass of its parameters, with the paper's values as defaults;
* ``compute(config) -> dict`` — every number the figure draws (JSON-serialisable);
* ``plot(numbers, config) -> (fig, axes)`` — the picture, from those numbers only;
* ``generate(root=None, config=None) -> list[Path]`` — compute, plot and write all files.

The Section 6 items (:data:`NEEDS_DATA`) read the committed trained runs and the test sets (data
root from ``CGM_DATA_ROOT``, see :mod:`paper_figures.trained`) and also provide
``default_config()``: the full configuration, or a small one in quick mode (``CGM_QUICK=1``).

To add a figure or table, write its module and add one line to :data:`FIGURES`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

__all__ = ["FIGURES", "NEEDS_DATA", "default_config", "load", "generate"]

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
}

#: Items computed from the trained runs and the test sets (the others need neither).
NEEDS_DATA: frozenset[str] = frozenset(
    {"table1", "table2", "figure1", "figure3", "figure4", "section4_eq5", "appendix_b"}
)


def load(name: str) -> ModuleType:
    """The module of the registered figure ``name``."""
    if name not in FIGURES:
        raise KeyError(f"unknown figure {name!r}; registered: {', '.join(FIGURES)}")
    return importlib.import_module(FIGURES[name])


def generate(name: str, root: Path | str | None = None) -> list[Path]:
    """Regenerate figure ``name`` with its default configuration; returns the written files."""
    return load(name).generate(root=root)


def default_config(name: str):
    """The configuration ``generate`` uses by default (quick-mode aware for :data:`NEEDS_DATA`)."""
    module = load(name)
    return module.default_config() if hasattr(module, "default_config") else module.Config()
