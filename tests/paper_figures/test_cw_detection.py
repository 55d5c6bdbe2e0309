"""The ``cw_detection`` item (is CW-L2 easily detected?) regenerates in quick mode, consistently.

Needs the MNIST test set (``CGM_DATA_ROOT``) and the runs of the quick configuration; skipped with
the reason otherwise. The written numbers are checked against the model: one adversarial is
recomputed (CW-L2 is deterministic under fixed noise and per example) and its bits/dim evaluated
by the model's own ``bits_per_dim`` under the same noise; the path, the shares and the verdict
are checked against the rules they follow.
"""

import json
from dataclasses import asdict, replace

import matplotlib
import pytest
import torch

from flows.attacks import FixedNoise, Misclassified
from paper_figures import Context, cw_detection, registry, trained
from paper_figures.paths import figure_paths


@pytest.fixture(scope="module")
def context() -> Context:
    """The environment's data root, quick mode; skipped without the data or the runs."""
    context = replace(Context.from_environment(), quick=True)
    if context.data_root is None or not context.data_root.is_dir():
        pytest.skip("CGM_DATA_ROOT is unset or not a folder: this item needs the MNIST test set")
    for name in cw_detection.default_config(context).run_names:
        run = trained.run_dir(*cw_detection.run_prior(name), context)
        if not (run / "checkpoint.pt").is_file():
            pytest.skip(f"the run {name} is not present ({run})")
    return context


@pytest.fixture(scope="module")
def generated(tmp_path_factory, context):
    """The item generated once in quick mode (one torch thread)."""
    matplotlib.use("Agg")
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    root = tmp_path_factory.mktemp("cw_detection")
    try:
        written = registry.generate("cw_detection", context, root=root)
    finally:
        torch.set_num_threads(previous)
    numbers = json.loads(figure_paths("cw_detection", root).numbers_json.read_text())
    return root, written, numbers, cw_detection.default_config(context)


def test_files_are_written_in_quick_mode(generated):
    root, written, numbers, config = generated
    paths = figure_paths("cw_detection", root)
    for path in (paths.png, paths.pdf, paths.numbers_json, paths.params_json, paths.numbers_csv):
        assert path in written and path.stat().st_size > 0
    assert paths.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert numbers["quick"] is True
    assert json.loads(paths.params_json.read_text()) == json.loads(json.dumps(asdict(config)))
    assert config != cw_detection.Config(), "quick mode must shrink the configuration"
    assert numbers["missing_runs"] == []
    assert len(paths.numbers_csv.read_text().strip().splitlines()) == 1 + len(config.run_names)


def test_attacked_images_are_correct_and_undetected(generated):
    _, _, numbers, config = generated
    for run in numbers["runs"].values():
        det = run["detector"]
        assert det["n"] == config.detector_n and det["recall"] == pytest.approx(1.0)
        assert det["headroom_bits_per_dim"] == pytest.approx(
            det["threshold_bits_per_dim"] - det["clean_median_bits_per_dim"]
        )
        assert run["attacked"]["n"] == config.n
        positions = run["attacked"]["positions_in_fixed_order"]
        assert positions == sorted(set(positions))
        assert max(b for b in run["cw"]["bits_per_dim_clean"]) <= det["threshold_bits_per_dim"]


def test_shares_flips_and_verdict_follow_their_rules(generated):
    _, _, numbers, config = generated
    for run in numbers["runs"].values():
        cw, path = run["cw"], run["path"]
        threshold = run["detector"]["threshold_bits_per_dim"]
        success = cw["success"]
        assert cw["n_success"] == sum(success) > 0, "the quick CW budget found no adversarial"
        detected = [b > threshold for b in cw["bits_per_dim_adversarial"]]
        assert cw["detected"] == detected
        share = sum(d for d, s in zip(detected, success, strict=True) if s) / sum(success)
        assert cw["share_detected"] == pytest.approx(share)
        for key in ("share_detected", "share_undetected_within_eps", "share_fools_within_eps"):
            assert 0.0 <= cw[key] <= 1.0
        rounded = cw["rounded_8bit"]
        assert 0.0 <= rounded["share_still_fools_undetected"] <= rounded["share_still_fools"]
        # a rounded adversarial equal to its clean image cannot fool: the clean one is correct
        assert rounded["share_still_fools"] <= 1.0 - rounded["share_equal_to_clean"] + 1e-12
        for key in ("share_detected_at_flip", "share_detect_before_alpha_max"):
            assert path[key] is None or 0.0 <= path[key] <= 1.0
        for i, ok in enumerate(success):
            if not ok:
                continue
            flip = path["l2_to_flip"][i]
            assert flip is not None, f"the path of successful example {i} never flips"
            # the adversarial (α = 1) is misclassified, so the flip comes by α_max at the latest
            assert 0.0 < flip <= cw["l2"][i] * config.alpha_max * (1 + 1e-6)
            curve = path["bits_per_dim"][i]
            assert curve[0] == pytest.approx(cw["bits_per_dim_clean"][i], abs=1e-4)
            assert path["detected_at_flip"][i] == (path["bits_per_dim_at_flip"][i] > threshold)
            distances = path["distance"][i]
            assert distances[0] == 0.0
            assert distances[-1] <= cw["l2"][i] * config.alpha_max * (1 + 1e-5)
        holds = cw["share_detected"] > cw_detection.MOST
        assert run["holds"] is holds
        assert run["verdict"].startswith("holds:" if holds else "does not hold:")


def test_one_adversarial_recomputed_with_the_model(generated, context):
    """CW-L2 on the first attack batch again reproduces the item's first adversarial (deterministic
    under fixed noise; the same batch, since float rounding differs slightly between batch
    compositions), and the model's bits_per_dim under the same noise gives its bits/dim."""
    _, _, numbers, config = generated
    name = config.run_names[0]
    run = numbers["runs"][name]
    torch.set_num_threads(1)
    ready = cw_detection.setup(name, config, context)
    assert ready.positions.tolist() == run["attacked"]["positions_in_fixed_order"]
    batch = slice(0, config.batch_size)
    x, y = ready.x[batch], ready.y[batch]
    result = cw_detection.cw_attack(config)(
        ready.threat_model.with_detector(None), x, Misclassified(y)
    )
    assert bool(result.success[0]) == run["cw"]["success"][0]
    assert run["cw"]["success"][0], "the quick budget no longer breaks the first image"
    assert float(result.l2[0]) == pytest.approx(run["cw"]["l2"][0], rel=1e-6)
    bits = FixedNoise(ready.model.bits_per_dim, config.noise_seed)
    with torch.no_grad():
        at_adv, at_x = float(bits(result.adversarial[:1])[0]), float(bits(x[:1])[0])
    assert at_adv == pytest.approx(run["cw"]["bits_per_dim_adversarial"][0], abs=1e-3)
    assert at_x == pytest.approx(run["cw"]["bits_per_dim_clean"][0], abs=1e-3)
    # the clean image's bits/dim is also one of the threshold's test statistics
    position = run["attacked"]["positions_in_fixed_order"][0]
    if position < len(ready.clean_bits_per_dim):
        assert at_x == pytest.approx(float(ready.clean_bits_per_dim[position]), abs=1e-3)


def test_config_rejects_bad_values():
    with pytest.raises(ValueError, match="run_names"):
        cw_detection.Config(run_names=("mnist-split",))
    with pytest.raises(ValueError, match="alpha_max"):
        cw_detection.Config(alpha_max=1.0)
    with pytest.raises(ValueError, match="cw_det_n"):
        cw_detection.Config(n=4, cw_det_n=5)
    assert cw_detection.run_prior("cpu-mnist-deep-reweight") == ("mnist", "deep-reweight")
