r"""How random is the deployed decision? An audit on clean inputs, and how many draws to use.

A flows classifier draws padding and noise-channel noise at every query (:mod:`flows.noise`), so
its C+1-way decision (:meth:`~flows.attacks.ThreatModel.decision`: a class, or ``C`` =
"non-image" when the detector rejects) is a random variable per input. Before attacking the
deployed (randomised) model, measure on clean inputs how much it varies
(:func:`decision_randomness`), and choose the number of draws of the attack (``K``, EOT) and of
the verification (``N``, :func:`~flows.attacks.verification.verify_over_noise`) from it
(:func:`recommend_draws`).

Per example ``i``, from ``N`` independent draws ``d_1, …, d_N`` of its decision, with ``n_c`` the
number of draws deciding ``c ∈ {0, …, C}``:

- the distribution of decisions ``n_c / N`` and the share of the modal decision ``max_c n_c / N``;
  the example is *unanimous* when that share is 1;
- the flip rate: the probability that two independent draws disagree,
  :math:`f = 1 - \sum_c p_c^2`, estimated without bias by

  .. math::
      \hat f = 1 - \sum_c \frac{n_c (n_c - 1)}{N (N - 1)}
      \qquad (\text{the U-statistic; } N \ge 2);

- with labels ``y``, the agreement ``n_y / N``;
- the margin spread: the standard deviation across draws of the log-posterior margin
  (:func:`~flows.attacks.log_posterior_margin`, ``log_softmax`` of the class scores) of the
  example's modal *class* (the most frequent argmax, detector aside), and its mean.

The decisions and the margins come from one batched pass of ``N·B`` rows
(:meth:`~flows.attacks.ThreatModel.observe` with draws, draw-major), with the decision rule of
:meth:`~flows.attacks.ThreatModel.decision`: the argmax class, replaced by ``C`` where the
detector rejects.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from flows.attacks.base import check_inputs
from flows.attacks.criteria import log_posterior_margin
from flows.attacks.statistics import draws_for_half_width
from flows.attacks.threat_model import ThreatModel
from flows.measures import predictions

__all__ = [
    "DecisionRandomness",
    "DrawRecommendation",
    "decision_randomness",
    "kappa_from_audit",
    "recommend_draws",
]


@dataclass(frozen=True)
class DecisionRandomness:
    """The audit of :func:`decision_randomness` for ``B`` clean inputs over ``N`` draws.

    Attributes:
        counts: ``(B, C + 1)`` int64, ``n_c``: the draws deciding each class ``c < C`` and
            "non-image" (``c = C``).
        modal: ``(B,)`` int64, the most frequent decision (a tie goes to the smallest label, as
            :func:`~flows.attacks.majority_over_draws`).
        modal_share: ``(B,)`` float64, ``max_c n_c / N``.
        flip_rate: ``(B,)`` float64, the unbiased estimate of the probability that two
            independent draws decide differently (see the module).
        agreement: ``(B,)`` float64, ``n_y / N`` for the given labels ``y``; None without them.
        margin_class: ``(B,)`` int64, the modal argmax class (detector aside), the reference of
            the margins.
        margin_mean: ``(B,)`` float64, mean over draws of the log-posterior margin of
            ``margin_class`` (nats).
        margin_std: ``(B,)`` float64, its standard deviation across draws (``N − 1`` in the
            denominator).
        draws: ``N``.
        num_classes: ``C``.
    """

    counts: Tensor
    modal: Tensor
    modal_share: Tensor
    flip_rate: Tensor
    agreement: Tensor | None
    margin_class: Tensor
    margin_mean: Tensor
    margin_std: Tensor
    draws: int
    num_classes: int

    @property
    def unanimous(self) -> Tensor:
        """``(B,)`` bool: every draw made the same decision."""
        return self.modal_share == 1.0

    @property
    def fraction_not_unanimous(self) -> float:
        """The fraction of examples whose decision changes across the ``N`` draws."""
        return (~self.unanimous).double().mean().item()

    @property
    def mean_flip_rate(self) -> float:
        """The flip rate averaged over examples (an unbiased estimate of the population's)."""
        return self.flip_rate.mean().item()

    def summary(self) -> dict:
        """JSON-ready aggregate: ``{"n", "draws", "fraction_not_unanimous", "mean_flip_rate",
        "mean_modal_share", "non_image_share", "median_abs_margin", "pooled_margin_std",
        "mean_agreement"}`` (``mean_agreement`` None without labels)."""
        return {
            "n": len(self.modal),
            "draws": self.draws,
            "fraction_not_unanimous": self.fraction_not_unanimous,
            "mean_flip_rate": self.mean_flip_rate,
            "mean_modal_share": self.modal_share.mean().item(),
            "non_image_share": (self.counts[:, -1].sum() / self.counts.sum()).item(),
            "median_abs_margin": _median(self.margin_mean.abs()),
            "pooled_margin_std": _pooled_std(self.margin_std),
            "mean_agreement": None if self.agreement is None else self.agreement.mean().item(),
        }

    def records(self) -> list[dict]:
        """JSON-ready per-example rows: counts, modal decision and share, flip rate, agreement
        (when labels were given) and the margin statistics."""
        rows = []
        for i in range(len(self.modal)):
            row = {
                "counts": self.counts[i].tolist(),
                "modal": int(self.modal[i]),
                "modal_share": float(self.modal_share[i]),
                "flip_rate": float(self.flip_rate[i]),
                "margin_class": int(self.margin_class[i]),
                "margin_mean": float(self.margin_mean[i]),
                "margin_std": float(self.margin_std[i]),
            }
            if self.agreement is not None:
                row["agreement"] = float(self.agreement[i])
            rows.append(row)
        return rows


@dataclass(frozen=True)
class DrawRecommendation:
    """The draws :func:`recommend_draws` recommends, and the measurements behind them.

    Attributes:
        eot_draws: ``K``, draws per query of an attack on the deployed model (EOT).
        verification_draws: ``N``, draws per adversarial in
            :func:`~flows.attacks.verification.verify_over_noise`.
        pooled_margin_std: ``σ``, the pooled per-example standard deviation of the margin.
        median_abs_margin: ``m``, the median over examples of ``|mean margin|``.
        relative_error: ``r``, the target of ``σ/√K <= r·m``.
        half_width: ``h``, the target Wilson half-width for ``N``.
        confidence: the Wilson interval's confidence.
    """

    eot_draws: int
    verification_draws: int
    pooled_margin_std: float
    median_abs_margin: float
    relative_error: float
    half_width: float
    confidence: float


def decision_randomness(
    threat_model: ThreatModel, x: Tensor, y: Tensor | None = None, draws: int = 32
) -> DecisionRandomness:
    """Audit the C+1-way decision of ``threat_model`` on clean inputs over ``N = draws`` draws.

    One batched pass of ``N·B`` rows (see the module for the quantities). On a deterministic
    threat model every example is unanimous and the margin spread is 0, which is the check that
    a fixed-noise model is what it claims.

    Args:
        threat_model: a :class:`~flows.attacks.ThreatModel`, usually randomised
            (``flows_threat_model(..., noise="fresh")``), with or without a detector.
        x: ``(B, ...)`` clean inputs within the bounds.
        y: ``(B,)`` labels in ``[0, C)`` for the agreement, or None.
        draws: ``N >= 2`` (the flip rate and the standard deviation need two draws).

    Raises:
        ValueError: naming the argument: ``draws`` not an integer >= 2, inputs or labels that
            :func:`~flows.attacks.base.check_inputs` refuses, a model with fewer than 2 classes.
    """
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 2:
        raise ValueError(f"draws: must be an integer >= 2 (to measure a spread), got {draws!r}")
    num_classes = threat_model.num_classes
    if num_classes < 2:
        raise ValueError(f"threat_model: needs num_classes >= 2 for margins, got {num_classes}")
    check_inputs(x, threat_model.bounds, y, num_classes=num_classes)
    b = len(x)
    with torch.no_grad():
        obs = threat_model.observe(x, draws=draws)
    logits = obs.logits.detach()
    classes = predictions(logits)
    decisions = classes
    if threat_model.has_detector:
        rejected = threat_model.detector.detected(obs.bits_per_dim)
        decisions = torch.where(rejected, num_classes, classes)
    decisions = decisions.reshape(draws, b).cpu()
    classes = classes.reshape(draws, b).cpu()
    assert decisions.shape == (draws, b)

    counts = _histogram(decisions, num_classes + 1)
    top = counts.max(dim=1)
    modal = counts.argmax(dim=1)  # first maximum: the smallest label among ties
    pairs = (counts * (counts - 1)).sum(dim=1).double()
    flip_rate = 1.0 - pairs / (draws * (draws - 1))
    agreement = None
    if y is not None:
        agreement = counts.gather(1, y.long().cpu()[:, None]).squeeze(1).double() / draws

    margin_class = _histogram(classes, num_classes).argmax(dim=1)
    reference = margin_class.repeat(draws).to(logits.device)
    margins = log_posterior_margin(logits.double(), reference).reshape(draws, b).cpu()
    return DecisionRandomness(
        counts=counts,
        modal=modal,
        modal_share=top.values.double() / draws,
        flip_rate=flip_rate,
        agreement=agreement,
        margin_class=margin_class,
        margin_mean=margins.mean(dim=0),
        margin_std=margins.std(dim=0),
        draws=draws,
        num_classes=num_classes,
    )


def recommend_draws(
    randomness: DecisionRandomness,
    *,
    relative_error: float = 0.25,
    half_width: float = 0.1,
    confidence: float = 0.95,
) -> DrawRecommendation:
    r"""``K`` (EOT draws of an attack) and ``N`` (verification draws) from a clean-input audit.

    ``N`` is the smallest number of draws whose Wilson interval for a per-example probability
    has half-width ``<= h`` for every estimate, the worst being ``p̂ = 1/2``, where the
    verification's rule is decided (:func:`~flows.attacks.statistics.draws_for_half_width`):

    .. math::
        N = \left\lceil \frac{z^2}{4 h^2} - z^2 \right\rceil
        \qquad (h = 0.1,\ 95\,\%:\ N = 93).

    ``K`` is the smallest number of draws whose mean margin has a standard error at most a
    fraction ``r`` of the typical margin:

    .. math::
        \frac{\sigma}{\sqrt K} \le r\, m
        \iff K = \max\left(1, \left\lceil \left(\frac{\sigma}{r\, m}\right)^2 \right\rceil\right),
        \qquad \sigma = \sqrt{\tfrac1B \textstyle\sum_i s_i^2},\quad
        m = \operatorname{median}_i |\bar m_i|,

    with ``s_i`` and ``\bar m_i`` the per-example standard deviation and mean of the margin
    (``margin_std``, ``margin_mean``). ``K = 1`` when the margins do not vary (``σ = 0``). The
    margins are measured at clean inputs; an attack drives them towards its confidence κ, where
    the same noise σ weighs more, so ``K`` is a lower bound for the end of an attack.

    Raises:
        ValueError: ``relative_error`` not positive, ``half_width`` outside ``(0, 0.5)``,
            ``confidence`` outside ``(0, 1)``, or ``m = 0`` while ``σ > 0`` (no finite ``K``).
    """
    if not relative_error > 0:
        raise ValueError(f"relative_error: must be > 0, got {relative_error!r}")
    verification_draws = draws_for_half_width(half_width, confidence)
    sigma = _pooled_std(randomness.margin_std)
    typical = _median(randomness.margin_mean.abs())
    if sigma == 0.0:
        eot_draws = 1
    elif typical == 0.0:
        raise ValueError(
            "randomness: the median |margin| is 0 while the margins vary (pooled std "
            f"{sigma:.3g}): no finite K makes the standard error a fraction of it"
        )
    else:
        eot_draws = max(1, math.ceil((sigma / (relative_error * typical)) ** 2 - 1e-9))
    return DrawRecommendation(
        eot_draws=eot_draws,
        verification_draws=verification_draws,
        pooled_margin_std=sigma,
        median_abs_margin=typical,
        relative_error=float(relative_error),
        half_width=float(half_width),
        confidence=float(confidence),
    )


def _histogram(labels: Tensor, num_bins: int) -> Tensor:
    """``(B, num_bins)`` int64 counts of the labels ``(N, B)`` of each column."""
    one_hot = torch.nn.functional.one_hot(labels.long(), num_bins)
    return one_hot.sum(dim=0)


def _pooled_std(stds: Tensor) -> float:
    """``sqrt(mean(s_i²))``: the pooled standard deviation of equally sized groups."""
    return stds.double().pow(2).mean().sqrt().item()


def _median(values: Tensor) -> float:
    """The median (mean of the two middle values for an even count)."""
    return torch.quantile(values.double(), 0.5).item()


def kappa_from_audit(margin_std: Sequence[float], factor: float) -> float:
    r"""κ = ``factor`` · the median over images of the margin's standard deviation across draws.

    .. math::
        \kappa = f \cdot \operatorname{median}_i s_i,

    ``s_i`` the standard deviation across the audit's fresh draws of image ``i``'s log-posterior
    margin (``audit["records"][i]["margin_std"]``, :func:`flows.attacks.decision_randomness`).
    A margin of a few ``s`` keeps an adversarial on the wrong side of the boundary in most
    fresh draws; ``κ = 0`` leaves it on the boundary, fooling about half of them.

    Raises:
        ValueError: no spreads, a negative or non-finite one, or ``factor <= 0``.
    """
    values = torch.as_tensor(list(margin_std), dtype=torch.float64)
    if values.numel() == 0 or not torch.isfinite(values).all() or (values < 0).any():
        raise ValueError(f"margin_std must be non-empty, finite and >= 0, got {list(margin_std)}")
    if not factor > 0:
        raise ValueError(f"factor must be > 0, got {factor!r}")
    return float(factor * torch.quantile(values, 0.5))
