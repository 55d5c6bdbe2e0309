"""Atomic, resumable checkpoints.

A checkpoint is one ``torch.save`` dictionary: ``model`` and ``model_config`` (enough for
:func:`flows.load`), and for resuming ``optimizer``, ``scheduler``, ``rng`` (torch CPU/CUDA and
Python generator states; NumPy's global generator is never used) and ``position`` (epoch, step
within the epoch, global step, skipped non-finite steps). It is written to a temporary file in the same folder, flushed to disk,
then moved over the old one with ``os.replace``, so a crash at any moment leaves either the old or
the new checkpoint, never a truncated one.
"""

from __future__ import annotations

import os
import random
import tempfile
from pathlib import Path

import torch

CHECKPOINT_NAME = "checkpoint.pt"


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write ``state`` to ``path`` atomically (temporary file, fsync, ``os.replace``)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(handle, "wb") as file:
            torch.save(state, file)
            file.flush()
            os.fsync(file.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def resolve_checkpoint(path: str | Path) -> Path:
    """A checkpoint file, or a run folder holding :data:`CHECKPOINT_NAME`."""
    path = Path(path)
    candidate = path / CHECKPOINT_NAME if path.is_dir() else path
    if not candidate.is_file():
        raise FileNotFoundError(
            f"no checkpoint at {candidate} (expected a run folder or a .pt file)"
        )
    return candidate


def load_checkpoint(path: str | Path, map_location: str | torch.device = "cpu") -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`."""
    return torch.load(resolve_checkpoint(path), map_location=map_location, weights_only=False)


def rng_state() -> dict:
    """The global generator states of torch (CPU and CUDA) and Python."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
    random.setstate(state["python"])
