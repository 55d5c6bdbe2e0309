"""The Section 3 notebook shows its key results, committed and re-executed (CGM_QUICK=1).

The generic checks (executed top to bottom, seeded, no errors, the quick re-execution shows the same
outputs and, where quick mode computes the same thing, the same numbers) are those of every
notebook (``tests/notebooks``); this file adds what the Section 3 notebook must show, computed
from :mod:`counterexample`. Both use one harness, and the notebook is re-executed once per session.
"""

import pytest

import counterexample as cx

from ..notebooks import harness

NOTEBOOK = harness.NOTEBOOKS_DIR / "section3_counterexample.ipynb"


def _n_images(nb) -> int:
    return sum(
        "image/png" in out.get("data", {})
        for cell in harness.code_cells(nb)
        for out in cell.outputs
    )


def _check_key_outputs(nb) -> None:
    text = harness.texts(nb)
    needles = [
        f"| 0.1 | 0.001 | 0.1 | **{cx.find_dimension(0.1, 1e-3, 0.1)}** |",  # find_dimension table
        f"**{cx.find_dimension(10.0, 0.4, 1.0)}** | 1 ✗",  # eq. (19) alone is wrong there
        f"Proposition 1 at eps=0.1, delta=0.01, Delta=0.1: d={cx.find_dimension(0.1, 0.01, 0.1)},",
        "all checked items hold: True",
        "FAIL  P(x attackable with items 1-5) > 1/3",  # the large-eps failure of the 1/3 claim
        "full points",  # Monte Carlo with (n, d) points
        "d=1500000000",  # norm-only Monte Carlo at d ~ 1e9
        "success rate",  # the simulated attack
        "lambda1/(lambda1 + lambda2)",  # a sympy derivation
        "relative difference",  # sympy vs numeric table
        "| paper's claim |",
    ]
    missing = [needle for needle in needles if needle not in text]
    assert not missing, f"key outputs missing from the notebook: {missing}"
    assert _n_images(nb) >= 1, "the density plot is missing"
    assert not harness.errors(nb)


def test_committed_notebook_shows_the_key_results():
    _check_key_outputs(harness.read(NOTEBOOK))


@pytest.mark.notebook
def test_quick_reexecution_shows_the_key_results():
    run = harness.execute_quick(NOTEBOOK, None)
    harness.check_executed(run.nb, NOTEBOOK.name, quick=True)
    _check_key_outputs(run.nb)
