"""Every committed notebook is executed and re-executes quickly (CGM_QUICK=1).

Notebooks are discovered at collection time (``notebooks/*.ipynb``), so a new notebook is covered
without editing this file; ``section3_counterexample.ipynb`` has its own, more specific test
(``tests/counterexample/test_notebook.py``). For each notebook:

* the committed file was executed top to bottom in one kernel (execution counts 1..n), has no
  error output, is seeded in its first code cell, and prints ``QUICK=False`` (the committed
  outputs come from the full run: ``python notebooks/execute.py NAME``);
* [``notebook`` marker] a temporary copy re-executes with ``CGM_QUICK=1`` and ``CGM_DATA_ROOT`` from
  the environment, in ``notebooks/`` as working directory (as ``notebooks/execute.py`` does),
  without errors, printing ``QUICK=True``, within :data:`QUICK_LIMIT_S` seconds, and the committed
  file is left unchanged. Wall times are recorded (``record_property``) and listed at the end of
  the session (``conftest.py``).
"""

from __future__ import annotations

import hashlib
import os
import shutil
import time
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellTimeoutError

NOTEBOOKS_DIR = Path(__file__).resolve().parents[2] / "notebooks"
#: notebooks tested elsewhere
OWN_TESTS = {"section3_counterexample.ipynb"}
#: a generous per-notebook guard; the aim is all notebooks together in under 10 minutes
QUICK_LIMIT_S = 150
DATA_ROOT_ENV = "CGM_DATA_ROOT"

NOTEBOOKS = sorted(p for p in NOTEBOOKS_DIR.glob("*.ipynb") if p.name not in OWN_TESTS)


def _code_cells(nb) -> list:
    """Code cells that hold code (nbclient does not execute, or number, blank cells)."""
    return [cell for cell in nb.cells if cell.cell_type == "code" and cell.source.strip()]


def _texts(nb) -> str:
    """Every text output of every code cell (streams, Markdown, LaTeX, plain), concatenated."""
    parts = []
    for cell in _code_cells(nb):
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            for mime in ("text/markdown", "text/latex", "text/plain"):
                if mime in out.get("data", {}):
                    parts.append(out.data[mime])
    return "\n".join(parts)


def _errors(nb) -> list[str]:
    return [
        f"cell {index}: {out.get('ename')}: {out.get('evalue')}"
        for index, cell in enumerate(nb.cells)
        if cell.cell_type == "code"
        for out in cell.get("outputs", [])
        if out.output_type == "error"
    ]


def _check_executed(nb, name: str, quick: bool) -> None:
    cells = _code_cells(nb)
    assert cells, f"{name} has no code"
    counts = [cell.execution_count for cell in cells]
    assert counts == list(range(1, len(cells) + 1)), (
        f"{name} was not executed top to bottom in one kernel (execution counts {counts}); "
        "run python notebooks/execute.py " + Path(name).stem
    )
    errors = _errors(nb)
    assert not errors, f"{name} has error outputs: {errors}"
    marker = f"QUICK={quick}"
    assert marker in _texts(nb), (
        f"{name}: no {marker!r} in the outputs; print f'QUICK={{QUICK}}' in the first cell"
        + ("" if quick else " and commit the full run (CGM_QUICK unset)")
    )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_committed_notebook_is_executed(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    nbformat.validate(nb)
    _check_executed(nb, path.name, quick=False)
    first = _code_cells(nb)[0].source.lower()
    assert "seed" in first, f"{path.name}: seed the random generators in the first code cell"


@pytest.mark.notebook
@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_reexecutes_quickly(
    path: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, record_property
) -> None:
    data_root = os.environ.get(DATA_ROOT_ENV)
    if not data_root:
        pytest.skip(
            f"{DATA_ROOT_ENV} is unset: set it to the folder holding MNIST/ and cifar10-jpeg/"
        )
    if not Path(data_root).is_dir():
        pytest.skip(f"{DATA_ROOT_ENV}={data_root!r} is not a folder")

    before = hashlib.sha256(path.read_bytes()).hexdigest()
    copy = tmp_path / path.name
    shutil.copy(path, copy)
    nb = nbformat.read(copy, as_version=4)
    monkeypatch.setenv("CGM_QUICK", "1")
    client = NotebookClient(
        nb,
        timeout=QUICK_LIMIT_S,
        kernel_name="python3",
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
    )
    start = time.perf_counter()
    try:
        client.execute()
    except CellTimeoutError:
        pytest.fail(f"{path.name}: a cell ran over {QUICK_LIMIT_S} s with CGM_QUICK=1")
    seconds = time.perf_counter() - start
    record_property("quick_wall_time_s", round(seconds, 1))  # listed by conftest.py
    nbformat.write(nb, copy)

    _check_executed(nb, path.name, quick=True)
    assert seconds <= QUICK_LIMIT_S, (
        f"{path.name} took {seconds:.0f} s to re-execute with CGM_QUICK=1 (limit {QUICK_LIMIT_S} s, "
        "all notebooks together should stay under 10 minutes): make its quick mode smaller"
    )
    assert hashlib.sha256(path.read_bytes()).hexdigest() == before, f"{path.name} was modified"
