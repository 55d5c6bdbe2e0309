"""Training: loss decreases, run files, evaluation CLI, non-finite handling, kill-and-resume."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import flows
import flows.cli.train as cli_train
import flows.training as train_module
from flows.checkpoint import load_checkpoint
from flows.cli.evaluate import main as evaluate_main
from flows.cli.train import parse_args
from flows.data import synthetic_dataset
from flows.objectives import objective
from flows.preprocess import dequantize, to_model_range
from flows.training import NonFiniteLossError, read_metrics, train

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
    windows = [r for r in records if r["kind"] == "train"]
    assert [r["step"] for r in windows] == [2, 4, 6, 8, 10, 12]
    # every window: 2 steps of 16 images, timed, and throughput = images / seconds
    assert all(r["images"] == 32 and r["seconds"] > 0 for r in windows)
    for r in windows:
        assert r["images_per_second"] == pytest.approx(r["images"] / r["seconds"])
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
        cli_train.main(
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
    assert (
        err.startswith("python -m flows.train: error: MNIST not found under")
        and str(tmp_path) in err
    )
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
        timing = {"seconds", "images_per_second"}  # wall time differs between the two runs
        return [{k: v for k, v in r.items() if k not in timing} for r in records]

    assert strip(read_metrics(reference / "metrics.jsonl")) == strip(
        read_metrics(killed / "metrics.jsonl")
    )


def test_a_second_training_on_a_locked_run_folder_fails_at_once(tmp_path):
    run = tmp_path / "run"
    with train_module._RunLock(run):  # what a running training holds
        with pytest.raises(train_module.RunFolderError, match="in use by another training"):
            train(tiny_run_config(run, epochs=1))
        assert not (run / "checkpoint.pt").exists() and not (run / "metrics.jsonl").exists()
    train(tiny_run_config(run, epochs=1))  # released: the folder is usable again
    assert not (run / train_module.LOCK_NAME).exists()


def test_resume_only_when_asked_and_only_with_the_same_settings(tmp_path):
    run = tmp_path / "run"
    train(tiny_run_config(run, epochs=1))
    before = load_checkpoint(run)
    with pytest.raises(train_module.RunFolderError, match="already holds a run"):
        train(tiny_run_config(run, epochs=2))
    with pytest.raises(train_module.RunFolderError, match=r"lr \(run: 0\.001, now: 0\.5\)"):
        train(tiny_run_config(run, epochs=2, lr=0.5), resume=True)
    with pytest.raises(train_module.RunFolderError, match="already completed 1 epoch"):
        train(tiny_run_config(run, epochs=1), resume=True)
    after = load_checkpoint(run)  # none of the refused calls touched the run
    assert after["position"] == before["position"]
    for name, value in before["model"].items():
        assert torch.equal(value, after["model"][name]), name
    with pytest.raises(train_module.RunFolderError, match="no checkpoint.pt"):
        train(tiny_run_config(tmp_path / "empty", epochs=1), resume=True)


def test_new_run_refuses_a_foreign_folder_unless_overwrite_keeps_other_files(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("not a run")
    with pytest.raises(train_module.RunFolderError, match="not empty"):
        train(tiny_run_config(folder, epochs=1))
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    train(tiny_run_config(folder, epochs=1), overwrite=True)
    assert (folder / "notes.txt").read_text() == "not a run"
    assert (folder / "checkpoint.pt").exists()


def test_resume_survives_a_torn_metrics_line_and_removes_stale_temporary_files(tmp_path):
    run = tmp_path / "run"
    train(tiny_run_config(run, epochs=1))
    with open(run / "metrics.jsonl", "a") as file:
        file.write('{"kind": "train", "ep')  # a kill in the middle of an append
    (run / ".checkpoint.pt.x1y2.tmp").write_bytes(b"partial")
    (run / ".metrics.jsonl.123.tmp").write_text("partial")
    assert len(read_metrics(run / "metrics.jsonl")) == 4  # the torn line is skipped
    train(tiny_run_config(run, epochs=2), resume=True)
    records = read_metrics(run / "metrics.jsonl")
    assert [r["step"] for r in records if r["kind"] == "eval"] == [6, 12]
    assert "ep" not in (run / "metrics.jsonl").read_text().splitlines()[-1][-3:]
    assert not list(run.glob(".*.tmp"))


def test_an_update_that_makes_the_weights_non_finite_stops_before_any_save(tmp_path, monkeypatch):
    class PoisonedAdam(torch.optim.Adam):
        """Adam whose 5th update writes a NaN into the weights (as an infinite step would)."""

        updates = 0

        def step(self, closure=None):
            result = super().step(closure)
            PoisonedAdam.updates += 1
            if PoisonedAdam.updates == 5:
                with torch.no_grad():
                    self.param_groups[0]["params"][0].view(-1)[0] = float("nan")
            return result

    monkeypatch.setattr(train_module.torch.optim, "Adam", PoisonedAdam)
    run = tmp_path / "run"
    with pytest.raises(NonFiniteLossError, match="global step 4 .*made the weights non-finite"):
        train(tiny_run_config(run, max_nonfinite=1000))
    weights = load_checkpoint(run)["model"]  # the step-3 checkpoint, saved before the NaN
    assert load_checkpoint(run)["position"]["global_step"] == 3
    assert all(torch.isfinite(v).all() for v in weights.values() if v.is_floating_point())


def test_a_run_shorter_than_the_log_window_still_logs_its_train_curve(tmp_path):
    run = tmp_path / "run"
    train(tiny_run_config(run, epochs=1, log_every=1000))
    train_records = [r for r in read_metrics(run / "metrics.jsonl") if r["kind"] == "train"]
    assert [r["step"] for r in train_records] == [6]
    assert math.isfinite(train_records[0]["loss"])


def test_evaluate_limit_takes_the_fixed_random_order_not_the_first_images(tmp_path):
    from flows.data import fixed_order, load_dataset

    run = tmp_path / "run"
    train(tiny_run_config(run, epochs=1), progress=False)
    report = evaluate_main([str(run), "--limit", "20", "--output", str(tmp_path / "e.json")])
    data = load_dataset("synthetic", None, train=False, data_shape=(1, 8, 8), synthetic_size=96)
    chosen = data.labels[fixed_order(96)[:20]]
    counts = {name: v["count"] for name, v in report["results"]["per_class"].items()}
    assert counts == {f"class{c}": int((chosen == c).sum()) for c in range(10)}
    assert report["results"]["num_examples"] == 20
    assert not (run / "evaluation.json").exists()  # --output given: nothing beside the run
