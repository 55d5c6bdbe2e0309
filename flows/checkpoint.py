"""Atomic, resumable checkpoints.

A checkpoint is one ``torch.save`` dictionary: ``model`` and ``model_config`` (enough for
:func:`flows.load`), and for resuming ``optimizer``, ``scheduler``, ``rng`` (torch CPU/CUDA and
Python generator states; NumPy's global generator is never used) and ``position`` (epoch, step
within the epoch, global step, skipped non-finite steps). It is written to a temporary file in the same folder, flushed to disk,
then moved over the old one with ``os.replace``, so a crash at any moment leaves either the old or
the new checkpoint, never a truncated one.

Loading never runs code from the file: :func:`load_checkpoint` uses ``torch.load(...,
weights_only=True)``, which builds tensors, numbers, strings and containers only (every
checkpoint this package writes is made of these). A file holding anything else (a pickle that
would call a function, say) is refused with :class:`CheckpointError` before any of it runs.
"""

from __future__ import annotations

import os
import pickle
import random
import tempfile
from pathlib import Path

import torch

CHECKPOINT_NAME = "checkpoint.pt"
#: What :func:`flows.load` needs in a checkpoint.
MODEL_KEYS = ("model", "model_config")


class CheckpointError(ValueError):
    """A file is not a checkpoint this package can load (unsafe, unreadable or incomplete)."""


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


def load_checkpoint(
    path: str | Path,
    map_location: str | torch.device = "cpu",
    required: tuple[str, ...] = (),
) -> dict:
    """Read a checkpoint written by :func:`save_checkpoint`, weights-only (no code runs).

    Raises:
        FileNotFoundError: no checkpoint at ``path`` (:func:`resolve_checkpoint`).
        CheckpointError: the file would need a full unpickler (it could run code: refused), is
            not a torch file, or is not a dictionary holding the ``required`` keys.
    """
    file = resolve_checkpoint(path)
    try:
        state = torch.load(file, map_location=map_location, weights_only=True)
    except pickle.UnpicklingError as error:
        blocked = [line.strip() for line in str(error).splitlines() if "GLOBAL" in line]
        if not blocked:  # not a pickle this unpickler understands at all
            lines = [line.strip() for line in str(error).splitlines() if line.strip()]
            marker = [i for i, line in enumerate(lines) if "WeightsUnpickler error" in line]
            detail = lines[marker[0] + 1] if marker and marker[0] + 1 < len(lines) else lines[-1]
            raise CheckpointError(
                f"cannot read {file}: not a torch checkpoint ({detail[:200]})"
            ) from None
        raise CheckpointError(
            f"refused to load {file}: not a checkpoint of this package ({blocked[0]}); loading it "
            "would need a full unpickler, which can run arbitrary code"
        ) from None
    except Exception as error:  # torch raises RuntimeError, KeyError, EOFError… on non-torch files
        raise CheckpointError(
            f"cannot read {file}: not a torch checkpoint ({type(error).__name__}: {error})"
        ) from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{file} holds a {type(state).__name__}, not a checkpoint dictionary")
    missing = [key for key in required if key not in state]
    if missing:
        raise CheckpointError(
            f"{file} is not a model checkpoint of this package: it lacks {', '.join(missing)}"
        )
    return state


def rng_state() -> dict:
    """The global generator states of torch (CPU and CUDA) and Python."""
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "python": random.getstate(),
    }


def set_rng_state(state: dict) -> None:
    """Restore what :func:`rng_state` returned.

    The states are byte tensors that torch only accepts on the CPU; a checkpoint loaded with
    ``map_location="cuda"`` (a resumed GPU run) holds them on the GPU, so they are moved back.
    """
    torch.set_rng_state(state["torch"].cpu())
    if state["cuda"] and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([s.cpu() for s in state["cuda"]])
    random.setstate(state["python"])
