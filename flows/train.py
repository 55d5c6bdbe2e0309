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

from flows.checkpoint import (
    CHECKPOINT_NAME,
    load_checkpoint,
    rng_state,
    save_checkpoint,
    set_rng_state,
)
from flows.data import DATASETS, DatasetNotFoundError, ImageData, augment, load_dataset
from flows.evaluate import evaluate_model
from flows.model import PRIORS, ConditionalGlow, build_model
from flows.objectives import objective
from flows.preprocess import bits_per_dim, dequantize, to_model_range
from flows.presets import PRESETS, get_preset

METRICS_NAME = "metrics.jsonl"
CONFIG_NAME = "config.json"
PLOT_NAME = "training_curves.png"
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

    def resolved(self) -> TrainConfig:
        """Fill the ``None`` fields from the preset."""
        preset = get_preset(self.preset)
        return dataclasses.replace(
            self,
            dataset=self.dataset or preset.dataset,
            epochs=self.epochs if self.epochs is not None else preset.epochs,
            batch_size=self.batch_size or preset.batch_size,
            lr=self.lr if self.lr is not None else preset.lr,
        )


class NonFiniteLossError(RuntimeError):
    """Too many consecutive non-finite losses; the weights were not touched by any of them."""


def train(config: TrainConfig) -> dict:
    """Run (or resume) training; return the last evaluation metrics."""
    config = config.resolved()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    rank, world = _init_distributed(config.device)
    device = torch.device(_local_device(config.device))
    out = Path(config.out)
    checkpoint_path = out / CHECKPOINT_NAME
    preset = get_preset(config.preset)
    if config.batch_size % world:
        raise ValueError(f"batch size {config.batch_size} is not divisible by {world} processes")

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
    if checkpoint_path.exists():
        checkpoint = load_checkpoint(checkpoint_path, map_location=device)
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
            out.mkdir(parents=True, exist_ok=True)
            (out / METRICS_NAME).unlink(missing_ok=True)
    if rank == 0:
        (out / CONFIG_NAME).write_text(json.dumps(_run_record(config, model, world), indent=2))
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
            disable=rank != 0,
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
            if rank == 0 and position["global_step"] % config.log_every == 0 and window["loss"]:
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
                model, test_data, config.eval_batch_size, config.seed, device
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
    if limit is None:
        return data
    return ImageData(data.images[:limit], data.labels[:limit], data.classes)


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


def _truncate_metrics(path: Path, global_step: int) -> None:
    """Drop records written after the checkpoint we resume from (they will be written again)."""
    if path.exists():
        kept = [
            line
            for line in path.read_text().splitlines()
            if line.strip() and json.loads(line)["step"] <= global_step
        ]
        path.write_text("".join(line + "\n" for line in kept))


def read_metrics(path: str | Path) -> list[dict]:
    """The records of a ``metrics.jsonl``."""
    return [json.loads(line) for line in Path(path).read_text().splitlines() if line.strip()]


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


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """Parse the command line into a :class:`TrainConfig`.

    With ``--resume``, the run's saved ``config.json`` is used; only ``--epochs``, ``--device``,
    ``--workers`` and ``--threads`` may be changed on the command line.
    """
    parser = argparse.ArgumentParser(
        prog="python -m flows.train", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--preset", choices=sorted(PRESETS))
    parser.add_argument("--prior", choices=sorted(PRIORS))
    parser.add_argument("--out", required=True, help="run folder")
    parser.add_argument("--dataset", choices=DATASETS, help="default: the preset's dataset")
    parser.add_argument("--data-root", help="folder holding the dataset")
    parser.add_argument("--download", action="store_true", help="let torchvision download data")
    parser.add_argument("--epochs", type=int)
    parser.add_argument("--batch-size", type=int, help="global batch size (all processes)")
    parser.add_argument("--lr", type=float)
    parser.add_argument("--levels", type=int)
    parser.add_argument("--steps", type=int)
    parser.add_argument("--hidden-channels", type=int)
    parser.add_argument("--label-smoothing", type=float, default=0.0)
    parser.add_argument("--split-sigma", type=float, default=0.5)
    parser.add_argument("--split-weight", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--workers",
        type=int,
        default=0,
        help="worker processes decoding an ImageFolder at start-up",
    )
    parser.add_argument(
        "--threads", type=int, help="torch intra-op threads (1 is fastest on a busy 2-core machine)"
    )
    parser.add_argument(
        "--no-channels-last",
        dest="channels_last",
        action="store_false",
        help="keep convolution weights in NCHW (channels-last measured 17-48%% faster on CPU)",
    )
    parser.add_argument(
        "--amp",
        action="store_true",
        help="coupling networks in bfloat16 (1.3-1.9x faster training steps on an AVX512-BF16 "
        "CPU in benchmarks/flows_train_speed.py; the flow stays float32 and exact)",
    )
    parser.add_argument("--checkpoint-every", type=int, default=200)
    parser.add_argument("--log-every", type=int, default=50)
    parser.add_argument("--eval-batch-size", type=int, default=256)
    parser.add_argument(
        "--max-nonfinite",
        type=int,
        default=10,
        help="consecutive non-finite steps skipped before stopping with an error",
    )
    parser.add_argument("--train-limit", type=int, help="use the first N training images")
    parser.add_argument("--eval-limit", type=int, help="evaluate on the first N test images")
    parser.add_argument("--synthetic-size", type=int, default=512)
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its checkpoint"
    )
    args = parser.parse_args(argv)
    if args.resume:
        saved = Path(args.out) / CONFIG_NAME
        if not (Path(args.out) / CHECKPOINT_NAME).exists() or not saved.exists():
            parser.error(f"--resume: no checkpoint and config.json in {args.out}")
        values = json.loads(saved.read_text())["train"]
        for key in ("epochs", "device", "workers", "threads"):
            if getattr(args, key) is not None:
                values[key] = getattr(args, key)
        values["out"] = args.out
        return TrainConfig(**values)
    if args.preset is None or args.prior is None:
        parser.error("--preset and --prior are required (unless --resume)")
    if (Path(args.out) / CHECKPOINT_NAME).exists():
        parser.error(f"{args.out} already holds a checkpoint; pass --resume or another --out")
    values = {k: v for k, v in vars(args).items() if k != "resume"}
    return TrainConfig(**values)


def main(argv: Sequence[str] | None = None) -> dict:
    config = parse_args(argv)
    try:
        return train(config)
    except DatasetNotFoundError as error:
        raise SystemExit(f"flows.train: error: {error}") from None


if __name__ == "__main__":
    main()
