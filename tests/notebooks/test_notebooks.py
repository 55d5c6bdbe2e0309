"""Every committed notebook is executed, and re-executes quickly (CGM_QUICK=1) to the same outputs.

Notebooks are discovered at collection time (``notebooks/*.ipynb``), so a new notebook is covered
without editing this file (the Section 3 notebook's key results are checked in
``tests/counterexample/test_notebook.py`` too, through the same harness, :mod:`.harness`). For
each notebook:

* the committed file was executed top to bottom in one kernel (execution counts 1..n), has no
  error output, prints ``QUICK=False`` (the committed outputs come from the full run:
  ``python notebooks/execute.py NAME``), and its first code cell calls a seeding function with a
  seed (``random.seed``, ``np.random.seed``, ``torch.manual_seed``, ``np.random.default_rng``...);
* [``notebook`` marker] a copy re-executes with ``CGM_QUICK=1`` (and ``CGM_DATA_ROOT`` from the
  environment, skipped without it for the notebooks that read data) without errors, printing
  ``QUICK=True``, within :data:`~.harness.QUICK_LIMIT_S` seconds, and shows what the committed
  notebook shows: the same outputs in every cell (kinds and line counts), and the same numbers in
  the cells that compute the same thing in quick mode (:data:`SAME_IN_QUICK`). Wall times are
  recorded (``record_property``) and listed at the end of the session (``conftest.py``).
"""

from __future__ import annotations

import os
from pathlib import Path

import nbformat
import pytest
from nbclient.exceptions import CellTimeoutError

from . import harness

#: Notebooks that read no data (no trained run, no test set): re-executed without CGM_DATA_ROOT.
DATA_FREE = frozenset({"section3_counterexample", "tutorial_test_your_own_model"})

#: Per notebook, the ids of the code cells whose outputs do not depend on quick mode (they compute
#: the same thing at every sample size, or read the committed training logs): their numbers must
#: be the ones committed.
SAME_IN_QUICK: dict[str, frozenset[str]] = {
    "appendix_b_negative_results": frozenset(
        {
            "fd8dba99",  # the label-smoothing penalty bound on a toy prior
            "628ea166",  # the claims table, from the training logs
        }
    ),
    "section2_flows": frozenset(
        {
            "39cb22b5",  # the tiny model's shapes
            "ebc7149d",  # the change of variables against a brute-force Jacobian
            "e6d08038",  # each layer's log-det against brute force
            "86c5767f",  # the coupling's Jacobian blocks
            "1cfdfa5a",  # decode(encode(x)) round trip
            "2db657fa",  # the class-conditional Gaussian prior and Bayes' rule
            "c397550f",  # the split prior, all classes at once
            "f03621fa",  # bits/dim of densities computed by hand
        }
    ),
    "section3_counterexample": frozenset(
        {
            "de267e8e",  # the construction and its KLs
            "bf2a8076",  # Lemma 1 on sampled points
            "7dd3508c",  # Lemmas 2 and 3 at three parameter sets
            "341c3ac5",  # the sympy derivations
            "5686dd73",  # sympy against the package
            "af79faf7",  # the feasible interval at the minimal d and one below
            "5ebdefc1",  # Proposition 1's report
            "99b419bb",  # Proposition 1's report where the 1/3 claim fails
            "e7a1c0df",  # the counterexample explorer's static figure and numbers
        }
    ),
    "section4_maximum_likelihood": frozenset(),
    "section5_6_1_training": frozenset(
        {
            "a6eef2bb",  # the training settings of the committed runs
            "6d0d1a2e",  # their architectures against the paper's
            "4e14b69f",  # the training curves and per-epoch evaluations, from the logs
        }
    ),
    "section6_2_attacks": frozenset(),
    "section6_3_interpolations": frozenset(),
    "section6_4_outliers": frozenset(
        {
            "16bd7754",  # the margin bounds
        }
    ),
    "tutorial_test_your_own_model": frozenset(
        {
            "a0c1e004",  # the synthetic data and its distances
            "a0c1e006",  # the model's size
            "a0c1e010",  # check_model on the trained model
            "a0c1e012",  # wrap, and the flags of the broken models
            "a0c1e020",  # the numbers read from the report
            "a0c1e024",  # the schema and the written files
        }
    ),
}

IDS = [p.stem for p in harness.NOTEBOOKS]


def test_every_notebook_says_which_cells_quick_mode_leaves_alone():
    assert set(SAME_IN_QUICK) == set(IDS)


@pytest.mark.parametrize("path", harness.NOTEBOOKS, ids=IDS)
def test_committed_notebook_is_executed_and_seeded(path: Path) -> None:
    nb = harness.read(path)
    harness.check_executed(nb, path.name, quick=False)
    first = harness.code_cells(nb)[0].source
    assert harness.seeding_calls(first), (
        f"{path.name}: seed the random generators in the first code cell (e.g. "
        "torch.manual_seed(SEED)); found no seeding call in:\n" + first
    )


@pytest.mark.parametrize(
    ("source", "seeded"),
    [
        ("import torch\ntorch.manual_seed(0)", True),
        ("%matplotlib inline\nimport numpy as np\nrng = np.random.default_rng(SEED)", True),
        ("import random\nrandom.seed(2019)", True),
        ("import torch\n# torch.manual_seed(0): seed here", False),
        ("SEED = 0  # the seed", False),
        ("import random\nrandom.seed()", False),
        ("import random\nrandom.seed(None)", False),
    ],
    ids=["torch", "numpy-generator-after-magic", "random", "comment", "name", "no-arg", "none"],
)
def test_seeding_check_needs_a_seeding_call(source: str, seeded: bool) -> None:
    assert bool(harness.seeding_calls(source)) is seeded


def test_number_comparison_allows_one_unit_in_the_last_digit_only():
    assert harness.same_numbers("p = 0.0372, d = 149", "p = 0.0373, d = 149") is None
    assert harness.same_numbers("p = 0.0372", "p = 0.0374") == "0.0372 != 0.0374"
    assert harness.same_numbers("d = 149", "d = 150") == "149 != 150"
    assert harness.same_numbers("diff 5.7e-14", "diff 1.1e-13") is None  # float noise
    assert harness.same_numbers("n = 1.5e+03", "n = 1.6e+03") is None
    assert harness.same_numbers("n = 1.5e+03", "n = 1.7e+03") == "1.5e+03 != 1.7e+03"
    assert harness.same_numbers("holds: 1", "fails: 1") == "the text around the numbers differs"


def _notebook(*cells):
    """A notebook of code cells, each given as (id, outputs)."""
    nb = nbformat.v4.new_notebook()
    for cell_id, outputs in cells:
        cell = nbformat.v4.new_code_cell("print(1)", id=cell_id)
        cell.outputs = [nbformat.from_dict(out) for out in outputs]
        nb.cells.append(cell)
    return nb


def _stdout(text):
    return {"output_type": "stream", "name": "stdout", "text": text}


def test_compare_catches_changed_numbers_and_changed_outputs():
    committed = _notebook(
        ("same", [_stdout("bound 4.4998 nats\n")]),
        (
            "quick",
            [
                _stdout("n=10000: 0.1308\n"),
                {
                    "output_type": "display_data",
                    "metadata": {},
                    "data": {"image/png": "", "text/plain": "<F>"},
                },
            ],
        ),
    )
    quick = _notebook(
        ("same", [_stdout("bound 4.4998 nats\n")]),
        (
            "quick",
            [
                _stdout("n=1000:"),
                _stdout(" 0.1320\n"),  # a print split in two chunks
                {"output_type": "stream", "name": "stderr", "text": "progress\n"},
                {
                    "output_type": "display_data",
                    "metadata": {},
                    "data": {"image/png": "", "text/plain": "<F>"},
                },
            ],
        ),
    )
    assert harness.compare(committed, quick, frozenset({"same"})) == []
    assert harness.compare(committed, quick, frozenset({"same", "quick"})) == [
        "code cell 1 (id quick): 10000 != 1000"
    ]
    drifted = _notebook(
        ("same", [_stdout("bound 4.5010 nats\n")]), ("quick", quick.cells[1].outputs)
    )
    assert harness.compare(committed, drifted, frozenset({"same"})) == [
        "code cell 0 (id same): 4.4998 != 4.5010"
    ]
    no_image = _notebook(
        ("same", [_stdout("bound 4.4998 nats\n")]), ("quick", [_stdout("n=1000: 0.1320\n")])
    )
    (problem,) = harness.compare(committed, no_image, frozenset())
    assert problem.startswith("code cell 1 (id quick): outputs")
    assert harness.compare(committed, quick, frozenset({"gone"})) == [
        "no code cells with ids ['gone']"
    ]


@pytest.mark.notebook
@pytest.mark.parametrize("path", harness.NOTEBOOKS, ids=IDS)
def test_notebook_reexecutes_quickly_to_the_committed_outputs(path: Path, record_property) -> None:
    data_root = None if path.stem in DATA_FREE else os.environ.get(harness.DATA_ROOT_ENV) or None
    if path.stem not in DATA_FREE:
        if data_root is None:
            pytest.skip(
                f"{harness.DATA_ROOT_ENV} is unset: set it to the folder holding MNIST/ and "
                "cifar10-jpeg/"
            )
        if not Path(data_root).is_dir():
            pytest.skip(f"{harness.DATA_ROOT_ENV}={data_root!r} is not a folder")
    try:
        run = harness.execute_quick(path, data_root)
    except CellTimeoutError:
        pytest.fail(f"{path.name}: a cell ran over {harness.QUICK_LIMIT_S} s with CGM_QUICK=1")
    record_property("quick_wall_time_s", round(run.seconds, 1))  # listed by conftest.py

    harness.check_executed(run.nb, path.name, quick=True)
    assert run.seconds <= harness.QUICK_LIMIT_S, (
        f"{path.name}'s cells took {run.seconds:.0f} s to re-execute with CGM_QUICK=1 (wall "
        f"{run.wall_seconds:.0f} s with the kernel's start and shutdown; limit "
        f"{harness.QUICK_LIMIT_S} s, all notebooks together should stay under 10 minutes): make "
        "its quick mode smaller"
    )
    problems = harness.compare(harness.read(path), run.nb, SAME_IN_QUICK[path.stem])
    assert not problems, f"{path.name}: the quick re-execution differs:\n" + "\n".join(problems)
