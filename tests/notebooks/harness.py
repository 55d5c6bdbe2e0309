"""The one notebook harness: read a committed notebook, check it, re-execute it in quick mode, compare.

Used by ``tests/notebooks/test_notebooks.py`` (every notebook) and
``tests/counterexample/test_notebook.py`` (the Section 3 notebook's key results). A notebook is
re-executed at most once per test session (:func:`execute_quick` caches the executed copy), in
memory: the committed file is only ever read. The kernel gets ``CGM_QUICK=1`` and the data root
through its own environment; the test process's environment is left alone.
"""

from __future__ import annotations

import ast
import math
import os
import re
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import nbformat
from IPython.core.inputtransformer2 import TransformerManager
from nbclient import NotebookClient

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
DATA_ROOT_ENV = "CGM_DATA_ROOT"
QUICK_ENV = "CGM_QUICK"
#: a generous per-notebook guard; the aim is all notebooks together in under 10 minutes. 300 s,
#: not 150: in two of three fresh CI environments (2026-12-04) the Section 3 notebook took 155 s
#: to re-execute, 5 s in the third and locally, cause not found (an open question in the notes)
QUICK_LIMIT_S = 300
#: calls that seed a random generator when given a seed: random.seed, np.random.seed,
#: torch.manual_seed, np.random.default_rng, torch.Generator().manual_seed
SEEDING_CALLS = frozenset({"seed", "manual_seed", "default_rng"})

_NUMBER = re.compile(r"[-+]?(?:\d+\.\d*|\.\d+|\d+)(?:[eE][-+]?\d+)?")


def read(path: Path) -> nbformat.NotebookNode:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    return nb


def code_cells(nb) -> list:
    """Code cells that hold code (nbclient does not execute, or number, blank cells)."""
    return [cell for cell in nb.cells if cell.cell_type == "code" and cell.source.strip()]


def _text(output) -> str:
    """A stream's text, or every text form of a display (Markdown, LaTeX, plain), one per line."""
    if output.output_type == "stream":
        return output.text
    data = output.get("data", {})
    forms = ("text/markdown", "text/latex", "text/plain")
    return "\n".join(data[mime] for mime in forms if mime in data)


def texts(nb) -> str:
    """Every text output of every code cell (streams, Markdown, LaTeX, plain), concatenated."""
    return "\n".join(_text(out) for cell in code_cells(nb) for out in cell.get("outputs", []))


def errors(nb) -> list[str]:
    return [
        f"cell {index}: {out.get('ename')}: {out.get('evalue')}"
        for index, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.output_type == "error"
    ]


def seeding_calls(source: str) -> list[str]:
    """The calls in ``source`` (IPython syntax allowed) that seed a generator with a given seed."""
    tree = ast.parse(TransformerManager().transform_cell(source))
    found = []
    for node in ast.walk(tree):
        if not isinstance(node, ast.Call) or not isinstance(node.func, ast.Attribute | ast.Name):
            continue
        name = node.func.attr if isinstance(node.func, ast.Attribute) else node.func.id
        seeded = node.args and not (
            isinstance(node.args[0], ast.Constant) and node.args[0].value is None
        )
        if name in SEEDING_CALLS and seeded:
            found.append(ast.unparse(node))
    return found


def check_executed(nb, name: str, quick: bool) -> None:
    """Executed top to bottom in one kernel, no error output, and ``QUICK={quick}`` printed."""
    cells = code_cells(nb)
    assert cells, f"{name} has no code"
    counts = [cell.execution_count for cell in cells]
    assert counts == list(range(1, len(cells) + 1)), (
        f"{name} was not executed top to bottom in one kernel (execution counts {counts}); "
        "run python notebooks/execute.py " + Path(name).stem
    )
    found = errors(nb)
    assert not found, f"{name} has error outputs: {found}"
    marker = f"QUICK={quick}"
    assert marker in texts(nb), (
        f"{name}: no {marker!r} in the outputs; print f'QUICK={{QUICK}}' in the first cell"
        + ("" if quick else " and commit the full run (CGM_QUICK unset)")
    )


@dataclass(frozen=True)
class Execution:
    """A quick re-execution: the executed copy, the time its cells took (the sum over code cells
    of the kernel's busy time, from the timing nbclient records in each cell's metadata) and the
    wall time of the whole execution (kernel start and shutdown included: a stall there, seen
    once under a loaded CI machine at 300 s, is no part of a notebook's quick mode)."""

    nb: nbformat.NotebookNode
    seconds: float
    wall_seconds: float


def cells_seconds(nb: nbformat.NotebookNode) -> float:
    """Sum over the executed code cells of ``iopub.status.idle − iopub.status.busy`` (s)."""
    total = 0.0
    for cell in nb.cells:
        timing = cell.get("metadata", {}).get("execution", {})
        if cell.cell_type != "code" or not timing:
            continue
        busy, idle = (
            datetime.fromisoformat(timing[key].replace("Z", "+00:00"))
            for key in ("iopub.status.busy", "iopub.status.idle")
        )
        total += (idle - busy).total_seconds()
    return total


_EXECUTED: dict[tuple[Path, str | None], Execution] = {}


def execute_quick(path: Path, data_root: str | None) -> Execution:
    """Execute a copy of ``path`` in a fresh kernel (``notebooks/`` as working directory, as
    ``notebooks/execute.py`` does) with ``CGM_QUICK=1`` and ``CGM_DATA_ROOT=data_root`` in the
    kernel's environment; once per session. A cell over :data:`QUICK_LIMIT_S` raises
    ``CellTimeoutError``; a failing cell leaves its error output in the copy (checked by the
    callers, with the notebook's name)."""
    key = (path, data_root)
    if key not in _EXECUTED:
        _warm_up()
        nb = read(path)
        env = {k: v for k, v in os.environ.items() if k not in (QUICK_ENV, DATA_ROOT_ENV)}
        env[QUICK_ENV] = "1"
        if data_root is not None:
            env[DATA_ROOT_ENV] = data_root
        client = NotebookClient(
            nb,
            timeout=QUICK_LIMIT_S,
            kernel_name="python3",
            resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
            allow_errors=True,
        )
        start = time.perf_counter()
        client.execute(env=env)
        _EXECUTED[key] = Execution(nb, cells_seconds(nb), time.perf_counter() - start)
    return _EXECUTED[key]


#: the MIME type of a live Jupyter widget (ipywidgets): tqdm.auto's progress bars when ipywidgets
#: is installed, and interactive sliders; their state is not what a cell computes
WIDGET_VIEW = "application/vnd.jupyter.widget-view+json"


_WARM: list[float] = []


def _warm_up() -> None:
    """Start one kernel and import what the notebooks import, once per session, untimed: on a
    fresh environment the first kernel pays one-off costs (bytecode compilation, caches): in CI
    the first notebook took 155 s to re-execute, 9 s when run again in the same environment, and
    that cost is no part of a notebook's quick mode."""
    if _WARM:
        return
    nb = nbformat.v4.new_notebook()
    nb.cells.append(
        nbformat.v4.new_code_cell(
            "import matplotlib.pyplot, numpy, scipy.stats, sympy, torch, ipywidgets, tqdm.auto\n"
            "import counterexample, flows, flows.robustness, paper_figures"
        )
    )
    start = time.perf_counter()
    NotebookClient(nb, timeout=600, kernel_name="python3", allow_errors=True).execute()
    _WARM.append(time.perf_counter() - start)


def _outputs(cell) -> list[tuple[str, str]]:
    """``(kind, text)`` per output, stderr and widget views dropped (progress bars, warnings,
    sliders: :data:`WIDGET_VIEW`) and consecutive stdout chunks merged (the kernel may split one
    print's text differently)."""
    merged: list[tuple[str, str]] = []
    for out in cell.get("outputs", []):
        if WIDGET_VIEW in out.get("data", {}):
            continue
        if out.output_type == "stream":
            if out.name == "stderr":
                continue
            if merged and merged[-1][0] == "stdout":
                merged[-1] = ("stdout", merged[-1][1] + out.text)
                continue
            merged.append(("stdout", out.text))
        else:
            kind = f"{out.output_type}:{','.join(sorted(out.get('data', {})))}"
            merged.append((kind, _text(out)))
    return merged


def structure(cell) -> list[tuple[str, int]]:
    """What a cell shows, whatever the sample sizes: each output's kind and its number of text
    lines."""
    return [(kind, text.count("\n")) for kind, text in _outputs(cell)]


def _decimals_unit(token: str) -> float:
    """One unit in the last printed digit of a number token (0 for integers)."""
    mantissa, _, exponent = token.lower().partition("e")
    if "." not in mantissa:
        return 0.0 if not exponent else 10.0 ** int(exponent)
    decimals = len(mantissa.split(".")[1])
    return 10.0 ** (int(exponent or 0) - decimals)


def same_numbers(committed: str, executed: str, abs_tol: float = 1e-9) -> str | None:
    """None when both texts are the same words around the same numbers, each equal up to one unit
    in its last printed digit (integers exactly) or ``abs_tol`` (float noise such as a 1e-14
    difference); otherwise what differs."""
    if _NUMBER.sub("#", committed) != _NUMBER.sub("#", executed):
        return "the text around the numbers differs"
    for a, b in zip(_NUMBER.findall(committed), _NUMBER.findall(executed), strict=True):
        unit = max(_decimals_unit(a), _decimals_unit(b))
        if not math.isclose(float(a), float(b), rel_tol=0.0, abs_tol=unit + abs_tol):
            return f"{a} != {b}"
    return None


def compare(committed, executed, same_in_quick: frozenset[str]) -> list[str]:
    """Differences between the committed notebook and its quick re-execution.

    Every code cell must show the same outputs (:func:`structure`); the cells whose ids are in
    ``same_in_quick`` compute the same thing in quick mode, and their text outputs must also hold
    the same numbers (:func:`same_numbers`).
    """
    problems = []
    pairs = list(zip(code_cells(committed), code_cells(executed), strict=True))
    unknown = same_in_quick - {cell.get("id") for cell, _ in pairs}
    if unknown:
        problems.append(f"no code cells with ids {sorted(unknown)}")
    for index, (old, new) in enumerate(pairs):
        where = f"code cell {index} (id {old.get('id')})"
        if structure(old) != structure(new):
            problems.append(f"{where}: outputs {structure(old)} became {structure(new)}")
        elif old.get("id") in same_in_quick:
            for (_, a), (_, b) in zip(_outputs(old), _outputs(new), strict=True):
                difference = same_numbers(a, b)
                if difference:
                    problems.append(f"{where}: {difference}")
    return problems
