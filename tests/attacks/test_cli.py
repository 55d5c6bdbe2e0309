"""The attack CLI's experiment on a flows-style fake model (no dataset, no trained run)."""

import dataclasses
import json
import math
from dataclasses import replace

import pytest
import torch

import flows
import flows.cli.attack as cli
from flows.attacks import PAPER_RECALL, LikelihoodDetector, experiment, flows_threat_model
from flows.attacks.experiment import AttackConfig, run_experiment
from flows.paper import PAPER_EPS

FAST = {
    "n": 4,
    "eps": 1.0,
    "threshold": 6.2,
    "recall_n": 30,
    "batch_size": 3,
    "binary_search_steps": 4,
    "cw_steps": 150,
    "max_queries": 600,
    "example_images": 2,
}


@pytest.fixture
def fake(model_classes):
    TwoGaussian, _ = model_classes
    model = TwoGaussian(noise=0.01, shape=(1, 2, 4))
    gen = torch.Generator().manual_seed(1)
    y = torch.arange(30) % 2
    centres = torch.where(y[:, None] == 1, model.means[1], model.means[0])
    x = (centres + 0.04 * torch.randn(30, 8, generator=gen, dtype=torch.float64)).clamp(-0.5, 0.5)
    return model, x.reshape(30, 1, 2, 4), y


@pytest.mark.parametrize("attack", ["cw", "cw-det", "boundary", "boundary-det"])
def test_experiment_report_is_consistent(fake, attack):
    model, x, y = fake
    report, result, attacked = run_experiment(
        model, x, y, AttackConfig(attack=attack, **FAST), progress=False
    )
    assert report["config"]["attack"] == attack and report["config"]["eps"] == 1.0
    assert report["detector"]["threshold_bits_per_dim"] == 6.2
    bpd = torch.cat(  # every image under the noise realisation of seed 0
        [model.bits_per_dim(xi[None], generator=torch.Generator().manual_seed(0)) for xi in x]
    )
    expected_recall = (bpd <= 6.2).double().mean().item()
    assert report["detector"]["recall_on_test_images"] == pytest.approx(expected_recall)
    assert len(report["attacked_indices"]) == 4
    assert torch.equal(attacked, x[report["attacked_indices"]])
    records = report["attack_noise"]["records"]
    assert len(records) == 4 and len(report["attack"]["records"]) == 4
    assert all(r["claimed"] == s for r, s in zip(records, result.success.tolist(), strict=True))
    same = report["attack_noise"]["table2"]
    assert same["n"] == 4
    assert same["success_undetected_pct"] <= same["fools_classifier_pct"]
    assert same["fools_classifier_pct"] == 100.0  # 1.0 ≫ the distances here
    assert "table2" in report["fresh_noise"]
    if attack in ("cw-det", "boundary-det"):
        assert same["success_undetected_pct"] == 100.0
    if attack == "cw":
        assert same["success_undetected_pct"] == 0.0  # the gap between classes is detected
    if attack == "boundary-det":
        assert report["targets"] == [1 - label for label in y[report["attacked_indices"]].tolist()]
    json.dumps(report)


def test_quantile_threshold_and_missing_eps(fake):
    model, x, y = fake
    config = AttackConfig(
        attack="boundary", **{**FAST, "threshold": None, "threshold_quantile": 0.9}
    )
    report, _, _ = run_experiment(model, x, y, config, progress=False)
    assert report["detector"]["recall_on_test_images"] >= 0.9
    with pytest.raises(ValueError, match="pass --eps"):
        run_experiment(
            model,
            x,
            y,
            AttackConfig(attack="cw", eps=None, threshold=6.2),
            dataset="synthetic",
            progress=False,
        )
    with pytest.raises(ValueError, match="not both"):
        AttackConfig(attack="cw", threshold=1.0, threshold_quantile=0.5)


def _cli_on_fake(monkeypatch, model, x, y, tmp_path, attack: str, *extra: str) -> list[str]:
    """Make ``flows.attack`` load ``model`` and the test set ``(x, y)``; return the argv of a
    3-image ``attack`` on the synthetic dataset at ε 1.0 and threshold 6.2, plus ``extra``."""
    monkeypatch.setattr(flows, "load", lambda path, map_location="cpu": model, raising=False)
    monkeypatch.setattr(experiment, "load_test_set", lambda *args, **kwargs: (x, y))
    common = ["--dataset", "synthetic", "--n", "3", "--eps", "1.0", "--threshold", "6.2"]
    return [str(tmp_path), "--attack", attack, *common, "--recall-n", "20", *extra]


def test_main_writes_json_and_images(fake, tmp_path, monkeypatch):
    model, x, y = fake
    argv = _cli_on_fake(monkeypatch, model, x, y, tmp_path, "boundary", "--max-queries", "300")
    report = cli.main(argv)
    saved = json.loads((tmp_path / "attacks" / "boundary.json").read_text())
    assert saved["attack_noise"]["table2"] == report["attack_noise"]["table2"]
    assert (tmp_path / "attacks" / "boundary_examples.png").stat().st_size > 0


def test_a_killed_cli_run_continues_from_its_last_finished_batch(
    fake, tmp_path, monkeypatch, capsys
):
    """Batch by batch into OUTPUT's ``.partial`` cache: a run killed in batch 1 continues there
    with the same options (same report as an uninterrupted run), is refused with other options
    (one line naming the option and --restart), and ``--restart`` discards the cache, which is
    removed once the JSON is written."""
    model, x, y = fake
    output = tmp_path / "out" / "cw-det.json"
    argv = _cli_on_fake(
        monkeypatch, model, x, y, tmp_path, "cw-det", "--threat-model", "deployed", "--eot", "2",
        "--verify-draws", "8", "--batch-size", "1", "--example-images", "0",
        "--binary-search-steps", "2", "--cw-steps", "20",
    )  # fmt: skip
    whole = cli.main([*argv, "--output", str(tmp_path / "whole.json")])
    assert not (tmp_path / "whole.partial").exists()
    original = experiment._attack_batch

    def killed(setup, names, index, part, prepared):
        if index == 1:
            raise KeyboardInterrupt
        return original(setup, names, index, part, prepared)

    monkeypatch.setattr(experiment, "_attack_batch", killed)
    with pytest.raises(KeyboardInterrupt):
        cli.main([*argv, "--output", str(output)])
    cache = tmp_path / "out" / "cw-det.partial"
    assert (cache / "batch_00000.pt").is_file() and not output.exists()
    monkeypatch.setattr(experiment, "_attack_batch", original)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        cli.main([*argv, "--output", str(output), "--cw-steps", "21"])
    assert exit_info.value.code == 2
    error = capsys.readouterr().err.strip().splitlines()[-1]
    assert error.startswith(f"{cli.PROG}: error: --cw-steps: the cache ") and "--restart" in error
    resumed = cli.main([*argv, "--output", str(output)])
    assert not cache.exists() and output.is_file()
    summary = json.loads(capsys.readouterr().out)  # the killed run's batch 0 counts in its time
    assert summary["resumed"]["batches"] == 1 and summary["resumed"]["untimed"] == 0
    assert summary["seconds"] > summary["resumed"]["seconds"] > 0
    for key in whole:
        if key != "example_images":
            assert resumed[key] == whole[key], key
    monkeypatch.setattr(experiment, "_attack_batch", killed)
    with pytest.raises(KeyboardInterrupt):
        cli.main([*argv, "--output", str(output)])
    monkeypatch.setattr(experiment, "_attack_batch", original)
    other = cli.main([*argv, "--output", str(output), "--cw-steps", "21", "--restart"])
    assert other["config"]["cw_steps"] == 21 and not cache.exists()


def test_cli_ensemble_under_the_deployed_threat_model(fake, tmp_path, monkeypatch, capsys):
    """The whole pipeline through the CLI: JSON with every section, the sanity flags and the
    audit, the examples PNG, and a one-object summary on stdout."""
    model, x, y = fake
    argv = _cli_on_fake(
        monkeypatch, model, x, y, tmp_path, "ensemble", "--threat-model", "deployed", "--eot",
        "2", "--decision-draws", "3", "--verify-draws", "8", "--binary-search-steps", "2",
        "--cw-steps", "20", "--apgd-steps", "10", "--match-steps", "20", "--max-queries", "150",
        "--pool-size", "20", "--sanity", "--sanity-n", "2", "--threads", "1",
    )  # fmt: skip
    report = cli.main(argv)
    saved = json.loads((tmp_path / "attacks" / "ensemble.json").read_text())
    assert saved == json.loads(json.dumps(report))
    assert saved["attack_noise"] is None and saved["fresh_noise"] is None
    assert saved["deployed"]["draws"] == 8 and saved["config"]["eot"] == 2
    assert set(saved["sanity"]["attacks"]) == {"cw-det", "apgd-det", "match"}
    for entry in saved["sanity"]["attacks"].values():
        assert len(entry["flags"]) == 5
    assert (tmp_path / "attacks" / "ensemble_examples.png").read_bytes()[:4] == b"\x89PNG"
    summary = json.loads(capsys.readouterr().out)
    assert summary["deployed"] == saved["deployed"]["table2"]
    assert summary["sanity_passed"] == saved["sanity"]["passed"]
    assert summary["output"] == str(tmp_path / "attacks" / "ensemble.json")


def test_images_are_taken_in_a_fixed_random_order(fake, tmp_path, monkeypatch):
    """A test set stored class by class (like the CIFAR-10 ImageFolder copy): the default order is
    the seeded permutation, so the attacked images are not all of the first class; the stored order
    is still available. Indices in the report refer to the stored test set."""
    model, x, y = fake
    by_class = torch.argsort(y, stable=True)
    x, y = x[by_class], y[by_class]  # 15 of class 0, then 15 of class 1
    config = AttackConfig(attack="cw", **{**FAST, "binary_search_steps": 1, "cw_steps": 5})
    report, _, attacked = run_experiment(model, x, y, config, progress=False)
    order = torch.randperm(30, generator=torch.Generator().manual_seed(0)).tolist()
    assert report["config"]["order_seed"] == 0
    assert report["test_order"].endswith("manual_seed(0))")
    assert report["attacked_indices"] == order[:4]  # every clean image here is classified right
    assert torch.equal(attacked, x[order[:4]])
    assert set(y[order[:4]].tolist()) == {0, 1}
    stored, _, _ = run_experiment(
        model, x, y, dataclasses.replace(config, order_seed=None), progress=False
    )
    assert stored["attacked_indices"] == [0, 1, 2, 3] and stored["test_order"] == "stored order"
    assert set(y[stored["attacked_indices"]].tolist()) == {0}

    argv = _cli_on_fake(
        monkeypatch, model, x, y, tmp_path, "cw", "--binary-search-steps", "1", "--cw-steps", "5",
        "--example-images", "0",
    )  # fmt: skip
    saved = cli.main([*argv, "--order-seed", "5"])
    assert saved["config"]["order_seed"] == 5
    expected = torch.randperm(30, generator=torch.Generator().manual_seed(5))[:3].tolist()
    assert saved["attacked_indices"] == expected
    assert cli.main([*argv, "--stored-order"])["attacked_indices"] == [0, 1, 2]


def test_initial_const_option_takes_auto_or_a_positive_number():
    import argparse

    parse = experiment.INITIAL_CONST.parse
    assert parse("auto") == "auto"
    assert parse("1e-3") == pytest.approx(1e-3)
    for bad in ("0", "-2", "nan", "linear"):
        with pytest.raises(argparse.ArgumentTypeError, match="'auto'"):
            parse(bad)
    assert AttackConfig(attack="cw").initial_const == "auto"
    with pytest.raises(ValueError, match="^initial_const must be a finite number > 0 or 'auto'"):
        AttackConfig(attack="cw", initial_const=0.0)


def test_proposal_scale_reaches_the_boundary_attack(fake):
    """--proposal-scale changes the walk (low-frequency proposals) and is saved in the config."""
    model, x, y = fake
    base = AttackConfig(attack="boundary", **FAST)
    low = dataclasses.replace(base, proposal_scale=2)
    reports = [run_experiment(model, x, y, c, progress=False)[0] for c in (base, low)]
    assert reports[1]["config"]["proposal_scale"] == 2
    l2 = [[r["l2"] for r in rep["attack"]["records"]] for rep in reports]
    assert l2[0] != l2[1]


def test_spherical_moves_option_reaches_the_boundary_attack(fake, tmp_path, monkeypatch):
    """--spherical-moves off restores Brendel et al.'s rule: saved in the config, changes the walk;
    auto (default) is on for the plain attack."""
    model, x, y = fake
    argv = _cli_on_fake(
        monkeypatch, model, x, y, tmp_path, "boundary", "--max-queries", "300",
        "--example-images", "0",
    )  # fmt: skip
    auto, moves = cli.main(argv), cli.main([*argv, "--spherical-moves", "on"])
    brendel = cli.main([*argv, "--spherical-moves", "off"])
    assert auto["config"]["spherical_moves"] is None
    assert moves["config"]["spherical_moves"] is True
    assert brendel["config"]["spherical_moves"] is False
    l2 = [[r["l2"] for r in rep["attack"]["records"]] for rep in (auto, moves, brendel)]
    assert l2[0] == l2[1] != l2[2]


@pytest.fixture
def mislabelled(fake):
    """The fake test set with the labels of some images flipped: those are misclassified, so the
    first correctly classified images in the fixed order skip some."""
    model, x, y = fake
    order = torch.randperm(30, generator=torch.Generator().manual_seed(0))
    y = y.clone()
    flipped = order[[0, 2, 3, 7, 8, 9]]  # positions 0, 2, 3, 7, 8, 9 of the order
    y[flipped] = 1 - y[flipped]
    return model, x, y


def full_pass_positions(model, x, y, n, order_seed=0):
    """The reference: classify every image in the fixed order, keep the first n correct."""
    order = experiment.test_order(len(x), order_seed)
    labels = flows_threat_model(model, noise_seed=0).classify(x[order])
    correct = torch.nonzero(labels == y[order]).flatten()
    return order, correct[:n]


@pytest.mark.parametrize("batch_size", [1, 3, 4, 30])
@pytest.mark.parametrize("n", [1, 4, 7])
def test_lazy_classification_picks_the_images_of_a_full_pass(mislabelled, n, batch_size):
    model, x, y = mislabelled
    order, expected = full_pass_positions(model, x, y, n)
    seen = []

    def classify(batch):
        seen.append(len(batch))
        return flows_threat_model(model, noise_seed=0).classify(batch)

    positions, examined = experiment.first_correct(classify, x[order], y[order], n, batch_size)
    assert positions.tolist() == expected.tolist()
    last = int(expected[-1]) + 1  # images up to the n-th correct one, rounded up to a batch
    assert examined == sum(seen) == min(-(-last // batch_size) * batch_size, 30)
    assert examined < 30 or batch_size == 30

    config = AttackConfig(
        attack="cw",
        **{**FAST, "n": n, "batch_size": batch_size, "binary_search_steps": 1, "cw_steps": 2},
    )
    report, _, attacked = run_experiment(model, x, y, config, progress=False)
    assert report["attacked_indices"] == order[expected].tolist()
    assert report["skipped_misclassified"] == last - n
    assert report["test_images_classified"] == examined
    assert report["attacked_labels"] == y[order[expected]].tolist()
    assert torch.equal(attacked, x[order[expected]])


def test_lazy_classification_with_too_few_correct_images(mislabelled):
    model, x, y = mislabelled
    order, expected = full_pass_positions(model, x, y, 30)
    positions, examined = experiment.first_correct(
        flows_threat_model(model, noise_seed=0).classify, x[order], y[order], 30, 4
    )
    assert positions.tolist() == expected.tolist() and len(positions) == 24 and examined == 30
    config = AttackConfig(attack="cw", **{**FAST, "n": 25})
    with pytest.raises(experiment.ExperimentError, match="only 24 of the 30 test images"):
        run_experiment(model, x, y, config, progress=False)


@pytest.mark.parametrize(
    ("attack", "helper"),
    [("boundary-det", "select_starting_points"), ("segment", "select_other_class_images")],
)
def test_the_pool_is_the_first_images_not_attacked(mislabelled, monkeypatch, attack, helper):
    """The pool of boundary-det's starting points and of segment's / match's end images: the
    first pool_size images of the order that are not attacked (misclassified ones included), as
    before the lazy classification."""
    model, x, y = mislabelled
    order, expected = full_pass_positions(model, x, y, 4)
    captured = {}
    original = getattr(experiment, helper)

    def spy(*args, **kwargs):
        names = ("model", "x", "y", "pool_x", "pool_y") if helper.endswith("images") else (
            "model", "pool_x", "pool_y"
        )  # fmt: skip
        captured.update(zip(names, args, strict=False))
        return original(*args, **kwargs)

    monkeypatch.setattr(experiment, helper, spy)
    config = AttackConfig(attack=attack, **{**FAST, "pool_size": 15, "max_queries": 50})
    run_experiment(model, x, y, config, progress=False)
    keep = [p for p in range(30) if p not in expected.tolist()][:15]
    assert torch.equal(captured["pool_x"], x[order][keep])
    assert torch.equal(captured["pool_y"], y[order][keep])


def recall_bits(model, x, n, order_seed=0):
    """Bits/dim of the first n images of the fixed order under the noise of seed 0."""
    order = experiment.test_order(len(x), order_seed)[:n]
    gen = lambda: torch.Generator().manual_seed(0)  # noqa: E731
    return torch.cat([model.bits_per_dim(x[i : i + 1], generator=gen()) for i in order])


@pytest.mark.parametrize("dataset", ["mnist", "cifar10"])
def test_default_detector_is_set_at_the_papers_recall(fake, dataset):
    model, x, y = fake
    config = AttackConfig(
        attack="cw", **{**FAST, "threshold": None, "binary_search_steps": 1, "cw_steps": 2}
    )
    report, _, _ = run_experiment(model, x, y, config, dataset, progress=False)
    bpd = recall_bits(model, x, 30)
    target = PAPER_RECALL[dataset]
    expected = LikelihoodDetector.from_quantile(bpd, target, 8).threshold
    detector = report["detector"]
    assert detector["threshold_bits_per_dim"] == pytest.approx(expected, rel=1e-12)
    assert detector["rule"] == "paper recall" and detector["threshold_quantile"] == target
    assert report["config"]["threshold_quantile"] == target
    assert report["config"]["threshold"] is None
    assert target <= detector["recall_on_test_images"] < target + 1 / 30 + 1e-12
    assert detector["paper_recall"] == target and detector["warning"] is None
    if dataset == "mnist":
        assert detector["threshold_bits_per_dim"] == pytest.approx(bpd.max().item(), rel=1e-12)
    # an explicit quantile or threshold is used as given
    quantile, _, _ = run_experiment(
        model, x, y, replace(config, threshold_quantile=0.5), dataset, progress=False
    )
    assert quantile["detector"]["rule"] == "quantile"
    assert quantile["config"]["threshold_quantile"] == 0.5
    with pytest.raises(experiment.ExperimentError, match="no paper recall"):
        run_experiment(model, x, y, config, "synthetic", progress=False)


def test_paper_recall_has_one_home():
    from paper_figures import trained

    assert PAPER_RECALL == {"mnist": 1.0, "cifar10": 0.786}
    assert trained.PAPER_RECALL is PAPER_RECALL
    assert set(PAPER_RECALL) == set(PAPER_EPS)


def test_fixed_threshold_far_from_the_papers_recall_warns(fake):
    model, x, y = fake
    bpd = recall_bits(model, x, 30)
    low = torch.sort(bpd).values[2].item()  # accepts 3 of 30: 10% ≪ MNIST's 100%
    warnings = []
    config = AttackConfig(
        attack="cw", **{**FAST, "threshold": low, "binary_search_steps": 1, "cw_steps": 2}
    )
    report, _, _ = run_experiment(
        model, x, y, config, "mnist", progress=False, warn=warnings.append
    )
    assert report["detector"]["recall_on_test_images"] == pytest.approx(0.1)
    assert len(warnings) == 1 and warnings[0] == report["detector"]["warning"]
    assert warnings[0].startswith("warning: ") and "\n" not in warnings[0]
    assert "10.0%" in warnings[0] and "100.0%" in warnings[0] and "--threshold" in warnings[0]
    # within 10 percentage points (CIFAR-10's 78.6%: 24 of 30 accepted is 80%): no warning
    near = torch.sort(bpd).values[23].item()
    quiet, _, _ = run_experiment(
        model,
        x,
        y,
        replace(config, threshold=near),
        "cifar10",
        progress=False,
        warn=warnings.append,
    )
    assert quiet["detector"]["warning"] is None and len(warnings) == 1
    # no paper recall to compare with: no warning
    other, _, _ = run_experiment(
        model, x, y, config, "synthetic", progress=False, warn=warnings.append
    )
    assert other["detector"]["warning"] is None and len(warnings) == 1


def test_cli_default_detector_and_recall_warning(fake, tmp_path, monkeypatch, capsys):
    """A run trained on MNIST: the CLI's default detector is at 100% recall; a fixed --threshold
    far from it prints one ``warning:`` line on stderr and records it."""
    model, x, y = fake
    (tmp_path / "config.json").write_text(
        json.dumps({"train": {"dataset": "mnist", "data_root": str(tmp_path)}})
    )
    monkeypatch.setattr(flows, "load", lambda path, map_location="cpu": model)
    monkeypatch.setattr(experiment, "load_test_set", lambda *args, **kwargs: (x, y))
    argv = [
        str(tmp_path),
        "--attack",
        "cw",
        "--n",
        "2",
        "--eps",
        "1.0",
        "--recall-n",
        "30",
        "--binary-search-steps",
        "1",
        "--cw-steps",
        "2",
        "--example-images",
        "0",
    ]
    default = cli.main(argv)
    assert default["detector"]["rule"] == "paper recall"
    assert default["detector"]["recall_on_test_images"] == 1.0
    assert default["config"]["dataset"] == "mnist"
    assert "warning:" not in capsys.readouterr().err
    low = torch.sort(recall_bits(model, x, 30)).values[2].item()
    fixed = cli.main([*argv, "--threshold", str(low)])
    warnings = [
        line for line in capsys.readouterr().err.splitlines() if line.startswith("warning:")
    ]
    assert len(warnings) == 1 and warnings[0] == fixed["detector"]["warning"]
    saved = json.loads((tmp_path / "attacks" / "cw.json").read_text())
    assert saved["detector"]["warning"] == warnings[0]


def test_imagefolder_runs_take_the_papers_defaults_of_their_preset(fake, tmp_path, monkeypatch):
    """The CIFAR-10 runs train on the JPEG copy (dataset ``imagefolder``); ε and the recall are
    CIFAR-10's, the data are loaded as an image folder."""
    monkeypatch.delenv("CGM_DATA_ROOT", raising=False)  # the run's recorded root applies
    model, x, y = fake
    (tmp_path / "config.json").write_text(
        json.dumps(
            {
                "train": {"dataset": "imagefolder", "data_root": str(tmp_path)},
                "preset": {"dataset": "cifar10"},
            }
        )
    )
    loaded = []
    monkeypatch.setattr(flows, "load", lambda path, map_location="cpu": model)
    monkeypatch.setattr(
        experiment, "load_test_set", lambda *args, **kwargs: loaded.append(args[:2]) or (x, y)
    )
    report = cli.main(
        [
            str(tmp_path),
            "--attack",
            "cw",
            "--n",
            "2",
            "--recall-n",
            "30",
            "--binary-search-steps",
            "1",
            "--cw-steps",
            "2",
            "--example-images",
            "0",
        ]
    )
    assert loaded == [("imagefolder", tmp_path)]
    assert report["config"]["eps"] == PAPER_EPS["cifar10"]
    assert report["detector"]["threshold_quantile"] == PAPER_RECALL["cifar10"]
    assert report["data"] == {"dataset": "imagefolder", "data_root": str(tmp_path)}


@pytest.mark.parametrize("attack", ["cw-det", "boundary-det"])
def test_example_figure_shows_labels_bits_and_verdicts(fake, tmp_path, attack):
    model, x, y = fake
    config = AttackConfig(attack=attack, **FAST)
    report, result, attacked = run_experiment(model, x, y, config, progress=False)
    fig, axes = experiment.example_figure(attacked, result, report, 3)
    assert axes.shape == (3, 3)
    title = fig.get_suptitle()
    assert attack in title and "ε = 1 (L2)" in title and "6.200 bits/dim" in title
    for i in range(3):
        record = report["attack_noise"]["records"][i]
        clean, adversarial, difference = (ax.get_title() for ax in axes[i])
        assert f"class {report['attacked_labels'][i]}" in clean
        assert f"{report['clean_bits_per_dim'][i]:.3f} bits/dim" in clean
        assert f"class {record['predicted']}" in adversarial
        assert f"{record['bits_per_dim']:.3f} bits/dim" in adversarial
        assert f"L2 = {record['l2']:.3g}" in adversarial
        verdicts = adversarial.splitlines()[-1].split(", ")
        assert verdicts == [
            "fools" if record["fools_classifier"] else "fails",
            "detected" if record["detected"] else "undetected",
            "within ε" if record["within_eps"] else "beyond ε",
        ]
        if attack == "boundary-det":
            assert f"(target {report['targets'][i]})" in adversarial
        assert difference.startswith("|adversarial − clean|")
        # every detection-aware attack here succeeds undetected within ε = 1 (see above)
        assert verdicts == ["fools", "undetected", "within ε"]
    path = experiment.save_examples(tmp_path / "examples.png", attacked, result, report, 3)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert experiment.example_figure(attacked.flatten(1), result, report, 3) is None
    assert experiment.example_figure(attacked, result, report, 0) is None


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"n": 0}, "n"),
        ({"recall_n": 0}, "recall_n"),
        ({"batch_size": 0}, "batch_size"),
        ({"pool_size": 0}, "pool_size"),
        ({"example_images": -1}, "example_images"),
        ({"seed": -1}, "seed"),
        ({"max_queries": 0}, "max_queries"),
        ({"order_seed": -2}, "order_seed"),
        ({"eps": -1.0}, "eps"),
        ({"eps": math.nan}, "eps"),
        ({"threshold": math.inf}, "threshold"),
        ({"threshold_quantile": 0.0}, "threshold_quantile"),
        ({"threshold_quantile": 1.5}, "threshold_quantile"),
        ({"stepsize": 0.0}, "stepsize"),
        ({"confidence": -1.0}, "confidence"),
        ({"attack": "fgsm"}, "attack"),
    ],
    ids=lambda value: str(value),
)
def test_attack_config_rejects_out_of_range_values(changes, field):
    with pytest.raises(ValueError, match=f"^{field} must"):
        AttackConfig(**{"attack": "cw", **changes})


def test_python_m_flows_attack_is_the_cli_and_keeps_the_names_callers_import():
    """``flows.attack`` is a shim: ``python -m flows.attack`` runs :mod:`flows.cli.attack`, and
    the names ``paper_figures`` and the notebooks import from it stay importable there."""
    import subprocess
    import sys

    import flows.attack as shim

    assert shim.main is cli.main
    assert shim.AttackConfig is AttackConfig and shim.run_experiment is run_experiment
    assert shim.PAPER_EPS is PAPER_EPS and shim.ExperimentError is experiment.ExperimentError
    done = subprocess.run(
        [sys.executable, "-m", "flows.attack", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "--spherical-moves" in done.stdout


def test_every_config_field_is_an_option_and_only_given_ones_reach_the_config(tmp_path):
    """The parser is generated from AttackConfig: one option per field; options not given stay
    out of the namespace, so every default is the dataclass's."""
    parser = cli.build_parser()
    options = {a.dest: a for a in parser._actions}
    for field in dataclasses.fields(AttackConfig):
        assert field.name in options, field.name
        assert options[field.name].required == (field.name == "attack")
    given = vars(parser.parse_args([str(tmp_path), "--attack", "cw"]))
    assert given == {
        "run_dir": given["run_dir"],
        "attack": "cw",
        "data_root": None,
        "device": "cpu",
        "output": None,
        "stored_order": False,
        "restart": False,
        "threads": None,
    }
