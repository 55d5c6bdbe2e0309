"""Training a class-conditional GLOW, exactly resumable: the library behind ``python -m flows.train``.

A run writes into its folder ``out``: ``config.json`` (the resolved training and model
configuration), ``checkpoint.pt`` (atomic, every ``checkpoint_every`` steps and at each epoch
end), ``metrics.jsonl`` (one JSON object per logged train window and per epoch evaluation) and
``training_curves.png``. ``train(config, resume=True)`` continues a killed run exactly where its
last checkpoint stopped: every random draw of a step (data order, augmentation, dequantisation,
noise channels) is a function of ``(seed, epoch)`` or ``(seed, step, rank)``, so a resumed run
reproduces an uninterrupted one.

How a batch flows (design note; the file of each step):

1. ``flows/data.py``: the split as in-memory 8-bit tensors; the epoch's order is a seeded
   permutation;
2. ``flows/preprocess.py`` :func:`~flows.preprocess.model_input`: range mapping, augmentation,
   dequantisation;
3. ``flows/model.py``: padding and noise channels, the flow, the class-conditional prior →
   ``(B, C)`` class log-likelihoods (one encoding for all classes);
4. ``flows/objectives.py``: the variant's objective (:mod:`flows.variants`);
5. here: the optimiser step with the non-finite guards, logging, evaluation
   (``flows/evaluation.py``) and checkpointing (``flows/checkpoint.py``).

Distributed: under ``torchrun --nproc-per-node N``, each process takes ``batch_size / N`` images of
every global batch and DDP averages gradients (gloo on CPU, NCCL on CUDA). Only rank 0 writes files.
``amp`` runs the coupling networks in bfloat16 on any device (the flow itself stays float32, so
inverse and log-determinant stay exact: see ``ConditionalGlow.set_coupling_precision``); on CUDA,
batches go through pinned host memory. Convolution weights are channels-last by default (faster
on CPU in ``benchmarks/flows_train_speed.py``).
"""

from __future__ import annotations

import dataclasses
import fcntl
import gc
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel
from tqdm import tqdm

from flows import arguments
from flows.arguments import (
    NONNEGATIVE_FLOAT,
    NONNEGATIVE_INT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    UNIT_FRACTION,
    option,
)
from flows.checkpoint import (
    CHECKPOINT_NAME,
    MODEL_KEYS,
    CheckpointError,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from flows.data import DATASETS, ImageData, fixed_subset, load_dataset
from flows.evaluation import evaluate_model
from flows.measures import accuracy, bits_per_dim, marginal_log_prob
from flows.model import ConditionalGlow, build_model
from flows.objectives import objective
from flows.preprocess import model_input
from flows.presets import PRESETS, Preset, get_preset
from flows.variants import VARIANTS

__all__ = [
    "NonFiniteLossError",
    "RunFolderError",
    "TrainConfig",
    "final_evaluation",
    "plot_metrics",
    "read_metrics",
    "train",
]

METRICS_NAME = "metrics.jsonl"
CONFIG_NAME = "config.json"
PLOT_NAME = "training_curves.png"
LOCK_NAME = ".lock"
#: The files a run folder holds (``overwrite`` removes these and nothing else).
RUN_FILES = (CONFIG_NAME, CHECKPOINT_NAME, METRICS_NAME, PLOT_NAME)
#: Settings a resumed run may change: where and how fast it computes, and how long it goes.
RESUMABLE_CHANGES = ("epochs", "device", "workers", "threads", "data_root", "out")
_INIT_STREAM = 2**32 - 1  # generator key of the actnorm initialisation batch


@dataclass(frozen=True)
class TrainConfig:
    """A training run. ``None`` means "the preset's value"; every field is also a ``flows.train``
    option (``--field-name``), with this default and this range (:func:`flows.arguments.option`).

    ``prior`` is the training variant (:data:`flows.variants.VARIANTS`: ``--variant`` on the
    command line); the name is kept because saved runs record it so.
    """

    preset: str = option(None, "preset (flows.PRESETS)", choices=tuple(sorted(PRESETS)), cli=False)
    prior: str = option(None, "training variant", choices=tuple(sorted(VARIANTS)), cli=False)
    out: str = option(None, "run folder", cli=False)
    dataset: str | None = option(None, "default: the preset's dataset", choices=DATASETS)
    data_root: str | None = option(None, "folder holding the dataset (default: $CGM_DATA_ROOT)")
    download: bool = option(False, "let torchvision download the dataset")
    epochs: int | None = option(None, "default: the preset's", POSITIVE_INT)
    batch_size: int | None = option(
        None, "global batch size, all processes (default: the preset's)", POSITIVE_INT
    )
    lr: float | None = option(None, "Adam learning rate (default: the preset's)", POSITIVE_FLOAT)
    levels: int | None = option(None, "multi-scale levels (default: the preset's)", POSITIVE_INT)
    steps: int | None = option(None, "flow steps per level (default: the preset's)", POSITIVE_INT)
    hidden_channels: int | None = option(
        None, "coupling network width (default: the preset's)", POSITIVE_INT
    )
    label_smoothing: float = option(0.0, "label smoothing of the prior, in [0, 1)", UNIT_FRACTION)
    split_sigma: float = option(0.5, "Split prior: scale of the class part z_s", POSITIVE_FLOAT)
    split_weight: float = option(
        1.0, "Split prior: weight of the classification term", NONNEGATIVE_FLOAT
    )
    seed: int = option(0, "seed of every random draw of the run", NONNEGATIVE_INT)
    device: str = option("cpu", "cpu, cuda or cuda:N")
    workers: int = option(
        0, "worker processes decoding an ImageFolder at start-up", NONNEGATIVE_INT
    )
    threads: int | None = option(
        None, "torch intra-op threads (1 is fastest on a busy 2-core CPU)", POSITIVE_INT
    )
    amp: bool = option(
        False,
        "coupling networks in bfloat16 (faster where the CPU has AVX512-BF16 or AMX, and on "
        "GPUs; the flow stays float32 and exact)",
    )
    channels_last: bool = option(True, "keep convolution weights in NCHW instead of channels-last")
    checkpoint_every: int = option(
        200, "steps between checkpoints (and one at each epoch end)", POSITIVE_INT
    )
    log_every: int = option(50, "steps per logged train window", POSITIVE_INT)
    eval_batch_size: int = option(256, "batch size of the end-of-epoch evaluation", POSITIVE_INT)
    max_nonfinite: int = option(
        10, "consecutive non-finite steps skipped before stopping with an error", NONNEGATIVE_INT
    )
    train_limit: int | None = option(
        None, "train on N images of the fixed random order", POSITIVE_INT
    )
    eval_limit: int | None = option(
        None, "evaluate on N test images of the fixed random order", POSITIVE_INT
    )
    synthetic_size: int = option(512, "images of the synthetic dataset", POSITIVE_INT)
    init_batch_size: int = option(256, "images of the actnorm initialisation batch", POSITIVE_INT)

    def __post_init__(self) -> None:
        """Reject impossible values with a ``ValueError`` naming the field and its valid range."""
        for name in ("preset", "prior", "out"):
            if getattr(self, name) is None:
                raise ValueError(f"{name} is required")
        arguments.check_fields(self)

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
    """The run folder cannot be used as asked (in use, not a run, already a run, unwritable),
    or a resumed run was given other settings."""


class NonFiniteLossError(RuntimeError):
    """Too many consecutive non-finite losses, or an update made the weights non-finite; the
    checkpoint on disk is the last one with finite weights."""


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
            none (with ``resume``), or cannot be written. With ``resume=True``: changed settings,
            or no epoch left to train.
        NonFiniteLossError: too many non-finite steps, or an update made the weights
            non-finite; the checkpoint on disk is the last one with finite weights.
    """
    config = config.resolved()
    rank, world = _init_distributed(config.device)
    lock = _RunLock(Path(config.out)) if rank == 0 else _NoLock()
    with lock:
        if rank == 0:
            _prepare_run_folder(Path(config.out), resume, overwrite)
        run = _Run(config, resume, rank, world, progress)
        return run.train()


class _Run:
    """One training run's state, and the pieces of the loop: :meth:`step`, :meth:`log`,
    :meth:`end_epoch` (evaluate and checkpoint) and :meth:`save`."""

    def __init__(
        self, config: TrainConfig, resume: bool, rank: int, world: int, progress: bool
    ) -> None:
        if config.threads is not None:
            torch.set_num_threads(config.threads)
        self.config, self.rank, self.world, self.progress = config, rank, world, progress
        self.device = torch.device(_local_device(config.device))
        self.out = Path(config.out)
        self.checkpoint_path = self.out / CHECKPOINT_NAME
        self.preset = get_preset(config.preset)
        if config.batch_size % world:
            raise ValueError(
                f"batch size {config.batch_size} is not divisible by {world} processes"
            )
        checkpoint = None
        if resume:
            checkpoint = load_checkpoint(
                self.checkpoint_path, map_location=self.device, required=MODEL_KEYS
            )
            _check_resumable(config, checkpoint)
        self.train_data = _subset(_load(config, self.preset, train=True), config.train_limit)
        self.test_data = _subset(_load(config, self.preset, train=False), config.eval_limit)
        self.steps_per_epoch = len(self.train_data) // config.batch_size
        if self.steps_per_epoch == 0:
            raise ValueError(
                f"{len(self.train_data)} training images make no batch of {config.batch_size}"
            )
        self.model = _build(config, self.preset, len(self.train_data.classes)).to(self.device)
        if config.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.optimizer = torch.optim.Adam(self.model.parameters(), lr=config.lr)
        self.scheduler = torch.optim.lr_scheduler.StepLR(
            self.optimizer,
            step_size=self.preset.lr_decay_epochs,
            gamma=self.preset.lr_decay_factor,
        )
        self.position = {"epoch": 0, "step": 0, "global_step": 0, "nonfinite_steps": 0}
        if checkpoint is not None:
            self.model.load_state_dict(checkpoint["model"])
            self.optimizer.load_state_dict(checkpoint["optimizer"])
            self.scheduler.load_state_dict(checkpoint["scheduler"])
            set_rng_state(checkpoint["rng"])
            self.position = dict(checkpoint["position"])
            if rank == 0:
                _truncate_metrics(self.out / METRICS_NAME, self.position["global_step"])
        else:
            _initialise_actnorm(self.model, self.train_data, config, self.device)
            if rank == 0:
                (self.out / METRICS_NAME).unlink(missing_ok=True)
        if rank == 0:
            record = _run_record(config, self.model, world)
            _write_atomic(self.out / CONFIG_NAME, json.dumps(record, indent=2))
        self.network = DistributedDataParallel(self.model) if world > 1 else self.model
        self.consecutive_nonfinite = 0
        self.window: dict[str, list[float]] = {"loss": [], "bits_per_dim": [], "accuracy": []}
        self.window_started, self.window_steps = time.perf_counter(), 0

    def train(self) -> dict:
        """The epoch loop from the current position; returns the last evaluation."""
        config, last_eval = self.config, {}
        for epoch in range(self.position["epoch"], config.epochs):
            self.model.train()
            order = torch.randperm(len(self.train_data), generator=_generator(config.seed, epoch))
            first = self.position["step"] if epoch == self.position["epoch"] else 0
            bar = tqdm(
                range(first, self.steps_per_epoch),
                desc=f"epoch {epoch + 1}/{config.epochs}",
                disable=self.rank != 0 or not self.progress,
                initial=first,
                total=self.steps_per_epoch,
                leave=False,
                mininterval=0.5,
            )
            self.start_window()
            for step in bar:
                self.step(epoch, step, order, bar)
                last_step = step + 1 == self.steps_per_epoch  # an epoch's end closes its window
                if self.position["global_step"] % config.log_every == 0 or last_step:
                    self.log(epoch)
                if self.position["global_step"] % config.checkpoint_every == 0 and not last_step:
                    self.save()
            bar.close()
            last_eval = self.end_epoch(epoch)
        self.close()
        return last_eval

    def step(self, epoch: int, step: int, order: torch.Tensor, bar) -> None:
        """One optimiser step on batch ``step`` of the epoch's ``order``, with the guards:
        a non-finite loss or gradient is skipped (and counted), non-finite weights stop the run."""
        config, rank, per_rank = self.config, self.rank, self.config.batch_size // self.world
        global_step = self.position["global_step"]
        batch = order[step * config.batch_size : (step + 1) * config.batch_size]
        batch = batch[rank * per_rank : (rank + 1) * per_rank]
        host = _generator(config.seed, epoch, step, rank)
        x = model_input(
            self.train_data.images[batch], host, self.preset.crop_padding, self.preset.hflip
        )
        if self.device.type == "cuda":
            x = x.pin_memory()
        x = x.to(self.device, non_blocking=True)
        labels = self.train_data.labels[batch].to(self.device, non_blocking=True)
        noise = _generator(config.seed, epoch, step, rank, 1, device=self.device)
        output = self.network(x, noise)
        class_ll = output.class_log_likelihoods
        model_config = self.model.config
        loss = objective(
            model_config.objective,
            class_ll,
            output.logits,
            labels,
            self.model.num_dims,
            model_config.split_weight,
        )
        self.optimizer.zero_grad(set_to_none=True)
        finite = _all_finite(loss, self.world)
        if finite:
            loss.backward()
            finite = _gradients_finite(self.model, self.world)
        where = f"global step {global_step} (epoch {epoch + 1}, step {step})"
        if finite:
            self.optimizer.step()
            self.consecutive_nonfinite = 0
            if not _parameters_finite(self.model, self.world):
                raise NonFiniteLossError(
                    f"the update at {where} made the weights non-finite (learning rate "
                    f"{config.lr:g} too large?); nothing was saved after it; last good "
                    f"checkpoint: {self.checkpoint_path}"
                )
        else:
            self.optimizer.zero_grad(set_to_none=True)
            self.consecutive_nonfinite += 1
            self.position["nonfinite_steps"] += 1
            if self.consecutive_nonfinite > config.max_nonfinite:
                raise NonFiniteLossError(
                    f"non-finite loss or gradient at {where}, {self.consecutive_nonfinite} steps "
                    f"in a row; no update was applied; last good checkpoint: "
                    f"{self.checkpoint_path}"
                )
        self.position.update(step=step + 1, global_step=global_step + 1)
        self.window_steps += 1
        if finite:
            with torch.no_grad():
                log_px = marginal_log_prob(class_ll)
                self.window["loss"].append(float(loss))
                bpd = bits_per_dim(log_px, self.model.num_dims).mean()
                self.window["bits_per_dim"].append(float(bpd))
                self.window["accuracy"].append(float(accuracy(output.class_scores, labels)))
            bar.set_postfix(
                loss=f"{self.window['loss'][-1]:.4f}",
                bpd=f"{self.window['bits_per_dim'][-1]:.3f}",
                acc=f"{self.window['accuracy'][-1]:.3f}",
                refresh=False,
            )

    def start_window(self) -> None:
        """Start a new train window: empty means, and the clock and step count from now."""
        self.window = {key: [] for key in self.window}
        self.window_started, self.window_steps = time.perf_counter(), 0

    def log(self, epoch: int) -> None:
        """Append the train window's means to ``metrics.jsonl`` (rank 0) and start a new one.

        The record carries the window's wall time (``seconds``: optimiser steps and checkpoint
        writes since the window began; evaluations are not in any window) and its throughput,
        ``images_per_second`` = steps × global batch size / seconds.
        """
        if self.rank == 0 and self.window["loss"]:
            seconds = time.perf_counter() - self.window_started
            images = self.window_steps * self.config.batch_size
            _append_metrics(
                self.out,
                {
                    "kind": "train",
                    "epoch": epoch + 1,
                    "step": self.position["global_step"],
                    "lr": self.optimizer.param_groups[0]["lr"],
                    "nonfinite_steps": self.position["nonfinite_steps"],
                    **{key: float(np.mean(v)) for key, v in self.window.items()},
                    "seconds": seconds,
                    "images": images,
                    "images_per_second": images / seconds if seconds > 0 else float("nan"),
                },
            )
        self.start_window()

    def end_epoch(self, epoch: int) -> dict:
        """Step the schedule, evaluate on the test split, plot, and checkpoint the epoch's end."""
        self.scheduler.step()
        self.position.update(epoch=epoch + 1, step=0)
        last_eval: dict = {}
        if self.rank == 0:
            started = time.perf_counter()
            last_eval = evaluate_model(
                self.model,
                self.test_data,
                self.config.eval_batch_size,
                self.config.seed,
                self.device,
                progress=self.progress,
            )
            record = {
                "kind": "eval",
                "epoch": epoch + 1,
                "step": self.position["global_step"],
                "seconds": time.perf_counter() - started,
                **{key: v for key, v in last_eval.items() if key != "per_class"},
            }
            _append_metrics(self.out, record)
            tqdm.write(
                f"epoch {epoch + 1}: test accuracy {last_eval['accuracy']:.4f}, "
                f"bits/dim {last_eval['bits_per_dim']:.4f}"
            )
            plot_metrics(self.out / METRICS_NAME, self.out / PLOT_NAME)
        if self.world > 1:
            dist.barrier()
        self.save()
        return last_eval

    def save(self) -> None:
        """Checkpoint the current position (rank 0 writes; every rank waits for it)."""
        if self.rank == 0:
            save_checkpoint(
                self.checkpoint_path,
                {
                    "model": self.model.state_dict(),
                    "model_config": self.model.config.to_dict(),
                    "optimizer": self.optimizer.state_dict(),
                    "scheduler": self.scheduler.state_dict(),
                    "rng": rng_state(),
                    "position": dict(self.position),
                    "train_config": dataclasses.asdict(self.config),
                },
            )
        if self.world > 1:
            dist.barrier()

    def close(self) -> None:
        if self.world > 1:
            # Release DDP (its reducer holds gloo work and tensors) while the interpreter is fully
            # alive: if it were collected during interpreter shutdown, gloo's threads could abort
            # the process ("terminate called without an active exception").
            del self.network
            gc.collect()
            dist.barrier()
            dist.destroy_process_group()


def _build(config: TrainConfig, preset: Preset, num_classes: int) -> ConditionalGlow:
    overrides = {
        key: getattr(config, key)
        for key in ("levels", "steps", "hidden_channels")
        if getattr(config, key) is not None
    }
    torch.manual_seed(config.seed)  # the coupling convolutions draw from the global generator
    return build_model(
        preset,
        config.prior,
        num_classes=num_classes,
        generator=torch.Generator().manual_seed(config.seed),
        label_smoothing=config.label_smoothing,
        split_sigma=config.split_sigma,
        split_weight=config.split_weight,
        coupling_precision="bfloat16" if config.amp else "float32",
        **overrides,
    )


def _generator(*key: int, device: torch.device | str = "cpu") -> torch.Generator:
    """A generator whose seed is a hash of ``key`` (seed, epoch, step, rank, stream)."""
    seed = int(np.random.SeedSequence(list(key)).generate_state(1, dtype=np.uint64)[0]) % 2**63
    return torch.Generator(device=device).manual_seed(seed)


def _flag(value: torch.Tensor, world: int) -> bool:
    """A boolean that holds on every process (MIN over ranks)."""
    flag = value.to(torch.float32).reshape(1)
    if world > 1:
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
    return bool(flag.item())


def _parameters_finite(model: torch.nn.Module, world: int) -> bool:
    return _flag(torch.stack([torch.isfinite(p).all() for p in model.parameters()]).all(), world)


def _all_finite(loss: torch.Tensor, world: int) -> bool:
    return _flag(torch.isfinite(loss.detach()), world)


def _gradients_finite(model: torch.nn.Module, world: int) -> bool:
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    return _flag(torch.stack([torch.isfinite(g).all() for g in grads]).all(), world)


def _initialise_actnorm(
    model: ConditionalGlow, data: ImageData, config: TrainConfig, device: torch.device
) -> None:
    """Data-dependent actnorm initialisation on a seeded batch (the same one on every rank)."""
    generator = _generator(config.seed, _INIT_STREAM)
    count = min(config.init_batch_size, len(data))
    index = torch.randperm(len(data), generator=generator)[:count]
    x = model_input(data.images[index], generator).to(device)
    model.initialise(x, _generator(config.seed, _INIT_STREAM, 1, device=device))


def _load(config: TrainConfig, preset: Preset, train: bool) -> ImageData:
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


def final_evaluation(run_dir: str | Path) -> dict | None:
    """The last end-of-epoch evaluation record of a run's ``metrics.jsonl`` (None if it has none)."""
    path = Path(run_dir) / METRICS_NAME
    if not path.exists():
        return None
    evaluations = [record for record in read_metrics(path) if record.get("kind") == "eval"]
    return evaluations[-1] if evaluations else None


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
