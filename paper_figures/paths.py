"""Where every paper figure writes its files: one folder per figure, fixed file names.

Layout, for a figure registered as ``NAME``::

    paper_figures/output/NAME/
        NAME.png        the figure, raster (for the README and quick looks)
        NAME.pdf        the figure, vector (for the paper)
        numbers.json    every number drawn, so the figure can be checked without reading pixels
        numbers.csv     the same numbers as a table, for figures that plot a table (optional)
        params.json     the resolved configuration that produced them

``python -m paper_figures --out DIR`` replaces ``paper_figures/output`` by ``DIR``; nothing else in
the package builds a path by hand.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

__all__ = ["OUTPUT_ROOT", "WORK_ROOT", "FigurePaths", "figure_paths"]

OUTPUT_ROOT = Path(__file__).resolve().parent / "output"
#: Intermediate state of long computations (unfinished cells' per-batch caches): not committed,
#: kept out of OUTPUT_ROOT, whose committed files must stay small.
WORK_ROOT = Path(__file__).resolve().parent / ".work"


@dataclass(frozen=True)
class FigurePaths:
    """The files of one figure; ``folder`` is created by :func:`figure_paths`."""

    name: str
    folder: Path

    @property
    def png(self) -> Path:
        return self.folder / f"{self.name}.png"

    @property
    def pdf(self) -> Path:
        return self.folder / f"{self.name}.pdf"

    @property
    def numbers_json(self) -> Path:
        return self.folder / "numbers.json"

    @property
    def numbers_csv(self) -> Path:
        return self.folder / "numbers.csv"

    @property
    def params_json(self) -> Path:
        return self.folder / "params.json"


def figure_paths(name: str, root: Path | str | None = None) -> FigurePaths:
    """The paths of figure ``name`` under ``root`` (default :data:`OUTPUT_ROOT`), folder created."""
    if not name or "/" in name or name.startswith("."):
        raise ValueError(f"figure name must be a plain folder name, got {name!r}")
    folder = (OUTPUT_ROOT if root is None else Path(root)) / name
    folder.mkdir(parents=True, exist_ok=True)
    return FigurePaths(name=name, folder=folder)
