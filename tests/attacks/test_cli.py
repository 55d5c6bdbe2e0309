"""The attack CLI's experiment on a flows-style fake model (no dataset, no trained run)."""

import dataclasses
import json

import pytest
import torch

import flows
import flows.attack as cli
from flows.attack import AttackConfig, run_experiment

FAST = {
    "n": 4, "eps": 1.0, "threshold": 6.2, "recall_n": 30, "batch_size": 3,
    "binary_search_steps": 4, "cw_steps": 150, "max_queries": 600, "example_images": 2,
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
    config = AttackConfig(attack="boundary", **{**FAST, "threshold": None,
                                                 "threshold_quantile": 0.9})
    report, _, _ = run_experiment(model, x, y, config, progress=False)
    assert report["detector"]["recall_on_test_images"] >= 0.9
    with pytest.raises(ValueError, match="pass --eps"):
        run_experiment(model, x, y, AttackConfig(attack="cw", eps=None, threshold=6.2),
                       dataset="synthetic", progress=False)
    with pytest.raises(ValueError, match="not both"):
        AttackConfig(attack="cw", threshold=1.0, threshold_quantile=0.5)


def test_main_writes_json_and_images(fake, tmp_path, monkeypatch):
    model, x, y = fake
    monkeypatch.setattr(flows, "load", lambda path, map_location="cpu": model, raising=False)
    monkeypatch.setattr(cli, "_load_test_set", lambda dataset, root, m: (x, y))
    argv = [str(tmp_path), "--attack", "boundary", "--dataset", "synthetic", "--n", "3",
            "--eps", "1.0", "--threshold", "6.2", "--recall-n", "20", "--max-queries", "300"]
    report = cli.main(argv)
    saved = json.loads((tmp_path / "attacks" / "boundary.json").read_text())
    assert saved["attack_noise"]["table2"] == report["attack_noise"]["table2"]
    assert (tmp_path / "attacks" / "boundary_examples.png").stat().st_size > 0


def test_main_without_flows_load_fails_clearly(tmp_path, monkeypatch):
    monkeypatch.delattr(flows, "load", raising=False)
    with pytest.raises(SystemExit, match="flows.load is not available"):
        cli.main([str(tmp_path), "--attack", "cw"])


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

    monkeypatch.setattr(flows, "load", lambda path, map_location="cpu": model, raising=False)
    monkeypatch.setattr(cli, "_load_test_set", lambda dataset, root, m: (x, y))
    argv = [str(tmp_path), "--attack", "cw", "--dataset", "synthetic", "--n", "3", "--eps", "1.0",
            "--threshold", "6.2", "--recall-n", "20", "--binary-search-steps", "1",
            "--cw-steps", "5", "--example-images", "0"]
    saved = cli.main([*argv, "--order-seed", "5"])
    assert saved["config"]["order_seed"] == 5
    expected = torch.randperm(30, generator=torch.Generator().manual_seed(5))[:3].tolist()
    assert saved["attacked_indices"] == expected
    assert cli.main([*argv, "--stored-order"])["attacked_indices"] == [0, 1, 2]


def test_initial_const_option_takes_auto_or_a_positive_number():
    import argparse

    assert cli._initial_const("auto") == "auto"
    assert cli._initial_const("1e-3") == pytest.approx(1e-3)
    for bad in ("0", "-2", "nan", "linear"):
        with pytest.raises(argparse.ArgumentTypeError, match="'auto'"):
            cli._initial_const(bad)
    assert AttackConfig(attack="cw").initial_const == "auto"


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
    monkeypatch.setattr(flows, "load", lambda path, map_location="cpu": model, raising=False)
    monkeypatch.setattr(cli, "_load_test_set", lambda dataset, root, m: (x, y))
    argv = [str(tmp_path), "--attack", "boundary", "--dataset", "synthetic", "--n", "3",
            "--eps", "1.0", "--threshold", "6.2", "--recall-n", "20", "--max-queries", "300",
            "--example-images", "0"]
    auto, moves = cli.main(argv), cli.main([*argv, "--spherical-moves", "on"])
    brendel = cli.main([*argv, "--spherical-moves", "off"])
    assert auto["config"]["spherical_moves"] is None
    assert moves["config"]["spherical_moves"] is True
    assert brendel["config"]["spherical_moves"] is False
    l2 = [[r["l2"] for r in rep["attack"]["records"]] for rep in (auto, moves, brendel)]
    assert l2[0] == l2[1] != l2[2]
