"""Re-verification of returned adversarials and the statistics of Table 2.

Nothing an attack returns counts until :func:`verify` has re-evaluated it: the classifier's
decision, the detector, the bounds and the distance, on a threat model that may use fresh
noise. Table 2 reports, within ε, the percentage of attacks that are successful *and* undetected,
and in parentheses the percentage that fool the classifier, detected or not.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from flows.attacks.base import AttackResult, check_inputs, flat_l2
from flows.attacks.threat_model import ThreatModel

__all__ = ["Verification", "verify", "table2_statistics"]


@dataclass(frozen=True)
class Verification:
    """Per-example verdicts, all ``(B,)``.

    Attributes:
        claimed: the attack reported success.
        in_bounds: every coordinate of the adversarial lies within the bounds.
        l2: distance to the clean input.
        within_eps: ``l2 <= eps`` (all True when no ε).
        fools_classifier: claimed, in bounds, within ε and the classifier's label is wrong
            (untargeted) or the target (targeted).
        detected: the detector rejects the adversarial (all False without a detector).
        success_undetected: ``fools_classifier & ~detected``.
        predicted: the classifier's label of each adversarial (argmax of the class scores).
        bits_per_dim: the detector's statistic at each adversarial (None without a detector).
    """

    claimed: Tensor
    in_bounds: Tensor
    l2: Tensor
    within_eps: Tensor
    fools_classifier: Tensor
    detected: Tensor
    success_undetected: Tensor
    predicted: Tensor | None = None
    bits_per_dim: Tensor | None = None

    def records(self) -> list[dict]:
        """JSON-ready per-example verdicts (with the predicted label and bits/dim when known)."""
        keys = (
            "claimed",
            "in_bounds",
            "within_eps",
            "fools_classifier",
            "detected",
            "success_undetected",
        )
        rows = []
        for i in range(len(self.l2)):
            row = {k: bool(getattr(self, k)[i]) for k in keys}
            row["l2"] = float(self.l2[i])
            if self.predicted is not None:
                row["predicted"] = int(self.predicted[i])
            if self.bits_per_dim is not None:
                row["bits_per_dim"] = float(self.bits_per_dim[i])
            rows.append(row)
        return rows


def verify(
    threat_model: ThreatModel,
    x: Tensor,
    result: AttackResult,
    y: Tensor,
    *,
    eps: float | None = None,
) -> Verification:
    """Re-evaluate every returned adversarial on ``threat_model`` (e.g. under fresh noise).

    ``x`` are the clean inputs (finite, within the threat model's bounds), ``y`` their true
    labels; a targeted attack's adversarials are judged against ``result.targets``. Labels and
    targets are integers in ``[0, C)``, ``C = threat_model.num_classes``; a target equal to its
    true label is refused (it would count the clean input as a success). ``eps`` defaults to
    ``threat_model.eps``; ``None`` means no budget.

    Raises:
        ValueError: naming the argument, for an empty batch, NaN/inf or out-of-bounds ``x``,
            labels that are not integers, not one per example or outside ``[0, C)``, a target
            equal to its true label, or adversarials of another shape than ``x``.
    """
    eps = threat_model.eps if eps is None else eps
    if eps is not None and not eps >= 0:
        raise ValueError(f"eps: must be >= 0 or None, got {eps}")
    targets = result.targets
    check_inputs(x, threat_model.bounds, y, targets, num_classes=threat_model.num_classes)
    adv = result.adversarial.detach()
    if adv.shape != x.shape:
        raise ValueError(
            f"result: adversarials have shape {tuple(adv.shape)}, inputs x {tuple(x.shape)}"
        )
    lo, hi = threat_model.bounds
    in_bounds = ((adv >= lo) & (adv <= hi)).flatten(1).all(dim=1)
    l2 = flat_l2(adv, x)
    within = l2 <= (math.inf if eps is None else eps)
    labels = threat_model.classify(adv)
    wrong = labels != y if targets is None else labels == targets
    fools = result.success & in_bounds & within & wrong
    if threat_model.has_detector:
        bpd = threat_model.bits_per_dim(adv)
        detected = threat_model.detector.detected(bpd)
    else:
        bpd = None
        detected = torch.zeros_like(fools)
    return Verification(
        claimed=result.success.clone(),
        in_bounds=in_bounds,
        l2=l2,
        within_eps=within,
        fools_classifier=fools,
        detected=detected,
        success_undetected=fools & ~detected,
        predicted=labels,
        bits_per_dim=bpd,
    )


def table2_statistics(verification: Verification) -> dict[str, float]:
    """Percentages as in Table 2: ``{"success_undetected_pct", "fools_classifier_pct", "n"}``.

    The first is the table's main number, the second the one in parentheses.
    """
    n = len(verification.l2)
    if n == 0:
        raise ValueError("no examples to summarise")
    return {
        "success_undetected_pct": 100.0 * verification.success_undetected.double().mean().item(),
        "fools_classifier_pct": 100.0 * verification.fools_classifier.double().mean().item(),
        "n": n,
    }
