"""One attack experiment on a trained model (Section 6.2, Table 2): the library behind
``python -m flows.attack``.

:func:`run_experiment` takes a flows-style model, its test images and an :class:`AttackConfig`,
and returns a JSON-ready report (resolved config, detector threshold and its recall on real test
images, Table 2 statistics under the attack's noise and under a fresh one, per-example records),
the :class:`~flows.attacks.AttackResult` and the attacked clean images; :func:`save_examples`
draws the clean / adversarial / difference figure of a report.

Detector. By default the threshold is set at the paper's *recall* on real test images
(:data:`~flows.paper.PAPER_RECALL`: 100% for MNIST, 78.6% for CIFAR-10), i.e. at that quantile of
the bits/dim of the first ``recall_n`` test images, as the paper's figures and Table 2 do: the
paper's fixed thresholds (1.4 and 4.0 bits/dim) accept only a small fraction of real test images on
other models, and attacks against such a detector would report a misleading 0%. A fixed
``threshold`` is kept as given (with a warning when its recall is more than
:data:`RECALL_TOLERANCE` from the paper's); ``threshold_quantile`` sets another quantile.

Test order. Test sets may be stored class by class (the CIFAR-10 JPEG copy is an ImageFolder: its
first 1000 images are all airplanes), so "the first n test images" would be one class. Images are
therefore taken in the order ``torch.randperm(N, generator=torch.Generator().manual_seed(s))`` with
``s = order_seed`` (default 0, the order of :func:`flows.data.fixed_order`); the recall
images, the attacked images and the Boundary starting-point pool all come from it.
``order_seed=None`` keeps the stored order. Reported indices (``attacked_indices``) always refer
to the stored test set. Images are classified lazily, batch by batch in that order, until ``n``
correctly classified ones are found.

The attacks (:func:`make_attack`): ``cw`` (CW-L2 on the classifier alone), ``cw-det`` (CW-L2 with
the detector loss), ``boundary`` (the untargeted Boundary attack from uniform noise on the
classifier alone) and ``boundary-det`` (the modified Boundary attack on the C+1-way decision).
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from flows.arguments import (
    FINITE_FLOAT,
    NONNEGATIVE_FLOAT,
    NONNEGATIVE_INT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    PROBABILITY,
    check_fields,
    option,
)
from flows.attacks.base import AttackResult, batches, progress_bar
from flows.attacks.boundary import BoundaryAttack, modified_boundary_attack
from flows.attacks.carlini_wagner import CarliniWagnerL2
from flows.attacks.criteria import Misclassified, NotDetected
from flows.attacks.detector import LikelihoodDetector
from flows.attacks.threat_model import ThreatModel, flows_threat_model
from flows.attacks.verification import table2_statistics, verify
from flows.data import DATASETS
from flows.noise import FixedNoise
from flows.paper import PAPER_EPS, PAPER_RECALL, PAPER_THRESHOLDS

__all__ = [
    "ATTACKS",
    "RECALL_TOLERANCE",
    "AttackConfig",
    "ExperimentError",
    "example_figure",
    "first_correct",
    "load_test_set",
    "make_attack",
    "make_detector",
    "recall_warning",
    "run_experiment",
    "save_examples",
    "test_order",
    "threshold_quantile",
]

ATTACKS = ("cw", "cw-det", "boundary", "boundary-det")
#: A fixed threshold whose recall on the recall images is farther than this from the paper's
#: recall (:data:`~flows.paper.PAPER_RECALL`) gets a warning.
RECALL_TOLERANCE = 0.10


class ExperimentError(ValueError):
    """The experiment cannot run on these inputs (no paper budget, too few correct images…)."""


class _InitialConst:
    """The range of ``initial_const``: ``"auto"`` or a finite number > 0 (the API check and the
    command-line type, as :class:`flows.arguments.Range`)."""

    def describe(self) -> str:
        return "a finite number > 0 or 'auto'"

    def holds(self, value: object) -> bool:
        return value == "auto" or POSITIVE_FLOAT.holds(value)

    def check(self, name: str, value: object) -> None:
        if not self.holds(value):
            raise ValueError(f"{name} must be {self.describe()}, got {value!r}")

    def parse(self, text: str) -> float | str:
        if text == "auto":
            return text
        try:
            value = float(text)
        except ValueError:
            value = None
        if value is None or not self.holds(value):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}")
        return value

    def __call__(self, text: str) -> float | str:
        return self.parse(text)


class _Switch:
    """The range of ``spherical_moves``: None (automatic), True or False; on the command line
    ``auto``, ``on`` or ``off``."""

    WORDS = {"auto": None, "on": True, "off": False}

    def describe(self) -> str:
        return "one of auto, on, off"

    def check(self, name: str, value: object) -> None:
        if value is not None and not isinstance(value, bool):
            raise ValueError(f"{name} must be None, True or False, got {value!r}")

    def parse(self, text: str) -> bool | None:
        if text not in self.WORDS:
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}")
        return self.WORDS[text]

    def __call__(self, text: str) -> bool | None:
        return self.parse(text)


#: ``initial_const``: ``auto`` or a number > 0.
INITIAL_CONST = _InitialConst()
#: ``spherical_moves``: ``auto`` (None), ``on`` (True) or ``off`` (False).
SWITCH = _Switch()


@dataclass(frozen=True)
class AttackConfig:
    """Everything that determines an attack run; saved in the results JSON. Every field but
    ``attack`` is also a ``python -m flows.attack`` option (``--field-name``), with this default
    and this range (:func:`flows.arguments.option`).

    Detector: ``threshold`` (fixed, bits/dim), or ``threshold_quantile`` (that quantile of the
    recall images' bits/dim), or neither: the quantile at the paper's recall for the dataset
    (:data:`~flows.paper.PAPER_RECALL`; :func:`threshold_quantile`).
    """

    attack: str = option(None, "the attack", choices=ATTACKS, cli=False)
    n: int = option(100, "images to attack", POSITIVE_INT)
    eps: float | None = option(
        None, "L2 budget (default: 1.5 MNIST, 33/255 CIFAR-10)", NONNEGATIVE_FLOAT
    )
    dataset: str | None = option(
        None, "default: the run's training dataset (RUN_DIR/config.json)", choices=DATASETS
    )
    threshold: float | None = option(
        None,
        "fixed detector threshold in bits/dim (the paper's: 1.4 MNIST, 4.0 CIFAR-10); default: "
        "the threshold at the paper's recall on real test images",
        FINITE_FLOAT,
    )
    threshold_quantile: float | None = option(
        None,
        "set the threshold at this quantile in (0, 1] of the recall images' bits/dim (default: "
        "the paper's recall, 1.0 MNIST, 0.786 CIFAR-10)",
        PROBABILITY,
    )
    recall_n: int = option(1000, "test images for the threshold's recall / quantile", POSITIVE_INT)
    seed: int = option(0, "attack seed (Boundary, targets)", NONNEGATIVE_INT)
    noise_seed: int = option(0, "model noise during the attack", NONNEGATIVE_INT)
    fresh_noise_seed: int = option(1, "model noise for the second verification", NONNEGATIVE_INT)
    batch_size: int = option(
        10, "images per batch (attack, classification, detector recall)", POSITIVE_INT
    )
    binary_search_steps: int = option(9, "CW: binary-search steps over c", POSITIVE_INT)
    cw_steps: int = option(300, "CW: Adam steps per binary-search step", POSITIVE_INT)
    stepsize: float = option(1e-2, "CW: Adam learning rate", POSITIVE_FLOAT)
    confidence: float = option(0.0, "CW: κ, log-posterior margin in nats", NONNEGATIVE_FLOAT)
    initial_const: float | str = option(
        "auto", "CW's first c: a number > 0, or 'auto' (linearised per example)", INITIAL_CONST
    )
    boundary_steps: int = option(5000, "Boundary: maximum steps per image", POSITIVE_INT)
    max_queries: int | None = option(5000, "Boundary: query budget per image", POSITIVE_INT)
    proposal_scale: int = option(
        1,
        "Boundary: draw the orthogonal step at 1/s resolution, upsampled (1: i.i.d.)",
        POSITIVE_INT,
    )
    spherical_moves: bool | None = option(
        None,
        "Boundary: also move to adversarial spherical candidates: auto (default: on for "
        "boundary, off for boundary-det), on, or off (Brendel et al.'s rule)",
        SWITCH,
    )
    pool_size: int = option(
        1000, "test images to draw boundary-det starting points from", POSITIVE_INT
    )
    example_images: int = option(8, "rows of the examples PNG (0: none)", NONNEGATIVE_INT)
    order_seed: int | None = option(
        0, "seed of the fixed random order in which test images are taken", NONNEGATIVE_INT
    )

    def __post_init__(self):
        if self.attack not in ATTACKS:
            raise ValueError(f"attack must be one of {ATTACKS}, got {self.attack!r}")
        if self.threshold is not None and self.threshold_quantile is not None:
            raise ValueError("give --threshold or --threshold-quantile, not both")
        check_fields(self)


def test_order(size: int, seed: int | None) -> Tensor:
    """The order in which test images are taken: a seeded permutation, or the stored order (None)."""
    if seed is None:
        return torch.arange(size)
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed))


def threshold_quantile(config: AttackConfig, dataset: str | None) -> float | None:
    """The quantile that sets the detector threshold, or None for a fixed ``config.threshold``.

    ``config.threshold_quantile`` when given, else (no threshold either) the paper's recall for
    ``dataset`` (:data:`~flows.paper.PAPER_RECALL`).
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
    """Run one attack on a flows-style model (duck-typed, see
    :func:`~flows.attacks.flows_threat_model`; ``bits_per_dim`` is needed too).

    Test images are taken in the order :func:`test_order` (``config.order_seed``): the first
    ``recall_n`` for the detector's threshold and recall (their bits/dim are the model's
    ``bits_per_dim`` under the attack's noise), the first ``n`` correctly classified ones as
    attack inputs (classified lazily in batches of ``config.batch_size``), the first
    ``pool_size`` others as the modified Boundary attack's starting-point pool. The detector is
    :func:`make_detector`'s. A model with an integer ``num_dims`` (a flows model) gets bits/dim
    from the same encoding as the class scores (``bits_from_class_scores``). ``dataset`` names
    the paper's defaults (ε, recall); ``warn`` receives :func:`recall_warning`'s line, before
    the attack.

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
    bits_from_class_scores = isinstance(getattr(model, "num_dims", None), int)
    num_dims = int(getattr(model, "num_dims", test_x[0].numel()))
    bpd_fn = FixedNoise(model.bits_per_dim, config.noise_seed)
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
    shared = {"eps": eps, "bits_from_class_scores": bits_from_class_scores}
    tm = flows_threat_model(model, detector, noise_seed=config.noise_seed, **shared)
    fresh = flows_threat_model(model, detector, noise_seed=config.fresh_noise_seed, **shared)

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
    result = _attack(config, tm, x, y, test_x, test_y, chosen, progress)
    clean_bpd = tm.bits_per_dim(x)

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
        "targets": None if result.targets is None else result.targets.tolist(),
    }
    for name, model_view in (("attack_noise", tm), ("fresh_noise", fresh)):
        verification = verify(model_view, x, result, y, eps=eps)
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


def make_attack(config: AttackConfig) -> CarliniWagnerL2 | BoundaryAttack:
    """The attack of ``config`` with its hyperparameters (CW-L2 for ``cw*``, Boundary for
    ``boundary*``); the other attack's fields are ignored."""
    if config.attack in ("cw", "cw-det"):
        return CarliniWagnerL2(
            binary_search_steps=config.binary_search_steps,
            steps=config.cw_steps,
            stepsize=config.stepsize,
            confidence=config.confidence,
            initial_const=config.initial_const,
        )
    return BoundaryAttack(
        steps=config.boundary_steps,
        max_queries=config.max_queries,
        seed=config.seed,
        proposal_scale=config.proposal_scale,
        spherical_moves=config.spherical_moves,
    )


def _attack(
    config: AttackConfig,
    tm: ThreatModel,
    x: Tensor,
    y: Tensor,
    test_x: Tensor,
    test_y: Tensor,
    chosen: Tensor,
    progress: bool,
) -> AttackResult:
    """Run ``config``'s attack on ``x``: the plain attacks face the classifier alone
    (``tm.with_detector(None)``), ``cw-det`` the classifier and the detector, ``boundary-det``
    the C+1-way decision, from a pool of the first ``pool_size`` test images not attacked."""
    attack = make_attack(config)
    options = {"batch_size": config.batch_size, "progress": progress}
    if config.attack in ("cw", "boundary"):
        return attack(tm.with_detector(None), x, Misclassified(y), **options)
    if config.attack == "cw-det":
        return attack(tm, x, Misclassified(y) & NotDetected(tm.detector), **options)
    keep = torch.ones(len(test_x), dtype=torch.bool)
    keep[chosen.cpu()] = False
    pool = torch.nonzero(keep).flatten()[: config.pool_size].to(test_y.device)
    try:
        return modified_boundary_attack(attack, tm, x, y, test_x[pool], test_y[pool], **options)
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


def load_test_set(
    dataset: str, data_root: Path | None, model: Any, synthetic_size: int = 512
) -> tuple[Tensor, Tensor]:
    """The stored test split of ``dataset`` as model inputs ``k/256 − 0.5`` and labels, at the
    model's data shape and class count (``model.config``) for the synthetic dataset.

    Raises:
        flows.data.DatasetNotFoundError: the split is not under ``data_root``.
    """
    from flows.data import load_dataset
    from flows.preprocess import to_model_range

    config = getattr(model, "config", None)
    extra: dict[str, Any] = {"synthetic_size": synthetic_size}
    if config is not None:
        extra |= {"data_shape": tuple(config.data_shape), "num_classes": config.num_classes}
    data = load_dataset(dataset, data_root, train=False, **extra)
    return to_model_range(data.images), data.labels
