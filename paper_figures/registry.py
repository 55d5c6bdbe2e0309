"""The registered paper figures and tables: name -> the module that makes it.

Every module listed here provides the same small interface:

* ``NAME`` — its folder name under the output root (see :mod:`paper_figures.paths`);
* ``Config`` — a frozen dataclass of its parameters, with the paper's values as defaults;
* ``compute(config) -> dict`` — every number the figure draws (JSON-serialisable);
* ``plot(numbers, config) -> (fig, axes)`` — the picture, from those numbers only;
* ``generate(root=None, config=None) -> list[Path]`` — compute, plot and write all files.

To add a figure or table, write its module and add one line to :data:`FIGURES`.
"""

from __future__ import annotations

import importlib
from pathlib import Path
from types import ModuleType

__all__ = ["FIGURES", "load", "generate"]

FIGURES: dict[str, str] = {
    "figure2": "paper_figures.figure2",
    "lambda_interval": "paper_figures.lambda_interval",
}


def load(name: str) -> ModuleType:
    """The module of the registered figure ``name``."""
    if name not in FIGURES:
        raise KeyError(f"unknown figure {name!r}; registered: {', '.join(FIGURES)}")
    return importlib.import_module(FIGURES[name])


def generate(name: str, root: Path | str | None = None) -> list[Path]:
    """Regenerate figure ``name`` with its default configuration; returns the written files."""
    return load(name).generate(root=root)
