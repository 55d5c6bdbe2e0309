"""``--retrain`` specs match the committed runs; the CLI's options become one Context; Context and
paper_figures.trained basics."""

import json
import os
import sys
from pathlib import Path

import pytest
import torch

import paper_figures
from paper_figures import Context, cli, retrain, trained
from paper_figures.cli import main
from paper_figures.context import RUNS_ROOT, DataRootError


@pytest.mark.parametrize("spec", retrain.RUN_SPECS, ids=lambda s: s.name)
def test_committed_runs_came_from_the_retrain_specs(spec):
    """Each committed run's saved config equals what its RunSpec passes to flows.train."""
    folder = RUNS_ROOT / spec.name
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
    committed = {p.name for p in RUNS_ROOT.iterdir() if (p / "checkpoint.pt").is_file()}
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


def _capture_contexts(monkeypatch) -> list[tuple[str, Context]]:
    """Replace the CLI's generate by a recorder of (name, context)."""
    calls = []

    def record(name, context, root=None):
        calls.append((name, context))
        folder = Path(root) / name
        folder.mkdir(parents=True, exist_ok=True)
        return [folder / "numbers.json"]

    monkeypatch.setattr(cli, "generate", record)
    return calls


def test_cli_options_become_the_context(tmp_path, monkeypatch):
    calls = _capture_contexts(monkeypatch)
    before = dict(os.environ)
    argv = [
        "--only",
        "table1",
        "--only",
        "figure4",
        "--out",
        str(tmp_path),
        "--quick",
        "--data-root",
        str(tmp_path),
    ]
    assert main(argv) == 0
    assert dict(os.environ) == before, "the command line must not write the environment"
    assert [name for name, _ in calls] == ["table1", "figure4"]
    for _, context in calls:
        assert context == Context(data_root=tmp_path.resolve(), runs_root=RUNS_ROOT, quick=True)


def test_cli_takes_defaults_from_the_environment_without_writing_it(tmp_path, monkeypatch):
    calls = _capture_contexts(monkeypatch)
    monkeypatch.setenv("CGM_DATA_ROOT", str(tmp_path))
    monkeypatch.setenv("CGM_QUICK", "1")
    monkeypatch.delenv("CGM_RUNS_ROOT", raising=False)
    before = dict(os.environ)
    assert main(["--only", "figure1", "--out", str(tmp_path)]) == 0
    assert dict(os.environ) == before
    assert calls == [("figure1", Context(data_root=tmp_path, quick=True))]


def test_cli_refuses_quick_from_the_environment_without_out(monkeypatch, capsys):
    calls = _capture_contexts(monkeypatch)
    monkeypatch.setenv("CGM_QUICK", "1")
    with pytest.raises(SystemExit):
        main(["--only", "figure2"])
    assert "--out" in capsys.readouterr().err and not calls


def test_cli_quick_run_leaves_the_environment_alone(tmp_path):
    """A real --quick run, in this process: the outputs are written, os.environ is unchanged."""
    before = dict(os.environ)
    assert main(["--only", "lambda_interval", "--out", str(tmp_path), "--quick"]) == 0
    assert dict(os.environ) == before
    assert (tmp_path / "lambda_interval" / "numbers.json").is_file()


def test_context_from_environment():
    assert Context.from_environment({}) == Context()
    assert Context() == Context(data_root=None, runs_root=RUNS_ROOT, quick=False)
    env = {"CGM_DATA_ROOT": "/data", "CGM_RUNS_ROOT": "/runs", "CGM_QUICK": " True "}
    assert Context.from_environment(env) == Context(Path("/data"), Path("/runs"), True)
    for off in ("", "0", "no", "false"):
        assert Context.from_environment({"CGM_QUICK": off}).quick is False
    assert Context.from_environment({"CGM_DATA_ROOT": "", "CGM_RUNS_ROOT": ""}) == Context()
    assert Context(data_root="~/x").data_root == Path("~/x").expanduser()
    assert paper_figures.Context is Context
    with pytest.raises(TypeError, match="quick"):
        Context(quick="1")


def test_data_root_errors_name_the_variable(tmp_path):
    with pytest.raises(DataRootError, match="CGM_DATA_ROOT"):
        Context().require_data_root()
    with pytest.raises(DataRootError, match="not a folder"):
        Context(data_root=tmp_path / "absent").require_data_root()
    assert Context(data_root=tmp_path).require_data_root() == tmp_path


def test_run_dir_follows_the_context(tmp_path):
    assert trained.run_dir("mnist", "split", Context()) == RUNS_ROOT / "cpu-mnist-deep-split"
    assert trained.run_dir("mnist", "deep-split", Context()) == RUNS_ROOT / "cpu-mnist-deep-split"
    assert trained.run_dir("mnist", "laplace-2ep", Context()) == RUNS_ROOT / "cpu-mnist-laplace-2ep"
    # every Table 1 run is committed (the figures and notebooks read them)
    for name in trained.TABLE1_RUNS.values():
        assert (RUNS_ROOT / name / "checkpoint.pt").is_file(), name
    assert trained.run_dir("cifar10", "base", Context(runs_root=tmp_path)) == (
        tmp_path / "cpu-cifar-base"
    )
    with pytest.raises(ValueError, match="dataset"):
        trained.run_dir("svhn", "split", Context())
    with pytest.raises(FileNotFoundError, match="no trained run"):
        trained.load_run("mnist", "split", Context(runs_root=tmp_path))


def test_ordered_test_set_needs_a_data_root_and_a_positive_n(tmp_path):
    with pytest.raises(DataRootError):
        trained.ordered_test_set("mnist", Context())
    with pytest.raises(ValueError, match="n must be"):
        trained.ordered_test_set("mnist", Context(data_root=tmp_path), n=0)


def test_no_library_function_is_collected_as_a_test():
    """pytest collects module-level names test_* / Test*: the package must define none."""
    import importlib
    import pkgutil

    for info in pkgutil.iter_modules(paper_figures.__path__):
        if info.name == "__main__":
            continue
        module = importlib.import_module(f"paper_figures.{info.name}")
        names = [n for n in vars(module) if n.startswith(("test", "Test"))]
        assert not names, f"paper_figures.{info.name} defines {names}"


def test_run_statistics_classify_by_the_models_rule():
    """Predictions take the argmax of the class scores (the Split prior's z_s logits), bits/dim
    come from the class log-likelihoods: the two differ when the rules disagree."""
    lls = torch.tensor([[-10.0, -12.0], [-11.0, -10.5]], dtype=torch.float64)
    scores = torch.tensor([[0.0, 1.0], [2.0, 0.0]], dtype=torch.float64)  # the other class each
    stats = trained.RunStatistics(lls, torch.tensor([1, 0]), 4, 0, scores)
    assert stats.predictions.tolist() == [1, 0] and stats.correct.all()
    bayes = trained.RunStatistics(lls, torch.tensor([1, 0]), 4, 0, lls)
    assert bayes.predictions.tolist() == [0, 1] and not bayes.correct.any()
    torch.testing.assert_close(stats.bits_per_dim, bayes.bits_per_dim)
