"""The Section 3 notebook re-executes from a temporary copy (CGM_QUICK=1) and shows its key results.

The committed notebook is never rewritten here; the test also checks that it was committed executed.
"""

import hashlib
import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

import counterexample as cx

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "section3_counterexample.ipynb"
CELL_TIMEOUT_S = 120


def _texts(nb) -> str:
    """Every text output of every code cell (streams, Markdown, LaTeX, plain), concatenated."""
    parts = []
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for out in cell.get("outputs", []):
            if out.output_type == "stream":
                parts.append(out.text)
            for mime in ("text/markdown", "text/latex", "text/plain"):
                if mime in out.get("data", {}):
                    parts.append(out.data[mime])
    return "\n".join(parts)


def _n_images(nb) -> int:
    return sum("image/png" in out.get("data", {})
               for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs)


def _check_key_outputs(nb) -> None:
    text = _texts(nb)
    needles = [
        f"| 0.1 | 0.001 | 0.1 | **{cx.find_dimension(0.1, 1e-3, 0.1)}** |",  # find_dimension table
        f"**{cx.find_dimension(10.0, 0.4, 1.0)}** | 1 ✗",       # eq. (19) alone is wrong there
        f"Proposition 1 at eps=0.1, delta=0.01, Delta=0.1: d={cx.find_dimension(0.1, 0.01, 0.1)},",
        "all checked items hold: True",
        "FAIL  P(x attackable with items 1-5) > 1/3",          # the large-eps failure of the 1/3 claim
        "full points",                                          # Monte Carlo with (n, d) points
        "d=1500000000",                                         # norm-only Monte Carlo at d ~ 1e9
        "success rate",                                         # the simulated attack
        "lambda1/(lambda1 + lambda2)",                          # a sympy derivation
        "relative difference",                                  # sympy vs numeric table
        "| paper's claim |",
    ]
    missing = [needle for needle in needles if needle not in text]
    assert not missing, f"key outputs missing from the notebook: {missing}"
    assert _n_images(nb) >= 1, "the density plot is missing"
    errors = [out for cell in nb.cells if cell.cell_type == "code" for out in cell.outputs
              if out.output_type == "error"]
    assert not errors


def test_committed_notebook_is_executed_and_seeded():
    nb = nbformat.read(NOTEBOOK, as_version=4)
    code_cells = [cell for cell in nb.cells if cell.cell_type == "code"]
    assert "seed" in code_cells[0].source.lower()
    assert all(cell.execution_count is not None for cell in code_cells), "commit it executed"
    counts = [cell.execution_count for cell in code_cells]
    assert counts == list(range(1, len(code_cells) + 1)), "executed top to bottom in one kernel"
    assert "QUICK=False" in _texts(nb), "the committed outputs come from the full run, not CGM_QUICK"
    _check_key_outputs(nb)


@pytest.mark.notebook
def test_notebook_reexecutes_quickly(tmp_path, monkeypatch):
    before = hashlib.sha256(NOTEBOOK.read_bytes()).hexdigest()
    copy = tmp_path / NOTEBOOK.name
    shutil.copy(NOTEBOOK, copy)
    nb = nbformat.read(copy, as_version=4)
    monkeypatch.setenv("CGM_QUICK", "1")
    client = NotebookClient(nb, timeout=CELL_TIMEOUT_S, kernel_name="python3",
                            resources={"metadata": {"path": str(tmp_path)}})
    client.execute()
    nbformat.write(nb, copy)
    assert "QUICK=True" in _texts(nb)
    _check_key_outputs(nb)
    assert hashlib.sha256(NOTEBOOK.read_bytes()).hexdigest() == before, "committed notebook changed"
