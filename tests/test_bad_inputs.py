"""Bad input, as a careless or hostile user gives it: one table over every CLI and public API.

A command-line case must exit with status 2 and one line on stderr that names the argument,
without a traceback; an API case must raise the given exception type with a message naming the
argument. The malicious-checkpoint tests show that no code in a checkpoint ever runs.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import flows
import flows.cli.evaluate
import flows.cli.train
import paper_figures.cli
from counterexample.__main__ import main as counterexample_main
from flows.arguments import ARTIFACTS_ROOT
from flows.checkpoint import CheckpointError, save_checkpoint
from flows.data import ImageData, fixed_subset, synthetic_dataset
from flows.evaluation import evaluate_model
from flows.training import RunFolderError, TrainConfig, train

from .flows.helpers import tiny_run_config

REPO = Path(__file__).resolve().parents[1]
COMMITTED_RUN = ARTIFACTS_ROOT / "runs" / "cpu-mnist-split"


@pytest.fixture(scope="module")
def places(tmp_path_factory) -> dict[str, Path]:
    """A trained tiny run, a non-run folder, a file, and a run folder with a malicious checkpoint."""
    root = tmp_path_factory.mktemp("bad_inputs")
    run = root / "run"
    train(tiny_run_config(run, epochs=1), progress=False)
    foreign = root / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("not a run")
    plain_file = root / "file.txt"
    plain_file.write_text("x")
    evil = root / "evil"
    evil.mkdir()
    (evil / "config.json").write_text((run / "config.json").read_text())
    torch.save({"model": _Payload(root / "pwned"), "model_config": {}}, evil / "checkpoint.pt")
    return {"root": root, "run": run, "foreign": foreign, "file": plain_file, "evil": evil}


class _Payload:
    """Unpickling this would create ``marker``: what a malicious checkpoint does."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (pathlib.Path.touch, (self.marker,))


# --- command lines ---------------------------------------------------------------------------
# (main, argv with {run}, {foreign}, {file}, {root}, {evil} placeholders, substring of the error)

TRAIN = ["--preset", "tiny", "--prior", "split", "--dataset", "synthetic"]
CLI_CASES: list[tuple[str, list[str], str]] = [
    ("train", [*TRAIN, "--out", "{root}/t1", "--batch-size", "0"], "--batch-size"),
    ("train", [*TRAIN, "--out", "{root}/t1", "--batch-size", "-4"], "--batch-size"),
    ("train", [*TRAIN, "--out", "{root}/t1", "--epochs", "0"], "--epochs"),
    ("train", [*TRAIN, "--out", "{root}/t1", "--epochs", "1.5"], "--epochs"),
    ("train", [*TRAIN, "--out", "{root}/t1", "--lr", "-1"], "--lr"),
    ("train", [*TRAIN, "--out", "{root}/t1", "--lr", "0"], "--lr"),
    ("train", [*TRAIN, "--out", "{root}/t1", "--lr", "inf"], "--lr"),
    ("train", [*TRAIN, "--out", "{root}/t1", "--lr", "1e400"], "--lr"),
    ("train", [*TRAIN, "--out", "{root}/t1", "--lr", "nan"], "--lr"),
    ("train", [*TRAIN, "--out", "{root}/t1", "--eval-batch-size", "0"], "--eval-batch-size"),
    ("train", [*TRAIN, "--out", "{root}/t1", "--label-smoothing", "1"], "--label-smoothing"),
    ("train", [*TRAIN, "--out", "{root}/t1", "--split-sigma", "0"], "--split-sigma"),
    ("train", [*TRAIN, "--out", "{root}/t1", "--split-weight", "-1"], "--split-weight"),
    ("train", [*TRAIN, "--out", "{root}/t1", "--seed", "-1"], "--seed"),
    ("train", [*TRAIN, "--out", "{root}/t1", "--threads", "0"], "--threads"),
    ("train", [*TRAIN, "--out", "{root}/t1", "--max-nonfinite", "-1"], "--max-nonfinite"),
    ("train", [*TRAIN, "--out", "{root}/t1", "--checkpoint-every", "0"], "--checkpoint-every"),
    ("train", [*TRAIN, "--out", "{root}/t1", "--train-limit", "0"], "--train-limit"),
    ("train", [*TRAIN, "--out", "{root}/t1", "--eval-limit", "-3"], "--eval-limit"),
    ("train", [*TRAIN, "--out", "{root}/t1", "--levels", "0"], "--levels"),
    ("train", [*TRAIN, "--out", "{root}/t1", "--dataset", "imagenet"], "--dataset"),
    ("train", ["--preset", "huge", "--prior", "split", "--out", "{root}/t1"], "--preset"),
    ("train", ["--preset", "tiny", "--prior", "gauss", "--out", "{root}/t1"], "--prior"),
    ("train", ["--preset", "tiny", "--out", "{root}/t1"], "--variant"),
    ("train", ["--preset", "tiny", "--variant", "gauss", "--out", "{root}/t1"], "--variant"),
    ("train", [*TRAIN, "--out", "{foreign}"], "--out"),
    ("train", [*TRAIN, "--out", "{run}"], "--out"),
    ("train", [*TRAIN, "--out", "{file}"], "--out"),
    ("train", [*TRAIN, "--out", "/proc/no/such/run"], "--out"),
    ("train", ["--out", "{root}/never", "--resume"], "--resume"),
    ("train", ["--out", "{run}", "--resume", "--overwrite"], "--resume"),
    ("train", ["--out", "{run}", "--resume", "--epochs", "3", "--lr", "0.5"], "--lr"),
    ("train", ["--out", "{run}", "--resume", "--epochs", "3", "--prior", "base"], "--variant"),
    ("train", ["--out", "{run}", "--resume", "--epochs", "3", "--eval-limit", "5"], "--eval-limit"),
    ("train", ["--out", "{run}", "--resume", "--epochs", "1"], "epochs"),
    ("evaluate", ["{root}/missing"], "run_dir"),
    ("evaluate", ["{file}"], "run_dir"),
    ("evaluate", ["{foreign}"], "run_dir"),
    ("evaluate", ["{run}", "--batch-size", "0"], "--batch-size"),
    ("evaluate", ["{run}", "--limit", "0"], "--limit"),
    ("evaluate", ["{run}", "--limit", "-5"], "--limit"),
    ("evaluate", ["{run}", "--seed", "-2"], "--seed"),
    ("evaluate", ["{run}", "--split", "validation"], "--split"),
    ("evaluate", ["{run}", "--output", "{run}/checkpoint.pt"], "--output"),
    ("evaluate", ["{run}", "--output", "{root}"], "--output"),
    ("evaluate", ["{run}", "--output", "/proc/no/such/eval.json"], "--output"),
    ("evaluate", [str(COMMITTED_RUN)], "--output"),
    ("evaluate", ["{evil}", "--output", "{root}/evil.json"], "run_dir"),
    ("counterexample", ["--Delta", "1e-17"], "--Delta"),
    ("counterexample", ["--Delta", "0"], "--Delta"),
    ("counterexample", ["--monte-carlo", "-5"], "--monte-carlo"),
    ("counterexample", ["--monte-carlo", str(10**12)], "--monte-carlo"),
    ("counterexample", ["--eps", "nan"], "--eps"),
    ("counterexample", ["--delta", "0.7"], "--delta"),
    ("counterexample", ["--d", "0"], "--d"),
    ("counterexample", ["--lambda1", "2"], "--lambda1"),
    ("counterexample", ["--seed", "-1", "--monte-carlo", "10"], "--seed"),
    ("figures", ["--quick"], "--out"),
    ("figures", ["--threads", "0", "--out", "{root}/figs"], "--threads"),
    ("figures", ["--data-root", "{root}/missing", "--out", "{root}/figs"], "--data-root"),
    ("figures", ["--only", "figure9"], "--only"),
]

MAINS: dict[str, Callable] = {
    "counterexample": counterexample_main,
    "train": flows.cli.train.main,
    "evaluate": flows.cli.evaluate.main,
    "figures": paper_figures.cli.main,
}


@pytest.mark.parametrize(
    ("cli", "argv", "names"), CLI_CASES, ids=[f"{c}:{' '.join(a)}" for c, a, _ in CLI_CASES]
)
def test_command_line_rejects_bad_input_in_one_line(places, capsys, cli, argv, names):
    argv = [a.format(**places) for a in argv]
    before = sorted(p.name for p in places["run"].iterdir())
    try:
        status = MAINS[cli](argv)  # counterexample's main returns its status
    except SystemExit as exit_info:
        status = exit_info.code
    assert status == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert "error:" in lines[0] and names in lines[0], lines[0]
    assert "Traceback" not in err
    assert sorted(p.name for p in places["run"].iterdir()) == before  # the run is untouched
    assert not (places["root"] / "pwned").exists()


def test_table_is_long_enough():
    assert len(CLI_CASES) + len(API_CASES) >= 60


# --- public APIs -----------------------------------------------------------------------------


def _model():
    torch.manual_seed(0)
    model = flows.build_model("tiny", "split", hidden_channels=4)
    model.initialise(torch.rand(8, 1, 8, 8) - 0.5)
    return model


def _x(n: int = 2) -> torch.Tensor:
    return torch.rand(n, 1, 8, 8) - 0.5


def _nan_x() -> torch.Tensor:
    x = _x()
    x[1, 0, 3, 3] = float("nan")
    return x


def _no_images() -> ImageData:
    return ImageData(torch.zeros(0, 1, 8, 8, dtype=torch.uint8), torch.zeros(0).long(), ("a",))


def _config(**changes) -> TrainConfig:
    return tiny_run_config(Path("unused"), **changes)


API_CASES: list[tuple[str, Callable[[dict], object], type[Exception], str]] = [
    ("TrainConfig batch_size 0", lambda p: _config(batch_size=0), ValueError, "batch_size"),
    ("TrainConfig epochs 0", lambda p: _config(epochs=0), ValueError, "epochs"),
    ("TrainConfig lr inf", lambda p: _config(lr=float("inf")), ValueError, "lr"),
    ("TrainConfig lr -1", lambda p: _config(lr=-1.0), ValueError, "lr"),
    ("TrainConfig prior", lambda p: _config(prior="gauss"), ValueError, "prior"),
    (
        "TrainConfig eval_batch_size",
        lambda p: _config(eval_batch_size=0),
        ValueError,
        "eval_batch_size",
    ),
    (
        "TrainConfig label_smoothing",
        lambda p: _config(label_smoothing=1.0),
        ValueError,
        "label_smoothing",
    ),
    ("TrainConfig seed bool", lambda p: _config(seed=True), ValueError, "seed"),
    (
        "train existing run",
        lambda p: train(tiny_run_config(p["run"], epochs=1)),
        RunFolderError,
        "already holds a run",
    ),
    (
        "train resume changed lr",
        lambda p: train(tiny_run_config(p["run"], epochs=3, lr=0.5), resume=True),
        RunFolderError,
        "lr",
    ),
    (
        "train foreign folder",
        lambda p: train(tiny_run_config(p["foreign"], epochs=1)),
        RunFolderError,
        "not empty",
    ),
    ("model NaN pixels", lambda p: _model().class_log_likelihoods(_nan_x()), ValueError, "x:"),
    ("model empty batch initialise", lambda p: _model().initialise(_x(0)), ValueError, "x:"),
    ("model wrong shape", lambda p: _model().log_prob(torch.zeros(2, 1, 28, 28)), ValueError, "x:"),
    (
        "model integer images",
        lambda p: _model().log_prob(torch.zeros(2, 1, 8, 8, dtype=torch.uint8)),
        ValueError,
        "x:",
    ),
    ("model not a tensor", lambda p: _model().log_prob([[0.0]]), TypeError, "x must be"),
    (
        "model generator not a Generator",
        lambda p: _model().log_prob(_x(), 7),
        TypeError,
        "generator",
    ),
    (
        "model log_prob labels out of range",
        lambda p: _model().log_prob(_x(), torch.tensor([0, 10])),
        ValueError,
        "labels",
    ),
    (
        "model log_prob float labels",
        lambda p: _model().log_prob(_x(), y=torch.tensor([0.0, 1.0])),
        ValueError,
        "labels",
    ),
    (
        "model log_prob labels length",
        lambda p: _model().log_prob(_x(), y=torch.tensor([0, 1, 2])),
        ValueError,
        "labels",
    ),
    ("model sample 0", lambda p: _model().sample(0), ValueError, "y:"),
    (
        "model sample temperature nan",
        lambda p: _model().sample(torch.tensor([1]), temperature=float("nan")),
        ValueError,
        "temperature",
    ),
    (
        "model sample labels out of range",
        lambda p: _model().sample(torch.tensor([11])),
        ValueError,
        "labels",
    ),
    ("load malicious", lambda p: flows.load(p["evil"]), CheckpointError, "refused"),
    ("load a text file", lambda p: flows.load(p["file"]), CheckpointError, "not a torch"),
    (
        "load a foreign folder",
        lambda p: flows.load(p["foreign"]),
        FileNotFoundError,
        "no checkpoint",
    ),
    (
        "fixed_subset limit 0",
        lambda p: fixed_subset(synthetic_dataset(4, (1, 8, 8), 10, 0), 0),
        ValueError,
        "limit",
    ),
    (
        "evaluate_model no data",
        lambda p: evaluate_model(_model(), _no_images()),
        ValueError,
        "data",
    ),
]


@pytest.mark.parametrize(
    ("name", "call", "error", "names"), API_CASES, ids=[c[0] for c in API_CASES]
)
def test_api_rejects_bad_input_naming_the_argument(places, name, call, error, names):
    with pytest.raises(error) as info:
        call(places)
    assert names in str(info.value), str(info.value)
    assert not (places["root"] / "pwned").exists()


# --- malicious checkpoints -------------------------------------------------------------------


def test_a_malicious_checkpoint_never_runs_through_load_evaluate_or_attack(places, capsys):
    marker = places["root"] / "pwned"
    with pytest.raises(CheckpointError, match="refused .*can run arbitrary code"):
        flows.load(places["evil"])
    for main, argv in (
        (
            flows.cli.evaluate.main,
            [str(places["evil"]), "--output", str(places["root"] / "e.json")],
        ),
    ):
        with pytest.raises(SystemExit) as exit_info:
            main(argv)
        assert exit_info.value.code == 2
        assert "refused" in capsys.readouterr().err
    assert not marker.exists()
    # a control: the same file, read with a full unpickler, does run its payload
    torch.load(places["evil"] / "checkpoint.pt", weights_only=False)
    assert marker.exists()
    marker.unlink()


def test_a_weights_only_checkpoint_of_this_package_still_loads(places, tmp_path):
    model = flows.load(places["run"])
    copy = tmp_path / "checkpoint.pt"
    save_checkpoint(copy, {"model": model.state_dict(), "model_config": model.config.to_dict()})
    assert flows.load(copy).config == model.config
    save_checkpoint(tmp_path / "partial" / "checkpoint.pt", {"model": {}})
    with pytest.raises(CheckpointError, match="lacks model_config"):
        flows.load(tmp_path / "partial")


def test_the_cli_error_is_one_line_in_a_real_process(places):
    result = subprocess.run(
        [sys.executable, "-m", "flows.evaluate", str(places["run"]), "--limit", "0"],
        capture_output=True,
        text=True,
        cwd=REPO,
        timeout=120,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "python -m flows.evaluate: error: argument --limit: must be an integer >= 1, got '0' "
        "(see python -m flows.evaluate --help)"
    ]


def test_the_committed_runs_load_weights_only_with_their_recorded_configuration():
    """Every committed run loads with weights_only=True as it is (no conversion was needed) and
    rebuilds the model its config.json records."""
    configs = sorted((ARTIFACTS_ROOT / "runs").glob("*/config.json"))
    assert len(configs) >= 6
    for config_path in configs:
        model = flows.load(config_path.parent)
        recorded = json.loads(config_path.read_text())["model"]
        recorded["data_shape"] = tuple(recorded["data_shape"])
        loaded = model.config.to_dict()
        assert {key: loaded[key] for key in recorded} == recorded, config_path
