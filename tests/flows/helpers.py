"""Shared helpers for the flows tests: perturbed parameters and brute-force Jacobians."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from flows.training import TrainConfig


def perturb(module: nn.Module, seed: int = 0, scale: float = 0.2) -> nn.Module:
    """Add Gaussian noise to every parameter, so no layer sits at its (often trivial) init."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in module.parameters():
            noise = torch.randn(parameter.shape, generator=generator, dtype=torch.float64)
            parameter.add_(scale * noise.to(parameter.dtype))
    return module


def brute_force_logabsdet(function, x: torch.Tensor) -> torch.Tensor:
    """``log|det J|`` of ``function`` at the single example ``x`` (batch of one), via autograd."""
    shape = x.shape

    def flat(v: torch.Tensor) -> torch.Tensor:
        return function(v.reshape(shape)).reshape(-1)

    jacobian = torch.autograd.functional.jacobian(flat, x.reshape(-1), vectorize=True)
    sign, logabsdet = torch.linalg.slogdet(jacobian)
    assert sign != 0
    return logabsdet


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max|a − b| / max|b|``."""
    return float((a - b).abs().max().detach() / b.abs().max().detach())


def tiny_run_config(out: Path, **changes) -> TrainConfig:
    """A two-epoch ``tiny`` Split run on 96 synthetic images (6 steps an epoch), for train tests."""
    values = dict(
        preset="tiny",
        prior="split",
        out=str(out),
        epochs=2,
        synthetic_size=96,
        checkpoint_every=3,
        log_every=2,
        eval_batch_size=64,
    )
    values.update(changes)
    return TrainConfig(**values)
