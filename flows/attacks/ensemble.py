r"""The worst case over an ensemble of attacks, and where an attack falls short of the segment bound.

An evaluation runs several attacks on the same ``B`` images (CW-L2, APGD, Boundary, the segment
bound, …) and re-verifies each one's adversarials (:func:`~flows.attacks.verification.verify`, or
:func:`~flows.attacks.verification.verify_over_noise` on the deployed, randomised model). An
example is only as robust as the strongest attack shows: its *worst case* over the ensemble. With
:math:`s_{a,i}` the verified success of attack ``a`` on example ``i`` (:func:`verified_success`)
and :math:`d_{a,i}` the L2 distance of its adversarial (:func:`verified_l2`: ``inf`` where
:math:`s_{a,i}` is False),

.. math::
    d^*_i = \min_a d_{a,i}, \qquad a^*_i = \operatorname*{arg\,min}_a d_{a,i}, \qquad
    s^*_i = \bigvee_a s_{a,i} \iff d^*_i < \infty,

ties going to the attack that comes first in the order the results are given
(:func:`worst_case`). The ensemble is reported as its own Table 2 row
(:meth:`EnsembleResult.statistics`) and, with :meth:`EnsembleResult.to_attack_result`, goes
through the same verification and statistics as any single attack.

What counts. A verified success is the verification's ``success_undetected`` (classifier fooled
and the detector accepts) or, with ``require_undetected=False``, its ``fools_classifier``
(detected or not; without a detector the two coincide). Every verification already demands that
the attack claimed the point, that it lies in the bounds and within ε, so ε is the
verification's. Only the *final* adversarial that each attack returned counts, once it has been
re-verified; no intermediate iterate does. In particular AutoAttack's rule (Croce & Hein 2020)
is **not** used: its APGD marks an example as broken as soon as any iterate was misclassified
in the evaluation made at that step, which on a randomised model (its ``version="rand"``) is a
single noise draw, so a lucky draw at one iterate counts as a success. Here such a point only
counts if it is the attack's returned adversarial and it survives the re-verification (under
fresh noise, by the rule of :func:`~flows.attacks.verification.verify_over_noise`).

Segment flags. The segment bound (:mod:`flows.attacks.segment`) gives, per example, a verified
point on the segment to a real image of another class: its L2 :math:`b_i` is an upper bound on
the minimal (undetected) perturbation. An attack that fails there, or returns a larger
perturbation, is weaker than this cheap baseline on that example (:func:`segment_flags`):

.. math::
    \text{flag}_{a,i} = (b_i < \infty) \wedge \big(d_{a,i} > (1 + \text{rtol})\, b_i\big).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import Tensor

from flows.attacks.base import AttackResult, flat_l2
from flows.attacks.statistics import percentage_with_interval
from flows.attacks.verification import NoiseVerification, Verification

__all__ = [
    "EnsembleResult",
    "segment_flags",
    "verified_l2",
    "verified_success",
    "worst_case",
]

AnyVerification = Verification | NoiseVerification


def verified_success(verification: AnyVerification, *, require_undetected: bool) -> Tensor:
    """``(B,)`` bool: the verified successes, ``success_undetected`` (``require_undetected``) or
    ``fools_classifier`` of a :class:`Verification` or :class:`NoiseVerification`."""
    _check_flag(require_undetected)
    key = "success_undetected" if require_undetected else "fools_classifier"
    return getattr(verification, key)


def verified_l2(verification: AnyVerification, *, require_undetected: bool) -> Tensor:
    """``(B,)`` the verified L2 distance of each adversarial, ``inf`` where it is not a verified
    success (:func:`verified_success`)."""
    success = verified_success(verification, require_undetected=require_undetected)
    l2 = verification.l2
    return torch.where(success.to(l2.device), l2, torch.full_like(l2, math.inf))


@dataclass(frozen=True)
class EnsembleResult:
    """The worst case over attacks on ``B`` examples (:func:`worst_case`).

    Attributes:
        adversarial: ``(B, ...)`` per example, the closest verified adversarial of all attacks;
            the clean input where no attack's adversarial verified.
        success: ``(B,)`` bool, some attack's adversarial is a verified success (by
            ``require_undetected``).
        l2: ``(B,)`` the verified L2 distance of ``adversarial``; ``inf`` where ``success`` is
            False.
        source: ``B`` names: the attack that produced each example's adversarial; None where no
            attack succeeded.
        fools_classifier: ``(B,)`` bool, some attack's adversarial verified as fooling the
            classifier, detected or not (Table 2's number in parentheses).
        queries: ``(B,)`` int64, the model evaluations of all attacks on each example together
            (the cost of the ensemble).
        attacks: the names of the attacks, in the order given (the order that breaks ties).
        require_undetected: the criterion of ``success``: ``success_undetected`` (True) or
            ``fools_classifier`` (False).
        targets: ``(B,)`` the target classes when every attack was targeted at the same ones,
            else None.
    """

    adversarial: Tensor
    success: Tensor
    l2: Tensor
    source: tuple[str | None, ...]
    fools_classifier: Tensor
    queries: Tensor
    attacks: tuple[str, ...]
    require_undetected: bool
    targets: Tensor | None = None

    def __post_init__(self):
        b = self.adversarial.shape[0]
        for name in ("success", "l2", "fools_classifier", "queries"):
            if getattr(self, name).shape != (b,):
                raise ValueError(f"{name}: must have shape ({b},), got {getattr(self, name).shape}")
        if len(self.source) != b:
            raise ValueError(f"source: must have {b} entries, got {len(self.source)}")

    def counts_by_source(self) -> dict[str, int]:
        """How many examples each attack won (every attack listed, zeros included)."""
        counts = dict.fromkeys(self.attacks, 0)
        for name in self.source:
            if name is not None:
                counts[name] += 1
        return counts

    def statistics(self, confidence: float = 0.95) -> dict:
        """The ensemble's Table 2 row, JSON-ready::

            {"n", "criterion",            # "success_undetected" or "fools_classifier"
             "success_pct", "success": {"pct", "low_pct", "high_pct", "successes", "n",
                                        "confidence"},
             "fools_classifier_pct", "fools_classifier": {...},
             "median_l2",                 # of the successes; None without any
             "by_source": {attack: examples won}}

        The intervals are Wilson's (:func:`~flows.attacks.statistics.percentage_with_interval`);
        the median of an even count is the mean of the two middle values.
        """
        n = len(self.l2)
        success = percentage_with_interval(int(self.success.sum()), n, confidence)
        fools = percentage_with_interval(int(self.fools_classifier.sum()), n, confidence)
        distances = self.l2[self.success]
        median = torch.quantile(distances.double(), 0.5).item() if len(distances) else None
        return {
            "n": n,
            "criterion": "success_undetected" if self.require_undetected else "fools_classifier",
            "success_pct": success["pct"],
            "success": success,
            "fools_classifier_pct": fools["pct"],
            "fools_classifier": fools,
            "median_l2": median,
            "by_source": self.counts_by_source(),
        }

    def records(self) -> list[dict]:
        """JSON-ready per-example records ``{success, l2, source, fools_classifier, queries}``
        (``l2`` None where ``success`` is False)."""
        return [
            {
                "success": bool(s),
                "l2": float(d) if bool(s) else None,
                "source": src,
                "fools_classifier": bool(f),
                "queries": int(q),
            }
            for s, d, src, f, q in zip(
                self.success.tolist(),
                self.l2.tolist(),
                self.source,
                self.fools_classifier.tolist(),
                self.queries.tolist(),
                strict=True,
            )
        ]

    def to_attack_result(self) -> AttackResult:
        """The ensemble as one :class:`~flows.attacks.base.AttackResult` (status ``"success"`` or
        why not), to re-verify and summarise like any attack
        (:func:`~flows.attacks.verification.verify`, ``noise_statistics``)."""
        status = tuple(
            "success" if s else "no attack's adversarial verified" for s in self.success.tolist()
        )
        return AttackResult(
            self.adversarial, self.success, self.l2, self.queries, status, self.targets
        )


def worst_case(
    x: Tensor,
    results: Mapping[str, AttackResult],
    verifications: Mapping[str, AnyVerification],
    *,
    require_undetected: bool,
) -> EnsembleResult:
    """Per example, the closest verified adversarial over the attacks (module docstring).

    Args:
        x: ``(B, ...)`` the clean inputs that every attack attacked.
        results: ``{name: AttackResult}``, each with adversarials ``(B, ...)``; the order of the
            mapping breaks ties in L2 (the first attack wins).
        verifications: ``{name: Verification | NoiseVerification}``, the verification of
            ``results[name]`` on ``x`` (same names; deterministic and noise verifications may be
            mixed, but the comparison is only fair when all were made under the same rule).
        require_undetected: what a success is: ``success_undetected`` (True; the detector must
            accept) or ``fools_classifier`` (False). Without a detector both give the same.

    Returns:
        :class:`EnsembleResult`; its ``l2`` is the verification's distance. Only each attack's
        final, verified adversarial counts (not AutoAttack's any-iterate rule; module docstring).

    Raises:
        ValueError: naming the argument: no results, names that differ between ``results`` and
            ``verifications``, adversarials of another shape than ``x``, verifications of
            another length, or a verification that is not of its result (its claimed successes
            or L2 distances differ from the result's).
    """
    _check_flag(require_undetected)
    if not isinstance(x, Tensor) or x.dim() < 1 or len(x) == 0:
        raise ValueError("x: must be a non-empty batch (B, ...) of clean inputs")
    names = tuple(results)
    if not names:
        raise ValueError("results: needs at least one attack, got none")
    missing = [n for n in names if n not in verifications]
    extra = [n for n in verifications if n not in results]
    if missing or extra:
        raise ValueError(
            f"verifications: must have the names of results {list(names)}; missing {missing}, "
            f"unknown {extra}"
        )
    b, device = len(x), x.device
    for name in names:
        _check_pair(name, x, results[name], verifications[name])

    ok = torch.stack(
        [
            verified_success(verifications[n], require_undetected=require_undetected).to(device)
            for n in names
        ]
    )
    fools = torch.stack([verifications[n].fools_classifier.to(device) for n in names])
    distance = torch.stack(
        [
            verified_l2(verifications[n], require_undetected=require_undetected).to(device, x.dtype)
            for n in names
        ]
    )
    assert ok.shape == distance.shape == (len(names), b)
    best_l2, best = distance.min(dim=0)  # the first minimum among ties
    success = ok.any(dim=0)
    stacked = torch.stack([results[n].adversarial.detach().to(device, x.dtype) for n in names])
    chosen = stacked[best, torch.arange(b, device=device)]
    view = (b,) + (1,) * (x.dim() - 1)
    adversarial = torch.where(success.view(view), chosen, x.detach())
    source = tuple(
        names[a] if s else None for a, s in zip(best.tolist(), success.tolist(), strict=True)
    )
    queries = sum(results[n].queries.to(device, torch.int64) for n in names)
    return EnsembleResult(
        adversarial=adversarial,
        success=success,
        l2=torch.where(success, best_l2, torch.full_like(best_l2, math.inf)),
        source=source,
        fools_classifier=fools.any(dim=0),
        queries=queries,
        attacks=names,
        require_undetected=require_undetected,
        targets=_common_targets([results[n].targets for n in names]),
    )


def segment_flags(
    segment_l2: Tensor,
    verifications: Mapping[str, AnyVerification],
    *,
    require_undetected: bool,
    rtol: float = 0.0,
) -> dict[str, Tensor]:
    r"""Per attack and example: "the attack is weaker than the segment bound here".

    .. math::
        \text{flag}_{a,i} = (b_i < \infty) \wedge \big(d_{a,i} > (1 + \text{rtol})\, b_i\big),

    with :math:`b_i` = ``segment_l2[i]`` and :math:`d_{a,i}` the verified L2 of attack ``a``
    (:func:`verified_l2`, ``inf`` where it did not verify): flagged where the attack failed or
    found a larger perturbation than the segment bound. Examples without a verified segment
    bound (``inf``) are never flagged.

    Args:
        segment_l2: ``(B,)`` the segment bound's verified L2 per example, ``inf`` where it did not
            verify: ``verified_l2(verify(tm, x, segment_result, y), require_undetected=True)``.
        verifications: ``{name: Verification | NoiseVerification}`` of the attacks on the same
            ``B`` examples.
        require_undetected: which verified success counts for the attacks
            (:func:`verified_success`); the segment bound is a bound on the undetected
            perturbation when it was verified with the detector.
        rtol: relative slack ``>= 0`` granted to the attacks (0: any larger L2 is flagged).

    Returns:
        ``{name: (B,) bool}``; ``int(flags[name].sum())`` counts the examples.

    Raises:
        ValueError: naming the argument: ``segment_l2`` not ``(B,)``, NaN or negative; a
            verification of another length; ``rtol`` negative or not finite.
    """
    _check_flag(require_undetected)
    if not isinstance(segment_l2, Tensor) or segment_l2.dim() != 1:
        raise ValueError("segment_l2: must be a tensor (B,) of distances (inf: no bound)")
    if torch.isnan(segment_l2).any() or (segment_l2 < 0).any():
        raise ValueError(
            "segment_l2: must be >= 0 (inf where the bound did not verify), got NaN or < 0"
        )
    if isinstance(rtol, bool) or not (isinstance(rtol, int | float) and 0 <= rtol < math.inf):
        raise ValueError(f"rtol: must be a finite number >= 0, got {rtol!r}")
    b = len(segment_l2)
    bound = segment_l2.double()
    flags = {}
    for name, verification in verifications.items():
        if verification.l2.shape != (b,):
            raise ValueError(
                f"verifications[{name!r}]: has {tuple(verification.l2.shape)} examples, "
                f"segment_l2 ({b},)"
            )
        d = verified_l2(verification, require_undetected=require_undetected)
        d = d.to(bound.device, torch.float64)
        flags[name] = torch.isfinite(bound) & (d > (1 + rtol) * bound)
    return flags


def _check_pair(name: str, x: Tensor, result: AttackResult, verification: AnyVerification):
    """The result's adversarials match ``x`` and the verification is the one of this result."""
    b = len(x)
    if result.adversarial.shape != x.shape:
        raise ValueError(
            f"results[{name!r}]: adversarials have shape {tuple(result.adversarial.shape)}, "
            f"x {tuple(x.shape)}"
        )
    if verification.l2.shape != (b,):
        raise ValueError(
            f"verifications[{name!r}]: has {tuple(verification.l2.shape)} examples, x has {b}"
        )
    claimed = verification.claimed.to(result.success.device)
    distance = flat_l2(result.adversarial.detach().to(x.dtype), x.detach())
    same_l2 = torch.isclose(
        verification.l2.to(distance.device, distance.dtype), distance, rtol=1e-5, atol=1e-6
    )
    if not torch.equal(claimed, result.success) or not same_l2.all():
        raise ValueError(
            f"verifications[{name!r}]: is not the verification of results[{name!r}] on x (its "
            "claimed successes or L2 distances differ); verify each result on the same x"
        )


def _common_targets(targets: list[Tensor | None]) -> Tensor | None:
    """The targets shared by every attack, or None (an untargeted one, or different targets)."""
    first = targets[0]
    if first is None:
        return None
    for t in targets[1:]:
        if t is None or not torch.equal(t.to(first.device), first):
            return None
    return first


def _check_flag(require_undetected: object) -> None:
    if not isinstance(require_undetected, bool):
        raise ValueError(f"require_undetected: must be True or False, got {require_undetected!r}")
