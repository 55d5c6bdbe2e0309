"""Attack a trained run: CW-L2 or Boundary, plain or detection-aware (Section 6.2) → JSON.

``python -m flows.attack RUN_DIR --attack {cw,cw-det,boundary,boundary-det} --n 100 --eps E
--data-root DIR`` loads the run with :func:`flows.load`, attacks the first ``n`` correctly
classified test images of a fixed random order, re-verifies every adversarial under the attack's
noise seed and under a fresh one, and writes ``RUN_DIR/attacks/<attack>.json`` (resolved config,
detector threshold and its recall on real test images, Table 2 statistics under both noises,
per-example records) and ``RUN_DIR/attacks/<attack>_examples.png``.

Test order. Test sets may be stored class by class (the CIFAR-10 JPEG copy is an ImageFolder: its
first 1000 images are all airplanes), so "the first n test images" would be one class. Images are
therefore taken in the order ``torch.randperm(N, generator=torch.Generator().manual_seed(s))`` with
``s = --order-seed`` (default 0, the order of :func:`paper_figures.trained.test_order`); the recall
images, the attacked images and the Boundary starting-point pool all come from it.
``--stored-order`` keeps the stored order. Reported indices (``attacked_indices``) always refer to
the stored test set.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from flows.attacks import (
    PAPER_THRESHOLDS,
    AttackResult,
    LikelihoodDetector,
    ThreatModel,
    boundary_attack,
    carlini_wagner_l2,
    flows_threat_model,
    modified_boundary_attack,
    table2_statistics,
    verify,
)
from flows.attacks.base import batches

ATTACKS = ("cw", "cw-det", "boundary", "boundary-det")
#: Table 2's budgets: ε = 1.5 for MNIST, 33/255 for CIFAR-10.
PAPER_EPS: dict[str, float] = {"mnist": 1.5, "cifar10": 33 / 255}


@dataclass(frozen=True)
class AttackConfig:
    """Everything that determines an attack run; saved in the results JSON."""

    attack: str
    n: int = 100
    eps: float | None = None
    dataset: str | None = None
    threshold: float | None = None
    threshold_quantile: float | None = None
    recall_n: int = 1000
    seed: int = 0
    noise_seed: int = 0
    fresh_noise_seed: int = 1
    batch_size: int = 10
    binary_search_steps: int = 9
    cw_steps: int = 300
    stepsize: float = 1e-2
    confidence: float = 0.0
    initial_const: float | str = "auto"
    boundary_steps: int = 5000
    max_queries: int | None = 5000
    proposal_scale: int = 1
    spherical_moves: bool | None = None
    pool_size: int = 1000
    example_images: int = 8
    order_seed: int | None = 0

    def __post_init__(self):
        if self.attack not in ATTACKS:
            raise ValueError(f"attack must be one of {ATTACKS}, got {self.attack!r}")
        if self.threshold is not None and self.threshold_quantile is not None:
            raise ValueError("give --threshold or --threshold-quantile, not both")
        if self.n < 1:
            raise ValueError(f"n must be >= 1, got {self.n}")


def _initial_const(text: str) -> float | str:
    """``--initial-const``: ``auto`` or a positive number."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a number > 0 or 'auto', got {text!r}")
    return value


def test_order(size: int, seed: int | None) -> Tensor:
    """The order in which test images are taken: a seeded permutation, or the stored order (None)."""
    if seed is None:
        return torch.arange(size)
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed))


def make_detector(
    config: AttackConfig, threat_bpd: Tensor, num_dims: int, dataset: str | None
) -> LikelihoodDetector:
    """The fixed threshold (given or the paper's for the dataset) or the test-set quantile."""
    if config.threshold_quantile is not None:
        return LikelihoodDetector.from_quantile(threat_bpd, config.threshold_quantile, num_dims)
    threshold = config.threshold
    if threshold is None:
        if dataset not in PAPER_THRESHOLDS:
            raise ValueError(
                f"no paper threshold for dataset {dataset!r}: pass --threshold or "
                "--threshold-quantile"
            )
        threshold = PAPER_THRESHOLDS[dataset]
    return LikelihoodDetector(threshold, num_dims)


def run_experiment(
    model: Any,
    test_x: Tensor,
    test_y: Tensor,
    config: AttackConfig,
    dataset: str | None = None,
    progress: bool = True,
) -> tuple[dict, AttackResult, Tensor]:
    """Run one attack on a flows-style model (duck-typed, see :func:`flows_threat_model`).

    Test images are taken in the order :func:`test_order` (``config.order_seed``): the first
    ``recall_n`` for the detector's recall, the first ``n`` correctly classified ones as attack
    inputs, the first ``pool_size`` others as the modified Boundary attack's starting-point pool.
    A model with an integer ``num_dims`` (a flows model) gets the one-encoding C+1 decision
    (``bits_from_class_scores``).

    Returns the JSON-ready report, the attack result and the attacked clean images.
    """
    eps = config.eps if config.eps is not None else PAPER_EPS.get(dataset or "")
    if eps is None:
        raise ValueError(f"no paper ε for dataset {dataset!r}: pass --eps")
    order = test_order(len(test_x), config.order_seed).to(test_y.device)
    test_x, test_y = test_x[order], test_y[order]
    one_pass = isinstance(getattr(model, "num_dims", None), int)
    num_dims = int(getattr(model, "num_dims", test_x[0].numel()))
    bpd_fn = flows_threat_model(_Bpd(model), noise_seed=config.noise_seed).logits_fn
    recall_x = test_x[: config.recall_n]
    with torch.no_grad():
        recall_bpd = torch.cat(
            [bpd_fn(recall_x[s]) for s in batches(len(recall_x), config.batch_size)]
        )
    detector = make_detector(config, recall_bpd, num_dims, dataset)
    tm = flows_threat_model(
        model, detector, noise_seed=config.noise_seed, eps=eps, bits_from_class_scores=one_pass
    )
    fresh = flows_threat_model(
        model,
        detector,
        noise_seed=config.fresh_noise_seed,
        eps=eps,
        bits_from_class_scores=one_pass,
    )

    labels = torch.cat([tm.classify(test_x[s]) for s in batches(len(test_x), config.batch_size)])
    correct = torch.nonzero(labels == test_y).flatten()
    chosen = correct[: config.n]
    if len(chosen) < config.n:
        raise ValueError(f"only {len(chosen)} correctly classified test images, need {config.n}")
    x, y = test_x[chosen], test_y[chosen]
    targets = None
    result = _attack(config, tm, x, y, test_x, test_y, chosen, progress)
    if isinstance(result, tuple):
        result, targets = result

    report: dict[str, Any] = {
        "config": {**dataclasses.asdict(config), "dataset": dataset, "eps": eps},
        "detector": {
            "threshold_bits_per_dim": detector.threshold,
            "num_dims": num_dims,
            "recall_on_test_images": detector.recall(recall_bpd),
            "recall_n": len(recall_bpd),
        },
        "test_order": (
            "stored order"
            if config.order_seed is None
            else f"torch.randperm(N, generator=torch.Generator().manual_seed({config.order_seed}))"
        ),
        "attacked_indices": order[chosen].tolist(),
        "skipped_misclassified": int(chosen[-1]) + 1 - len(chosen),
        "clean_detected": tm.detected(x).tolist(),
        "targets": None if targets is None else targets.tolist(),
    }
    for name, model_view in (("attack_noise", tm), ("fresh_noise", fresh)):
        verification = verify(model_view, x, result, y, targets=targets, eps=eps)
        report[name] = {
            "noise_seed": config.noise_seed if name == "attack_noise" else config.fresh_noise_seed,
            "table2": table2_statistics(verification),
            "records": verification.records(),
        }
    succeeded = result.l2[result.success]
    report["attack"] = {
        "success_rate": result.success.double().mean().item(),
        "median_l2": succeeded.median().item() if len(succeeded) else None,
        "mean_queries": result.queries.double().mean().item(),
        "records": result.records(),
    }
    return report, result, x


class _Bpd:
    """View a model's ``bits_per_dim`` as the ``class_log_likelihoods`` slot (for FixedNoise)."""

    def __init__(self, model: Any):
        self.class_log_likelihoods = model.bits_per_dim


def _attack(
    config: AttackConfig,
    tm: ThreatModel,
    x: Tensor,
    y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    chosen: Tensor,
    progress: bool,
) -> AttackResult | tuple[AttackResult, Tensor]:
    common = {"batch_size": config.batch_size, "progress": progress, "bounds": tm.bounds}
    if config.attack in ("cw", "cw-det"):
        detection = (
            (
                {"bits_dims": tm.bits_dims, "detector": tm.detector}
                if tm.bits_dims is not None
                else {"bits_per_dim_fn": tm.bits_per_dim_fn, "detector": tm.detector}
            )
            if config.attack == "cw-det"
            else {}
        )
        return carlini_wagner_l2(
            tm.logits_fn,
            x,
            y,
            binary_search_steps=config.binary_search_steps,
            steps=config.cw_steps,
            stepsize=config.stepsize,
            confidence=config.confidence,
            initial_const=config.initial_const,
            **detection,
            **common,
        )
    walk = {
        "steps": config.boundary_steps,
        "max_queries": config.max_queries,
        "seed": config.seed,
        "proposal_scale": config.proposal_scale,
        "spherical_moves": config.spherical_moves,
    }
    if config.attack == "boundary":
        return boundary_attack(tm.classify, x, y, **walk, **common)
    keep = torch.ones(len(test_x), dtype=torch.bool)
    keep[chosen] = False
    pool = torch.nonzero(keep).flatten()[: config.pool_size]
    num_classes = tm.logits_fn(x[:1]).shape[1]
    return modified_boundary_attack(
        tm.decision, x, y, test_x[pool], test_y[pool], reject_label=num_classes, **walk, **common
    )


def save_examples(path: Path, x: Tensor, result: AttackResult, count: int) -> Path | None:
    """A grid of clean / adversarial / |difference| images (Agg backend); None if not images."""
    if x.dim() != 4 or x.shape[1] not in (1, 3) or count < 1:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    count = min(count, len(x))
    fig, axes = plt.subplots(count, 3, figsize=(4.5, 1.5 * count), squeeze=False)
    for i in range(count):
        diff = (result.adversarial[i] - x[i]).abs()
        for ax, image, title in zip(
            axes[i],
            (x[i] + 0.5, result.adversarial[i] + 0.5, diff / max(diff.max().item(), 1e-12)),
            ("clean", f"adv L2={result.l2[i].item():.3g}", "|diff| (scaled)"),
            strict=True,
        ):
            shown = image.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy()
            ax.imshow(shown[..., 0] if shown.shape[2] == 1 else shown, cmap="gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize=7)
            ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def _load_run(run_dir: Path, device: str) -> Any:
    import flows

    load = getattr(flows, "load", None)
    if load is None:
        raise SystemExit(
            "flows.load is not available: the GLOW model package (flows.model) is missing or "
            "incomplete, so no run can be loaded. The attacks themselves work on any callable: "
            "see flows.attacks.carlini_wagner_l2 / boundary_attack."
        )
    return load(run_dir, map_location=device)


def _load_test_set(dataset: str, data_root: Path | None, model: Any) -> tuple[Tensor, Tensor]:
    try:
        from flows.data import load_dataset
        from flows.preprocess import to_model_range
    except ImportError as error:
        raise SystemExit(f"flows.data is not available ({error}); cannot load {dataset}") from None
    config = getattr(model, "config", None)
    extra = {}
    if config is not None:
        extra = {"data_shape": tuple(config.data_shape), "num_classes": config.num_classes}
    data = load_dataset(dataset, data_root, train=False, **extra)
    return to_model_range(data.images), data.labels


def main(argv: Sequence[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(
        prog="python -m flows.attack", description=__doc__.split("\n")[0]
    )
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--attack", choices=ATTACKS, required=True)
    parser.add_argument("--n", type=int, default=100, help="images to attack (default 100)")
    parser.add_argument(
        "--eps", type=float, default=None, help="L2 budget (default: 1.5 MNIST, 33/255 CIFAR-10)"
    )
    parser.add_argument("--data-root", type=Path, default=None)
    parser.add_argument(
        "--dataset", default=None, help="default: the run's training dataset (RUN_DIR/config.json)"
    )
    parser.add_argument(
        "--threshold",
        type=float,
        default=None,
        help="detector threshold in bits/dim (default: 1.4 MNIST, 4.0 CIFAR-10)",
    )
    parser.add_argument(
        "--threshold-quantile",
        type=float,
        default=None,
        help="set the threshold at this quantile of test images' bits/dim",
    )
    parser.add_argument(
        "--recall-n",
        type=int,
        default=1000,
        help="test images for the threshold's recall / quantile",
    )
    parser.add_argument("--seed", type=int, default=0, help="attack seed (Boundary, targets)")
    parser.add_argument("--noise-seed", type=int, default=0, help="model noise during the attack")
    parser.add_argument(
        "--fresh-noise-seed", type=int, default=1, help="model noise for the second verification"
    )
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--binary-search-steps", type=int, default=9)
    parser.add_argument("--cw-steps", type=int, default=300)
    parser.add_argument("--stepsize", type=float, default=1e-2)
    parser.add_argument("--confidence", type=float, default=0.0)
    parser.add_argument(
        "--initial-const",
        type=_initial_const,
        default="auto",
        help="CW's first c: a number > 0, or 'auto' (linearised per example)",
    )
    parser.add_argument("--boundary-steps", type=int, default=5000)
    parser.add_argument("--max-queries", type=int, default=5000)
    parser.add_argument(
        "--proposal-scale",
        type=int,
        default=1,
        help="Boundary: draw the orthogonal step at 1/s resolution, upsampled (1: i.i.d.)",
    )
    parser.add_argument(
        "--spherical-moves",
        choices=("auto", "on", "off"),
        default="auto",
        help="Boundary: also move to adversarial spherical candidates (auto: on for boundary, "
        "off for boundary-det; off: Brendel et al.'s rule)",
    )
    parser.add_argument(
        "--pool-size",
        type=int,
        default=1000,
        help="test images to draw boundary-det starting points from",
    )
    parser.add_argument("--example-images", type=int, default=8)
    parser.add_argument(
        "--order-seed",
        type=int,
        default=0,
        help="seed of the fixed random order in which test images are taken (default 0)",
    )
    parser.add_argument(
        "--stored-order",
        action="store_true",
        help="take test images in their stored order instead (class by class for ImageFolder)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="JSON path (default RUN_DIR/attacks/<attack>.json)",
    )
    args = parser.parse_args(argv)

    fields = {f.name for f in dataclasses.fields(AttackConfig)}
    if args.stored_order:
        args.order_seed = None
    args.spherical_moves = {"auto": None, "on": True, "off": False}[args.spherical_moves]
    config = AttackConfig(**{k: v for k, v in vars(args).items() if k in fields})
    model = _load_run(args.run_dir, args.device)
    dataset = args.dataset
    config_path = args.run_dir / "config.json"
    train_config = {}
    if config_path.is_file():
        train_config = json.loads(config_path.read_text()).get("train", {})
    dataset = dataset or train_config.get("dataset")
    if dataset is None:
        raise SystemExit("cannot tell the dataset: pass --dataset")
    data_root = args.data_root or train_config.get("data_root")
    test_x, test_y = _load_test_set(dataset, data_root, model)
    test_x, test_y = test_x.to(args.device), test_y.to(args.device)
    report, result, x = run_experiment(model, test_x, test_y, config, dataset)
    report["config"]["run_dir"] = str(args.run_dir)
    output = args.output or args.run_dir / "attacks" / f"{config.attack}.json"
    output.parent.mkdir(parents=True, exist_ok=True)
    image = save_examples(
        output.with_name(f"{output.stem}_examples.png"), x, result, config.example_images
    )
    report["example_images"] = None if image is None else str(image)
    output.write_text(json.dumps(report, indent=2))
    summary = {k: report[k]["table2"] for k in ("attack_noise", "fresh_noise")}
    print(json.dumps({"detector": report["detector"], **summary}, indent=2))
    return report


if __name__ == "__main__":
    main()
