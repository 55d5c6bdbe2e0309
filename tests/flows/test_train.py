"""Training: loss decreases, run files, evaluation CLI, non-finite handling, kill-and-resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import flows
import flows.train as train_module
from flows.checkpoint import load_checkpoint
from flows.data import synthetic_dataset
from flows.evaluate import main as evaluate_main
from flows.objectives import objective
from flows.preprocess import dequantize, to_model_range
from flows.train import NonFiniteLossError, parse_args, read_metrics, train

from .helpers import tiny_run_config

REPO = Path(__file__).resolve().parents[2]


def test_tiny_model_loss_decreases_on_synthetic_data():
    torch.manual_seed(0)
    data = synthetic_dataset(256, (1, 8, 8), 10, seed=0)
    model = flows.build_model("tiny", "reweight")
    generator = torch.Generator().manual_seed(0)
    x_all = dequantize(to_model_range(data.images), generator)
    model.initialise(x_all[:128], generator)
    optimiser = torch.optim.Adam(model.parameters(), lr=2e-3)

    def loss_on(x, labels, noise_seed):
        output = model(x, torch.Generator().manual_seed(noise_seed))
        return objective(
            "reweighted", output.class_log_likelihoods, output.logits, labels, model.num_dims
        )

    with torch.no_grad():
        before = loss_on(x_all, data.labels, 99).item()
    for step in range(40):
        index = torch.randint(0, 256, (32,), generator=generator)
        loss = loss_on(x_all[index], data.labels[index], step)
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        after = loss_on(x_all, data.labels, 99).item()
    assert after < before - 0.3, (before, after)


def test_train_writes_config_metrics_plot_and_checkpoint_then_evaluate_cli(tmp_path):
    run = tmp_path / "run"
    final = train(tiny_run_config(run))
    assert {p.name for p in run.iterdir()} == {
        "config.json",
        "checkpoint.pt",
        "metrics.jsonl",
        "training_curves.png",
    }
    config = json.loads((run / "config.json").read_text())
    assert config["train"]["dataset"] == "synthetic" and config["train"]["batch_size"] == 16
    assert config["model"]["prior"] == "split" and config["preset"]["name"] == "tiny"
    records = read_metrics(run / "metrics.jsonl")
    evals = [r for r in records if r["kind"] == "eval"]
    assert [r["epoch"] for r in evals] == [1, 2] and [r["step"] for r in evals] == [6, 12]
    assert [r["step"] for r in records if r["kind"] == "train"] == [2, 4, 6, 8, 10, 12]
    checkpoint = load_checkpoint(run)
    assert checkpoint["position"] == {
        "epoch": 2,
        "step": 0,
        "global_step": 12,
        "nonfinite_steps": 0,
    }
    report = evaluate_main([str(run)])
    assert report["results"]["accuracy"] == pytest.approx(final["accuracy"])
    assert report["results"]["bits_per_dim"] == pytest.approx(final["bits_per_dim"])
    saved = json.loads((run / "evaluation.json").read_text())
    assert set(saved["results"]["per_class"]) == {f"class{c}" for c in range(10)}
    counts = sum(v["count"] for v in saved["results"]["per_class"].values())
    assert counts == saved["results"]["num_examples"] == 96


def test_non_finite_losses_are_skipped_and_counted(tmp_path, monkeypatch):
    calls = {"n": 0}

    def sometimes_nan(*args, **kwargs):
        calls["n"] += 1
        loss = objective(*args, **kwargs)
        return loss * float("nan") if calls["n"] in (2, 3) else loss

    monkeypatch.setattr(train_module, "objective", sometimes_nan)
    train(tiny_run_config(tmp_path / "run", epochs=1))
    checkpoint = load_checkpoint(tmp_path / "run")
    assert checkpoint["position"]["nonfinite_steps"] == 2
    assert all(
        torch.isfinite(v).all() for v in checkpoint["model"].values() if v.is_floating_point()
    )


def test_persistent_non_finite_loss_stops_naming_step_and_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setattr(
        train_module, "objective", lambda *a, **k: objective(*a, **k) * float("inf")
    )
    with pytest.raises(NonFiniteLossError, match=r"global step 2 .*checkpoint\.pt"):
        train(tiny_run_config(tmp_path / "run", max_nonfinite=2))


def test_cli_refuses_to_overwrite_and_resume_reuses_savedtiny_run_config(tmp_path):
    run = tmp_path / "run"
    train(tiny_run_config(run, epochs=1))
    with pytest.raises(SystemExit):
        parse_args(["--preset", "tiny", "--prior", "base", "--out", str(run)])
    resumed = parse_args(["--out", str(run), "--resume", "--epochs", "3"])
    assert resumed.prior == "split" and resumed.epochs == 3 and resumed.synthetic_size == 96


def test_cli_reports_missing_data_without_a_traceback(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_info:
        train_module.main(
            [
                "--preset",
                "cpu-mnist",
                "--prior",
                "base",
                "--data-root",
                str(tmp_path),
                "--out",
                str(tmp_path / "run"),
            ]
        )
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("python -m flows.train: error: MNIST not found under") and str(tmp_path) in err
    assert len(err.splitlines()) == 1
    run = tmp_path / "tiny"
    train(tiny_run_config(run, epochs=1))
    with pytest.raises(SystemExit) as exit_info:
        evaluate_main([str(run), "--dataset", "imagefolder", "--data-root", str(tmp_path)])
    assert exit_info.value.code == 2
    assert "flows.evaluate: error: no image folder at" in capsys.readouterr().err


def _train_command(out: Path, *extra: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "flows.train",
        "--preset",
        "tiny",
        "--prior",
        "split",
        "--out",
        str(out),
        "--synthetic-size",
        "640",
        "--epochs",
        "2",
        "--checkpoint-every",
        "4",
        "--log-every",
        "4",
        *extra,
    ]


def _environment() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


@pytest.mark.slow
def test_sigkill_mid_epoch_then_resume_equals_uninterrupted_run(tmp_path):
    env = _environment()
    reference, killed = tmp_path / "reference", tmp_path / "killed"
    subprocess.run(
        _train_command(reference),
        check=True,
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )

    process = subprocess.Popen(
        _train_command(killed),
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    position = None
    while time.monotonic() < deadline and process.poll() is None:
        if (killed / "checkpoint.pt").exists():
            position = load_checkpoint(killed)["position"]
            if position["global_step"] >= 8:
                break
        time.sleep(0.01)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    position = load_checkpoint(killed)["position"]
    assert position["epoch"] == 0 and 0 < position["step"] < 40, position  # killed mid-epoch

    subprocess.run(
        [sys.executable, "-m", "flows.train", "--out", str(killed), "--resume"],
        check=True,
        env=env,
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    a, b = load_checkpoint(reference), load_checkpoint(killed)
    assert (
        a["position"]
        == b["position"]
        == {"epoch": 2, "step": 0, "global_step": 80, "nonfinite_steps": 0}
    )
    assert a["model"].keys() == b["model"].keys()
    for name in a["model"]:
        assert torch.equal(a["model"][name], b["model"][name]), name
    for key, state in a["optimizer"]["state"].items():
        for name, value in state.items():
            assert torch.equal(value, b["optimizer"]["state"][key][name]), (key, name)
    assert a["scheduler"] == b["scheduler"]

    def strip(records):
        return [{k: v for k, v in r.items() if k != "seconds"} for r in records]

    assert strip(read_metrics(reference / "metrics.jsonl")) == strip(
        read_metrics(killed / "metrics.jsonl")
    )
