"""Figures 1, 3, 4 and the eq. (5) table regenerate in quick mode from the committed runs.

Needs the test sets (``CGM_DATA_ROOT``) and the Split runs; skipped with the reason otherwise. The
numbers are checked against the package (pairs eligible, threshold, margin bound, eq. 5 sums).
"""

import base64
import json
import math
from dataclasses import asdict, replace

import matplotlib
import pytest
import torch

from flows.analysis import paper_margin_bound
from flows.data import fixed_order, load_dataset
from flows.paper import PAPER_FIGURE3
from flows.preprocess import to_model_range
from paper_figures import Context, figure1, figure3, figure4, registry, section4_eq5, trained
from paper_figures.paths import figure_paths

MODULES = {"figure1": figure1, "figure3": figure3, "figure4": figure4, "section4_eq5": section4_eq5}


@pytest.fixture(scope="module")
def context() -> Context:
    """The environment's data root, quick mode; skipped without the data or the Split runs."""
    context = replace(Context.from_environment(), quick=True)
    if context.data_root is None or not context.data_root.is_dir():
        pytest.skip("CGM_DATA_ROOT is unset or not a folder: these figures need the test sets")
    for dataset in trained.DATASETS:
        run = trained.run_dir(dataset, "split", context)
        if not (run / "checkpoint.pt").is_file():
            pytest.skip(f"the {dataset} Split run is not present ({run})")
    return context


@pytest.fixture(scope="module")
def generated(tmp_path_factory, context):
    """Each module generated once in quick mode, in one process (test statistics are shared)."""
    matplotlib.use("Agg")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("section6")
    written = {name: registry.generate(name, context, root=root) for name in MODULES}
    configs = {name: module.default_config(context) for name, module in MODULES.items()}
    torch.set_num_threads(previous)
    return root, written, configs


def _numbers(root, name):
    return json.loads(figure_paths(name, root).numbers_json.read_text())


@pytest.mark.parametrize("name", list(MODULES))
def test_files_are_written_in_quick_mode(generated, name):
    root, written, configs = generated
    paths = figure_paths(name, root)
    for path in (paths.png, paths.pdf, paths.numbers_json, paths.params_json):
        assert path in written[name] and path.stat().st_size > 0
    assert paths.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths.pdf.read_bytes()[:5] == b"%PDF-"
    assert _numbers(root, name)["quick"] is True
    params = json.loads(paths.params_json.read_text())
    assert params == json.loads(json.dumps(asdict(configs[name])))
    assert configs[name] != MODULES[name].Config(), "quick mode must shrink the configuration"


@pytest.mark.parametrize("dataset", trained.DATASETS)
def test_ordered_test_set_is_the_test_split_in_the_fixed_order(context, dataset):
    """The figures' test images: the stored test split, permuted by flows.data.fixed_order, in the
    models' range; the first n of that order for every n."""
    root = context.require_data_root()
    if dataset == "mnist":
        data = load_dataset("mnist", root, train=False)
    else:
        data = load_dataset("imagefolder", root / "cifar10-jpeg", train=False)
    order = fixed_order(len(data))
    x, y = trained.ordered_test_set(dataset, context)
    assert torch.equal(y, data.labels[order])
    assert torch.equal(x, to_model_range(data.images[order]).to(torch.float32))
    x50, y50 = trained.ordered_test_set(dataset, context, n=50)
    assert torch.equal(x50, x[:50]) and torch.equal(y50, y[:50])
    x50 += 1.0  # the caller's copy: the cached split is unchanged
    assert torch.equal(trained.ordered_test_set(dataset, context, n=50)[0], x[:50])


def test_figure3_pairs_are_eligible_and_shares_are_reported(generated, context):
    root, _, configs = generated
    config = configs["figure3"]
    numbers = _numbers(root, "figure3")
    assert numbers["num_pairs"] == config.num_pairs and numbers["num_alphas"] == config.num_alphas
    for dataset, res in numbers["datasets"].items():
        assert res["label"] == trained.DATASET_LABELS[dataset]
        stats = trained.run_statistics(dataset, config.prior, context, config.num_test)
        threshold = trained.paper_detector(
            dataset, config.prior, context, config.num_test
        ).threshold
        assert res["threshold"] == threshold
        i0, i1 = torch.tensor(res["pairs"]["i0"]), torch.tensor(res["pairs"]["i1"])
        assert len(i0) == config.num_pairs
        for index in (i0, i1):
            assert stats.correct[index].all()
            assert (stats.bits_per_dim[index] <= threshold).all()
        assert (stats.labels[i0] != stats.labels[i1]).all()
        assert len(res["alphas"]) == config.num_alphas
        assert res["alphas"][0] == 0.0 and res["alphas"][-1] == 1.0
        # α = 0 and 1 are the test images themselves: their mean bits/dim is the endpoints' mean
        ends = torch.cat([stats.bits_per_dim[i0], stats.bits_per_dim[i1]]).mean().item()
        assert res["mean_bits_per_dim_endpoints"] == pytest.approx(ends, rel=1e-5)
        share = res["fraction_paths_entirely_undetected"]
        low, high = res["fraction_paths_entirely_undetected_ci95"]
        assert 0.0 <= low <= share <= high <= 1.0
        assert res["paper"] == PAPER_FIGURE3[dataset]


def test_figure1_endpoints_are_the_test_images(generated, context):
    root, _, configs = generated
    config = configs["figure1"]
    numbers = _numbers(root, "figure1")
    for dataset, res in numbers["datasets"].items():
        x, y = trained.ordered_test_set(dataset, context, config.num_test)
        stats = trained.run_statistics(dataset, config.prior, context, config.num_test)
        i0, i1 = res["test_index_x0"], res["test_index_x1"]
        assert (res["y0"], res["y1"]) == (int(y[i0]), int(y[i1])) and res["y0"] != res["y1"]
        assert res["bits_per_dim"][0] == pytest.approx(stats.bits_per_dim[i0].item(), rel=1e-5)
        assert res["bits_per_dim"][-1] == pytest.approx(stats.bits_per_dim[i1].item(), rel=1e-5)
        strip = res["strip"]
        assert len(strip["uint8_base64"]) == config.strip_images
        first = figure1.decode_image(strip["uint8_base64"][0], tuple(strip["shape"]))
        pixels = (x[i0].double() + 0.5).mul(256).round().clamp(0, 255)
        expected = pixels.permute(1, 2, 0).numpy() / 255
        assert first.shape == expected.shape and abs(first - expected).max() < 1e-12
        assert len(base64.b64decode(strip["uint8_base64"][-1])) == math.prod(strip["shape"])


def test_figure4_histograms_and_margin_bound(generated):
    root, _, configs = generated
    numbers = _numbers(root, "figure4")
    bounds = numbers["margin_bounds"]
    assert bounds["paper_bound_log10"] == pytest.approx(6.0, abs=1e-4)
    assert bounds["paper_bound_nats"] == paper_margin_bound(10, 1e-5)
    for res in numbers["datasets"].values():
        n = res["num_images"]
        assert n == configs["figure4"].num_test
        hist = res["histogram_bits_per_dim"]
        assert sum(hist["true_class"]) == sum(hist["wrong_class"]) == n
        gaps = res["histogram_gap_nats"]
        assert sum(gaps["correct"]) == res["num_images_correct"]
        assert sum(gaps["correct"]) + sum(gaps["misclassified"]) == n
        for key in (
            "fraction_wrong_flagged",
            "fraction_true_flagged",
            "fraction_wrong_flagged_joint_threshold",
            "fraction_gap_below_std",
        ):
            assert 0.0 <= res[key] <= 1.0
        # the paper's point: the gap is far below the spread of the NLL over images
        assert res["median_gap_nats_correct"] < res["std_nll_true_nats"]


def test_section4_terms_add_up_and_missing_runs_are_listed(generated, context):
    root, _, configs = generated
    config = configs["section4_eq5"]
    numbers = _numbers(root, "section4_eq5")
    present = {(r["dataset"], r["prior"]) for r in numbers["rows"]}
    for dataset in config.datasets:
        for prior in config.priors:
            run = trained.run_dir(dataset, prior, context)
            exists = (run / "checkpoint.pt").is_file()
            assert ((dataset, prior) in present) == exists
            assert (run.name in numbers["missing_runs"]) != exists
    for row in numbers["rows"]:
        assert row["joint_nats"] == pytest.approx(row["data_nats"] + row["class_nats"], rel=1e-12)
        assert row["log_num_classes_nats"] == pytest.approx(math.log(10))
        assert row["num_images"] == config.num_test
        assert row["class_nats"] >= 0 and row["log_num_classes_over_data"] < 0.01
    lines = figure_paths("section4_eq5", root).numbers_csv.read_text().splitlines()
    assert len(lines) == 1 + len(numbers["rows"])
