"""Tables 1 and 2: the paper's numbers, the cell layout, the verdict helpers, and quick regeneration.

The data-free tests run everywhere. With ``CGM_DATA_ROOT`` naming the data and the committed runs
present, both tables are regenerated in quick mode (a quick Context) into a temporary folder.
"""

import json
import math
import re
from dataclasses import asdict, replace

import matplotlib
import pytest
import torch

from flows.paper import PAPER_EPS, PAPER_EPS_LABELS, PAPER_TABLE1, PAPER_TABLE2
from paper_figures import Context, registry, table1, table2, trained
from paper_figures.paths import figure_paths


@pytest.fixture(scope="module", autouse=True)
def agg_backend():
    matplotlib.use("Agg")


# -- Table 1 ---------------------------------------------------------------------------------------


def test_paper_table1_is_complete():
    assert set(PAPER_TABLE1) == {(d, p) for d in trained.DATASETS for p in trained.PRIORS}
    for accuracy, bpd in PAPER_TABLE1.values():
        assert 0 < accuracy <= 100 and 0 < bpd < 8


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_the_papers_readings_of_table1_hold_on_its_numbers(dataset):
    """Section 6.1: Base has the best bits/dim and the worst accuracy, and "the split prior does
    offer better NLL and better accuracy in both experiments"."""
    paper = {p: PAPER_TABLE1[(dataset, p)] for p in trained.PRIORS}
    assert table1.orderings(paper) == dict.fromkeys(
        (
            "base_best_bits_per_dim",
            "base_worst_accuracy",
            "split_better_accuracy_than_reweight",
            "split_better_bits_per_dim_than_reweight",
        ),
        True,
    )


def test_orderings_of_our_runs_and_missing_runs_are_undecided():
    ours = {"base": (64.8, 1.58), "reweight": (97.3, 2.10), "split": (96.1, 1.86)}
    assert table1.orderings(ours) == {
        "base_best_bits_per_dim": True,
        "base_worst_accuracy": True,
        "split_better_accuracy_than_reweight": False,
        "split_better_bits_per_dim_than_reweight": True,
    }
    partial = table1.orderings({**ours, "base": None})
    assert partial["base_best_bits_per_dim"] is None and partial["base_worst_accuracy"] is None
    assert partial["split_better_accuracy_than_reweight"] is False


def test_agreement_rules():
    logged = {"accuracy": 0.9, "bits_per_dim": 2.0}
    same = {
        "accuracy": 0.9005,
        "bits_per_dim": 2.0001,
        "num_examples": 10000,
        "bits_per_dim_std": 0.3,
    }
    assert table1._agreement(same, logged, full=True)["agrees"] is True
    off = {**same, "accuracy": 0.91}
    assert table1._agreement(off, logged, full=True)["agrees"] is False
    # a subset of 300: SE(acc) = sqrt(.09/300) = 0.0173, SE(bpd) = 0.3/sqrt(300) = 0.0173
    subset = {"accuracy": 0.94, "bits_per_dim": 2.04, "num_examples": 300, "bits_per_dim_std": 0.3}
    assert table1._agreement(subset, logged, full=False)["agrees"] is True
    far = {**subset, "bits_per_dim": 2.06}
    assert table1._agreement(far, logged, full=False)["agrees"] is False
    assert table1._agreement(same, None, full=True)["agrees"] is None
    # a Split run logged before the rule was recorded: its accuracy was Bayes' rule on p(x | y)
    split = {**same, "accuracy": 0.985, "accuracy_likelihood_rule": 0.9003}
    assert table1._agreement(split, logged, full=True)["agrees"] is True
    recorded = {**logged, "classification_rule": "logits"}
    assert table1._agreement(split, recorded, full=True)["agrees"] is False


# -- Table 2 ---------------------------------------------------------------------------------------


def test_paper_table2_is_complete_and_consistent():
    keys = {(d, p, a) for d in trained.DATASETS for p in table2.PRIORS for a in table2.ATTACKS}
    assert set(PAPER_TABLE2) == keys and len(keys) == 16
    for undetected, fooled in PAPER_TABLE2.values():
        assert 0 <= undetected <= fooled <= 100


def _docstring_grid() -> list[list[str]]:
    """The 4 × 4 cells of the paper's table as :mod:`paper_figures.table2`'s docstring prints it."""
    rows = [
        re.findall(r"\d+% \(\d+%\)", line)
        for line in table2.__doc__.splitlines()
        if re.search(r"\b(CW-L2|Boundary)\b\s+\d+%", line)
    ]
    assert len(rows) == 4 and all(len(row) == 4 for row in rows), rows
    return rows


def test_layout_is_the_papers_grid_as_the_docstring_prints_it():
    """layout() puts each cell where the paper prints it (rows MNIST CW, MNIST Boundary, CIFAR-10
    CW, CIFAR-10 Boundary; columns classification Reweight, Split, then classification +
    detection), and PAPER_TABLE2 agrees with the table printed in the module's documentation."""
    grid = table2.layout()
    assert len(grid) == 4 and all(len(row) == 4 for row in grid)
    flat = [key for row in grid for key in row]
    assert len(set(flat)) == 16
    assert {tuple(k.split("/")) for k in flat} == set(PAPER_TABLE2)
    for row, printed in zip(grid, _docstring_grid(), strict=True):
        texts = []
        for key in row:
            undetected, fooled = PAPER_TABLE2[tuple(key.split("/"))]
            texts.append(f"{undetected:.0f}% ({fooled:.0f}%)")
        assert texts == printed
    assert grid[1][2] == table2.cell_key("mnist", "reweight", "boundary-det")


def test_eps_labels_state_the_budgets():
    for dataset, label in PAPER_EPS_LABELS.items():
        value = label.removeprefix("ε = ")
        numerator, _, denominator = value.partition("/")
        assert float(numerator) / float(denominator or 1) == PAPER_EPS[dataset]


def _paper_cells(status="ok"):
    cells = {}
    for (dataset, prior, attack), (undetected, fooled) in PAPER_TABLE2.items():
        stats = {"success_undetected_pct": undetected, "fools_classifier_pct": fooled, "n": 100}
        cells[table2.cell_key(dataset, prior, attack)] = {
            "status": status,
            "attack_noise": stats,
            "fresh_noise": stats,
            "paper": {"success_undetected_pct": undetected, "fools_classifier_pct": fooled},
        }
    return cells


def test_claims_hold_on_the_paper_and_are_undecided_when_cells_are_missing():
    result = table2.claims(_paper_cells())
    assert result["attack_noise"] == result["paper"] == result["fresh_noise"]
    assert all(result["paper"].values()) and len(result["paper"]) == 6
    missing = table2.claims(_paper_cells(status="missing"))
    assert all(v is None for v in missing["attack_noise"].values())
    assert all(missing["paper"].values())


def test_image_hex_round_trip():
    image = torch.linspace(0, 1, 3 * 4 * 5).reshape(3, 4, 5)
    decoded = table2._decode_hex(table2._image_hex(image))
    assert decoded.shape == (4, 5, 3)
    assert abs(decoded - image.permute(1, 2, 0).numpy()).max() <= 0.5 / 255 + 1e-12
    gray = table2._decode_hex(table2._image_hex(image[:1]))
    assert gray.shape == (4, 5)


# -- both ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("module", [table1, table2], ids=["table1", "table2"])
def test_default_config_honours_quick_mode(module):
    assert module.default_config(Context()) == module.Config()
    quick = module.default_config(Context(quick=True))
    assert quick != module.Config() and quick.n is not None and quick.n <= 300


@pytest.mark.parametrize("module", [table1, table2], ids=["table1", "table2"])
def test_missing_runs_are_reported_not_fatal(module, tmp_path):
    """With no committed runs (an empty runs root) every cell is 'missing' and the table is still
    written; no data is needed for that."""
    context = Context(runs_root=tmp_path / "no-runs", quick=True)
    written = registry.generate(module.NAME, context, root=tmp_path)
    numbers = json.loads(figure_paths(module.NAME, tmp_path).numbers_json.read_text())
    assert {cell["status"] for cell in numbers["cells"].values()} == {"missing"}
    assert len(numbers["missing_runs"]) == (6 if module is table1 else 4)
    assert figure_paths(module.NAME, tmp_path).png in written


# -- quick regeneration from the committed runs ----------------------------------------------------


def _quick_context_or_skip() -> Context:
    context = replace(Context.from_environment(), quick=True)
    if context.data_root is None or not context.data_root.is_dir():
        pytest.skip("CGM_DATA_ROOT is unset or missing: the tables need the test sets")
    needed = [trained.run_dir(d, p, context) for d in trained.DATASETS for p in table2.PRIORS]
    absent = [str(r) for r in needed if not (r / "checkpoint.pt").is_file()]
    if absent:
        pytest.skip(f"committed runs missing: {absent}")
    return context


@pytest.fixture(scope="module")
def quick_tables(tmp_path_factory):
    context = _quick_context_or_skip()
    root = tmp_path_factory.mktemp("tables")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    written = {m.NAME: registry.generate(m.NAME, context, root=root) for m in (table1, table2)}
    configs = {m.NAME: m.default_config(context) for m in (table1, table2)}
    torch.set_num_threads(previous)
    return root, written, configs


@pytest.mark.parametrize("name", ["table1", "table2"])
def test_quick_tables_write_all_files(quick_tables, name):
    root, written, configs = quick_tables
    paths = figure_paths(name, root)
    for path in (paths.png, paths.pdf, paths.numbers_json, paths.numbers_csv, paths.params_json):
        assert path in written[name] and path.stat().st_size > 0
    assert json.loads(paths.params_json.read_text()) == json.loads(
        json.dumps(asdict(configs[name]))
    )
    assert json.loads(paths.numbers_json.read_text())["quick"] is True


def test_quick_table1_numbers(quick_tables):
    root, _, configs = quick_tables
    numbers = json.loads(figure_paths("table1", root).numbers_json.read_text())
    assert numbers["n"] == configs["table1"].n
    for key, cell in numbers["cells"].items():
        if cell["status"] == "missing":
            assert cell["run"] in numbers["missing_runs"]
            continue
        ours = cell["ours"]
        assert ours["num_examples"] == configs["table1"].n
        assert 0 <= ours["accuracy"] <= 1 and 0 < ours["bits_per_dim"] < 16, key
        assert cell["agreement"]["agrees"] is True, (key, cell["agreement"])
    for dataset in trained.DATASETS:
        assert all(numbers["orderings"][dataset]["paper"].values())
    lines = figure_paths("table1", root).numbers_csv.read_text().splitlines()
    assert len(lines) == 1 + 6


def test_quick_table2_numbers(quick_tables):
    root, _, configs = quick_tables
    config = configs["table2"]
    numbers = json.loads(figure_paths("table2", root).numbers_json.read_text())
    assert numbers["eps"] == {d: PAPER_EPS[d] for d in trained.DATASETS}
    assert numbers["missing_runs"] == []
    for key, cell in numbers["cells"].items():
        assert cell["status"] == "ok", (key, cell.get("reason"))
        for noise in ("attack_noise", "fresh_noise"):
            stats = cell[noise]
            assert stats["n"] == config.n
            assert 0 <= stats["success_undetected_pct"] <= stats["fools_classifier_pct"] <= 100
            assert math.isclose(
                stats["fools_classifier_pct"] * config.n / 100,
                round(stats["fools_classifier_pct"] * config.n / 100),
            )
        if key.endswith("cw") or key.endswith("cw-det"):
            assert cell["mean_queries"] <= config.cw_binary_search_steps * config.cw_steps
    for key, detector in numbers["detectors"].items():
        assert detector["recall"] >= detector["target_recall"], key
        assert detector["n"] == config.detector_n
    assert len(numbers["examples"]) == len(table2.ATTACKS) * len(trained.DATASETS)
    lines = figure_paths("table2", root).numbers_csv.read_text().splitlines()
    assert len(lines) == 1 + 16
