r"""The adaptive evaluation of one attack on a trained model (Section 6.2, Table 2): the library
behind ``python -m flows.attack``.

:func:`run_experiment` takes a flows-style model, its test images and an :class:`AttackConfig`;
it sets the detector, picks the images, attacks them under the chosen threat model (batch by
batch, resumable from a cache), re-verifies every adversarial, and returns a JSON-ready report,
the :class:`~flows.attacks.AttackResult` and the attacked clean images; :func:`save_examples`
draws the clean / adversarial / difference figure of a report.

Threat models (``threat_model``, issue 19). The flow classifier draws its padding border and its
noise channels afresh at every evaluation (:mod:`flows.noise`).

- ``"fixed"``: the attacker knows the noise draw. Every query sees the draw of ``noise_seed``
  (:class:`~flows.noise.FixedNoise`; :func:`~flows.attacks.flows_threat_model` with
  ``noise="fixed"``), so the model is a deterministic function: the setting of the paper's
  Table 2 and of the committed table. ``eot = decision_draws = 1``.
- ``"deployed"``: every query draws fresh noise, independently per row
  (:class:`~flows.noise.FreshNoise`, ``noise="fresh"``). Gradient attacks (CW-L2, APGD-L2,
  likelihood matching) average their loss over ``eot = K`` draws per step (expectation over
  transformation, Athalye et al. 2018; default :data:`DEPLOYED_EOT` = 8), decision-based ones
  (Boundary, the segment bound, and the choice of starting points) take each decision by a vote
  over ``decision_draws = M`` draws (default :data:`DEPLOYED_DECISION_DRAWS` = 15, odd: no ties),
  which must exceed ``decision_quorum · M``. The noise of batch ``b`` and attack ``a`` comes from
  a generator seeded by ``(noise_seed, b, a)`` (:func:`derive_seed`), so a batch's result does not
  depend on which batches ran before it in the same process (what makes a resumed run equal an
  uninterrupted one).

Verification (every statistic comes from verified adversarials only). Each returned adversarial
``x'_i`` of clean ``x_i`` (label ``y_i``) is re-checked:

- on the *deployed* model under both threat models (``"deployed"``,
  :func:`~flows.attacks.verify_over_noise`): ``N = verify_draws`` fresh draws (default 32), giving
  per example :math:`\hat p_{\text{fool}}`, :math:`\hat p_{\text{fool, undet}}` (fooled *and*
  accepted in the same draw) and :math:`\hat p_{\text{det}}`. **Rule**: an example is a success
  when the attack claimed it, it lies in the box and :math:`\|x'_i - x_i\|_2 \le \varepsilon`, and
  :math:`\hat p \ge 1/2` (:data:`SUCCESS_RULE`; ``success_undetected`` with
  :math:`\hat p_{\text{fool, undet}}`). The distribution of the :math:`\hat p` is reported too
  (:func:`~flows.attacks.noise_statistics`);
- under the fixed threat model also once under the attack's own noise (``"attack_noise"``,
  :func:`~flows.attacks.verify`, Table 2's setting) and once under a fresh fixed draw
  (``"fresh_noise"``, seed ``fresh_noise_seed``), as before.

Each section's ``"table2"`` holds :func:`~flows.attacks.noise_statistics`: the percentages of
successful-and-undetected and of fooling adversarials within ε (Table 2's main number and the one
in parentheses) with Wilson 95 % intervals over the ``n`` images, and the medians of the L2 of
*verified* successes. The attack's own claims are only in ``report["attack"]``
(``median_l2_claimed``). *Rounding*: every adversarial is also rounded to the nearest valid 8-bit
image (:func:`round_to_8bit`) and verified again (``"rounded_8bit"``).

Detector. By default the threshold is set at the paper's *recall* on real test images
(:data:`~flows.paper.PAPER_RECALL`: 100% for MNIST, 78.6% for CIFAR-10), i.e. at that quantile of
the bits/dim of the first ``recall_n`` test images under the noise of ``noise_seed`` (one draw, the
same for every image), as the paper's figures and Table 2 do: the paper's fixed thresholds (1.4
and 4.0 bits/dim) accept only a small fraction of real test images on other models, and attacks
against such a detector would report a misleading 0%. A fixed ``threshold`` is kept as given
(with a warning when its recall is more than :data:`RECALL_TOLERANCE` from the paper's);
``threshold_quantile`` sets another quantile.

Test order. Test sets may be stored class by class (the CIFAR-10 JPEG copy is an ImageFolder: its
first 1000 images are all airplanes), so "the first n test images" would be one class. Images are
therefore taken in the order ``torch.randperm(N, generator=torch.Generator().manual_seed(s))`` with
``s = order_seed`` (default 0, the order of :func:`flows.data.fixed_order`); the recall
images, the attacked images and the pool all come from it. ``order_seed=None`` keeps the stored
order. Reported indices (``attacked_indices``) always refer to the stored test set. Images are
classified lazily, batch by batch in that order, until ``n`` correctly classified ones are found,
under the model's own rule (:meth:`flows.ConditionalGlow.class_scores`: the ``z_s`` logits of the
Split prior): under the attack's noise for ``"fixed"``, by the majority over ``verify_draws``
fresh draws for ``"deployed"``.

The attacks (:data:`ATTACKS`, :func:`make_attack`): ``cw`` / ``cw-det`` (CW-L2, without / with
the detector loss; ``cw_space="box"`` by default: projected Adam in x space, which moves the
background pixels at the box's bound, see :class:`~flows.attacks.CarliniWagnerL2`), ``apgd`` /
``apgd-det`` (L2 Auto-PGD at the fixed ε, the detector as a (C+1)-th logit by default),
``boundary`` (untargeted, from uniform noise, on the classifier alone) / ``boundary-det`` (the
modified Boundary attack on the C+1-way decision, targeted, started from a pool image of the
target class, as Section 6.2, or from the contrast-reduced input when that is closer after
bisection: ``boundary_starts``, which :mod:`flows.robustness.report` motivates), ``match`` (likelihood matching of the nearest usable pool image of another class)
and ``segment`` (the segment bound to that image). The *pool* is the first ``pool_size`` test
images of the order that are not attacked. ``ensemble`` runs ``cw-det``, ``apgd-det``,
``boundary-det``, ``match`` and ``segment`` (:data:`ENSEMBLE`; the experiment always has a
detector) on the same images under the same threat model, verifies each, and takes the worst case
per example (:func:`~flows.attacks.worst_case`); its adversarials are then re-verified like a
single attack's, under draws independent of those that selected them.

Resumability. With a ``cache`` folder (the CLI's ``<output stem>.partial/``), the attack runs batch
by batch (``batch_size``) and each finished batch's results are saved atomically as
``batch_00000.pt`` (tensors and strings only: ``torch.load(..., weights_only=True)`` reads them),
beside ``cache.json`` (the configuration, the attacked images' and the model's fingerprints) and
``timing.json`` (each saved batch's wall time, so that a resumed run can report the whole cost:
:func:`cached_batch_seconds`). A rerun with the same configuration continues after the last
finished batch; one with another configuration is refused (:class:`ExperimentError` naming the
option; ``restart=True`` / ``--restart`` discards the cache). The report is the same either way.

Sanity checks (``sanity``, Carlini et al. 2019; :func:`~flows.attacks.run_sanity_checks`), on the
first ``sanity_n`` attacked images (default 20) to keep the reruns affordable: the unbounded
attack (ε = ∞; APGD, a fixed-ε attack: the ε-doubling search of
:meth:`_SanityRuns.unbounded`) breaks every image; success does not fall over ε ∈ {¼, ½, 1, 2}·ε (minimum-norm
attacks: from their verified L2; APGD: reruns at each ε); twice the iterations (and, deployed,
twice the EOT / decision draws) does not raise success beyond the Wilson half-width; the gradient
attack is not significantly weaker than the Boundary attack on the same images ("possible
gradient masking"); margin gradients are finite and non-zero. Verdicts use the threat model's own
verification (``attack_noise`` or ``deployed``).

Randomness audit (``audit``, on by default; :func:`~flows.attacks.decision_randomness`): how
often the C+1-way decision of the deployed model changes across ``verify_draws`` draws on the
attacked clean images, and the ``K`` and ``N`` that :func:`~flows.attacks.recommend_draws` derives
from it, beside the ones used. ``confidence="audit"`` runs it before the attacks and sets their
κ from it (``kappa_factor`` × the median margin spread; :func:`_confidence_from_audit`), reported
as ``confidence_rule`` and in the resolved ``config``.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import functools
import hashlib
import json
import math
import os
import shutil
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
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
    Range,
    check_fields,
    option,
)
from flows.attacks.apgd import APGDL2
from flows.attacks.base import Attack, AttackResult, batches, flat_l2, progress_bar
from flows.attacks.boundary import (
    BoundaryAttack,
    random_targets,
    select_starting_points,
)
from flows.attacks.carlini_wagner import CarliniWagnerL2
from flows.attacks.criteria import (
    Misclassified,
    NotDetected,
    TargetedMisclassified,
    fooled_and_undetected,
)
from flows.attacks.detector import LikelihoodDetector
from flows.attacks.ensemble import segment_flags, verified_l2, verified_success, worst_case
from flows.attacks.likelihood_matching import LikelihoodMatching
from flows.attacks.randomness import (
    DecisionRandomness,
    decision_randomness,
    kappa_from_audit,
    recommend_draws,
)
from flows.attacks.sanity import run_sanity_checks
from flows.attacks.segment import SegmentAttack, select_other_class_images
from flows.attacks.threat_model import ThreatModel, flows_threat_model
from flows.attacks.verification import (
    NoiseVerification,
    Verification,
    noise_statistics,
    verify,
    verify_over_noise,
)
from flows.data import DATASETS
from flows.measures import NUM_BINS
from flows.noise import FixedNoise
from flows.paper import PAPER_EPS, PAPER_RECALL, PAPER_THRESHOLDS

__all__ = [
    "ATTACKS",
    "DEPLOYED_DECISION_DRAWS",
    "DEPLOYED_EOT",
    "ENSEMBLE",
    "RECALL_TOLERANCE",
    "SANITY_EPS_FACTORS",
    "SUCCESS_RULE",
    "THREAT_MODELS",
    "AttackConfig",
    "ExperimentError",
    "at_eps",
    "cache_folder",
    "cached_batch_seconds",
    "derive_seed",
    "example_figure",
    "first_correct",
    "load_test_set",
    "make_attack",
    "make_detector",
    "recall_warning",
    "round_to_8bit",
    "run_experiment",
    "save_examples",
    "test_order",
    "threshold_quantile",
]

ATTACKS = (
    "cw",
    "cw-det",
    "apgd",
    "apgd-det",
    "boundary",
    "boundary-det",
    "match",
    "segment",
    "ensemble",
)
#: The members of ``ensemble``, in the order that breaks ties in L2 (the first one wins).
ENSEMBLE = ("cw-det", "apgd-det", "boundary-det", "match", "segment")
#: Attacks that follow gradients (compared with the Boundary attack by the sanity checks).
GRADIENT_ATTACKS = ("cw", "cw-det", "apgd", "apgd-det", "match")
#: Attacks whose criterion includes the detector (success = fooled *and* undetected).
DETECTION_AWARE = ("cw-det", "apgd-det", "boundary-det", "match", "segment")
THREAT_MODELS = ("fixed", "deployed")
#: Default EOT draws ``K`` per gradient step under the deployed threat model.
DEPLOYED_EOT = 8
#: Default draws ``M`` per decision of the decision-based attacks under the deployed threat model
#: (odd, so a majority vote has no ties).
DEPLOYED_DECISION_DRAWS = 15
#: The fraction of fresh draws in which an adversarial must fool to count.
SUCCESS_RULE = 0.5
#: The sanity checks' ε grid, as multiples of the evaluated ε.
SANITY_EPS_FACTORS = (0.25, 0.5, 1.0, 2.0)
#: A fixed threshold whose recall on the recall images is farther than this from the paper's
#: recall (:data:`~flows.paper.PAPER_RECALL`) gets a warning.
RECALL_TOLERANCE = 0.10
#: AttackConfig fields that only change the verification and the report, not the attacks: a
#: resumed run may change them (but ``verify_draws`` under the deployed threat model, where it
#: also selects the attacked images).
#: Options added after caches (a run's per-batch cache, ``paper_figures``' cell cache) were
#: made, with the value that reproduces the behaviour before them: a cache that does not record
#: one was made with this value, and a fingerprint leaves it out at this value.
ADDED_OPTIONS: dict[str, Any] = {"apgd_run_to_end": False, "attack_precision": "float32"}

#: Precisions of the attacked model's coupling networks (:attr:`AttackConfig.attack_precision`).
ATTACK_PRECISIONS = ("float32", "bfloat16")

REPORT_ONLY = ("verify_draws", "fresh_noise_seed", "sanity", "sanity_n", "audit", "example_images")

#: Options that change how fast a run is, not what it computes: left out of the caches'
#: fingerprints and of ``paper_figures``' cell keys, so that a cache resumes under another value.
#: ``model_batch`` splits model calls (:class:`~flows.attacks.ThreatModel`): the same numbers up
#: to floating-point rounding and, on the deployed model, which fresh draw each row gets.
PERFORMANCE_ONLY = ("model_batch",)

_STATISTICS_RULES = (
    f"success: claimed by the attack, in the box, L2 <= eps, and fooling the deployed model in at "
    f"least {SUCCESS_RULE:g} of verify_draws fresh draws (success_undetected: fooled and accepted "
    "by the detector in the same draw); attack_noise / fresh_noise: one verdict under one fixed "
    "draw (fixed threat model only)",
    "percentages: of the n attacked images, with Wilson 95% score intervals",
    "medians of L2: over verified successes only (noise_statistics); the attack's own claims are "
    "attack.median_l2_claimed",
    "rounded_8bit: the adversarials rounded to the nearest valid 8-bit image k/256 - 0.5 and "
    "verified again (L2 to the clean image recomputed)",
)


class ExperimentError(ValueError):
    """The experiment cannot run on these inputs (no paper budget, too few correct images, a
    cache made with another configuration…)."""


class _NumberOrWord:
    """The range of an option that takes a number of ``numbers`` (a
    :class:`flows.arguments.Range`) or the one ``word``: the API check and the command-line type,
    as :class:`flows.arguments.Range`."""

    def __init__(self, word: str, numbers: Any, what: str):
        self.word, self.numbers, self.what = word, numbers, what

    def describe(self) -> str:
        return f"{self.what} or '{self.word}'"

    def holds(self, value: object) -> bool:
        return value == self.word or self.numbers.holds(value)

    def check(self, name: str, value: object) -> None:
        if not self.holds(value):
            raise ValueError(f"{name} must be {self.describe()}, got {value!r}")

    def parse(self, text: str) -> float | str:
        if text == self.word:
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
INITIAL_CONST = _NumberOrWord("auto", POSITIVE_FLOAT, "a finite number > 0")
#: ``confidence`` (κ): ``audit`` or a number >= 0.
KAPPA = _NumberOrWord("audit", NONNEGATIVE_FLOAT, "a finite number >= 0")
#: ``spherical_moves``: ``auto`` (None), ``on`` (True) or ``off`` (False).
SWITCH = _Switch()
#: ``decision_quorum``: in [0.5, 1).
QUORUM = Range(float, low=0.5, high=1, high_open=True)


@dataclass(frozen=True)
class AttackConfig:
    """Everything that determines an attack run; saved in the results JSON. Every field but
    ``attack`` is also a ``python -m flows.attack`` option (``--field-name``), with this default
    and this range (:func:`flows.arguments.option`).

    Detector: ``threshold`` (fixed, bits/dim), or ``threshold_quantile`` (that quantile of the
    recall images' bits/dim), or neither: the quantile at the paper's recall for the dataset
    (:data:`~flows.paper.PAPER_RECALL`; :func:`threshold_quantile`).

    Draws: ``eot`` and ``decision_draws`` default to 1 under the fixed threat model (every draw
    is the same there, so more are refused) and to :data:`DEPLOYED_EOT` /
    :data:`DEPLOYED_DECISION_DRAWS` under the deployed one (:attr:`eot_draws`,
    :attr:`decision_votes`).
    """

    attack: str = option(None, "the attack", choices=ATTACKS, cli=False)
    threat_model: str = option(
        "fixed",
        "fixed: the attacker knows the model's noise draw (FixedNoise, Table 2's setting); "
        "deployed: fresh noise at every query, gradient attacks average over --eot draws, "
        "decision-based ones vote over --decision-draws",
        choices=THREAT_MODELS,
    )
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
    seed: int = option(0, "attack seed (Boundary, APGD starts, targets)", NONNEGATIVE_INT)
    noise_seed: int = option(0, "model noise during the attack", NONNEGATIVE_INT)
    fresh_noise_seed: int = option(1, "model noise of the verifications", NONNEGATIVE_INT)
    batch_size: int = option(
        10,
        "images per batch (attack and its resumable cache, classification, detector recall)",
        POSITIVE_INT,
    )
    eot: int | None = option(
        None,
        f"EOT draws K per gradient step (default: 1 fixed, {DEPLOYED_EOT} deployed)",
        POSITIVE_INT,
    )
    model_batch: int = option(
        64,
        "most input rows per model call: a batch under EOT or decision draws is split into "
        "calls of at most this many rows (speed only; raise it on a GPU)",
        POSITIVE_INT,
    )
    attack_precision: str = option(
        "float32",
        "precision of the coupling networks while attacking (bfloat16: faster on CPUs with "
        "AVX512-BF16 or AMX and on GPUs, benchmarks/attack_precision.md); the choice of the "
        "attacked images, the detector and every verification stay float32",
        choices=ATTACK_PRECISIONS,
    )
    decision_draws: int | None = option(
        None,
        "draws M per decision of Boundary / segment / starting points (default: 1 fixed, "
        f"{DEPLOYED_DECISION_DRAWS} deployed)",
        POSITIVE_INT,
    )
    decision_quorum: float = option(
        0.5, "a point is adversarial when it holds in more than this fraction of M draws", QUORUM
    )
    verify_draws: int = option(
        32, "fresh draws N of the deployed model per adversarial (verification)", POSITIVE_INT
    )
    binary_search_steps: int = option(9, "CW: binary-search steps over c", POSITIVE_INT)
    cw_steps: int = option(300, "CW: Adam steps per binary-search step", POSITIVE_INT)
    cw_space: str = option(
        "box",
        "CW: box (projected Adam in x space: reaches pixels at the box boundary) or tanh "
        "(Carlini & Wagner's change of variables)",
        choices=("box", "tanh"),
    )
    stepsize: float = option(
        1e-3,
        "CW and likelihood matching: Adam learning rate (1e-2 left CW-det and matching noisy "
        "above the detector on CIFAR-10: benchmarks/table2_budget.md)",
        POSITIVE_FLOAT,
    )
    confidence: float | str = option(
        0.0,
        "CW and APGD: κ, log-posterior margin in nats, or 'audit': kappa_factor × the median "
        "margin spread across fresh draws on the attacked clean images (deployed; 0 when fixed)",
        KAPPA,
    )
    kappa_factor: float = option(
        3.0, "with --confidence audit: κ in units of the median margin spread", POSITIVE_FLOAT
    )
    initial_const: float | str = option(
        "auto", "CW's first c: a number > 0, or 'auto' (linearised per example)", INITIAL_CONST
    )
    apgd_steps: int = option(100, "APGD: steps per restart", POSITIVE_INT)
    apgd_restarts: int = option(1, "APGD: random restarts", POSITIVE_INT)
    apgd_detector_mode: str = option(
        "logit",
        "APGD-det: logit (the detector as a (C+1)-th non-image class, Tramèr et al. 2020) or sum "
        "(classification hinge + detector excess)",
        choices=("logit", "sum"),
    )
    apgd_run_to_end: bool = option(
        False,
        "APGD: run every step and return the successful point of lowest EOT loss, instead of "
        "stopping each image at its first success (on a randomised model that one lies on the "
        "boundary of the expected decision)",
    )
    boundary_steps: int = option(5000, "Boundary: maximum steps per image", POSITIVE_INT)
    max_queries: int | None = option(
        5000, "Boundary: query budget per image (a decision costs at most M queries)", POSITIVE_INT
    )
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
    boundary_starts: str = option(
        "pool+midpoint",
        "boundary-det: starting points: pool (Section 6.2: a random pool image of the target "
        "class, correctly classified and undetected) or pool+midpoint (also the middle of the "
        "input bounds, the fully contrast-reduced input; the closer after bisection starts)",
        choices=("pool", "pool+midpoint"),
    )
    segment_grid: int = option(64, "segment bound: grid points on each segment", POSITIVE_INT)
    match_steps: int = option(300, "likelihood matching: Adam steps", POSITIVE_INT)
    pool_size: int = option(
        1000,
        "test images (not attacked) for boundary-det starting points and match / segment ends",
        POSITIVE_INT,
    )
    sanity: bool = option(False, "run the sanity checks (reruns on --sanity-n images)")
    sanity_n: int = option(20, "images (the first attacked) of the sanity reruns", POSITIVE_INT)
    audit: bool = option(
        True, "the randomness audit of the deployed decision on the attacked clean images"
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
        if self.threat_model == "fixed":
            for name in ("eot", "decision_draws"):
                value = getattr(self, name)
                if value is not None and value > 1:
                    flag = name.replace("_", "-")
                    raise ValueError(
                        f"--{flag} {value} needs --threat-model deployed: under fixed noise "
                        "every draw is the same"
                    )
        if self.audit and self.verify_draws < 2:
            raise ValueError(
                "--verify-draws 1 cannot measure the audit's spread across draws: give "
                "--verify-draws >= 2 or --no-audit"
            )

    @property
    def eot_draws(self) -> int:
        """``K``: ``eot``, else 1 (fixed) or :data:`DEPLOYED_EOT` (deployed)."""
        if self.eot is not None:
            return self.eot
        return DEPLOYED_EOT if self.threat_model == "deployed" else 1

    @property
    def decision_votes(self) -> int:
        """``M``: ``decision_draws``, else 1 (fixed) or :data:`DEPLOYED_DECISION_DRAWS`."""
        if self.decision_draws is not None:
            return self.decision_draws
        return DEPLOYED_DECISION_DRAWS if self.threat_model == "deployed" else 1


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


def round_to_8bit(x: Tensor) -> Tensor:
    r"""``(B, ...)``: the nearest valid 8-bit image in the model's input range.

    An 8-bit pixel ``k ∈ {0, …, 255}`` enters the model as ``k/256 − 0.5``
    (:func:`flows.preprocess.to_model_range`), so

    .. math::
        \operatorname{round}(x) = \frac{\min(255, \max(0, \lfloor 256 (x + 0.5) \rceil))}{256}
            - 0.5,

    which leaves every clean test image unchanged. (Rounding with 255 levels,
    ``round((x + 0.5)·255)/255 − 0.5``, would move clean images too: they are not on that grid.)
    """
    levels = torch.round((x.detach() + 0.5) * NUM_BINS).clamp(0, NUM_BINS - 1)
    return levels / NUM_BINS - 0.5


def at_eps(
    verification: Verification | NoiseVerification, eps: float
) -> Verification | NoiseVerification:
    """A verification made without a budget (``eps=math.inf``), restricted to the budget ``eps``.

    Both verifications' verdicts are conjunctions with ``within_eps = l2 <= eps``
    (:func:`~flows.attacks.verify`, :func:`~flows.attacks.verify_over_noise`), and nothing else
    in them depends on ε, so one verification serves every ε (the sanity checks' ε grid) and the
    result equals a verification made at ``eps``.
    """
    within = verification.l2 <= eps
    return dataclasses.replace(
        verification,
        within_eps=verification.within_eps & within,
        fools_classifier=verification.fools_classifier & within,
        success_undetected=verification.success_undetected & within,
    )


def derive_seed(seed: int, *labels: int | str) -> int:
    """An independent 32-bit seed for the stage ``labels`` (integers, or strings hashed with
    CRC-32) of a run seeded with ``seed``: ``numpy.random.SeedSequence([seed, *labels])``."""
    keys = [seed] + [zlib.crc32(v.encode()) if isinstance(v, str) else int(v) for v in labels]
    return int(np.random.SeedSequence(keys).generate_state(1, dtype=np.uint32)[0])


def cache_folder(output: Path) -> Path:
    """Where the resumable per-batch results of the run writing ``output`` are kept:
    ``<output stem>.partial`` beside it."""
    return output.with_name(f"{output.stem}.partial")


def run_experiment(
    model: Any,
    test_x: Tensor,
    test_y: Tensor,
    config: AttackConfig,
    dataset: str | None = None,
    progress: bool = True,
    warn: Callable[[str], None] | None = None,
    cache: Path | None = None,
    restart: bool = False,
) -> tuple[dict, AttackResult, Tensor]:
    """Run one attack (or the ensemble) on a flows-style model (duck-typed, see
    :func:`~flows.attacks.flows_threat_model`; ``bits_per_dim`` is needed too) and verify it.

    Test images are taken in the order :func:`test_order` (``config.order_seed``): the first
    ``recall_n`` for the detector's threshold and recall, the first ``n`` correctly classified
    ones as attack inputs (classified lazily in batches of ``config.batch_size``), the first
    ``pool_size`` others as the pool (module docstring). A model with an integer ``num_dims`` (a
    flows model) gets bits/dim from the same encoding as the class scores.
    ``dataset`` names the paper's defaults (ε, recall); ``warn`` receives
    :func:`recall_warning`'s line, before the attack. ``cache``: the folder of the per-batch
    results (None: nothing is saved; the folder is left in place, the CLI removes it once the
    JSON is written); ``restart`` discards it first.

    Returns:
        The JSON-ready report, the attack result (for ``ensemble``: the per-example worst case
        as an :class:`~flows.attacks.AttackResult`, each member's own result in its
        ``members``) and the attacked clean images. Report keys:
        ``config`` (resolved), ``threat_model``, ``detector``, ``test_order``,
        ``attacked_indices``, ``attacked_labels``, ``test_images_classified``,
        ``skipped_misclassified``, ``clean_bits_per_dim``, ``clean_detected``, ``targets``,
        ``attack`` (the claims), ``attack_noise`` / ``fresh_noise`` (fixed threat model; None
        when deployed), ``deployed``, ``rounded_8bit``, ``records`` (per example),
        ``statistics_rules``, ``ensemble``, ``sanity`` and ``audit`` (None when not run).

    Raises:
        ExperimentError: no ε or no detector rule for ``dataset``, fewer than ``n`` correctly
            classified test images, no usable pool image of some class, APGD at ε = 0, or a
            cache made with another configuration (without ``restart``).
    """
    setup, info = _setup(model, test_x, test_y, config, dataset, progress, warn)
    audit = None
    if config.confidence == "audit":
        setup, audit, info["confidence_rule"] = _confidence_from_audit(setup)
        info["resolved"]["confidence"] = setup.config.confidence
    names = ENSEMBLE if config.attack == "ensemble" else (config.attack,)
    store = None
    if cache is not None:
        store = _BatchCache(Path(cache), _fingerprint(setup, model, info["attacked_indices"]))
        store.open(restart)
    # prepared once, before any batch, so that a resumed run settles the same pool (_prepare)
    prepared = _prepare(setup, names, setup.x, setup.y, "main")
    results = _attack_all(setup, names, store, progress, prepared)

    report: dict[str, Any] = {
        "config": {**dataclasses.asdict(config), **info.pop("resolved")},
        "threat_model": _threat_model_summary(setup),
        **info,
    }
    if config.attack == "ensemble":
        result, ensemble = _ensemble(setup, results, progress)
        result = dataclasses.replace(result, members=dict(results))
        report["ensemble"] = ensemble
    else:
        result = results[config.attack]
        report["ensemble"] = None
    report["targets"] = None if result.targets is None else result.targets.tolist()
    succeeded = result.l2[result.success]
    report["attack"] = {
        "success_rate": result.success.double().mean().item(),
        "median_l2_claimed": (
            torch.quantile(succeeded.double(), 0.5).item() if len(succeeded) else None
        ),
        "mean_queries": result.queries.double().mean().item(),
        "records": result.records(),
    }
    verifications = _verify_all(setup, result, ("final",))
    rounded = _rounded(result, setup.x)
    rounded_verifications = _verify_all(setup, rounded, ("final", "rounded"))
    report.update(_sections(setup, verifications))
    report["rounded_8bit"] = _sections(setup, rounded_verifications)
    report["records"] = _records(
        setup, result, verifications, rounded_verifications, info["attacked_indices"]
    )
    if config.attack == "ensemble":
        for row, record in zip(report["records"], report["ensemble"]["records"], strict=True):
            row.update(source=record["source"], segment_flags=record["segment_flags"])
    report["statistics_rules"] = list(_STATISTICS_RULES)
    report["sanity"] = _sanity(setup, results, progress) if config.sanity else None
    report["pool"] = {
        "pool_size": config.pool_size,
        "used": setup.pool_used.get("size"),  # None: no pool-based attack ran
        "rule": "the first pool_size test images not attacked, doubled until every class "
        "needed has a correctly classified, accepted image",
    }
    if audit is None and config.audit:
        audit = _audit(setup)
    report["audit"] = audit
    return report, result, setup.x


def _confidence_from_audit(setup: _Setup) -> tuple[_Setup, dict | None, dict]:
    r"""``confidence="audit"``: κ from the randomness audit of the attacked clean images.

    Deployed threat model: :math:`\kappa = f \cdot \operatorname{median}_i s_i`
    (:func:`~flows.attacks.kappa_from_audit`, ``f = kappa_factor``), ``s_i`` the standard
    deviation of image ``i``'s log-posterior margin across the audit's ``verify_draws`` fresh
    draws: a minimum-norm attack that stops κ past the boundary stays there in most fresh draws,
    where one that stops on it (κ = 0) fools about half of them. Fixed threat model: κ = 0 (one
    draw, nothing to survive). Returns the setup with κ resolved, the audit (reported as the
    experiment's ``audit``; None when fixed) and the rule as reported."""
    config = setup.config
    if not setup.deployed:
        rule = {"rule": "audit", "value": 0.0, "why": "fixed threat model: κ = 0"}
        return (
            dataclasses.replace(setup, config=dataclasses.replace(config, confidence=0.0)),
            None,
            rule,
        )
    audit = _audit(setup)
    spreads = [record["margin_std"] for record in audit["records"]]
    kappa = kappa_from_audit(spreads, config.kappa_factor)
    rule = {
        "rule": "audit",
        "value": kappa,
        "factor": config.kappa_factor,
        "median_margin_std": kappa_from_audit(spreads, 1.0),
        "draws": config.verify_draws,
        "why": "κ = kappa_factor × the median margin spread across fresh draws (the audit)",
    }
    return (
        dataclasses.replace(setup, config=dataclasses.replace(config, confidence=kappa)),
        audit,
        rule,
    )


@dataclass(frozen=True)
class _Setup:
    """What every stage of one experiment shares: the resolved settings, the detector, the
    attacked images ``x`` ``(n, ...)`` with labels ``y`` ``(n,)`` and the pool."""

    config: AttackConfig
    model: Any
    eps: float
    detector: LikelihoodDetector
    bits_from_class_scores: bool
    x: Tensor
    y: Tensor
    #: every test image not attacked, in order; the pool is its head (:meth:`pool`)
    reserve_x: Tensor
    reserve_y: Tensor
    #: the pool size the pool-based attacks settled on (:func:`_prepare`: ``{"size": int}``)
    pool_used: dict = field(default_factory=dict)
    #: the model the attacks query: ``model`` itself, or a copy with its coupling networks in
    #: ``config.attack_precision`` (:func:`attack_network`); None: ``model``
    attack_network: Any = None

    def pool(self, size: int | None = None) -> tuple[Tensor, Tensor]:
        """The first ``size`` images and labels of the reserve of every test image not attacked
        (default: the settled size, else ``config.pool_size``)."""
        size = self.pool_size if size is None else size
        return self.reserve_x[:size], self.reserve_y[:size]

    @property
    def pool_size(self) -> int:
        """The settled pool size (:func:`_prepare`), else ``config.pool_size``, at most the
        reserve's size."""
        return self.pool_used.get("size", min(self.config.pool_size, len(self.reserve_x)))

    @property
    def reserve_size(self) -> int:
        return len(self.reserve_x)

    @property
    def deployed(self) -> bool:
        return self.config.threat_model == "deployed"

    @property
    def primary(self) -> str:
        """The verification of the threat model the attack faced."""
        return "deployed" if self.deployed else "attack_noise"

    def threat_model(self, noise: str, seed: int, network: Any = None) -> ThreatModel:
        """The model (or ``network``, a copy of it) under fixed noise of ``seed``, or deployed
        with fresh noise from ``seed``."""
        return flows_threat_model(
            self.model if network is None else network,
            self.detector,
            noise=noise,
            noise_seed=seed,
            eps=self.eps,
            bits_from_class_scores=self.bits_from_class_scores,
            model_batch=self.config.model_batch,
        )

    def attack_model(self, *labels: int | str) -> ThreatModel:
        """The threat model an attack stage ``labels`` faces: the attack's fixed noise, or the
        deployed model with its own fresh-noise generator (:func:`derive_seed`)."""
        network = self.attack_network
        if not self.deployed:
            return self.threat_model("fixed", self.config.noise_seed, network)
        seed = derive_seed(self.config.noise_seed, "attack", *labels)
        return self.threat_model("fresh", seed, network)


def attack_network(model: Any, precision: str) -> Any:
    """The model the attacks query at ``precision`` (:attr:`AttackConfig.attack_precision`):
    None for 'float32' (the model itself), else a copy of ``model`` whose coupling networks run
    in that precision (:meth:`flows.ConditionalGlow.set_coupling_precision`; the same weights,
    and the flow stays an exact bijection in float32). ``model`` is left as it is, so the
    experiment's image selection, detector and verifications keep its own precision.

    Raises:
        ExperimentError: ``precision`` is not float32 and the model has no
            ``set_coupling_precision``.
    """
    if precision == "float32":
        return None
    if precision not in ATTACK_PRECISIONS:
        raise ExperimentError(
            f"--attack-precision must be one of {list(ATTACK_PRECISIONS)}, got {precision!r}"
        )
    if not callable(getattr(model, "set_coupling_precision", None)):
        raise ExperimentError(
            f"--attack-precision {precision} needs a model with set_coupling_precision(precision) "
            f"(flows.ConditionalGlow); {type(model).__name__} has none: use float32"
        )
    network = copy.deepcopy(model)
    network.set_coupling_precision(precision)
    return network


def _setup(
    model: Any,
    test_x: Tensor,
    test_y: Tensor,
    config: AttackConfig,
    dataset: str | None,
    progress: bool,
    warn: Callable[[str], None] | None,
) -> tuple[_Setup, dict]:
    """The detector, the attacked images and the pool; and the report's entries about them."""
    eps = config.eps if config.eps is not None else PAPER_EPS.get(dataset or "")
    if eps is None:
        raise ExperimentError(f"no paper ε for dataset {dataset!r}: pass --eps")
    uses_apgd = config.attack in ("apgd", "apgd-det", "ensemble")
    if uses_apgd and not eps > 0:
        raise ExperimentError(f"{config.attack} attacks at a fixed ε and needs --eps > 0")
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
    empty_x, empty_y = test_x[:0], test_y[:0].long()
    setup = _Setup(
        config,
        model,
        eps,
        detector,
        bits_from_class_scores,
        empty_x,
        empty_y,
        empty_x,
        empty_y,
        attack_network=attack_network(model, config.attack_precision),
    )  # the images follow once they are chosen, under the threat model built here
    fixed = setup.threat_model("fixed", config.noise_seed)
    if setup.deployed:
        chooser = setup.threat_model("fresh", derive_seed(config.noise_seed, "select"))

        def classify(images: Tensor) -> Tensor:
            return chooser.classify(images, draws=config.verify_draws)
    else:
        classify = fixed.classify
    chosen, examined = first_correct(
        classify, test_x, test_y, config.n, config.batch_size, progress
    )
    chosen = chosen.to(test_y.device)
    if len(chosen) < config.n:
        raise ExperimentError(
            f"only {len(chosen)} of the {len(test_x)} test images are correctly classified, "
            f"need --n {config.n}"
        )
    keep = torch.ones(len(test_x), dtype=torch.bool)
    keep[chosen.cpu()] = False
    reserve = torch.nonzero(keep).flatten().to(test_y.device)
    x, y = test_x[chosen], test_y[chosen].long()
    setup = dataclasses.replace(
        setup,
        x=x,
        y=y,
        reserve_x=test_x[reserve],
        reserve_y=test_y[reserve].long(),
    )
    clean_bpd = fixed.bits_per_dim(x)

    resolved = {
        "dataset": dataset,
        "eps": eps,
        "eot": config.eot_draws,
        "decision_draws": config.decision_votes,
    }
    if config.threshold is None:
        resolved["threshold_quantile"] = quantile
    info = {
        "resolved": resolved,
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
    }
    return setup, info


def _threat_model_summary(setup: _Setup) -> dict:
    config = setup.config
    return {
        "name": config.threat_model,
        "eot": config.eot_draws,
        "decision_draws": config.decision_votes,
        "decision_quorum": config.decision_quorum,
        "verify_draws": config.verify_draws,
        "rule": SUCCESS_RULE,
        "primary": setup.primary,
        "verifications": list(_verification_keys(setup)),
        "selection": (
            f"correct by the majority over {config.verify_draws} fresh draws"
            if setup.deployed
            else f"correct under the attack's noise (seed {config.noise_seed})"
        ),
    }


def _verification_keys(setup: _Setup) -> tuple[str, ...]:
    """The verifications of the threat model: the deployed one, and the fixed-noise ones."""
    return ("deployed",) if setup.deployed else ("attack_noise", "fresh_noise", "deployed")


def make_attack(
    config: AttackConfig,
    name: str | None = None,
    *,
    eps: float | None = None,
    scale: int = 1,
    seed: int | None = None,
) -> Attack:
    """The attack ``name`` (default ``config.attack``; not ``ensemble``) with ``config``'s
    hyperparameters: :class:`~flows.attacks.CarliniWagnerL2` for ``cw*``,
    :class:`~flows.attacks.APGDL2` at ``eps`` for ``apgd*``,
    :class:`~flows.attacks.BoundaryAttack` for ``boundary*``,
    :class:`~flows.attacks.SegmentAttack` for ``segment`` and
    :class:`~flows.attacks.LikelihoodMatching` for ``match``.

    ``scale`` multiplies the iterations (CW's Adam steps, APGD's steps, Boundary's steps and
    queries, the segment grid, matching's steps) and, under the deployed threat model, the EOT and
    decision draws (the sanity checks' doubled budget). ``seed`` overrides ``config.seed`` (the
    Boundary walks and the APGD random starts).
    """
    name = config.attack if name is None else name
    draws = scale if config.threat_model == "deployed" else 1
    k, m = config.eot_draws * draws, config.decision_votes * draws
    seed = config.seed if seed is None else seed
    if name in ("cw", "cw-det"):
        return CarliniWagnerL2(
            binary_search_steps=config.binary_search_steps,
            steps=config.cw_steps * scale,
            stepsize=config.stepsize,
            confidence=config.confidence,
            initial_const=config.initial_const,
            eot_draws=k,
            space=config.cw_space,
        )
    if name in ("apgd", "apgd-det"):
        return APGDL2(
            eps=config.eps if eps is None else eps,
            steps=config.apgd_steps * scale,
            restarts=config.apgd_restarts,
            eot_draws=k,
            confidence=config.confidence,
            detector_mode=config.apgd_detector_mode if name == "apgd-det" else "sum",
            seed=seed,
            stop_at_success=not config.apgd_run_to_end,
        )
    if name in ("boundary", "boundary-det"):
        return BoundaryAttack(
            steps=config.boundary_steps * scale,
            max_queries=None if config.max_queries is None else config.max_queries * scale,
            seed=seed,
            proposal_scale=config.proposal_scale,
            spherical_moves=config.spherical_moves,
            decision_draws=m,
            decision_quorum=config.decision_quorum,
        )
    if name == "segment":
        return SegmentAttack(grid=config.segment_grid * scale, draws=m)
    if name == "match":
        return LikelihoodMatching(
            steps=config.match_steps * scale, stepsize=config.stepsize, draws=k
        )
    raise ValueError(f"name: must be one of {ATTACKS[:-1]}, got {name!r}")


def _prepare(setup: _Setup, names: tuple[str, ...], x: Tensor, y: Tensor, label: str) -> dict:
    """What the pool-based attacks need for ``x``: ``boundary-det``'s random targets (seed
    ``config.seed``) and starting points, the ``ends`` ``(B, 1, ...)`` of ``segment`` and
    ``match`` (the nearest usable pool image of another class); decisions by a vote over ``M``.

    The pool is the first ``pool_size`` test images not attacked. When some class has no usable
    image there (correctly classified and accepted by the detector: a weak model, or a class its
    detector rejects), the pool doubles, within the test images not attacked, until every class
    needed has one; the size it settles on (``setup.pool_used``) serves every later call (the
    sanity reruns), and the report records it. A pool that suffices is never grown, so runs that
    worked at ``pool_size`` are unchanged."""
    if not {"boundary-det", "segment", "match"} & set(names):
        return {}
    size = setup.pool_size
    while True:
        pool_x, pool_y = setup.pool(size)
        try:
            prepared = _prepare_from_pool(setup, names, x, y, label, pool_x, pool_y)
        except ValueError as error:
            text = str(error)
            if not (text.startswith("no pool image") or text.startswith("n_candidates:")):
                raise
            if size >= setup.reserve_size:
                raise ExperimentError(
                    f"{text} among the {size} pool images (every test image not attacked)"
                ) from None
            size = min(2 * size, setup.reserve_size)
            continue
        setup.pool_used["size"] = size
        return prepared


def _prepare_from_pool(
    setup: _Setup,
    names: tuple[str, ...],
    x: Tensor,
    y: Tensor,
    label: str,
    pool_x: Tensor,
    pool_y: Tensor,
) -> dict:
    """:func:`_prepare` on the pool ``pool_x`` ``(P, ...)``, ``pool_y`` ``(P,)`` (ValueError
    when a class has no usable image there)."""
    config = setup.config
    tm = setup.attack_model("prepare", label)
    draws = config.decision_votes
    prepared: dict[str, Tensor] = {}
    if "boundary-det" in names:
        targets = random_targets(y, tm.num_classes, config.seed)
        prepared["targets"] = targets
        starts = select_starting_points(
            tm, pool_x, pool_y, targets, config.seed, config.batch_size, draws
        )
        if config.boundary_starts == "pool+midpoint":
            lo, hi = tm.bounds
            midpoint = torch.full_like(starts, (lo + hi) / 2)
            starts = torch.stack([starts, midpoint], dim=1)
        prepared["starts"] = starts
    if "segment" in names or "match" in names:
        prepared["ends"], _ = select_other_class_images(
            tm,
            x,
            y,
            pool_x,
            pool_y,
            nearest=True,
            draws=draws,
            batch_size=config.batch_size,
        )
    return prepared


def _run_attack(
    setup: _Setup,
    name: str,
    tm: ThreatModel,
    x: Tensor,
    y: Tensor,
    prepared: Mapping[str, Tensor],
    *,
    seed: int,
    scale: int = 1,
    eps: float | None = None,
) -> AttackResult:
    """Attack ``x`` ``(B, ...)`` (labels ``y``) with ``name`` on ``tm`` and its criterion: the
    classifier alone for ``cw``, ``apgd``, ``boundary``; fooled and undetected for the others
    (``boundary-det`` targeted, from ``prepared``'s starting points)."""
    eps = setup.eps if eps is None else eps
    attack = make_attack(setup.config, name, eps=eps, scale=scale, seed=seed)
    options = {"batch_size": setup.config.batch_size}
    if name in ("cw", "apgd", "boundary"):
        return attack(tm.with_detector(None), x, Misclassified(y), **options)
    if name in ("cw-det", "apgd-det"):
        return attack(tm, x, Misclassified(y) & NotDetected(tm.detector), **options)
    if name == "boundary-det":
        criterion = TargetedMisclassified(prepared["targets"], y) & NotDetected(tm.detector)
        return attack(tm, x, criterion, starts=prepared["starts"], **options)
    criterion = fooled_and_undetected(y, None, tm.detector)
    if name == "segment":
        return attack(tm, x, criterion, ends=prepared["ends"], **options)
    return attack(tm, x, criterion, target_images=prepared["ends"][:, 0], **options)


def _attack_all(
    setup: _Setup,
    names: tuple[str, ...],
    store: _BatchCache | None,
    progress: bool,
    prepared: Mapping[str, Tensor],
) -> dict[str, AttackResult]:
    """Every attack of ``names`` on the attacked images, batch by batch (``batch_size``), each
    batch read from the cache when it is there, else attacked and saved; ``prepared``: what
    :func:`_prepare` gave for all the attacked images."""
    parts = batches(len(setup.x), setup.config.batch_size)
    collected: dict[str, list[AttackResult]] = {name: [] for name in names}
    description = f"{setup.config.attack} ({setup.config.threat_model} noise)"
    with tqdm(total=len(parts), desc=description, unit="batch", disable=not progress) as bar:
        for index, part in enumerate(parts):
            done = None if store is None else store.load(index, names, part, setup.x.device)
            if done is None:
                started = time.perf_counter()
                done = _attack_batch(setup, names, index, part, prepared)
                if store is not None:
                    store.save(index, done, time.perf_counter() - started)
            for name in names:
                collected[name].append(done[name])
            bar.update(1)
    return {name: AttackResult.concatenate(collected[name]) for name in names}


def _attack_batch(
    setup: _Setup, names: tuple[str, ...], index: int, part: slice, prepared: Mapping
) -> dict[str, AttackResult]:
    """Batch ``index`` (the images ``part``) attacked by every attack of ``names``, each on its
    own threat model and with its own seeds (:func:`derive_seed`)."""
    x, y = setup.x[part], setup.y[part]
    sliced = {key: value[part] for key, value in prepared.items()}
    return {
        name: _run_attack(
            setup,
            name,
            setup.attack_model("batch", index, name),
            x,
            y,
            sliced,
            seed=derive_seed(setup.config.seed, "batch", index, name),
        )
        for name in names
    }


def _fingerprint(setup: _Setup, model: Any, attacked_indices: list[int]) -> dict:
    """What a cache's batches depend on: the configuration (but :data:`REPORT_ONLY` and
    :data:`PERFORMANCE_ONLY`), the resolved ε and threshold, the attacked images and the model's
    parameters."""
    free = [k for k in REPORT_ONLY if not (setup.deployed and k == "verify_draws")]
    free += PERFORMANCE_ONLY
    config = {k: v for k, v in dataclasses.asdict(setup.config).items() if k not in free}
    images = hashlib.sha256()
    images.update(setup.x.detach().cpu().contiguous().numpy().tobytes())
    images.update(setup.y.detach().cpu().contiguous().numpy().tobytes())
    weights = hashlib.sha256(type(model).__name__.encode())
    state = getattr(model, "state_dict", None)
    if callable(state):
        for key, value in sorted(state().items()):
            weights.update(key.encode())
            weights.update(value.detach().cpu().contiguous().numpy().tobytes())
    return json.loads(
        json.dumps(
            {
                "config": config,
                "eps": setup.eps,
                "threshold_bits_per_dim": setup.detector.threshold,
                "attacked_indices": attacked_indices,
                "images_sha256": images.hexdigest(),
                "model_sha256": weights.hexdigest(),
            }
        )
    )


class _BatchCache:
    """The per-batch results of one run in ``folder``: ``cache.json`` (the fingerprint) and
    ``batch_00000.pt``… (weights-only loadable dicts of tensors and strings), written atomically
    (a temporary file, then ``os.replace``)."""

    def __init__(self, folder: Path, fingerprint: dict):
        self.folder, self.fingerprint = folder, fingerprint

    def open(self, restart: bool) -> None:
        """Create the cache, or check that the one there was made by the same configuration."""
        if restart and self.folder.exists():
            shutil.rmtree(self.folder)
        meta = self.folder / "cache.json"
        if not meta.is_file():
            self.folder.mkdir(parents=True, exist_ok=True)
            _write_atomically(meta, json.dumps(self.fingerprint, indent=1).encode())
            return
        try:
            saved = json.loads(meta.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ExperimentError(
                f"cannot read the cache {meta}: {error}; pass --restart to discard it"
            ) from None
        self._compare(saved)

    def _compare(self, saved: dict) -> None:
        advice = "rerun with the same options to continue it, or pass --restart to discard it"
        old_config, new_config = saved.get("config", {}), self.fingerprint["config"]
        for name in new_config:
            if name not in old_config and new_config[name] == ADDED_OPTIONS.get(name, object()):
                continue  # an option added later, at the value the cache was made with
            if name not in old_config or old_config[name] != new_config[name]:
                flag = "--" + name.replace("_", "-") if name != "attack" else "--attack"
                old = repr(old_config[name]) if name in old_config else "(not recorded)"
                if name not in old_config and name in ADDED_OPTIONS:
                    old = f"{ADDED_OPTIONS[name]!r} (before the option existed)"
                raise ExperimentError(
                    f"{flag}: the cache {self.folder} was made with {old}, this run has "
                    f"{new_config[name]!r}: {advice}"
                )
        for key, what in (
            ("model_sha256", "another model"),
            ("images_sha256", "other attacked images"),
            ("attacked_indices", "other attacked images"),
            ("eps", "another ε"),
            ("threshold_bits_per_dim", "another detector threshold"),
        ):
            if saved.get(key) != self.fingerprint[key]:
                raise ExperimentError(
                    f"the cache {self.folder} was made for {what} (another run, test set or "
                    f"dataset): {advice}"
                )

    def path(self, index: int) -> Path:
        return self.folder / f"batch_{index:05d}.pt"

    def load(
        self, index: int, names: tuple[str, ...], part: slice, device: torch.device
    ) -> dict[str, AttackResult] | None:
        """Batch ``index``'s results, or None when it has not finished."""
        path = self.path(index)
        if not path.is_file():
            return None
        saved = torch.load(path, map_location="cpu", weights_only=True)
        size = part.stop - part.start
        if set(saved) != set(names) or any(len(saved[k]["status"]) != size for k in names):
            raise ExperimentError(
                f"the cache file {path} does not hold batch {index} of this run: pass --restart "
                "to discard the cache"
            )
        return {name: _from_saved(saved[name], device) for name in names}

    def save(self, index: int, results: Mapping[str, AttackResult], seconds: float) -> None:
        """Save batch ``index``, then record the ``seconds`` it took in ``timing.json``."""
        temporary = self.path(index).with_suffix(".tmp")
        torch.save({name: _to_saved(r) for name, r in results.items()}, temporary)
        os.replace(temporary, self.path(index))
        timing = _read_timing(self.folder)
        timing[str(index)] = seconds
        _write_atomically(self.folder / TIMING_FILE, json.dumps(timing, indent=1).encode())


#: The per-batch cache's record of each saved batch's wall time (seconds), by batch index.
TIMING_FILE = "timing.json"


def _read_timing(folder: Path) -> dict[str, float]:
    try:
        timing = json.loads((folder / TIMING_FILE).read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return {}
    return timing if isinstance(timing, dict) else {}


def cached_batch_seconds(cache: Path | str) -> dict:
    """What the batches already in a per-batch cache (``run_experiment``'s ``cache``) cost: the
    work a resumed run does not redo, so that its time can be reported in full.

    Returns ``{"batches": saved batches, "seconds": the sum of their recorded wall times,
    "untimed": batches without a recorded time (saved before times were recorded)}``; all zero
    for a missing folder."""
    folder = Path(cache)
    saved = sorted(folder.glob("batch_*.pt")) if folder.is_dir() else []
    timing = _read_timing(folder)
    indices = [str(int(path.stem.removeprefix("batch_"))) for path in saved]
    known = [float(timing[i]) for i in indices if i in timing]
    return {"batches": len(saved), "seconds": sum(known), "untimed": len(saved) - len(known)}


def _write_atomically(path: Path, data: bytes) -> None:
    temporary = path.with_suffix(".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)


def _to_saved(result: AttackResult) -> dict:
    """An :class:`AttackResult` as CPU tensors and strings (``weights_only`` loadable)."""
    return {
        "adversarial": result.adversarial.detach().cpu(),
        "success": result.success.detach().cpu(),
        "l2": result.l2.detach().cpu(),
        "queries": result.queries.detach().cpu(),
        "status": list(result.status),
        "targets": None if result.targets is None else result.targets.detach().cpu(),
    }


def _from_saved(saved: dict, device: torch.device) -> AttackResult:
    targets = saved["targets"]
    return AttackResult(
        adversarial=saved["adversarial"].to(device),
        success=saved["success"].to(device),
        l2=saved["l2"].to(device),
        queries=saved["queries"].to(device),
        status=tuple(saved["status"]),
        targets=None if targets is None else targets.to(device),
    )


def _rounded(result: AttackResult, x: Tensor) -> AttackResult:
    """``result`` with its adversarials rounded to valid 8-bit images (:func:`round_to_8bit`);
    the claims are the attack's, the distances recomputed."""
    adversarial = round_to_8bit(result.adversarial).to(x.dtype)
    l2 = torch.where(result.success, flat_l2(adversarial, x), math.inf)
    return dataclasses.replace(result, adversarial=adversarial, l2=l2)


def _verify_all(
    setup: _Setup,
    result: AttackResult,
    labels: tuple[str | int, ...],
    x: Tensor | None = None,
    y: Tensor | None = None,
) -> dict[str, Verification | NoiseVerification]:
    """The verifications of ``result`` on ``x`` (default: the attacked images), without a
    budget (:func:`at_eps` restricts them): ``"deployed"`` over ``verify_draws`` fresh draws
    (seeded by ``fresh_noise_seed`` and ``labels``), and, under the fixed threat model,
    ``"attack_noise"`` and ``"fresh_noise"`` (one fixed draw each)."""
    config = setup.config
    x = setup.x if x is None else x
    y = setup.y if y is None else y
    out: dict[str, Verification | NoiseVerification] = {}
    if not setup.deployed:
        seeds = {"attack_noise": config.noise_seed, "fresh_noise": config.fresh_noise_seed}
        for key, seed in seeds.items():
            out[key] = verify(setup.threat_model("fixed", seed), x, result, y, eps=math.inf)
    deployed = setup.threat_model("fresh", derive_seed(config.fresh_noise_seed, "verify", *labels))
    out["deployed"] = verify_over_noise(
        deployed, x, result, y, draws=config.verify_draws, eps=math.inf, rule=SUCCESS_RULE
    )
    return out


def _sections(setup: _Setup, verifications: Mapping[str, Any]) -> dict:
    """The report's sections ``attack_noise``, ``fresh_noise`` (None when deployed) and
    ``deployed``: Table 2's statistics within ε (:func:`~flows.attacks.noise_statistics`) and the
    per-example verdicts."""
    config = setup.config
    seeds = {
        "attack_noise": config.noise_seed,
        "fresh_noise": config.fresh_noise_seed,
        "deployed": config.fresh_noise_seed,
    }
    out: dict[str, Any] = {"attack_noise": None, "fresh_noise": None}
    for key, verification in verifications.items():
        within = at_eps(verification, setup.eps)
        section = {"noise_seed": seeds[key], "table2": noise_statistics(within)}
        if key == "deployed":
            section.update(draws=config.verify_draws, rule=SUCCESS_RULE)
        section["records"] = within.records()
        out[key] = section
    return out


def _noise_verdicts(v: NoiseVerification, i: int) -> dict:
    return {
        "p_fool": float(v.p_fool[i]),
        "p_fool_undetected": float(v.p_fool_undetected[i]),
        "p_detected": float(v.p_detected[i]),
        "fools_classifier": bool(v.fools_classifier[i]),
        "success_undetected": bool(v.success_undetected[i]),
    }


def _fixed_verdicts(v: Verification, i: int) -> dict:
    return {
        "fools_classifier": bool(v.fools_classifier[i]),
        "detected": bool(v.detected[i]),
        "success_undetected": bool(v.success_undetected[i]),
    }


def _records(
    setup: _Setup,
    result: AttackResult,
    verifications: Mapping[str, Any],
    rounded: Mapping[str, Any],
    indices: list[int],
) -> list[dict]:
    """Per example: the stored index, label, target, the claim, L2, queries, status, the
    deployed verdicts (``p_fool``, ``p_fool_undetected``, ``p_detected`` and the rule's
    ``fools_classifier`` / ``success_undetected``), the fixed-noise verdicts (fixed threat
    model), and the same for the adversarial rounded to 8 bits (``rounded_8bit``)."""
    v = {key: at_eps(value, setup.eps) for key, value in verifications.items()}
    r = {key: at_eps(value, setup.eps) for key, value in rounded.items()}
    fixed_keys = [key for key in ("attack_noise", "fresh_noise") if key in v]
    rows = []
    for i in range(len(setup.x)):
        row = {
            "index": indices[i],
            "label": int(setup.y[i]),
            "target": None if result.targets is None else int(result.targets[i]),
            "claimed": bool(result.success[i]),
            "l2": float(v["deployed"].l2[i]),
            "within_eps": bool(v["deployed"].within_eps[i]),
            "queries": int(result.queries[i]),
            "status": result.status[i],
            **_noise_verdicts(v["deployed"], i),
        }
        for key in fixed_keys:
            row[key] = _fixed_verdicts(v[key], i)
        row["rounded_8bit"] = {
            "l2": float(r["deployed"].l2[i]),
            "within_eps": bool(r["deployed"].within_eps[i]),
            **_noise_verdicts(r["deployed"], i),
            **{key: _fixed_verdicts(r[key], i) for key in fixed_keys},
        }
        rows.append(row)
    return rows


def _ensemble(
    setup: _Setup, results: Mapping[str, AttackResult], progress: bool
) -> tuple[AttackResult, dict]:
    """Verify every member, take the worst case per example under each verification
    (:func:`~flows.attacks.worst_case`, success = fooled and undetected), flag the members that do
    worse than the segment bound (:func:`~flows.attacks.segment_flags`, on verified L2 without
    ε: the bound is one on the minimal perturbation, whatever the budget). The returned result is
    the worst case under the threat model's own verification."""
    x = setup.x
    names = tuple(results)
    verified = {
        name: _verify_all(setup, results[name], ("member", name))
        for name in progress_bar(list(names), progress, "verifying the ensemble")
    }
    keys = tuple(verified[names[0]])
    rows = {}
    for name in names:
        sections = _sections(setup, verified[name])
        result = results[name]
        claimed = result.l2[result.success]
        rows[name] = {
            "attack": {
                "success_rate": result.success.double().mean().item(),
                "median_l2_claimed": (
                    torch.quantile(claimed.double(), 0.5).item() if len(claimed) else None
                ),
                "mean_queries": result.queries.double().mean().item(),
            },
            **{key: sections[key] for key in keys},
        }
    worst, flags = {}, {}
    for key in keys:
        within = {name: at_eps(verified[name][key], setup.eps) for name in names}
        worst[key] = worst_case(x, results, within, require_undetected=True)
        # the segment bound bounds the minimal undetected perturbation whatever ε: no budget
        bound = verified_l2(verified["segment"][key], require_undetected=True)
        others = {name: verified[name][key] for name in names if name != "segment"}
        flags[key] = segment_flags(bound, others, require_undetected=True)
    chosen = worst[setup.primary]
    primary_flags = flags[setup.primary]
    records = [
        {
            **record,
            "segment_flags": [name for name in primary_flags if bool(primary_flags[name][i])],
        }
        for i, record in enumerate(chosen.records())
    ]
    summary = {
        "attacks": list(names),
        "selection": setup.primary,
        "note": (
            "worst_case: per example the closest adversarial verified fooled and undetected "
            "within eps by any attack, under each verification (selection over the attacks); the "
            "report's top-level sections re-verify the selected adversarials (those of "
            f"'{setup.primary}') under independent draws"
        ),
        "rows": rows,
        "worst_case": {key: worst[key].statistics() for key in keys},
        "segment_flags": {
            key: {
                name: {
                    "count": int(flag.sum()),
                    "examples": torch.nonzero(flag).flatten().tolist(),
                }
                for name, flag in flags[key].items()
            }
            for key in keys
        },
        "records": records,
    }
    return chosen.to_attack_result(), summary


def _head(result: AttackResult, count: int) -> AttackResult:
    """The result of the first ``count`` examples."""
    return AttackResult(
        adversarial=result.adversarial[:count],
        success=result.success[:count],
        l2=result.l2[:count],
        queries=result.queries[:count],
        status=result.status[:count],
        targets=None if result.targets is None else result.targets[:count],
    )


def _sanity(setup: _Setup, results: Mapping[str, AttackResult], progress: bool) -> dict:
    """The sanity checks (module docstring) of the attack, or of the ensemble's gradient
    attacks, on the first ``sanity_n`` attacked images, under the threat model's own
    verification."""
    config = setup.config
    runs = _SanityRuns(setup, results, min(config.sanity_n, len(setup.x)))
    grid = [f * setup.eps for f in SANITY_EPS_FACTORS] if setup.eps > 0 else None
    names = [config.attack]
    if config.attack == "ensemble":
        names = [name for name in results if name in GRADIENT_ATTACKS]
    out = {}
    for name in progress_bar(names, progress, "sanity checks"):
        undetected = name in DETECTION_AWARE
        free = None
        if name in GRADIENT_ATTACKS:
            free = functools.partial(runs.at, "boundary-det" if undetected else "boundary", 1)
        checks = run_sanity_checks(
            lambda eps, scale, name=name: runs.at(name, scale, eps),
            eps=setup.eps,
            eps_grid=grid,
            gradient_free_at=free,
            threat_model=setup.attack_model("sanity gradients", name),
            x=runs.x,
            y=runs.y,
            require_undetected=undetected,
            # κ = 0 under fresh-noise verification: a boundary adversarial is a coin flip
            on_boundary=setup.deployed and config.confidence == 0,
        )
        unbounded_eps = runs.sufficient_eps() if name in ("apgd", "apgd-det") else None
        if unbounded_eps is not None:
            searched = runs.searched.get((name, 1), [])
            checks[0] = dataclasses.replace(
                checks[0],
                detail=checks[0].detail.replace(
                    "at eps = inf",
                    f"by an eps-doubling search up to {unbounded_eps:.4g} (admits an adversarial)",
                ),
                values={**checks[0].values, "searched_eps": searched},
            )
        out[name] = {
            # a fixed-ε attack's "unbounded" run is an ε-doubling search up to a budget that
            # admits an adversarial (None: run without a budget)
            "unbounded_eps": unbounded_eps,
            "require_undetected": undetected,
            "checks": [check.to_dict() for check in checks],
            "flags": {check.name: check.passed for check in checks},
        }
    verdicts = [p for entry in out.values() for p in entry["flags"].values() if p is not None]
    return {
        "n": runs.count,
        "images": f"the first {runs.count} attacked images",
        "verification": setup.primary,
        "eps_grid": grid,
        "attacks": out,
        "passed": all(verdicts) if verdicts else None,
    }


class _SanityRuns:
    """The verified runs of the sanity checks on the first ``count`` attacked images, each made
    once: the main run's (budget scale 1 at the evaluated ε), and reruns (another scale; APGD at
    another ε; the Boundary attack when the main run has none)."""

    def __init__(self, setup: _Setup, results: Mapping[str, AttackResult], count: int):
        self.setup, self.results, self.count = setup, results, count
        self.x, self.y = setup.x[:count], setup.y[:count]
        self.done: dict[tuple[str, int, float], Any] = {}
        self.prepared: dict[str, dict] = {}
        self.searched: dict[tuple[str, int], list[float]] = {}  # the ε of each unbounded search

    def at(self, name: str, scale: int, eps: float) -> Any:
        """The verification of ``name`` at budget ``scale`` within ``eps``: a minimum-norm attack
        is run once per scale (without a budget) and restricted to each ε (:func:`at_eps`), APGD
        is run at each ε, and its "unbounded" run (ε = ∞) at :meth:`sufficient_eps`."""
        fixed_eps = name in ("apgd", "apgd-det")
        if fixed_eps and math.isinf(eps):
            return self.unbounded(name, scale)
        run_eps = eps if fixed_eps else math.inf
        key = (name, scale, run_eps)
        if key not in self.done:
            self.done[key] = self._verified(name, scale, run_eps)
        return at_eps(self.done[key], eps)

    def unbounded(self, name: str, scale: int) -> Any:
        r"""The "unbounded" verification of a fixed-ε attack: an ε-doubling search.

        The attack runs at :math:`\varepsilon_k = \min(2^k \varepsilon, \varepsilon_{\max})`,
        ``k = 0, 1, …`` (ε the evaluated budget, :math:`\varepsilon_{\max}` =
        :meth:`sufficient_eps`, which admits an adversarial for every image), until every
        example counts as broken or :math:`\varepsilon_{\max}` has been run; each example keeps
        the verification of the first run that broke it (else the last run's). An attack
        without a budget is one that may spend any distance, and for APGD that is a search over
        ε: its step sizes scale with ε (the first is 2ε, and its eight halvings stop at
        2ε/256), so one run at :math:`\varepsilon_{\max}` (the box diameter's order on
        CIFAR-10) moves in steps far larger than a likelihood detector's acceptance region and
        can fail where a run at ε succeeds: measured on ``cpu-cifar-split`` (fixed noise, 10
        images, APGD-det, 100 steps), 10/10 at ε = 33/255 and at 2ε, 6/10 at the sufficient
        ε = 17.3. A run at ε that breaks an example is an unbounded success as much as one at
        :math:`\varepsilon_{\max}`. Counting, per example, as :func:`unbounded_success` does
        (the claims within the box for a κ = 0 attack verified under fresh noise, else the
        verified success). The runs at ε and 2ε are those of the ε grid (cached)."""
        config, limit = self.setup.config, self.sufficient_eps()
        undetected = name in DETECTION_AWARE
        on_boundary = self.setup.deployed and config.confidence == 0
        merged, broken, eps = None, None, self.setup.eps
        self.searched[(name, scale)] = tried = []
        while True:
            run_eps = min(eps, limit)
            tried.append(run_eps)
            key = (name, scale, run_eps)
            if key not in self.done:
                self.done[key] = self._verified(name, scale, run_eps)
            verification = self.done[key]
            if on_boundary:
                counts = verification.claimed.cpu() & verification.in_bounds.cpu()
            else:
                counts = verified_success(verification, require_undetected=undetected)
            if merged is None:
                merged, broken = verification, counts
            else:
                merged = _take_rows(merged, verification, ~broken)
                broken = broken | counts
            if bool(broken.all()) or run_eps >= limit:
                return merged
            eps *= 2

    def sufficient_eps(self) -> float:
        """The budget of a fixed-ε attack's "unbounded" sanity run: the largest distance from a
        sanity image to its nearest usable pool image of another class (the segment bound's end
        point, :func:`~flows.attacks.select_other_class_images`: classified as another class and
        accepted by the detector), so that an adversarial provably exists within it for every
        image. APGD cannot run at ε = ∞: its first step is 2ε, and its step-size halvings never
        bring an infinite (or box-diameter) step down to the scale of a likelihood detector's
        acceptance region; a finite ε that admits an adversarial asks the same question."""
        if "sufficient_eps" not in self.prepared:
            ends = _prepare(self.setup, ("segment",), self.x, self.y, "sanity sufficient eps")
            distances = flat_l2(ends["ends"][:, 0], self.x)
            self.prepared["sufficient_eps"] = {"eps": float(distances.max()) * (1 + 1e-6)}
        return self.prepared["sufficient_eps"]["eps"]

    def _verified(self, name: str, scale: int, eps: float) -> Any:
        """The verification (no budget) of ``name`` run at ``scale`` and ``eps`` (inf for the
        minimum-norm attacks): the main run's where it is that run."""
        setup = self.setup
        main_eps = setup.eps if name in ("apgd", "apgd-det") else math.inf
        if scale == 1 and name in self.results and eps == main_eps:
            result, labels = _head(self.results[name], self.count), ("sanity", name)
        else:
            labels = ("sanity", name, scale, repr(eps))
            if name not in self.prepared:
                self.prepared[name] = _prepare(setup, (name,), self.x, self.y, f"sanity {name}")
            result = _run_attack(
                setup,
                name,
                setup.attack_model(*labels),
                self.x,
                self.y,
                self.prepared[name],
                seed=derive_seed(setup.config.seed, *labels),
                scale=scale,
                eps=eps,
            )
        return _verify_all(setup, result, labels, self.x, self.y)[setup.primary]


def _take_rows(first: Any, second: Any, take: Tensor) -> Any:
    """The verification whose example ``i`` is ``second``'s where ``take[i]``, else ``first``'s
    (two verifications of the same kind and examples; per-example tensors are selected row by
    row, everything else is ``first``'s)."""
    fields = {}
    for entry in dataclasses.fields(first):
        a, b = getattr(first, entry.name), getattr(second, entry.name)
        if isinstance(a, Tensor) and a.dim() >= 1 and len(a) == len(take):
            mask = take.to(a.device).view((-1,) + (1,) * (a.dim() - 1))
            fields[entry.name] = torch.where(mask, b.to(a.device), a)
    return dataclasses.replace(first, **fields)


def _audit(setup: _Setup) -> dict:
    """How often the deployed C+1-way decision changes across ``verify_draws`` draws on the
    attacked clean images, and the draws :func:`~flows.attacks.recommend_draws` derives."""
    config = setup.config
    tm = setup.threat_model("fresh", derive_seed(config.fresh_noise_seed, "audit"))
    parts = [
        decision_randomness(tm, setup.x[s], setup.y[s], draws=config.verify_draws)
        for s in batches(len(setup.x), config.batch_size)
    ]
    audit = _concatenate_randomness(parts)
    try:
        recommendation, problem = dataclasses.asdict(recommend_draws(audit)), None
    except ValueError as error:
        recommendation, problem = None, " ".join(str(error).split())
    used = {
        "eot": config.eot_draws,
        "decision_draws": config.decision_votes,
        "verify_draws": config.verify_draws,
    }
    below = None
    if recommendation is not None:
        below = {
            "eot": setup.deployed and used["eot"] < recommendation["eot_draws"],
            "verify_draws": used["verify_draws"] < recommendation["verification_draws"],
        }
    return {
        "draws": config.verify_draws,
        "images": "the attacked clean images",
        "summary": audit.summary(),
        "recommendation": recommendation,
        "recommendation_error": problem,
        "used": used,
        "below_recommendation": below,
        "records": audit.records(),
    }


def _concatenate_randomness(parts: list[DecisionRandomness]) -> DecisionRandomness:
    """One audit of the examples of ``parts`` (audits with the same draws and classes)."""
    first = parts[0]
    changes = {}
    for item in dataclasses.fields(first):
        value = getattr(first, item.name)
        if isinstance(value, Tensor):
            changes[item.name] = torch.cat([getattr(p, item.name) for p in parts])
    return dataclasses.replace(first, **changes)


def example_figure(x: Tensor, result: AttackResult, report: dict, count: int):
    """``(fig, axes)``: per row the clean image, the adversarial and their difference, with the
    labels, bits/dim, L2 and the verdicts of the threat model's own verification; None if ``x``
    are not images.

    Titles: clean image with its (correct) class and bits/dim; adversarial with its predicted class
    (and the target), bits/dim, L2 and the verdicts. Fixed threat model, under the attack noise
    (:func:`~flows.attacks.verify`): ``fools``/``fails`` (the classifier),
    ``detected``/``undetected`` (the detector) and ``within ε``/``beyond ε``, or ``fails (no
    adversarial found)``. Deployed: the fractions of the fresh draws that are fooled, and fooled
    and undetected, and the verdict by the rule (``success`` or ``fails``).
    """
    if x.dim() != 4 or x.shape[1] not in (1, 3) or count < 1:
        return None
    from matplotlib.figure import Figure

    count = min(count, len(x))
    primary = report.get("threat_model", {}).get("primary", "attack_noise")
    section = report[primary]
    records = section["records"]
    config, detector = report["config"], report["detector"]
    fig = Figure(figsize=(7.2, 0.5 + 2.5 * count), layout="constrained")
    axes = fig.subplots(count, 3, squeeze=False)
    source = config.get("run_dir") or config.get("dataset")
    where = (
        f"over {section['draws']} fresh draws of the deployed model (success: at least "
        f"{section['rule']:g} of them)"
        if primary == "deployed"
        else f"under the attack noise (seed {section['noise_seed']})"
    )
    fig.suptitle(
        f"{config['attack']}{'' if source is None else f' on {Path(source).name}'}: "
        f"ε = {config['eps']:.4g} (L2), detector threshold "
        f"{detector['threshold_bits_per_dim']:.3f} bits/dim (recall "
        f"{100 * detector['recall_on_test_images']:.1f}%)\nverdicts {where}",
        fontsize=8,
    )
    for i in range(count):
        record = records[i]
        diff = (result.adversarial[i] - x[i]).abs()
        scale = max(diff.max().item(), 1e-12)
        clean_state = "detected" if report["clean_detected"][i] else "undetected"
        target = "" if report["targets"] is None else f" (target {report['targets'][i]})"
        if primary == "deployed":
            head = f"adversarial{target}, L2 = {record['l2']:.3g}"
            verdict = (
                f"fooled {100 * record['p_fool']:.0f}%, undetected "
                f"{100 * record['p_fool_undetected']:.0f}%: "
                + ("success" if record["success_undetected"] else "fails")
                if record["claimed"]
                else "fails (no adversarial found)"
            )
            middle = f"{head}\n{verdict}"
        else:
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
            middle = (
                f"adversarial: class {record.get('predicted', '?')}{target}\n"
                f"{'?' if bpd is None else f'{bpd:.3f}'} bits/dim, L2 = {record['l2']:.3g}\n"
                f"{verdict}"
            )
        titles = (
            f"clean #{report['attacked_indices'][i]}: class {report['attacked_labels'][i]}\n"
            f"{report['clean_bits_per_dim'][i]:.3f} bits/dim, {clean_state}",
            middle,
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
