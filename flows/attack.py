"""Attack a trained run: CW-L2 or Boundary, plain or detection-aware (Section 6.2) → JSON.

``python -m flows.attack RUN_DIR --attack {cw,cw-det,boundary,boundary-det} --n 100 --eps E
--data-root DIR`` loads the run with :func:`flows.load`, attacks the first ``n`` correctly
classified test images of a fixed random order, re-verifies every adversarial under the attack's
noise seed and under a fresh one, and writes ``<attack>.json`` (resolved config, detector threshold
and its recall on real test images, Table 2 statistics under both noises, per-example records) and
``<attack>_examples.png`` (clean / adversarial / difference with labels, bits/dim and verdicts).

Output. By default beside the run, ``RUN_DIR/attacks/<attack>.json``, unless the run lies inside
the package's committed ``artifacts/`` folder: nothing is written into the repository, so such
runs need ``--output FILE.json``.

Detector. By default the threshold is set at the paper's *recall* on real test images
(:data:`~flows.attacks.PAPER_RECALL`: 100% for MNIST, 78.6% for CIFAR-10), i.e. at that quantile of
the bits/dim of the first ``--recall-n`` test images, as the paper's figures and Table 2 do: the
paper's fixed thresholds (1.4 and 4.0 bits/dim) accept only a small fraction of real test images on
other models, and attacks against such a detector would report a misleading 0%.
``--threshold T`` keeps a fixed threshold (a warning says when its recall is more than 10
percentage points from the paper's); ``--threshold-quantile Q`` sets another quantile.

Data. The test set is read from ``--data-root``, else ``$CGM_DATA_ROOT``, else the ``data_root``
recorded in ``RUN_DIR/config.json`` (:func:`flows.arguments.resolve_data_root`).

Test order. Test sets may be stored class by class (the CIFAR-10 JPEG copy is an ImageFolder: its
first 1000 images are all airplanes), so "the first n test images" would be one class. Images are
therefore taken in the order ``torch.randperm(N, generator=torch.Generator().manual_seed(s))`` with
``s = --order-seed`` (default 0, the order of :func:`paper_figures.trained.test_order`); the recall
images, the attacked images and the Boundary starting-point pool all come from it.
``--stored-order`` keeps the stored order. Reported indices (``attacked_indices``) always refer to
the stored test set. Images are classified lazily, batch by batch in that order, until ``n``
correctly classified ones are found.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

import flows
from flows import arguments
from flows.attacks import (
    PAPER_RECALL,
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
from flows.attacks.base import batches, progress_bar
from flows.checkpoint import CheckpointError
from flows.data import DATASETS, DatasetNotFoundError
from flows.paper import PAPER_EPS

ATTACKS = ("cw", "cw-det", "boundary", "boundary-det")
#: A fixed threshold whose recall on the recall images is farther than this from the paper's
#: recall (:data:`~flows.attacks.PAPER_RECALL`) gets a warning.
RECALL_TOLERANCE = 0.10
PROG = "python -m flows.attack"


class ExperimentError(ValueError):
    """The experiment cannot run on these inputs (no paper budget, too few correct images…)."""


@dataclass(frozen=True)
class AttackConfig:
    """Everything that determines an attack run; saved in the results JSON.

    Detector: ``threshold`` (fixed, bits/dim), or ``threshold_quantile`` (that quantile of the
    recall images' bits/dim), or neither: the quantile at the paper's recall for the dataset
    (:data:`~flows.attacks.PAPER_RECALL`; :func:`threshold_quantile`).
    """

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
        for name, kind in _CONFIG_RANGES.items():
            value = getattr(self, name)
            if value is not None or name not in _NULLABLE:
                kind.check(name, value)


#: The valid range of each numeric :class:`AttackConfig` field (the CLI parses with the same).
_CONFIG_RANGES = {
    "n": arguments.POSITIVE_INT,
    "eps": arguments.NONNEGATIVE_FLOAT,
    "threshold": arguments.FINITE_FLOAT,
    "threshold_quantile": arguments.PROBABILITY,
    "recall_n": arguments.POSITIVE_INT,
    "seed": arguments.NONNEGATIVE_INT,
    "noise_seed": arguments.NONNEGATIVE_INT,
    "fresh_noise_seed": arguments.NONNEGATIVE_INT,
    "batch_size": arguments.POSITIVE_INT,
    "binary_search_steps": arguments.POSITIVE_INT,
    "cw_steps": arguments.POSITIVE_INT,
    "stepsize": arguments.POSITIVE_FLOAT,
    "confidence": arguments.NONNEGATIVE_FLOAT,
    "boundary_steps": arguments.POSITIVE_INT,
    "max_queries": arguments.POSITIVE_INT,
    "proposal_scale": arguments.POSITIVE_INT,
    "pool_size": arguments.POSITIVE_INT,
    "example_images": arguments.NONNEGATIVE_INT,
    "order_seed": arguments.NONNEGATIVE_INT,
}
_NULLABLE = ("eps", "threshold", "threshold_quantile", "max_queries", "order_seed")


def _initial_const(text: str) -> float | str:
    """``--initial-const``: ``auto`` or a positive number."""
    if text == "auto":
        return text
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"must be a finite number > 0 or 'auto', got {text!r}")
    return value


def test_order(size: int, seed: int | None) -> Tensor:
    """The order in which test images are taken: a seeded permutation, or the stored order (None)."""
    if seed is None:
        return torch.arange(size)
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed))


def threshold_quantile(config: AttackConfig, dataset: str | None) -> float | None:
    """The quantile that sets the detector threshold, or None for a fixed ``config.threshold``.

    ``config.threshold_quantile`` when given, else (no threshold either) the paper's recall for
    ``dataset`` (:data:`~flows.attacks.PAPER_RECALL`).
    """
    if config.threshold is not None:
        return None
    if config.threshold_quantile is not None:
        return config.threshold_quantile
    if dataset not in PAPER_RECALL:
        raise ExperimentError(
            f"no paper recall for dataset {dataset!r} to set the detector threshold at: pass "
            "--threshold or --threshold-quantile"
        )
    return PAPER_RECALL[dataset]


def make_detector(
    config: AttackConfig, threat_bpd: Tensor, num_dims: int, dataset: str | None
) -> LikelihoodDetector:
    """The fixed ``config.threshold``, or the threshold at a quantile of ``threat_bpd`` (the
    recall images' bits/dim): ``config.threshold_quantile``, else the paper's recall."""
    quantile = threshold_quantile(config, dataset)
    if quantile is None:
        return LikelihoodDetector(config.threshold, num_dims)
    return LikelihoodDetector.from_quantile(threat_bpd, quantile, num_dims)


def recall_warning(
    config: AttackConfig, detector: LikelihoodDetector, recall: float, n: int, dataset: str | None
) -> str | None:
    """One line starting with ``warning:`` when a *fixed* threshold's recall on the ``n`` recall
    images is more than :data:`RECALL_TOLERANCE` from the paper's recall for ``dataset``."""
    if config.threshold is None or dataset not in PAPER_RECALL:
        return None
    paper = PAPER_RECALL[dataset]
    if abs(recall - paper) <= RECALL_TOLERANCE + 1e-12:
        return None
    return (
        f"warning: the fixed detector threshold {detector.threshold:g} bits/dim accepts "
        f"{100 * recall:.1f}% of the {n} recall images as real, the paper's detector accepts "
        f"{100 * paper:.1f}% of {dataset} test images (more than {100 * RECALL_TOLERANCE:.0f} "
        "percentage points apart): success rates against this detector are not comparable with "
        "Table 2; omit --threshold to set it at the paper's recall"
    )


def first_correct(
    classify: Callable[[Tensor], Tensor],
    x: Tensor,
    y: Tensor,
    n: int,
    batch_size: int,
    progress: bool = False,
) -> tuple[Tensor, int]:
    """Positions of the first ``n`` inputs with ``classify(x) == y``, in order, and how many
    inputs were classified to find them.

    Classifies batch by batch (:func:`~flows.attacks.base.batches` of ``batch_size``, the same
    slices as a full pass) and stops once ``n`` are found, so the result equals the first ``n`` of
    a full classification; fewer than ``n`` positions when fewer inputs are correct.
    """
    found: list[Tensor] = []
    count, examined = 0, 0
    with tqdm(
        total=n,
        desc="finding correctly classified test images",
        unit="image",
        disable=not progress,
    ) as bar:
        for part in batches(len(x), batch_size):
            with torch.no_grad():
                labels = classify(x[part])
            hits = torch.nonzero(labels == y[part]).flatten()[: n - count] + part.start
            found.append(hits)
            count += len(hits)
            examined = part.stop
            bar.update(len(hits))
            bar.set_postfix(classified=examined)
            if count >= n:
                break
    positions = torch.cat(found) if found else torch.zeros(0, dtype=torch.long)
    return positions.to(torch.long), examined


def run_experiment(
    model: Any,
    test_x: Tensor,
    test_y: Tensor,
    config: AttackConfig,
    dataset: str | None = None,
    progress: bool = True,
    warn: Callable[[str], None] | None = None,
) -> tuple[dict, AttackResult, Tensor]:
    """Run one attack on a flows-style model (duck-typed, see :func:`flows_threat_model`).

    Test images are taken in the order :func:`test_order` (``config.order_seed``): the first
    ``recall_n`` for the detector's threshold and recall, the first ``n`` correctly classified
    ones as attack inputs (classified lazily in batches of ``config.batch_size``), the first
    ``pool_size`` others as the modified Boundary attack's starting-point pool. The detector is
    :func:`make_detector`'s. A model with an integer ``num_dims`` (a flows model) gets the
    one-encoding C+1 decision (``bits_from_class_scores``). ``dataset`` names the paper's
    defaults (ε, recall); ``warn`` receives :func:`recall_warning`'s line, before the attack.

    Returns the JSON-ready report, the attack result and the attacked clean images.

    Raises:
        ExperimentError: no ε or no detector rule for ``dataset``, fewer than ``n`` correctly
            classified test images, or no usable starting point of some target class in the pool.
    """
    eps = config.eps if config.eps is not None else PAPER_EPS.get(dataset or "")
    if eps is None:
        raise ExperimentError(f"no paper ε for dataset {dataset!r}: pass --eps")
    quantile = threshold_quantile(config, dataset)
    order = test_order(len(test_x), config.order_seed).to(test_y.device)
    test_x, test_y = test_x[order], test_y[order]
    one_pass = isinstance(getattr(model, "num_dims", None), int)
    num_dims = int(getattr(model, "num_dims", test_x[0].numel()))
    bpd_fn = flows_threat_model(_Bpd(model), noise_seed=config.noise_seed).logits_fn
    recall_x = test_x[: config.recall_n]
    recall_slices = progress_bar(
        batches(len(recall_x), config.batch_size), progress, "detector recall images"
    )
    with torch.no_grad():
        recall_bpd = torch.cat([bpd_fn(recall_x[s]) for s in recall_slices])
    detector = make_detector(config, recall_bpd, num_dims, dataset)
    recall = detector.recall(recall_bpd)
    warning = recall_warning(config, detector, recall, len(recall_bpd), dataset)
    if warning is not None and warn is not None:
        warn(warning)
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

    chosen, examined = first_correct(
        tm.classify, test_x, test_y, config.n, config.batch_size, progress
    )
    chosen = chosen.to(test_y.device)
    if len(chosen) < config.n:
        raise ExperimentError(
            f"only {len(chosen)} of the {len(test_x)} test images are correctly classified, "
            f"need --n {config.n}"
        )
    x, y = test_x[chosen], test_y[chosen]
    targets = None
    result = _attack(config, tm, x, y, test_x, test_y, chosen, progress)
    if isinstance(result, tuple):
        result, targets = result
    with torch.no_grad():
        clean_bpd = tm.bits_per_dim_fn(x)

    resolved = {"dataset": dataset, "eps": eps}
    if config.threshold is None:
        resolved["threshold_quantile"] = quantile
    report: dict[str, Any] = {
        "config": {**dataclasses.asdict(config), **resolved},
        "detector": {
            "threshold_bits_per_dim": detector.threshold,
            "num_dims": num_dims,
            "recall_on_test_images": recall,
            "recall_n": len(recall_bpd),
            "rule": (
                "fixed threshold"
                if quantile is None
                else "quantile"
                if config.threshold_quantile is not None
                else "paper recall"
            ),
            "threshold_quantile": quantile,
            "paper_recall": PAPER_RECALL.get(dataset or ""),
            "paper_threshold_bits_per_dim": PAPER_THRESHOLDS.get(dataset or ""),
            "warning": warning,
        },
        "test_order": (
            "stored order"
            if config.order_seed is None
            else f"torch.randperm(N, generator=torch.Generator().manual_seed({config.order_seed}))"
        ),
        "attacked_indices": order[chosen].tolist(),
        "attacked_labels": y.tolist(),
        "test_images_classified": examined,
        "skipped_misclassified": int(chosen[-1]) + 1 - len(chosen),
        "clean_bits_per_dim": clean_bpd.tolist(),
        "clean_detected": detector.detected(clean_bpd).tolist(),
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
    with torch.no_grad():
        num_classes = tm.logits_fn(x[:1]).shape[1]
    if config.attack == "boundary":
        return boundary_attack(tm.classify, x, y, num_classes=num_classes, **walk, **common)
    keep = torch.ones(len(test_x), dtype=torch.bool)
    keep[chosen.cpu()] = False
    pool = torch.nonzero(keep).flatten()[: config.pool_size].to(test_y.device)
    try:
        return modified_boundary_attack(
            tm.decision,
            x,
            y,
            test_x[pool],
            test_y[pool],
            reject_label=num_classes,
            **walk,
            **common,
        )
    except ValueError as error:
        if str(error).startswith("no pool image"):
            raise ExperimentError(
                f"{error} among the {len(pool)} pool images: a larger --pool-size gives more "
                "candidates"
            ) from None
        raise


def example_figure(x: Tensor, result: AttackResult, report: dict, count: int):
    """``(fig, axes)``: per row the clean image, the adversarial and their difference, with the
    labels, bits/dim, L2 and verdicts under the attack noise; None if ``x`` are not images.

    Titles: clean image with its (correct) class and bits/dim; adversarial with its predicted class
    (and the target), bits/dim, L2 and the verdicts of :func:`~flows.attacks.verify`:
    ``fools``/``fails`` (the classifier), ``detected``/``undetected`` (the detector) and
    ``within ε``/``beyond ε``, or ``fails (no adversarial found)``.
    """
    if x.dim() != 4 or x.shape[1] not in (1, 3) or count < 1:
        return None
    from matplotlib.figure import Figure

    count = min(count, len(x))
    records = report["attack_noise"]["records"]
    config, detector = report["config"], report["detector"]
    fig = Figure(figsize=(7.2, 0.5 + 2.5 * count), layout="constrained")
    axes = fig.subplots(count, 3, squeeze=False)
    source = config.get("run_dir") or config.get("dataset")
    fig.suptitle(
        f"{config['attack']}{'' if source is None else f' on {Path(source).name}'}: "
        f"ε = {config['eps']:.4g} (L2), detector threshold "
        f"{detector['threshold_bits_per_dim']:.3f} bits/dim (recall "
        f"{100 * detector['recall_on_test_images']:.1f}%)\nverdicts under the attack noise "
        f"(seed {report['attack_noise']['noise_seed']})",
        fontsize=8,
    )
    for i in range(count):
        record = records[i]
        diff = (result.adversarial[i] - x[i]).abs()
        scale = max(diff.max().item(), 1e-12)
        clean_state = "detected" if report["clean_detected"][i] else "undetected"
        target = "" if report["targets"] is None else f" (target {report['targets'][i]})"
        bpd = record.get("bits_per_dim")
        verdict = (
            ", ".join(
                (
                    "fools" if record["fools_classifier"] else "fails",
                    "detected" if record["detected"] else "undetected",
                    "within ε" if record["within_eps"] else "beyond ε",
                )
            )
            if record["claimed"]
            else "fails (no adversarial found)"
        )
        titles = (
            f"clean #{report['attacked_indices'][i]}: class {report['attacked_labels'][i]}\n"
            f"{report['clean_bits_per_dim'][i]:.3f} bits/dim, {clean_state}",
            f"adversarial: class {record.get('predicted', '?')}{target}\n"
            f"{'?' if bpd is None else f'{bpd:.3f}'} bits/dim, L2 = {record['l2']:.3g}\n"
            f"{verdict}",
            (
                f"|adversarial − clean|\nscaled: white = {scale:.3g}"
                if diff.max().item() > 0
                else "|adversarial − clean|\nno difference"
            ),
        )
        for ax, image, title in zip(
            axes[i], (x[i] + 0.5, result.adversarial[i] + 0.5, diff / scale), titles, strict=True
        ):
            shown = image.detach().cpu().permute(1, 2, 0).clamp(0, 1).numpy()
            ax.imshow(shown[..., 0] if shown.shape[2] == 1 else shown, cmap="gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize=7)
            ax.set_xticks([])
            ax.set_yticks([])
    return fig, axes


def save_examples(
    path: Path, x: Tensor, result: AttackResult, report: dict, count: int
) -> Path | None:
    """Save :func:`example_figure` as a PNG at ``path`` (Agg); None if there is nothing to show."""
    figure = example_figure(x, result, report, count)
    if figure is None:
        return None
    fig, _ = figure
    fig.savefig(path, dpi=100)
    return path


def _load_test_set(
    dataset: str, data_root: Path | None, model: Any, synthetic_size: int = 512
) -> tuple[Tensor, Tensor]:
    from flows.data import load_dataset
    from flows.preprocess import to_model_range

    config = getattr(model, "config", None)
    extra: dict[str, Any] = {"synthetic_size": synthetic_size}
    if config is not None:
        extra |= {"data_shape": tuple(config.data_shape), "num_classes": config.num_classes}
    data = load_dataset(dataset, data_root, train=False, **extra)
    return to_model_range(data.images), data.labels


#: Where each dataset's test split is expected under the data root (for error messages).
_LAYOUT = {
    "mnist": "torchvision's layout, ROOT/MNIST/raw/",
    "cifar10": "torchvision's layout, ROOT/cifar-10-batches-py/",
    "imagefolder": "one folder per class under ROOT/test/, e.g. ROOT = .../cifar10-jpeg",
}


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def build_parser() -> arguments.ArgumentParser:
    """The CLI's parser (validated argument types; errors are one line, exit status 2)."""
    parser = arguments.ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n")[0],
        epilog="Defaults: detector at the paper's recall (MNIST 100%, CIFAR-10 78.6%); output "
        "RUN_DIR/attacks/<attack>.json, except for runs inside the package's artifacts/ folder "
        "(pass --output); data root --data-root, else $CGM_DATA_ROOT, else the run's recorded "
        "data_root.",
    )
    kind = _CONFIG_RANGES  # the same ranges as AttackConfig's
    parser.add_argument("run_dir", type=arguments.existing_dir, help="a trained run's folder")
    parser.add_argument("--attack", choices=ATTACKS, required=True)
    parser.add_argument("--n", type=kind["n"], default=100, help="images to attack (default 100)")
    parser.add_argument(
        "--eps",
        type=kind["eps"],
        default=None,
        help="L2 budget (default: 1.5 MNIST, 33/255 CIFAR-10)",
    )
    parser.add_argument(
        "--data-root",
        type=arguments.existing_dir,
        default=None,
        help=f"folder holding the datasets (default: ${arguments.DATA_ROOT_ENV}, else the "
        "data_root recorded in RUN_DIR/config.json)",
    )
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        default=None,
        help="default: the run's training dataset (RUN_DIR/config.json)",
    )
    detector = parser.add_mutually_exclusive_group()
    detector.add_argument(
        "--threshold",
        type=kind["threshold"],
        default=None,
        help="fixed detector threshold in bits/dim (the paper's: 1.4 MNIST, 4.0 CIFAR-10); "
        "default: the threshold at the paper's recall on real test images",
    )
    detector.add_argument(
        "--threshold-quantile",
        type=kind["threshold_quantile"],
        default=None,
        help="set the threshold at this quantile in (0, 1] of the recall images' bits/dim "
        "(default: the paper's recall, 1.0 MNIST, 0.786 CIFAR-10)",
    )
    parser.add_argument(
        "--recall-n",
        type=kind["recall_n"],
        default=1000,
        help="test images for the threshold's recall / quantile (default 1000)",
    )
    parser.add_argument(
        "--seed", type=kind["seed"], default=0, help="attack seed (Boundary, targets)"
    )
    parser.add_argument(
        "--noise-seed", type=kind["noise_seed"], default=0, help="model noise during the attack"
    )
    parser.add_argument(
        "--fresh-noise-seed",
        type=kind["fresh_noise_seed"],
        default=1,
        help="model noise for the second verification",
    )
    parser.add_argument("--batch-size", type=kind["batch_size"], default=10)
    parser.add_argument("--binary-search-steps", type=kind["binary_search_steps"], default=9)
    parser.add_argument("--cw-steps", type=kind["cw_steps"], default=300)
    parser.add_argument("--stepsize", type=kind["stepsize"], default=1e-2)
    parser.add_argument("--confidence", type=kind["confidence"], default=0.0)
    parser.add_argument(
        "--initial-const",
        type=_initial_const,
        default="auto",
        help="CW's first c: a number > 0, or 'auto' (linearised per example)",
    )
    parser.add_argument("--boundary-steps", type=kind["boundary_steps"], default=5000)
    parser.add_argument("--max-queries", type=kind["max_queries"], default=5000)
    parser.add_argument(
        "--proposal-scale",
        type=kind["proposal_scale"],
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
        type=kind["pool_size"],
        default=1000,
        help="test images to draw boundary-det starting points from",
    )
    parser.add_argument(
        "--example-images",
        type=kind["example_images"],
        default=8,
        help="rows of the examples PNG (0: none)",
    )
    order = parser.add_mutually_exclusive_group()
    order.add_argument(
        "--order-seed",
        type=kind["order_seed"],
        default=0,
        help="seed of the fixed random order in which test images are taken (default 0)",
    )
    order.add_argument(
        "--stored-order",
        action="store_true",
        help="take test images in their stored order instead (class by class for ImageFolder)",
    )
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="results JSON, FILE.json (default RUN_DIR/attacks/<attack>.json; required for runs "
        "inside the package's artifacts/ folder); the examples PNG goes beside it",
    )
    return parser


def _run_config(run_dir: Path, parser: arguments.ArgumentParser) -> dict:
    """RUN_DIR/config.json as written by :func:`flows.train.train` ({} when there is none)."""
    path = run_dir / "config.json"
    if not path.is_file():
        return {}
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        parser.error(f"argument run_dir: cannot read {path}: {_one_line(error)}")
    if not isinstance(saved, dict) or not isinstance(saved.get("train", {}), dict):
        parser.error(f"argument run_dir: {path} is not a run configuration (no 'train' object)")
    return saved


def main(argv: Sequence[str] | None = None) -> dict:
    """The CLI (module docstring); returns the report it wrote. Input errors exit with status 2
    and one line on stderr, checked before the model and the data are loaded where possible."""
    parser = build_parser()
    args = parser.parse_args(argv)
    saved = _run_config(args.run_dir, parser)
    train_config = saved.get("train", {})
    data_name = args.dataset or train_config.get("dataset")
    if data_name is None:
        parser.error(f"argument --dataset: {args.run_dir} has no config.json naming its dataset")
    if data_name not in DATASETS:
        parser.error(
            f"argument --dataset: the run's dataset {data_name!r} is not one of {DATASETS}"
        )
    # the paper's defaults (ε, recall) are per dataset; an image-folder run names its preset's
    paper_name = data_name
    preset = saved.get("preset")
    preset_dataset = preset.get("dataset") if isinstance(preset, dict) else None
    if data_name == "imagefolder" and preset_dataset in PAPER_EPS:
        paper_name = preset_dataset
    if args.eps is None and paper_name not in PAPER_EPS:
        parser.error(f"argument --eps: no paper budget for dataset {paper_name!r}; pass --eps")
    fixed = args.threshold is not None or args.threshold_quantile is not None
    if not fixed and paper_name not in PAPER_RECALL:
        parser.error(
            f"argument --threshold: no paper recall for dataset {paper_name!r} to set the "
            "detector at; pass --threshold T or --threshold-quantile Q"
        )
    try:
        device = torch.device(args.device)
    except RuntimeError:
        parser.error(f"argument --device: not a torch device: {args.device!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"argument --device: {args.device!r}, but CUDA is not available")
    output = arguments.output_path(PROG, args.output, args.run_dir, f"attacks/{args.attack}.json")
    recorded_root = train_config.get("data_root")
    data_root = arguments.resolve_data_root(args.data_root, recorded_root)
    if data_name != "synthetic" and data_root is None:
        parser.error(
            f"argument --data-root: dataset {data_name!r} needs a data root: pass --data-root DIR "
            f"or set ${arguments.DATA_ROOT_ENV}"
        )

    fields = {f.name for f in dataclasses.fields(AttackConfig)}
    if args.stored_order:
        args.order_seed = None
    args.spherical_moves = {"auto": None, "on": True, "off": False}[args.spherical_moves]
    args.dataset = paper_name
    config = AttackConfig(**{k: v for k, v in vars(args).items() if k in fields})

    try:
        model = flows.load(args.run_dir, map_location=device)
    except FileNotFoundError as error:
        arguments.fail(PROG, f"no trained model in run folder {args.run_dir}: {_one_line(error)}")
    except CheckpointError as error:
        arguments.fail(PROG, _one_line(error))
    try:
        test_x, test_y = _load_test_set(
            data_name, data_root, model, train_config.get("synthetic_size", 512)
        )
    except DatasetNotFoundError:
        arguments.fail(
            PROG,
            f"the {data_name} test set is not under data root {data_root} (from "
            f"{_data_root_source(args.data_root)}); expected "
            f"{_LAYOUT.get(data_name, 'the dataset')}: point --data-root or "
            f"${arguments.DATA_ROOT_ENV} at the folder holding it",
        )
    shape = getattr(getattr(model, "config", None), "data_shape", None)
    if shape is not None and tuple(test_x.shape[1:]) != tuple(shape):
        arguments.fail(
            PROG,
            f"the {data_name} test images have shape {tuple(test_x.shape[1:])}, the model of "
            f"{args.run_dir} takes {tuple(shape)}: wrong --dataset?",
        )
    test_x, test_y = test_x.to(device), test_y.to(device)
    try:
        report, result, x = run_experiment(
            model, test_x, test_y, config, paper_name, warn=_print_warning
        )
    except ExperimentError as error:
        arguments.fail(PROG, _one_line(error))
    report["config"]["run_dir"] = str(args.run_dir)
    report["data"] = {
        "dataset": data_name,
        "data_root": None if data_root is None else str(data_root),
    }
    image = save_examples(
        output.with_name(f"{output.stem}_examples.png"), x, result, report, config.example_images
    )
    report["example_images"] = None if image is None else str(image)
    output.write_text(json.dumps(report, indent=2))
    summary = {k: report[k]["table2"] for k in ("attack_noise", "fresh_noise")}
    print(json.dumps({"detector": report["detector"], **summary, "output": str(output)}, indent=2))
    return report


def _print_warning(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _data_root_source(given: Path | None) -> str:
    """Which rule of :func:`flows.arguments.resolve_data_root` chose the data root."""
    if given is not None:
        return "--data-root"
    if os.environ.get(arguments.DATA_ROOT_ENV):
        return f"${arguments.DATA_ROOT_ENV}"
    return "the data_root recorded in RUN_DIR/config.json"


if __name__ == "__main__":
    main()
