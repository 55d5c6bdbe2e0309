"""Writing a figure's files: the picture (PNG + PDF), its numbers and its resolved parameters.

Figures are built on :class:`matplotlib.figure.Figure` objects, never through pyplot's global state,
so building one works under any backend; the command line (:mod:`paper_figures.cli`) selects Agg.
PDF and PNG metadata that change from run to run (creation date, software version) are left out, so
regenerating an unchanged figure gives the same files.
"""

from __future__ import annotations

import csv
import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from typing import Any

from matplotlib.figure import Figure

from .paths import FigurePaths

__all__ = ["write_figure"]

PNG_DPI = 110


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


def _write_json(path, payload: Any) -> None:
    path.write_text(json.dumps(payload, indent=1, sort_keys=True, default=_json_default) + "\n")


def write_figure(
    paths: FigurePaths,
    fig: Figure,
    numbers: Mapping[str, Any],
    params: Any,
    table: Sequence[Mapping[str, Any]] | None = None,
) -> list:
    """Save ``fig`` as PNG and PDF, ``numbers`` (and ``table`` as CSV) and ``params`` as JSON.

    ``params`` is a dataclass (the figure's frozen config) or a mapping. Returns the written paths.
    """
    fig.savefig(paths.png, dpi=PNG_DPI, metadata={"Software": None})
    fig.savefig(paths.pdf, metadata={"CreationDate": None, "Creator": None, "Producer": None})
    _write_json(paths.numbers_json, dict(numbers))
    _write_json(paths.params_json, asdict(params) if is_dataclass(params) else dict(params))
    written = [paths.png, paths.pdf, paths.numbers_json, paths.params_json]
    if table is not None:
        rows = list(table)
        with paths.numbers_csv.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        written.append(paths.numbers_csv)
    return written
