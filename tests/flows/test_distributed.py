"""DDP with the gloo backend on CPU: 2-process gradients equal the single-process ones."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import flows
from flows.checkpoint import load_checkpoint
from flows.objectives import objective

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]


def _torchrun(*args: str) -> list[str]:
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        *args,
    ]


def _run(command: list[str], **kwargs) -> subprocess.CompletedProcess:
    """Run a torchrun command; on failure, show its output (not just the exit status)."""
    result = subprocess.run(command, capture_output=True, text=True, **kwargs)
    assert result.returncode == 0, (
        f"{' '.join(command)} exited with {result.returncode}\n"
        f"stdout:\n{result.stdout[-3000:]}\nstderr:\n{result.stderr[-5000:]}"
    )
    return result


def _environment() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


@pytest.mark.slow
@pytest.mark.parametrize("prior", ["reweight", "split"])
def test_two_process_gloo_gradients_equal_single_process_gradients(tmp_path, prior):
    torch.manual_seed(0)
    model = flows.build_model("tiny", prior, hidden_channels=6).double()
    generator = torch.Generator().manual_seed(1)
    x = torch.rand(8, 1, 8, 8, generator=generator, dtype=torch.float64) - 0.5
    labels = torch.randint(0, 10, (8,), generator=generator)
    model.initialise(x)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(
                0.05 * torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
            )
    torch.save(
        {"config": model.config.to_dict(), "model": model.state_dict()}, tmp_path / "state.pt"
    )
    torch.save((x, labels), tmp_path / "batch.pt")

    _run(
        _torchrun(
            str(HERE / "ddp_worker.py"),
            str(tmp_path / "state.pt"),
            str(tmp_path / "batch.pt"),
            str(tmp_path / "grads.pt"),
        ),
        env=_environment(),
        cwd=tmp_path,
    )
    distributed = torch.load(tmp_path / "grads.pt")

    # Single process: the mean over the two halves (each with its rank's noise) of the objective.
    losses = []
    for rank, half in enumerate((slice(0, 4), slice(4, 8))):
        output = model(x[half], torch.Generator().manual_seed(100 + rank))
        losses.append(
            objective(
                model.config.objective,
                output.class_log_likelihoods,
                output.logits,
                labels[half],
                model.num_dims,
            )
        )
    (sum(losses) / 2).backward()
    for name, parameter in model.named_parameters():
        assert torch.allclose(distributed[name], parameter.grad, rtol=1e-10, atol=1e-13), name
    assert any(g.abs().sum() > 0 for g in distributed.values())


@pytest.mark.slow
def test_train_cli_runs_under_torchrun_with_gloo(tmp_path):
    out = tmp_path / "run"
    _run(
        _torchrun(
            "-m",
            "flows.train",
            "--preset",
            "tiny",
            "--prior",
            "base",
            "--out",
            str(out),
            "--synthetic-size",
            "64",
            "--epochs",
            "1",
            "--batch-size",
            "16",
        ),
        env=_environment(),
        cwd=REPO,
    )
    assert json.loads((out / "config.json").read_text())["world_size"] == 2
    assert load_checkpoint(out)["position"]["global_step"] == 4


@pytest.mark.parametrize(
    ("device", "local_rank", "expected_device", "expected_backend"),
    [
        ("cuda", "1", torch.device("cuda:1"), "nccl"),  # torchrun: each process its own GPU
        ("cuda:0", "1", torch.device("cuda:0"), "nccl"),  # an explicit GPU is kept
        ("cpu", "1", None, "gloo"),
    ],
)
def test_distributed_init_binds_each_process_to_its_gpu_before_nccl(
    monkeypatch, device, local_rank, expected_device, expected_backend
):
    """NCCL's tensor-less collectives (the barrier after a checkpoint) run on the current device,
    so each process must select cuda:LOCAL_RANK before joining; CPU runs select nothing. No GPU is
    needed: the torch calls are recorded, not made."""
    from flows import training as train_module

    calls = []
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", local_rank)
    monkeypatch.setattr(train_module.dist, "is_initialized", lambda: False)
    monkeypatch.setattr(train_module.dist, "get_rank", lambda: int(local_rank))
    monkeypatch.setattr(torch.cuda, "set_device", lambda d: calls.append(("set_device", d)))
    monkeypatch.setattr(
        train_module.dist, "init_process_group", lambda backend: calls.append(("init", backend))
    )
    assert train_module._init_distributed(device) == (int(local_rank), 2)
    expected = [("set_device", expected_device)] if expected_device is not None else []
    assert calls == [*expected, ("init", expected_backend)]
