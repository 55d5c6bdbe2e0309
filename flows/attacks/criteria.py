"""Criteria: what counts as an adversarial, composable with ``&`` (foolbox 3 style).

A criterion looks at an :class:`Observation` of the model at a batch of inputs and answers, per
example, whether the input is adversarial (:meth:`Criterion.is_adversarial`). Gradient-based attacks
also need a differentiable hinge loss that is zero exactly when the criterion holds (with a
confidence margin κ for the classification part); :meth:`Criterion.loss` provides it. A criterion
holds the labels it judges by: an attack validates them before any work
(:meth:`Criterion.check`) and returns the targets of a targeted one (:attr:`Criterion.targets`).

The detection-aware attacks of Section 6.2 are *composed* criteria, not forked attacks::

    Misclassified(y) & NotDetected(detector)             # CW-L2 against classifier and detector
    TargetedMisclassified(t, y) & NotDetected(detector)  # the modified Boundary attack
    Misclassified(y) & NotDetected()                     # on a labels-only C+1-way decision

Class scores may be logits or class log-likelihoods ``log p(x|y=c)`` of the order of −10³ (a
generative classifier). Margins are always taken between entries of ``log_softmax(scores)``, i.e.
log-posterior ratios, and the runner-up class is found by masking the reference class with −∞, never
by multiplying with a one-hot mask (which silently picks the reference class's *zeroed* score as the
runner-up when all scores are negative).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from flows.attacks.base import check_labels, check_targets_differ
from flows.attacks.detector import LikelihoodDetector
from flows.measures import predictions

__all__ = [
    "Observation",
    "Criterion",
    "Misclassified",
    "TargetedMisclassified",
    "NotDetected",
    "And",
    "log_posterior_margin",
    "fooled_and_undetected",
]


@dataclass(frozen=True)
class Observation:
    """What the attacker sees of the model at a batch of ``B`` inputs.

    Attributes:
        logits: ``(B, C)`` class scores (logits or class log-likelihoods), or ``None`` for a
            decision-only model.
        labels: ``(B,)`` decided labels. ``None`` means ``logits.argmax(1)``. For a C+1-way decision
            this holds the decision itself (the non-image label is flagged by ``rejected``).
        bits_per_dim: ``(B,)`` detector statistic in bits/dim, or ``None``.
        rejected: ``(B,)`` bool, the detector's verdict when only the decision is known (C+1-way
            decision), or ``None``.
    """

    logits: Tensor | None = None
    labels: Tensor | None = None
    bits_per_dim: Tensor | None = None
    rejected: Tensor | None = None

    def predicted(self) -> Tensor:
        """The predicted labels ``(B,)``: ``labels`` if given, else the argmax of ``logits``."""
        if self.labels is not None:
            return self.labels
        if self.logits is None:
            raise ValueError("Observation has neither labels nor logits")
        return predictions(self.logits)


def log_posterior_margin(scores: Tensor, reference: Tensor) -> Tensor:
    r"""Margin of the reference class over its best competitor, in nats of log-posterior.

    .. math::
        m_i = \log p(r_i | x_i) - \max_{j \ne r_i} \log p(j | x_i),
        \qquad \log p(\cdot|x) = \operatorname{log\_softmax}(s(x))

    Args:
        scores: ``(B, C)`` class scores, any scale (e.g. log-likelihoods of order −10³), C ≥ 2.
        reference: ``(B,)`` integer class indices.

    Returns:
        ``(B,)`` margins; positive when the reference class wins.
    """
    if scores.dim() != 2 or scores.shape[1] < 2:
        raise ValueError(f"scores must be (B, C) with C >= 2, got {tuple(scores.shape)}")
    if reference.shape != scores.shape[:1]:
        raise ValueError(f"reference must be ({scores.shape[0]},), got {tuple(reference.shape)}")
    log_post = torch.log_softmax(scores, dim=1)
    ref = log_post.gather(1, reference[:, None]).squeeze(1)
    mask = torch.zeros_like(log_post, dtype=torch.bool).scatter_(1, reference[:, None], True)
    others = log_post.masked_fill(mask, -math.inf).amax(dim=1)
    return ref - others


class Criterion:
    """Base class. Subclasses implement ``is_adversarial`` and, for gradient attacks, ``loss``."""

    #: ``(B,)`` the target classes of a targeted criterion; None for an untargeted one.
    targets: Tensor | None = None

    def check(self, num_examples: int, num_classes: int | None) -> None:
        """Validate the labels this criterion holds for ``num_examples`` inputs of a model with
        ``num_classes`` classes (None: unknown, only ``>= 0`` is checked); ``ValueError`` naming
        them (``y``: true labels, ``targets``). A criterion without labels passes."""

    def is_adversarial(self, obs: Observation) -> Tensor:
        """``(B,)`` bool: whether each observed input satisfies the criterion."""
        raise NotImplementedError

    def loss(self, obs: Observation, confidence: float | Tensor = 0.0) -> Tensor:
        """``(B,)`` non-negative differentiable hinge loss, zero when the criterion holds.

        ``confidence`` (κ, in nats of log-posterior ratio; a float or a ``(B,)`` tensor) only
        applies to classification terms.
        """
        raise NotImplementedError

    def select(self, index: slice | Tensor) -> Criterion:
        """The same criterion restricted to examples ``index`` (for batching)."""
        raise NotImplementedError

    def __and__(self, other: Criterion) -> And:
        return And(self, other)

    def __call__(self, obs: Observation) -> Tensor:
        return self.is_adversarial(obs)


class And(Criterion):
    """Conjunction of criteria; its loss is the sum of the parts' losses."""

    def __init__(self, *criteria: Criterion):
        flat: list[Criterion] = []
        for c in criteria:
            flat.extend(c.criteria if isinstance(c, And) else [c])
        self.criteria = tuple(flat)

    def is_adversarial(self, obs: Observation) -> Tensor:
        result = self.criteria[0].is_adversarial(obs)
        for c in self.criteria[1:]:
            result = result & c.is_adversarial(obs)
        return result

    def loss(self, obs: Observation, confidence: float | Tensor = 0.0) -> Tensor:
        return sum(c.loss(obs, confidence) for c in self.criteria)

    def check(self, num_examples: int, num_classes: int | None) -> None:
        for c in self.criteria:
            c.check(num_examples, num_classes)

    @property
    def targets(self) -> Tensor | None:
        """The first part's targets (None when no part is targeted)."""
        return next((c.targets for c in self.criteria if c.targets is not None), None)

    def select(self, index: slice | Tensor) -> And:
        return And(*(c.select(index) for c in self.criteria))

    def __repr__(self) -> str:
        return " & ".join(repr(c) for c in self.criteria)


def _as_index(labels: Tensor) -> Tensor:
    """Integer labels as int64 (indices for ``gather``); anything else as given, for
    :meth:`Criterion.check` to refuse with a message."""
    if isinstance(labels, Tensor) and not (
        labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex()
    ):
        return labels.long()
    return labels


def _check_label_range(name: str, labels: Tensor, obs: Observation) -> None:
    """With class scores in ``obs``, ``labels`` must be valid classes ``[0, C)``.

    A label outside them would make every input "misclassified" (a success at L2 = 0) or index
    past the scores; the message names the criterion's argument and the batch index.
    """
    if obs.logits is None or obs.logits.dim() != 2 or labels.shape != obs.logits.shape[:1]:
        return
    num_classes = obs.logits.shape[1]
    bad = torch.nonzero((labels < 0) | (labels >= num_classes)).flatten()
    if len(bad):
        i = int(bad[0])
        raise ValueError(
            f"{name}: labels must lie in [0, {num_classes}) (the model's classes), got "
            f"{int(labels[i])} at index {i} of the batch"
        )


class Misclassified(Criterion):
    """Untargeted: the predicted class differs from the true ``labels``.

    Its loss is ``max(0, m_y + κ)`` with ``m_y`` the log-posterior margin of the true class
    (Carlini & Wagner 2017b, their f₆ on log-probabilities). With class scores in the
    observation, labels outside ``[0, C)`` raise :class:`ValueError`.
    """

    def __init__(self, labels: Tensor):
        self.labels = _as_index(labels)

    def check(self, num_examples: int, num_classes: int | None) -> None:
        check_labels("y", self.labels, num_examples, num_classes)

    def is_adversarial(self, obs: Observation) -> Tensor:
        _check_label_range("labels", self.labels, obs)
        return obs.predicted() != self.labels

    def loss(self, obs: Observation, confidence: float | Tensor = 0.0) -> Tensor:
        if obs.logits is None:
            raise ValueError("Misclassified.loss needs class scores (a decision is not enough)")
        _check_label_range("labels", self.labels, obs)
        return torch.clamp(log_posterior_margin(obs.logits, self.labels) + confidence, min=0)

    def select(self, index: slice | Tensor) -> Misclassified:
        return Misclassified(self.labels[index])

    def __repr__(self) -> str:
        return "Misclassified(labels)"


class TargetedMisclassified(Criterion):
    """Targeted: the predicted class equals ``targets``. Loss ``max(0, κ − m_t)``.

    ``labels``, the true labels (optional), only serve :meth:`check`: a target equal to its true
    label is refused, since the clean input would already satisfy the criterion.
    """

    def __init__(self, targets: Tensor, labels: Tensor | None = None):
        self.targets = _as_index(targets)
        self.labels = None if labels is None else _as_index(labels)

    def check(self, num_examples: int, num_classes: int | None) -> None:
        check_labels("y", self.labels, num_examples, num_classes)
        check_labels("targets", self.targets, num_examples, num_classes)
        check_targets_differ(self.labels, self.targets)

    def is_adversarial(self, obs: Observation) -> Tensor:
        _check_label_range("targets", self.targets, obs)
        return obs.predicted() == self.targets

    def loss(self, obs: Observation, confidence: float | Tensor = 0.0) -> Tensor:
        if obs.logits is None:
            raise ValueError("TargetedMisclassified.loss needs class scores")
        _check_label_range("targets", self.targets, obs)
        return torch.clamp(confidence - log_posterior_margin(obs.logits, self.targets), min=0)

    def select(self, index: slice | Tensor) -> TargetedMisclassified:
        labels = None if self.labels is None else self.labels[index]
        return TargetedMisclassified(self.targets[index], labels)

    def __repr__(self) -> str:
        return "TargetedMisclassified(targets)"


class NotDetected(Criterion):
    """The likelihood detector accepts the input as an image.

    With a ``detector`` and an observation carrying ``bits_per_dim``, the verdict is
    ``bits_per_dim <= T``, and the loss is the paper's ℓ_det(x') = max{0, −log p(x') − T}
    expressed in nats (see :meth:`LikelihoodDetector.excess_nats`). Without a detector (a
    decision-only C+1-way model) the verdict is ``not obs.rejected``.
    """

    def __init__(self, detector: LikelihoodDetector | None = None):
        self.detector = detector

    def is_adversarial(self, obs: Observation) -> Tensor:
        if self.detector is not None and obs.bits_per_dim is not None:
            return ~self.detector.detected(obs.bits_per_dim)
        if obs.rejected is not None:
            return ~obs.rejected
        raise ValueError(
            "NotDetected needs bits_per_dim and a detector, or a C+1-way decision (rejected)"
        )

    def loss(self, obs: Observation, confidence: float | Tensor = 0.0) -> Tensor:
        if self.detector is None or obs.bits_per_dim is None:
            raise ValueError("NotDetected.loss needs a detector and bits_per_dim")
        return self.detector.excess_nats(obs.bits_per_dim)

    def select(self, index: slice | Tensor) -> NotDetected:
        return self

    def __repr__(self) -> str:
        return f"NotDetected({self.detector!r})"


def fooled_and_undetected(
    y: Tensor, targets: Tensor | None = None, detector: LikelihoodDetector | None = None
) -> Criterion:
    """``Misclassified(y)`` (or ``TargetedMisclassified(targets, y)``), ``& NotDetected(detector)``
    when there is a detector: what the detection-aware attacks of Section 6.2 aim for."""
    y = y.long()
    criterion: Criterion = (
        Misclassified(y) if targets is None else TargetedMisclassified(targets, y)
    )
    return criterion if detector is None else criterion & NotDetected(detector)
