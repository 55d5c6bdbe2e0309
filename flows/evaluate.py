"""Evaluate a trained run: accuracy, bits/dim and per-class figures → JSON.

``python -m flows.evaluate RUN_DIR --data-root DIR`` reads ``RUN_DIR/checkpoint.pt`` and
``RUN_DIR/config.json``, evaluates on the test split and writes ``RUN_DIR/evaluation.json``
(resolved evaluation config included). Bits/dim are on dequantised test images with seeded noise,
per data dimension ``D`` (:func:`flows.preprocess.bits_per_dim`).
"""

from __future__ import annotations

import argparse
import json
import math
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from flows.checkpoint import load_checkpoint
from flows.data import DATASETS, DatasetNotFoundError, ImageData, load_dataset
from flows.model import ConditionalGlow, ModelConfig
from flows.objectives import objective
from flows.preprocess import bits_per_dim, dequantize, to_model_range


@torch.no_grad()
def evaluate_model(
    model: ConditionalGlow,
    data: ImageData,
    batch_size: int = 256,
    seed: int = 0,
    device: str | torch.device = "cpu",
) -> dict:
    """Accuracy, mean bits/dim, mean loss, and per-class accuracy and bits/dim on ``data``."""
    model.eval()
    device = torch.device(device)
    dequantise_generator = torch.Generator().manual_seed(seed)
    noise_generator = torch.Generator(device=device).manual_seed(seed + 1)
    num_classes = model.num_classes
    bpd_all, correct_all, losses = [], [], []
    for start in range(0, len(data), batch_size):
        images = data.images[start : start + batch_size]
        labels = data.labels[start : start + batch_size].to(device)
        x = dequantize(to_model_range(images), dequantise_generator).to(device)
        output = model(x, noise_generator)
        log_px = torch.logsumexp(output.class_log_likelihoods, 1) - math.log(num_classes)
        bpd_all.append(bits_per_dim(log_px, model.num_dims).cpu())
        correct_all.append((output.class_log_likelihoods.argmax(1) == labels).cpu())
        loss = objective(
            model.config.objective,
            output.class_log_likelihoods,
            output.logits,
            labels,
            model.num_dims,
            model.config.split_weight,
        )
        losses.append(float(loss) * labels.shape[0])
    bpd = torch.cat(bpd_all).double()
    correct = torch.cat(correct_all)
    labels = data.labels
    per_class = {}
    for c in range(num_classes):
        mask = labels == c
        count = int(mask.sum())
        per_class[data.classes[c] if c < len(data.classes) else str(c)] = {
            "count": count,
            "accuracy": float(correct[mask].double().mean()) if count else None,
            "bits_per_dim": float(bpd[mask].mean()) if count else None,
        }
    return {
        "num_examples": len(data),
        "accuracy": float(correct.double().mean()),
        "bits_per_dim": float(bpd.mean()),
        "bits_per_dim_std": float(bpd.std()) if len(bpd) > 1 else 0.0,
        "loss": float(np.sum(losses) / len(data)),
        "per_class": per_class,
    }


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m flows.evaluate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        default=None,
        help="defaults to the dataset the run was trained on",
    )
    parser.add_argument("--split", choices=("test", "train"), default="test")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--limit", type=int, default=None, help="evaluate the first N images only")
    parser.add_argument(
        "--output", type=Path, default=None, help="JSON path (default RUN_DIR/evaluation.json)"
    )
    args = parser.parse_args(argv)

    run_config = json.loads((args.run_dir / "config.json").read_text())
    train_config = run_config["train"]
    checkpoint = load_checkpoint(args.run_dir, map_location=args.device)
    model_config = ModelConfig.from_dict(checkpoint["model_config"])
    model = ConditionalGlow(model_config)
    model.load_state_dict(checkpoint["model"])
    model.to(args.device)
    dataset = args.dataset or train_config["dataset"]
    try:
        data = load_dataset(
            dataset,
            args.data_root if args.data_root is not None else train_config["data_root"],
            train=args.split == "train",
            data_shape=model_config.data_shape,
            num_classes=model_config.num_classes,
            synthetic_size=train_config["synthetic_size"],
        )
    except DatasetNotFoundError as error:
        raise SystemExit(f"flows.evaluate: error: {error}") from None
    if args.limit is not None:
        data = ImageData(data.images[: args.limit], data.labels[: args.limit], data.classes)
    results = evaluate_model(model, data, args.batch_size, args.seed, args.device)
    report = {
        "config": {
            **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "dataset": dataset,
            "model": model_config.to_dict(),
            "position": checkpoint["position"],
        },
        "results": results,
    }
    output = args.output or args.run_dir / "evaluation.json"
    output.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k != "per_class"}, indent=2))
    return report


if __name__ == "__main__":
    main()
