r"""Wrong-class outliers (Section 6.4, Figure 4): is the pair ``(x_i, y_w ≠ y_i)`` an outlier?

With a uniform class prior, Bayes' rule makes the class log-likelihoods ``log p(x | c)`` the logits
of ``p(y | x)``. For test image ``x_i`` of class ``y_i`` let ``y_w`` be the most likely wrong class,
:math:`y_w = \arg\max_{c \ne y_i} \log p(x_i \mid c)`. Then

* the **gap** :math:`\log p(x_i \mid y_i) - \log p(x_i \mid y_w)` is the logit margin of the true
  class over its strongest rival (positive iff ``x_i`` is classified correctly);
* the paper's **margin bound**: if the true logit exceeds every other one by
  :math:`m \ge \log C + \log\frac{1-\delta}{\delta}`, then :math:`p(y_i \mid x_i) \ge 1 - \delta`
  (:func:`paper_margin_bound`). This is sufficient, not minimal: the smallest margin that
  guarantees it is :math:`\log(C-1) + \log\frac{1-\delta}{\delta}` (:func:`minimal_margin`), since
  :math:`p(y_i \mid x_i) \ge 1 / (1 + (C-1) e^{-m})` (:func:`worst_case_probability`), with
  equality when all wrong logits are equal.

**"About 6".** For ``C = 10`` and ``δ = 1e−5`` the bound is
:math:`\log 10 + \log(99999) \approx 13.82` **nats** (19.93 bits); the paper's "about 6" is the
same quantity in base 10 (:math:`\log_{10} 10 + \log_{10} 99999 \approx 5.99999`). The NLL values
it is compared with ("in the scale of thousands") are thousands in nats or bits alike, so the
conclusion holds in every base, but a margin must be compared with NLLs in the same base:
:func:`margin_bounds` gives all three.

Units here: NLLs are **discrete** NLLs, of the image's 8-bit bin, as in
:mod:`flows.analysis.likelihood_terms`: :math:`-\log p(x \mid c) + D \log 256` **nats per image**
(the continuous density of data in [−0.5, 0.5] gives negative values for a good model), or that
divided by :math:`D \ln 2`, **bits/dim**, which equals :func:`flows.measures.bits_per_dim` and
compares with the detector's threshold. Gaps and margins are differences: the offset cancels; in
nats, or in bits/dim (nats / (D ln 2)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from flows.measures import NUM_BINS, nats_to_bits_per_dim

__all__ = [
    "WrongClassNLL",
    "fraction_flagged",
    "margin_bounds",
    "minimal_margin",
    "outlier_summary",
    "paper_margin_bound",
    "worst_case_probability",
    "wrong_class_nll",
]


def _check_margin_args(num_classes: int, delta: float) -> None:
    if num_classes < 2:
        raise ValueError(f"need at least 2 classes, got {num_classes}")
    if not 0.0 < delta < 1.0:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")


def paper_margin_bound(num_classes: int, delta: float, base: float = math.e) -> float:
    r"""The paper's sufficient logit margin :math:`\log C + \log\frac{1-\delta}{\delta}`, in ``base``.

    A true-class logit larger than all others by at least this gives
    :math:`p(\text{true} \mid x) \ge 1 - \delta` (Section 6.4). ``base`` = e (nats, default), 2
    (bits) or 10.
    """
    _check_margin_args(num_classes, delta)
    return (math.log(num_classes) + math.log((1.0 - delta) / delta)) / math.log(base)


def minimal_margin(num_classes: int, delta: float, base: float = math.e) -> float:
    r"""The smallest margin that guarantees :math:`p \ge 1-\delta`:
    :math:`\log(C-1) + \log\frac{1-\delta}{\delta}` (in ``base``).

    At exactly this margin, with all ``C − 1`` wrong logits equal, ``p(true | x) = 1 − δ``.
    """
    _check_margin_args(num_classes, delta)
    return (math.log(num_classes - 1) + math.log((1.0 - delta) / delta)) / math.log(base)


def worst_case_probability(margin: float, num_classes: int) -> float:
    r"""The least ``p(true | x)`` over logits whose true entry exceeds all others by ``margin``
    (nats): :math:`1 / (1 + (C-1) e^{-m})`, attained when all wrong logits equal ``true − m``."""
    if num_classes < 2:
        raise ValueError(f"need at least 2 classes, got {num_classes}")
    return 1.0 / (1.0 + (num_classes - 1) * math.exp(-margin))


def margin_bounds(num_classes: int = 10, delta: float = 1e-5) -> dict:
    """The paper's bound and the minimal margin in nats, bits and base 10, with their guarantees.

    For ``C = 10``, ``δ = 1e−5``: ``paper_bound_log10`` ≈ 6.0 (the paper's "about 6"),
    ``paper_bound_nats`` ≈ 13.8, ``paper_bound_bits`` ≈ 19.9.
    """
    paper = paper_margin_bound(num_classes, delta)
    minimal = minimal_margin(num_classes, delta)
    return {
        "num_classes": num_classes,
        "delta": delta,
        "paper_bound_nats": paper,
        "paper_bound_bits": paper_margin_bound(num_classes, delta, 2.0),
        "paper_bound_log10": paper_margin_bound(num_classes, delta, 10.0),
        "minimal_margin_nats": minimal,
        "minimal_margin_bits": minimal_margin(num_classes, delta, 2.0),
        "minimal_margin_log10": minimal_margin(num_classes, delta, 10.0),
        "probability_at_paper_bound": worst_case_probability(paper, num_classes),
        "probability_at_minimal_margin": worst_case_probability(minimal, num_classes),
        "paper_claim": "about 6 (true in base 10; in nats it is about 13.8)",
    }


@dataclass(frozen=True)
class WrongClassNLL:
    """Per test image: NLL given the true class and given the most likely wrong class.

    Attributes:
        labels: ``(N,)`` true classes ``y_i``.
        wrong_class: ``(N,)`` ``y_w = argmax_{c ≠ y_i} log p(x_i | c)``.
        nll_true_nats: ``(N,)`` float64 ``−log p(x_i | y_i) + D log 256`` (discrete NLL, nats).
        nll_wrong_nats: ``(N,)`` float64 ``−log p(x_i | y_w) + D log 256`` (discrete NLL, nats).
        num_dims: ``D`` of the bits/dim convention.
        num_classes: ``C``.
    """

    labels: Tensor
    wrong_class: Tensor
    nll_true_nats: Tensor
    nll_wrong_nats: Tensor
    num_dims: int
    num_classes: int

    @property
    def gap_nats(self) -> Tensor:
        """``(N,)`` ``log p(x|y_i) − log p(x|y_w)``: the true class's logit margin (nats)."""
        return self.nll_wrong_nats - self.nll_true_nats

    @property
    def correct(self) -> Tensor:
        """``(N,)`` bool: classified correctly (ties count as wrong)."""
        return self.gap_nats > 0

    def _per_dim(self, nats: Tensor) -> Tensor:
        return nats_to_bits_per_dim(nats, self.num_dims)

    @property
    def nll_true_bits_per_dim(self) -> Tensor:
        """``(N,)`` ``−log p(x|y_i)`` in bits/dim (as :func:`flows.measures.bits_per_dim`)."""
        return self._per_dim(self.nll_true_nats)

    @property
    def nll_wrong_bits_per_dim(self) -> Tensor:
        """``(N,)`` ``−log p(x|y_w)`` in bits/dim."""
        return self._per_dim(self.nll_wrong_nats)

    @property
    def gap_bits_per_dim(self) -> Tensor:
        """``(N,)`` the gap in bits/dim: ``gap_nats / (D ln 2)``."""
        return self._per_dim(self.gap_nats)


def wrong_class_nll(
    class_log_likelihoods: Tensor, labels: Tensor, num_dims: int, num_bins: int = NUM_BINS
) -> WrongClassNLL:
    """NLL given the true and the most likely wrong class, from ``(N, C)`` ``log p(x|c)`` (nats).

    ``num_bins``: the discretisation of the offset ``D log(num_bins)`` (1: continuous nats).
    """
    if class_log_likelihoods.dim() != 2 or labels.shape != class_log_likelihoods.shape[:1]:
        raise ValueError(
            f"expected (N, C) class log-likelihoods and (N,) labels, got "
            f"{tuple(class_log_likelihoods.shape)} and {tuple(labels.shape)}"
        )
    values = class_log_likelihoods.double()
    true = values.gather(1, labels[:, None]).squeeze(1)
    others = values.scatter(1, labels[:, None], -math.inf)
    wrong_value, wrong_class = others.max(dim=1)
    offset = num_dims * math.log(num_bins)
    return WrongClassNLL(
        labels, wrong_class, offset - true, offset - wrong_value, num_dims, values.shape[1]
    )


def fraction_flagged(nll_bits_per_dim: Tensor, threshold: float) -> float:
    """Share of values above ``threshold`` (bits/dim): those a likelihood threshold calls outliers."""
    if nll_bits_per_dim.numel() == 0:
        raise ValueError("fraction_flagged needs at least one value")
    return (nll_bits_per_dim > threshold).double().mean().item()


def outlier_summary(result: WrongClassNLL, threshold: float, delta: float = 1e-5) -> dict:
    """Section 6.4's comparison, JSON-serialisable.

    ``threshold`` (bits/dim) is applied to the wrong-class NLLs: ``fraction_wrong_flagged`` is the
    share of pairs ``(x_i, y_w)`` it would call outliers, beside ``fraction_true_flagged`` for the
    true pairs. The gap (nats) is compared with the spread of the NLL over images:
    ``std_nll_true_nats``, ``median_gap_nats``, ``std_over_median_gap`` (None unless the median
    gap is positive), ``fraction_gap_below_std``; these image statistics are over all test images
    and, with suffix ``_correct``, over the correctly classified ones (left out when fewer than 2).
    Also the margin bounds for ``C`` and ``delta`` (:func:`margin_bounds`) and the share of
    images whose gap exceeds the paper's bound (confidence ``>= 1 − δ``).
    """
    bounds = margin_bounds(result.num_classes, delta)
    gap = result.gap_nats
    summary = {
        "num_images": len(gap),
        "threshold_bits_per_dim": float(threshold),
        "accuracy": result.correct.double().mean().item(),
        "fraction_true_flagged": fraction_flagged(result.nll_true_bits_per_dim, threshold),
        "fraction_wrong_flagged": fraction_flagged(result.nll_wrong_bits_per_dim, threshold),
        "fraction_gap_above_paper_bound": (gap >= bounds["paper_bound_nats"])
        .double()
        .mean()
        .item(),
        "margin_bounds": bounds,
    }
    for suffix, mask in (
        ("", torch.ones_like(gap, dtype=torch.bool)),
        ("_correct", result.correct),
    ):
        if mask.sum() < 2:
            continue
        nll_true, nll_wrong, g = result.nll_true_nats[mask], result.nll_wrong_nats[mask], gap[mask]
        std = nll_true.std().item()
        median = torch.quantile(g, 0.5).item()
        summary |= {
            f"num_images{suffix}": int(mask.sum()),
            f"mean_nll_true_nats{suffix}": nll_true.mean().item(),
            f"mean_nll_wrong_nats{suffix}": nll_wrong.mean().item(),
            f"std_nll_true_nats{suffix}": std,
            f"std_nll_wrong_nats{suffix}": nll_wrong.std().item(),
            f"mean_gap_nats{suffix}": g.mean().item(),
            f"median_gap_nats{suffix}": median,
            f"mean_gap_bits_per_dim{suffix}": result.gap_bits_per_dim[mask].mean().item(),
            f"std_over_median_gap{suffix}": std / median if median > 0 else None,
            f"fraction_gap_below_std{suffix}": (g < std).double().mean().item(),
        }
    return summary
