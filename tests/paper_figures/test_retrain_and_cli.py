"""``--retrain`` specs match the committed runs; the CLI's data options; paper_figures.trained basics."""

import json
import sys

import pytest

from paper_figures import retrain, trained
from paper_figures.cli import main


@pytest.mark.parametrize("spec", retrain.RUN_SPECS, ids=lambda s: s.name)
def test_committed_runs_came_from_the_retrain_specs(spec):
    """Each committed run's saved config equals what its RunSpec passes to flows.train."""
    folder = trained.RUNS_ROOT / spec.name
    assert (folder / "config.json").is_file(), f"{spec.name} is not committed under artifacts/runs"
    saved = json.loads((folder / "config.json").read_text())["train"]
    assert saved["preset"] == spec.preset
    assert saved["prior"] == spec.prior
    assert saved["seed"] == 0
    assert saved["label_smoothing"] == spec.label_smoothing
    preset_epochs = json.loads((folder / "config.json").read_text())["preset"]["epochs"]
    assert saved["epochs"] == (spec.epochs or preset_epochs)
    assert saved["dataset"] == ("mnist" if spec.dataset == "mnist" else "imagefolder")


def test_every_committed_run_has_a_spec():
    names = {spec.name for spec in retrain.RUN_SPECS}
    committed = {p.name for p in trained.RUNS_ROOT.iterdir() if (p / "checkpoint.pt").is_file()}
    assert committed <= names, f"runs without a retrain spec: {sorted(committed - names)}"


def test_train_command_resumes_only_existing_runs(tmp_path):
    spec = retrain.RUN_SPECS[3]  # a CIFAR run: data under DATA_ROOT/cifar10-jpeg
    command = retrain.train_command(spec, tmp_path, tmp_path / "data")
    assert command[:3] == [sys.executable, "-m", "flows.train"]
    assert "--resume" not in command
    assert command[command.index("--data-root") + 1] == str(tmp_path / "data" / "cifar10-jpeg")
    assert command[command.index("--out") + 1] == str(tmp_path / spec.name)
    (tmp_path / spec.name).mkdir()
    for name in ("config.json", "checkpoint.pt"):
        (tmp_path / spec.name / name).write_text("{}")
    assert retrain.train_command(spec, tmp_path, tmp_path / "data")[-1] == "--resume"


def test_retrain_rejects_unknown_runs(tmp_path):
    with pytest.raises(ValueError, match="unknown runs"):
        retrain.retrain(tmp_path, tmp_path, only=("cpu-mnist-nope",))


def test_cli_rejects_missing_data_root(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["--only", "figure2", "--data-root", str(tmp_path / "absent")])
    assert "--data-root" in capsys.readouterr().err


def test_cli_quick_sets_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv("CGM_QUICK", raising=False)
    assert main(["--only", "lambda_interval", "--out", str(tmp_path), "--quick"]) == 0
    assert trained.quick_mode()


def test_data_root_errors_name_the_variable(monkeypatch, tmp_path):
    monkeypatch.delenv("CGM_DATA_ROOT", raising=False)
    with pytest.raises(trained.DataRootError, match="CGM_DATA_ROOT"):
        trained.data_root()
    with pytest.raises(trained.DataRootError, match="not a folder"):
        trained.data_root(tmp_path / "absent")
    assert trained.data_root(tmp_path) == tmp_path


def test_runs_root_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("CGM_RUNS_ROOT", raising=False)
    assert trained.run_dir("mnist", "split") == trained.RUNS_ROOT / "cpu-mnist-split"
    monkeypatch.setenv("CGM_RUNS_ROOT", str(tmp_path))
    assert trained.run_dir("cifar10", "base") == tmp_path / "cpu-cifar-base"
    with pytest.raises(ValueError, match="dataset"):
        trained.run_dir("svhn", "split")


def test_test_order_is_a_fixed_permutation():
    order = trained.test_order(1000)
    assert sorted(order.tolist()) == list(range(1000))
    assert order.tolist() == trained.test_order(1000).tolist()
    assert order.tolist() != list(range(1000))
