"""Train a class-conditional GLOW: ``python -m flows.train --preset P --prior Q --out RUN_DIR``.

Writes into ``RUN_DIR``: ``config.json`` (the resolved training and model configuration),
``checkpoint.pt`` (atomic, every ``--checkpoint-every`` steps and at each epoch end),
``metrics.jsonl`` (one JSON object per logged train window and per epoch evaluation) and
``training_curves.png``. ``--resume`` continues a killed run exactly where its last checkpoint
stopped: every random draw of a step (data order, augmentation, dequantisation, noise channels) is
a function of ``(seed, epoch)`` or ``(seed, step, rank)``, so a resumed run reproduces an
uninterrupted one.

Distributed: run under ``torchrun --nproc-per-node N -m flows.train …``; each process takes
``batch_size / N`` images of every global batch and DDP averages gradients (gloo on CPU, NCCL on
CUDA). Only rank 0 writes files. ``--amp`` runs the coupling networks in bfloat16 on any device
(the flow itself stays float32, so inverse and log-determinant stay exact: see
``ConditionalGlow.set_coupling_precision``); on CUDA, batches go through pinned host memory.
Convolution weights are kept channels-last on every device (``--no-channels-last`` disables it):
on this 2-core CPU our model trained 17–48% faster that way in two benchmark runs
(``benchmarks/flows_train_speed.py``).
"""

from __future__ import annotations

import argparse
import dataclasses
import fcntl
import gc
import json
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from flows import arguments
from flows.checkpoint import (
    CHECKPOINT_NAME,
    MODEL_KEYS,
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from flows.data import (
    DATASETS,
    DatasetNotFoundError,
    ImageData,
    augment,
    fixed_subset,
    load_dataset,
)
from flows.evaluate import evaluate_model
from flows.model import PRIORS, ConditionalGlow, build_model
from flows.objectives import objective
from flows.preprocess import bits_per_dim, dequantize, to_model_range
from flows.presets import PRESETS, get_preset

METRICS_NAME = "metrics.jsonl"
CONFIG_NAME = "config.json"
PLOT_NAME = "training_curves.png"
LOCK_NAME = ".lock"
#: The files a run folder holds (``--overwrite`` removes these and nothing else).
RUN_FILES = (CONFIG_NAME, CHECKPOINT_NAME, METRICS_NAME, PLOT_NAME)
#: Settings that ``--resume`` may change: where and how fast a run computes, and how long it goes.
RESUMABLE_CHANGES = ("epochs", "device", "workers", "threads", "data_root", "out")
_INIT_STREAM = 2**32 - 1  # generator key of the actnorm initialisation batch


@dataclass(frozen=True)
class TrainConfig:
    """A training run, resolved from the CLI (``None`` means: take the preset's value)."""

    preset: str
    prior: str
    out: str
    dataset: str | None = None
    data_root: str | None = None
    download: bool = False
    epochs: int | None = None
    batch_size: int | None = None
    lr: float | None = None
    levels: int | None = None
    steps: int | None = None
    hidden_channels: int | None = None
    label_smoothing: float = 0.0
    split_sigma: float = 0.5
    split_weight: float = 1.0
    seed: int = 0
    device: str = "cpu"
    workers: int = 0
    threads: int | None = None
    amp: bool = False
    channels_last: bool = True
    checkpoint_every: int = 200
    log_every: int = 50
    eval_batch_size: int = 256
    max_nonfinite: int = 10
    train_limit: int | None = None
    eval_limit: int | None = None
    synthetic_size: int = 512
    init_batch_size: int = 256

    def __post_init__(self) -> None:
        """Reject impossible values with a ``ValueError`` naming the field and its valid range."""
        if self.preset not in PRESETS:
            raise ValueError(f"preset must be one of {sorted(PRESETS)}, got {self.preset!r}")
        if self.prior not in PRIORS:
            raise ValueError(f"prior must be one of {sorted(PRIORS)}, got {self.prior!r}")
        if self.dataset is not None and self.dataset not in DATASETS:
            raise ValueError(f"dataset must be one of {DATASETS}, got {self.dataset!r}")
        at_least = {
            "epochs": 1, "batch_size": 1, "levels": 1, "steps": 1, "hidden_channels": 1,
            "seed": 0, "workers": 0, "threads": 1, "checkpoint_every": 1, "log_every": 1,
            "eval_batch_size": 1, "max_nonfinite": 0, "train_limit": 1, "eval_limit": 1,
            "synthetic_size": 1, "init_batch_size": 1,
        }  # fmt: skip
        for name, low in at_least.items():
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int) or value < low:
                raise ValueError(f"{name} must be an integer >= {low}, got {value!r}")
        for name, valid, ok in (
            ("lr", "a finite number > 0", lambda v: v > 0),
            ("split_sigma", "a finite number > 0", lambda v: v > 0),
            ("split_weight", "a finite number >= 0", lambda v: v >= 0),
            ("label_smoothing", "in [0, 1)", lambda v: 0 <= v < 1),
        ):
            value = getattr(self, name)
            if value is None:
                continue
            if not (isinstance(value, int | float) and math.isfinite(value) and ok(value)):
                raise ValueError(f"{name} must be {valid}, got {value!r}")

    def resolved(self) -> TrainConfig:
        """Fill the ``None`` fields from the preset."""
        preset = get_preset(self.preset)
        return dataclasses.replace(
            self,
            dataset=self.dataset if self.dataset is not None else preset.dataset,
            epochs=self.epochs if self.epochs is not None else preset.epochs,
            batch_size=self.batch_size if self.batch_size is not None else preset.batch_size,
            lr=self.lr if self.lr is not None else preset.lr,
        )


class RunFolderError(ValueError):
    """The run folder cannot be used as asked (in use, not a run, already a run, unwritable)."""


class NonFiniteLossError(RuntimeError):
    """Too many consecutive non-finite losses; the weights were not touched by any of them."""


def train(
    config: TrainConfig, resume: bool = False, overwrite: bool = False, progress: bool = True
) -> dict:
    """Run training, or continue it from its checkpoint (``resume=True``); return the last
    evaluation metrics.

    The run folder ``config.out``:

    - is locked for the whole run: a second training on the same folder fails at once
      (:class:`RunFolderError`), instead of taking over the first one's checkpoint;
    - for a new run, must be new or empty; ``overwrite=True`` first deletes an old run's files
      (:data:`RUN_FILES`, nothing else);
    - with ``resume=True``, must hold a checkpoint, and ``config`` must equal the checkpointed
      run's settings except :data:`RESUMABLE_CHANGES` (a changed ``lr`` or ``prior`` is refused,
      never silently ignored).

    Raises:
        RunFolderError: the folder is in use, not empty, holds a run (without ``resume``) or
            none (with ``resume``), or cannot be written.
            With ``resume=True``: changed settings, or no epoch left to train.
        NonFiniteLossError: too many non-finite steps, or an update made the weights
            non-finite; the checkpoint on disk is the last one with finite weights.
    """
    config = config.resolved()
    rank, world = _init_distributed(config.device)
    lock = _RunLock(Path(config.out)) if rank == 0 else _NoLock()
    with lock:
        if rank == 0:
            _prepare_run_folder(Path(config.out), resume, overwrite)
        return _train(config, resume, rank, world, progress)


def _train(config: TrainConfig, resume: bool, rank: int, world: int, progress: bool) -> dict:
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    device = torch.device(_local_device(config.device))
    out = Path(config.out)
    checkpoint_path = out / CHECKPOINT_NAME
    preset = get_preset(config.preset)
    if config.batch_size % world:
        raise ValueError(f"batch size {config.batch_size} is not divisible by {world} processes")
    checkpoint = None
    if resume:
        checkpoint = load_checkpoint(checkpoint_path, map_location=device, required=MODEL_KEYS)
        _check_resumable(config, checkpoint)

    train_data = _subset(_load(config, preset, train=True), config.train_limit)
    test_data = _subset(_load(config, preset, train=False), config.eval_limit)

    overrides = {
        k: getattr(config, k)
        for k in ("levels", "steps", "hidden_channels")
        if getattr(config, k) is not None
    }
    torch.manual_seed(config.seed)  # the coupling convolutions draw from the global generator
    model = build_model(
        preset,
        config.prior,
        num_classes=len(train_data.classes),
        generator=torch.Generator().manual_seed(config.seed),
        label_smoothing=config.label_smoothing,
        split_sigma=config.split_sigma,
        split_weight=config.split_weight,
        coupling_precision="bfloat16" if config.amp else "float32",
        **overrides,
    ).to(device)
    if config.channels_last:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.Adam(model.parameters(), lr=config.lr)
    scheduler = torch.optim.lr_scheduler.StepLR(
        optimizer, step_size=preset.lr_decay_epochs, gamma=preset.lr_decay_factor
    )
    position = {"epoch": 0, "step": 0, "global_step": 0, "nonfinite_steps": 0}
    if checkpoint is not None:
        model.load_state_dict(checkpoint["model"])
        optimizer.load_state_dict(checkpoint["optimizer"])
        scheduler.load_state_dict(checkpoint["scheduler"])
        set_rng_state(checkpoint["rng"])
        position = dict(checkpoint["position"])
        if rank == 0:
            _truncate_metrics(out / METRICS_NAME, position["global_step"])
    else:
        _initialise_actnorm(model, train_data, config, device)
        if rank == 0:
            (out / METRICS_NAME).unlink(missing_ok=True)
    if rank == 0:
        _write_atomic(out / CONFIG_NAME, json.dumps(_run_record(config, model, world), indent=2))
    network = DistributedDataParallel(model) if world > 1 else model

    def save(next_position: dict) -> None:
        if rank == 0:
            save_checkpoint(
                checkpoint_path,
                {
                    "model": model.state_dict(),
                    "model_config": model.config.to_dict(),
                    "optimizer": optimizer.state_dict(),
                    "scheduler": scheduler.state_dict(),
                    "rng": rng_state(),
                    "position": next_position,
                    "train_config": dataclasses.asdict(config),
                },
            )
        if world > 1:
            dist.barrier()

    steps_per_epoch = len(train_data) // config.batch_size
    if steps_per_epoch == 0:
        raise ValueError(f"{len(train_data)} training images make no batch of {config.batch_size}")
    per_rank = config.batch_size // world
    last_eval: dict = {}
    consecutive_nonfinite = 0
    for epoch in range(position["epoch"], config.epochs):
        model.train()
        order = torch.randperm(len(train_data), generator=_generator(config.seed, epoch))
        first_step = position["step"] if epoch == position["epoch"] else 0
        bar = tqdm(
            range(first_step, steps_per_epoch),
            desc=f"epoch {epoch + 1}/{config.epochs}",
            disable=rank != 0 or not progress,
            initial=first_step,
            total=steps_per_epoch,
            leave=False,
            mininterval=0.5,
        )
        window: dict[str, list[float]] = {"loss": [], "bits_per_dim": [], "accuracy": []}
        for step in bar:
            global_step = position["global_step"]
            batch = order[step * config.batch_size : (step + 1) * config.batch_size]
            batch = batch[rank * per_rank : (rank + 1) * per_rank]
            host = _generator(config.seed, epoch, step, rank)
            x = to_model_range(train_data.images[batch])
            x = dequantize(augment(x, preset.crop_padding, preset.hflip, host), host)
            if device.type == "cuda":
                x = x.pin_memory()
            x = x.to(device, non_blocking=True)
            labels = train_data.labels[batch].to(device, non_blocking=True)
            noise = _generator(config.seed, epoch, step, rank, 1, device=device)
            output = network(x, noise)
            class_ll = output.class_log_likelihoods
            loss = objective(
                model.config.objective,
                class_ll,
                output.logits,
                labels,
                model.num_dims,
                model.config.split_weight,
            )
            optimizer.zero_grad(set_to_none=True)
            finite = _all_finite(loss, world)
            if finite:
                loss.backward()
                finite = _gradients_finite(model, world)
            if finite:
                optimizer.step()
                consecutive_nonfinite = 0
                if not _parameters_finite(model, world):
                    raise NonFiniteLossError(
                        f"the update at global step {global_step} (epoch {epoch + 1}, step {step}) "
                        f"made the weights non-finite (learning rate {config.lr:g} too large?); "
                        f"nothing was saved after it; last good checkpoint: {checkpoint_path}"
                    )
            else:
                optimizer.zero_grad(set_to_none=True)
                consecutive_nonfinite += 1
                position["nonfinite_steps"] += 1
                if consecutive_nonfinite > config.max_nonfinite:
                    raise NonFiniteLossError(
                        f"non-finite loss or gradient at global step {global_step} (epoch "
                        f"{epoch + 1}, step {step}), {consecutive_nonfinite} steps in a row; "
                        f"no update was applied; last good checkpoint: {checkpoint_path}"
                    )
            position.update(step=step + 1, global_step=global_step + 1)
            if finite:
                with torch.no_grad():
                    log_px = torch.logsumexp(class_ll, 1) - math.log(class_ll.shape[1])
                    window["loss"].append(float(loss))
                    window["bits_per_dim"].append(
                        float(bits_per_dim(log_px, model.num_dims).mean())
                    )
                    window["accuracy"].append(float((class_ll.argmax(1) == labels).double().mean()))
                bar.set_postfix(
                    loss=f"{window['loss'][-1]:.4f}",
                    bpd=f"{window['bits_per_dim'][-1]:.3f}",
                    acc=f"{window['accuracy'][-1]:.3f}",
                    refresh=False,
                )
            last_step = step + 1 == steps_per_epoch  # an epoch's end closes its window too
            if position["global_step"] % config.log_every == 0 or last_step:
                if rank == 0 and window["loss"]:
                    _append_metrics(
                        out,
                        {
                            "kind": "train",
                            "epoch": epoch + 1,
                            "step": position["global_step"],
                            "lr": optimizer.param_groups[0]["lr"],
                            "nonfinite_steps": position["nonfinite_steps"],
                            **{k: float(np.mean(v)) for k, v in window.items()},
                        },
                    )
                window = {k: [] for k in window}
            if (
                position["global_step"] % config.checkpoint_every == 0
                and step + 1 < steps_per_epoch
            ):
                save(dict(position))
        bar.close()
        scheduler.step()
        position.update(epoch=epoch + 1, step=0)
        if rank == 0:
            started = time.perf_counter()
            last_eval = evaluate_model(
                model, test_data, config.eval_batch_size, config.seed, device, progress=progress
            )
            record = {
                "kind": "eval",
                "epoch": epoch + 1,
                "step": position["global_step"],
                "seconds": time.perf_counter() - started,
                **{k: v for k, v in last_eval.items() if k != "per_class"},
            }
            _append_metrics(out, record)
            tqdm.write(
                f"epoch {epoch + 1}: test accuracy {last_eval['accuracy']:.4f}, "
                f"bits/dim {last_eval['bits_per_dim']:.4f}"
            )
            plot_metrics(out / METRICS_NAME, out / PLOT_NAME)
        if world > 1:
            dist.barrier()
        save(dict(position))
    if world > 1:
        # Release DDP (its reducer holds gloo work and tensors) while the interpreter is fully
        # alive: if it were collected during interpreter shutdown, gloo's threads could abort
        # the process ("terminate called without an active exception").
        del network
        gc.collect()
        dist.barrier()
        dist.destroy_process_group()
    return last_eval


def _generator(*key: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator whose seed is a hash of ``key`` (seed, epoch, step, rank, stream)."""
    seed = int(np.random.SeedSequence(list(key)).generate_state(1, dtype=np.uint64)[0]) % 2**63
    return torch.Generator(device=device).manual_seed(seed)


def _parameters_finite(model: torch.nn.Module, world: int) -> bool:
    flag = torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all()
    flag = flag.to(torch.float32).reshape(1)
    if world > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def _all_finite(loss: torch.Tensor, world: int) -> bool:
    flag = torch.isfinite(loss.detach()).to(torch.float32).reshape(1)
    if world > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def _gradients_finite(model: torch.nn.Module, world: int) -> bool:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    flag = torch.stack([torch.isfinite(g).all() for g in grads]).all().to(torch.float32).reshape(1)
    if world > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def _initialise_actnorm(
    model: ConditionalGlow, data: ImageData, config: TrainConfig, device: torch.device
) -> None:
    """Data-dependent actnorm initialisation on a seeded batch (the same one on every rank)."""
    generator = _generator(config.seed, _INIT_STREAM)
    count = min(config.init_batch_size, len(data))
    index = torch.randperm(len(data), generator=generator)[:count]
    x = dequantize(to_model_range(data.images[index]), generator).to(device)
    model.initialise(x, _generator(config.seed, _INIT_STREAM, 1, device=device))


def _load(config: TrainConfig, preset, train: bool) -> ImageData:
    return load_dataset(
        config.dataset,
        config.data_root,
        train=train,
        download=config.download,
        data_shape=preset.data_shape,
        synthetic_size=config.synthetic_size,
        workers=config.workers,
    )


def _subset(data: ImageData, limit: int | None) -> ImageData:
    """All of ``data``, or ``limit`` images of it in the fixed random order (never "the first
    ``limit``": a dataset stored class by class would give one class)."""
    return data if limit is None else fixed_subset(data, limit)


class _NoLock:
    def __enter__(self) -> None:
        return None

    def __exit__(self, *exc: object) -> None:
        return None


class _RunLock:
    """An exclusive ``flock`` on ``RUN/.lock`` for the life of a training; released on any exit,
    a kill included (the kernel drops it with the process)."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.path = folder / LOCK_NAME
        self.handle = None

    def __enter__(self) -> _RunLock:
        problem = arguments.writable_dir(self.folder)
        if problem is not None:
            raise RunFolderError(f"out: {problem}")
        self.handle = open(self.path, "a+")
        try:
            fcntl.flock(self.handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self.handle.seek(0)
            owner = self.handle.read().strip() or "unknown"
            self.handle.close()
            raise RunFolderError(
                f"out: run folder {self.folder} is in use by another training (pid {owner}); "
                "wait for it to finish or pass another --out"
            ) from None
        self.handle.seek(0)
        self.handle.truncate()
        self.handle.write(str(os.getpid()))
        self.handle.flush()
        return self

    def __exit__(self, *exc: object) -> None:
        self.path.unlink(missing_ok=True)
        self.handle.close()


def _prepare_run_folder(out: Path, resume: bool, overwrite: bool) -> None:
    """Check ``out`` for what is asked (see :func:`train`); remove temporary files of killed runs."""
    for stale in out.glob(".*.tmp"):
        stale.unlink(missing_ok=True)
    holds_run = (out / CHECKPOINT_NAME).exists()
    if resume:
        if not holds_run:
            raise RunFolderError(f"out: no {CHECKPOINT_NAME} in {out} to resume")
        return
    if holds_run and not overwrite:
        raise RunFolderError(
            f"out: {out} already holds a run; pass --resume to continue it, --overwrite to "
            "replace it, or another --out"
        )
    if overwrite:
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        return
    others = sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME)
    if others:
        shown = ", ".join(others[:3]) + (", ..." if len(others) > 3 else "")
        raise RunFolderError(
            f"out: {out} is not empty ({shown}) and holds no run of this package; pass an empty "
            "or new folder, or --overwrite to write the run files there anyway"
        )


def _check_resumable(config: TrainConfig, checkpoint: dict) -> None:
    """Refuse to resume with settings that differ from the checkpointed run's."""
    saved = checkpoint.get("train_config")
    if not isinstance(saved, dict):
        raise CheckpointError("the checkpoint holds no train_config: it cannot be resumed")
    given = dataclasses.asdict(config)
    changed = [
        f"{name} (run: {saved.get(name)!r}, now: {value!r})"
        for name, value in given.items()
        if name not in RESUMABLE_CHANGES and name in saved and saved[name] != value
    ]
    if changed:
        raise RunFolderError(
            f"resume: these settings differ from the run's: {'; '.join(changed)}. A resumed run "
            f"keeps its settings (only {', '.join(RESUMABLE_CHANGES)} may change); start a new "
            "run in another --out instead"
        )
    done = checkpoint["position"]["epoch"]
    if done >= config.epochs:
        raise RunFolderError(
            f"epochs: the run has already completed {done} epoch(s) and epochs is {config.epochs}; "
            f"pass a larger --epochs to continue it"
        )


def _init_distributed(device: str) -> tuple[int, int]:
    """Join the torchrun process group (NCCL for CUDA, gloo otherwise); return (rank, world size).

    On CUDA each process first makes its own GPU (``cuda:LOCAL_RANK``) the current device, so that
    NCCL's collectives without a tensor (``dist.barrier`` after each checkpoint) run there and not
    all on GPU 0.
    """
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world > 1 and not dist.is_initialized():
        cuda = device.startswith("cuda")
        local = _local_device(device)
        if cuda and local != "cuda":
            torch.cuda.set_device(torch.device(local))
        dist.init_process_group(backend="nccl" if cuda else "gloo")
    return (dist.get_rank(), world) if world > 1 else (0, 1)


def _local_device(device: str) -> str:
    if device == "cuda" and "LOCAL_RANK" in os.environ:
        return f"cuda:{os.environ['LOCAL_RANK']}"
    return device


def _run_record(config: TrainConfig, model: ConditionalGlow, world: int) -> dict:
    return {
        "train": dataclasses.asdict(config),
        "preset": dataclasses.asdict(get_preset(config.preset)),
        "model": model.config.to_dict(),
        "world_size": world,
        "torch": torch.__version__,
    }


def _append_metrics(out: Path, record: dict) -> None:
    with open(out / METRICS_NAME, "a") as file:
        file.write(json.dumps(record) + "\n")


def _write_atomic(path: Path, text: str) -> None:
    """Replace ``path`` by ``text`` through a temporary file and ``os.replace`` (never half-written)."""
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    temporary.write_text(text)
    os.replace(temporary, path)


def _truncate_metrics(path: Path, global_step: int) -> None:
    """Drop records written after the checkpoint we resume from (they will be written again).

    Atomic (a kill leaves the old or the new file), and a torn last line (a kill while it was
    being appended) is dropped.
    """
    if path.exists():
        kept = [r for r in read_metrics(path) if r["step"] <= global_step]
        _write_atomic(path, "".join(json.dumps(r) + "\n" for r in kept))


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a ``metrics.jsonl``; a torn last line (a killed append) is skipped."""
    lines = [line for line in Path(path).read_text().splitlines() if line.strip()]
    records = []
    for number, line in enumerate(lines, 1):
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError:
            if number < len(lines):
                raise ValueError(f"{path}: line {number} is not JSON: {line[:80]!r}") from None
    return records


def plot_metrics(metrics_path: Path, output: Path):
    """Loss, bits/dim and accuracy against the global step (train windows and evaluations)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    records = read_metrics(metrics_path)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    for axis, key in zip(axes, ("loss", "bits_per_dim", "accuracy"), strict=True):
        for kind, style in (("train", "-"), ("eval", "o-")):
            points = [(r["step"], r[key]) for r in records if r["kind"] == kind]
            if points:
                steps, values = zip(*points, strict=True)
                axis.plot(steps, values, style, label=kind)
        axis.set_xlabel("step")
        axis.set_title(key.replace("_", " "))
        axis.legend()
    fig.tight_layout()
    fig.savefig(output, dpi=100)
    plt.close(fig)
    return fig, axes


#: Help text and argument type of every :class:`TrainConfig` field the command line sets; the
#: defaults are the dataclass's (written once), ``None`` meaning "the preset's value".
_OPTIONS: dict[str, tuple[object, str]] = {
    "dataset": (str, "default: the preset's dataset"),
    "data_root": (str, "folder holding the dataset (default: $CGM_DATA_ROOT)"),
    "epochs": (arguments.positive_int, "default: the preset's"),
    "batch_size": (arguments.positive_int, "global batch size, all processes (default: preset)"),
    "lr": (arguments.positive_float, "Adam learning rate (default: the preset's)"),
    "levels": (arguments.positive_int, "multi-scale levels (default: the preset's)"),
    "steps": (arguments.positive_int, "flow steps per level (default: the preset's)"),
    "hidden_channels": (arguments.positive_int, "coupling network width (default: preset)"),
    "label_smoothing": (arguments.unit_fraction, "in [0, 1)"),
    "split_sigma": (arguments.positive_float, "Split prior: sigma of the class-independent part"),
    "split_weight": (arguments.nonnegative_float, "Split prior: weight of the classification term"),
    "seed": (arguments.nonnegative_int, "seed of every random draw of the run"),
    "device": (str, "cpu, cuda or cuda:N"),
    "workers": (arguments.nonnegative_int, "worker processes decoding an ImageFolder at start-up"),
    "threads": (arguments.positive_int, "torch intra-op threads (1 is fastest on a busy 2-core CPU)"),
    "checkpoint_every": (arguments.positive_int, "steps between checkpoints (and each epoch end)"),
    "log_every": (arguments.positive_int, "steps per logged train window"),
    "eval_batch_size": (arguments.positive_int, "batch size of the end-of-epoch evaluation"),
    "max_nonfinite": (
        arguments.nonnegative_int,
        "consecutive non-finite steps skipped before stopping with an error",
    ),
    "train_limit": (arguments.positive_int, "train on N images of a fixed random order"),
    "eval_limit": (arguments.positive_int, "evaluate on N test images of the fixed random order"),
    "synthetic_size": (arguments.positive_int, "images of the synthetic dataset"),
    "init_batch_size": (arguments.positive_int, "images of the actnorm initialisation batch"),
}


def _parser() -> arguments.ArgumentParser:
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    parser = arguments.ArgumentParser(
        prog="python -m flows.train",
        description=__doc__.split("\n")[0],
        argument_default=argparse.SUPPRESS,  # only what is given; defaults come from TrainConfig
    )
    parser.add_argument("--preset", choices=sorted(PRESETS))
    parser.add_argument(
        "--prior", choices=sorted(PRIORS), help="the training setting (base, reweight, split, ...)"
    )
    parser.add_argument("--out", required=True, help="run folder (new or empty, unless --resume)")
    for name, (kind, text) in _OPTIONS.items():
        default = defaults[name]
        shown = "" if default is None else f" (default: {default})"
        extra = {"choices": DATASETS} if name == "dataset" else {}
        parser.add_argument(
            f"--{name.replace('_', '-')}", type=kind, help=text + shown, metavar=None, **extra
        )
    parser.add_argument("--download", action="store_true", help="let torchvision download data")
    parser.add_argument(
        "--no-channels-last",
        dest="channels_last",
        action="store_false",
        help="keep convolution weights in NCHW (channels-last is faster on CPU: see benchmarks/)",
    )
    parser.add_argument(
        "--amp",
        action="store_true",
        help="coupling networks in bfloat16 (faster on CPUs with AVX512-BF16 or AMX and on GPUs; "
        "the flow stays float32 and exact)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its checkpoint"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in --out even though it holds a run or other files (run files are "
        "replaced, other files left alone)",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """Parse the command line into a :class:`TrainConfig` (argument errors exit with status 2).

    With ``--resume``, the run's saved ``config.json`` is used; settings given again must equal
    the saved ones, except :data:`RESUMABLE_CHANGES` (``--epochs``, ``--device``, ``--workers``,
    ``--threads``, ``--data-root``), which may change.
    """
    return _parse(_parser(), argv)[0]


def _parse(
    parser: arguments.ArgumentParser, argv: Sequence[str] | None
) -> tuple[TrainConfig, bool, bool]:
    given = vars(parser.parse_args(argv))
    resume, overwrite = given.pop("resume", False), given.pop("overwrite", False)
    out = Path(given["out"])
    if resume and overwrite:
        parser.error("--resume and --overwrite exclude each other")
    if resume:
        saved_path = out / CONFIG_NAME
        if not (out / CHECKPOINT_NAME).exists() or not saved_path.exists():
            parser.error(f"--resume: no checkpoint and config.json in {out}")
        try:
            values = json.loads(saved_path.read_text())["train"]
        except (ValueError, KeyError, TypeError) as error:
            parser.error(f"--resume: {saved_path} is not a run configuration ({error})")
        changed = [
            f"--{name.replace('_', '-')} {value} (the run has {values.get(name)})"
            for name, value in given.items()
            if name not in RESUMABLE_CHANGES and values.get(name) != value
        ]
        if changed:
            parser.error(
                f"--resume keeps the run's settings, but {'; '.join(changed)} differ. Only "
                "--epochs, --device, --workers, --threads and --data-root may change; start a new "
                "run in another --out to change the others"
            )
        values.update({k: given[k] for k in RESUMABLE_CHANGES if k in given})
        values["out"] = str(out)
    else:
        if "preset" not in given or "prior" not in given:
            parser.error("--preset and --prior are required (unless --resume)")
        if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 owns the folder
            _check_new_out(parser, out, overwrite)
        values = given
        root = arguments.resolve_data_root(given.get("data_root"))
        values["data_root"] = None if root is None else str(root)
    try:
        config = TrainConfig(**values)
    except (TypeError, ValueError) as error:
        parser.error(str(error))
    return config, resume, overwrite


def _check_new_out(parser: arguments.ArgumentParser, out: Path, overwrite: bool) -> None:
    """``--out`` for a new run: writable, and empty or new unless ``--overwrite``."""
    if out.exists() and not out.is_dir():
        parser.error(f"--out {str(out)!r} exists and is not a folder")
    if out.is_dir() and not overwrite:
        if (out / CHECKPOINT_NAME).exists():
            parser.error(
                f"--out {out} already holds a run; pass --resume to continue it, --overwrite to "
                "replace it, or another --out"
            )
        if any(p.name != LOCK_NAME for p in out.iterdir()):
            parser.error(
                f"--out {out} is not empty and holds no run of this package; pass a new or empty "
                "folder, or --overwrite to write the run files there anyway"
            )
    problem = arguments.writable_dir(out)
    if problem is not None:
        parser.error(f"--out: {problem}")


def main(argv: Sequence[str] | None = None) -> dict:
    parser = _parser()
    config, resume, overwrite = _parse(parser, argv)
    try:
        return train(config, resume=resume, overwrite=overwrite)
    except (DatasetNotFoundError, RunFolderError, CheckpointError) as error:
        arguments.fail(parser.prog, str(error))


if __name__ == "__main__":
    main()
