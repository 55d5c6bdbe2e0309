"""Writing a figure's files: the picture (PNG + PDF), its numbers and its resolved parameters.

Figures are built on :class:`matplotlib.figure.Figure` objects, never through pyplot's global state,
so building one works under any backend; the command line (:mod:`paper_figures.cli`) selects Agg.
PDF and PNG metadata that change from run to run (creation date, software version) are left out, so
regenerating an unchanged figure gives the same files.
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, is_dataclass
from typing import Any

from matplotlib.figure import Figure

from .paths import FigurePaths

__all__ = ["json_text", "write_figure"]

PNG_DPI = 110


def _json_default(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy scalars and arrays
        return value.tolist()
    raise TypeError(f"cannot write {type(value).__name__} to JSON")


#: An innermost JSON list (no list or object inside) as ``json.dumps(indent=1)`` lays it out,
#: one item per line. JSON strings hold no raw newline, so every newline matched is layout.
_SCALAR_LIST = re.compile(r"\[\n\s*([^\[\]{}]*?)\n\s*\]")


def json_text(payload: Any) -> str:
    """``payload`` as the committed JSON files hold it: objects indented one space per level,
    keys sorted, lists of numbers and strings on one line (per-example lists of 100 items would
    otherwise take 100 lines each, and the committed outputs must stay small). Parses back to
    ``payload``."""
    text = json.dumps(payload, indent=1, sort_keys=True, default=_json_default)
    text = _SCALAR_LIST.sub(lambda m: "[" + re.sub(r",\n\s*", ", ", m.group(1)) + "]", text)
    return text + "\n"


def _write_json(path, payload: Any) -> None:
    path.write_text(json_text(payload))


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
