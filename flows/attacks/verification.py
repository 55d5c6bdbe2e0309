r"""Re-verification of returned adversarials and the statistics of Table 2.

Nothing an attack returns counts until it has been re-evaluated: the classifier's decision, the
detector, the bounds and the distance. Table 2 reports, within ε, the percentage of attacks that
are successful *and* undetected, and in parentheses the percentage that fool the classifier,
detected or not.

Two verifications:

- :func:`verify`, on a deterministic threat model (the attack's fixed noise, or another fixed
  seed): one evaluation per adversarial, boolean verdicts (:class:`Verification`);
- :func:`verify_over_noise`, on the *deployed*, randomised threat model (every query draws fresh
  noise, :func:`~flows.attacks.flows_threat_model` with ``noise="fresh"``): each adversarial is
  evaluated under ``N`` independent noise draws and counts when it fools in at least a fraction
  ``rule`` of them (:class:`NoiseVerification`, with the per-example probabilities).

:func:`table2_statistics` gives Table 2's cells; :func:`noise_statistics` adds Wilson intervals
(:mod:`flows.attacks.statistics`) and the median L2 of the *verified* successes
(:func:`verified_median_l2`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from flows.attacks.base import AttackResult, check_inputs, flat_l2
from flows.attacks.statistics import percentage_with_interval, wilson_interval
from flows.attacks.threat_model import ThreatModel
from flows.measures import predictions

__all__ = [
    "NoiseVerification",
    "Verification",
    "noise_statistics",
    "table2_statistics",
    "verified_median_l2",
    "verify",
    "verify_over_noise",
]


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


@dataclass(frozen=True)
class NoiseVerification:
    r"""Per-example verdicts over ``N = draws`` fresh noise draws, all ``(B,)``
    (:func:`verify_over_noise`).

    The probabilities are the fractions of the ``N`` draws, :math:`\hat p = k / N`; a per-example
    Wilson interval is ``wilson_interval(k, N)`` (:mod:`flows.attacks.statistics`).

    Attributes:
        claimed: the attack reported success.
        in_bounds: every coordinate of the adversarial lies within the bounds (checked once).
        l2: distance to the clean input (checked once).
        within_eps: ``l2 <= eps`` (all True when no ε).
        fooled_draws: ``k_fool``, int64, the draws in which the classifier's label is wrong
            (untargeted) or the target (targeted).
        fooled_undetected_draws: int64, the draws in which it is fooled *and* the detector
            accepts the input (equal to ``fooled_draws`` without a detector).
        detected_draws: int64, the draws in which the detector rejects the input (0 without one).
        fools_classifier: ``claimed & in_bounds & within_eps & (p_fool >= rule)``.
        success_undetected: ``claimed & in_bounds & within_eps & (p_fool_undetected >= rule)``.
        draws: ``N``, the noise draws per example.
        rule: the fraction of draws an adversarial must fool in to count (default 1/2).
    """

    claimed: Tensor
    in_bounds: Tensor
    l2: Tensor
    within_eps: Tensor
    fooled_draws: Tensor
    fooled_undetected_draws: Tensor
    detected_draws: Tensor
    fools_classifier: Tensor
    success_undetected: Tensor
    draws: int
    rule: float

    @property
    def eligible(self) -> Tensor:
        """``(B,)`` the deterministic conditions: ``claimed & in_bounds & within_eps``."""
        return self.claimed & self.in_bounds & self.within_eps

    @property
    def p_fool(self) -> Tensor:
        """``(B,)`` float64, the fraction of draws in which the classifier is fooled."""
        return self.fooled_draws.double() / self.draws

    @property
    def p_fool_undetected(self) -> Tensor:
        """``(B,)`` float64, the fraction of draws fooled and undetected."""
        return self.fooled_undetected_draws.double() / self.draws

    @property
    def p_detected(self) -> Tensor:
        """``(B,)`` float64, the fraction of draws in which the detector rejects the input."""
        return self.detected_draws.double() / self.draws

    def records(self) -> list[dict]:
        """JSON-ready per-example verdicts, with the counts and probabilities over the draws."""
        keys = ("claimed", "in_bounds", "within_eps", "fools_classifier", "success_undetected")
        counts = ("fooled_draws", "fooled_undetected_draws", "detected_draws")
        rows = []
        for i in range(len(self.l2)):
            row = {k: bool(getattr(self, k)[i]) for k in keys}
            row["l2"] = float(self.l2[i])
            row["draws"] = self.draws
            row.update({k: int(getattr(self, k)[i]) for k in counts})
            row["p_fool"] = float(self.p_fool[i])
            row["p_fool_undetected"] = float(self.p_fool_undetected[i])
            row["p_detected"] = float(self.p_detected[i])
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
    ``threat_model.eps``; ``None`` means no budget. On a randomised threat model this is the
    verdict of *one* noise draw; :func:`verify_over_noise` estimates the probability over draws.

    Raises:
        ValueError: naming the argument, for an empty batch, NaN/inf or out-of-bounds ``x``,
            labels that are not integers, not one per example or outside ``[0, C)``, a target
            equal to its true label, or adversarials of another shape than ``x``.
    """
    adv, targets, in_bounds, l2, within = _geometry(threat_model, x, result, y, eps)
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


def verify_over_noise(
    threat_model: ThreatModel,
    x: Tensor,
    result: AttackResult,
    y: Tensor,
    *,
    draws: int = 32,
    eps: float | None = None,
    rule: float = 0.5,
    max_rows: int = 512,
) -> NoiseVerification:
    r"""Re-check every adversarial under ``N = draws`` fresh noise draws of the deployed model.

    ``threat_model`` must be randomised (``threat_model.randomised``: every query draws fresh
    noise per row, :func:`~flows.attacks.flows_threat_model` with ``noise="fresh"``). Each
    adversarial ``x'_i`` is evaluated ``N`` times (:meth:`ThreatModel.observe` with draws, in
    passes of at most ``max_rows`` rows), and per example

    .. math::
        \hat p_{\text{fool},i} = \frac1N \sum_{k=1}^N [\,c_k(x'_i) \ne y_i\,], \qquad
        \hat p_{\text{fool, undet},i} = \frac1N \sum_{k=1}^N
            [\,c_k(x'_i) \ne y_i \wedge b_k(x'_i) \le T\,],

    with ``c_k`` the classifier's label and ``b_k`` the bits/dim under draw ``k`` (``= t_i``
    instead of ``≠ y_i`` for a targeted attack, ``result.targets``). The bounds, the L2 distance
    and ε are deterministic and checked once, as in :func:`verify`.

    The rule. An example counts as a success (``fools_classifier``) when

    .. math::
        \text{claimed}_i \wedge \text{in\_bounds}_i \wedge \|x'_i - x_i\|_2 \le \varepsilon
        \wedge \hat p_{\text{fool},i} \ge \text{rule},

    and as successful and undetected (``success_undetected``) with
    :math:`\hat p_{\text{fool, undet},i}` in place of :math:`\hat p_{\text{fool},i}`. The default
    ``rule = 1/2``: the adversarial fools the deployed model in at least half of its queries
    (with an even ``N``, a tie counts). The probabilities are kept for reporting their
    distribution (:func:`noise_statistics`); the estimate's sampling error is that of a
    binomial proportion over ``N`` draws (at ``N = 32`` a Wilson 95 % half-width up to 0.16;
    :func:`~flows.attacks.statistics.draws_for_half_width` plans ``N``).

    Fooled *and* undetected within one draw is joint only when the class scores and bits/dim
    of a row come from one encoding, as the deployed flows model computes them
    (``flows_threat_model(..., noise="fresh", bits_from_class_scores=True)``); with two
    encodings (``logits_fn`` and ``bits_per_dim_fn`` called separately) a row's classifier and
    detector see independent noise draws.

    Every example is evaluated, also those whose claim or geometry fails (their probabilities
    are reported, they never count).

    Args:
        threat_model: a randomised :class:`ThreatModel`.
        x: ``(B, ...)`` clean inputs, within the bounds.
        result: the attack's result; ``result.adversarial`` ``(B, ...)``, ``result.targets``.
        y: ``(B,)`` true labels in ``[0, C)``.
        draws: ``N >= 1``.
        eps: the L2 budget (default ``threat_model.eps``; None: no budget).
        rule: in ``(0, 1]``.
        max_rows: the most rows (examples × draws) per model call, ``>= 1``: bounds memory.

    Raises:
        ValueError: naming the argument: a threat model that is not randomised, ``draws``,
            ``rule`` or ``max_rows`` out of range, and everything :func:`verify` refuses.
    """
    if not getattr(threat_model, "randomised", False):
        raise ValueError(
            "threat_model: must be randomised (the deployed model, fresh noise at every query); "
            "build it with flows_threat_model(model, detector, noise='fresh'), or "
            "ThreatModel(..., randomised=True). A fixed-noise model is verified by verify()."
        )
    _check_positive_int("draws", draws)
    _check_positive_int("max_rows", max_rows)
    if isinstance(rule, bool) or not 0.0 < rule <= 1.0:
        raise ValueError(f"rule: must lie in (0, 1], got {rule!r}")
    adv, targets, in_bounds, l2, within = _geometry(threat_model, x, result, y, eps)
    reference = y if targets is None else targets
    num = len(adv)
    fooled = torch.zeros(num, dtype=torch.int64)
    fooled_undetected = torch.zeros(num, dtype=torch.int64)
    detected = torch.zeros(num, dtype=torch.int64)
    for part, block in _passes(num, draws, max_rows):
        with torch.no_grad():
            obs = threat_model.observe(adv[part], draws=block)
        labels = predictions(obs.logits).reshape(block, -1).cpu()
        assert labels.shape[1] == part.stop - part.start
        ref = reference[part].to(labels.device)
        hit = labels != ref if targets is None else labels == ref
        if threat_model.has_detector:
            rejected = threat_model.detector.detected(obs.bits_per_dim).reshape(block, -1).cpu()
        else:
            rejected = torch.zeros_like(hit)
        fooled[part] += hit.sum(0)
        fooled_undetected[part] += (hit & ~rejected).sum(0)
        detected[part] += rejected.sum(0)
    eligible = result.success.cpu() & in_bounds.cpu() & within.cpu()
    need = math.ceil(rule * draws - 1e-9)  # k / N >= rule, without rounding trouble
    return NoiseVerification(
        claimed=result.success.clone().cpu(),
        in_bounds=in_bounds.cpu(),
        l2=l2.cpu(),
        within_eps=within.cpu(),
        fooled_draws=fooled,
        fooled_undetected_draws=fooled_undetected,
        detected_draws=detected,
        fools_classifier=eligible & (fooled >= need),
        success_undetected=eligible & (fooled_undetected >= need),
        draws=draws,
        rule=float(rule),
    )


def observe_draws(
    threat_model, adversarial: Tensor, draws: int, max_rows: int = 512
) -> tuple[Tensor, Tensor]:
    """``(labels, bits_per_dim)``, each ``(N, B)``: the deployed model's class and bits/dim of
    every input of ``adversarial`` ``(B, ...)`` under ``N = draws`` fresh draws.

    Inputs are observed in passes of whole examples with all their draws
    (:meth:`~flows.attacks.ThreatModel.observe` with ``draws``, draw-major), at most
    ``max_rows`` rows per pass: the passes of :func:`flows.attacks.verify_over_noise`, so that the
    same seeded threat model gives the same draws.

    Raises:
        ValueError: a threat model that is not randomised or has no detector, or ``draws``
            outside ``[1, max_rows]``.
    """
    if not getattr(threat_model, "randomised", False) or not threat_model.has_detector:
        raise ValueError("threat_model: must be randomised (deployed) and have a detector")
    if isinstance(draws, bool) or not isinstance(draws, int) or not 1 <= draws <= max_rows:
        raise ValueError(f"draws must be an integer in [1, max_rows={max_rows}], got {draws!r}")
    per_pass = max(1, max_rows // draws)
    labels, bits = [], []
    for start in range(0, len(adversarial), per_pass):
        part = adversarial[start : start + per_pass].detach()
        with torch.no_grad():
            obs = threat_model.observe(part, draws=draws)
        labels.append(predictions(obs.logits).reshape(draws, len(part)).cpu())
        bits.append(obs.bits_per_dim.reshape(draws, len(part)).double().cpu())
    return torch.cat(labels, dim=1), torch.cat(bits, dim=1)


def verify_at_thresholds(
    observed: tuple[Tensor, Tensor],
    x: Tensor,
    result: AttackResult,
    y: Tensor,
    thresholds: Sequence[float],
    *,
    eps: float,
    bounds: tuple[float, float] = (-0.5, 0.5),
    rule: float = 0.5,
) -> list[NoiseVerification]:
    r"""The verification of :func:`flows.attacks.verify_over_noise` against several detector
    thresholds, from one observation ``observed = observe_draws(...)`` of the adversarials.

    With ``c_k`` and ``b_k`` the label and bits/dim under draw ``k`` (``observed``), per
    threshold ``T``:

    .. math::
        \hat p_{\text{fool, undet}}(T) = \frac1N \sum_k [\,c_k \ne y\,][\,b_k \le T\,]

    (``c_k = t`` for a targeted result), and a success needs the claim, the box, ``L2 <= eps``
    and :math:`\hat p \ge` ``rule``, as there. At the threshold the threat model was built with,
    and with the same seeded draws, the result equals ``verify_over_noise``'s.

    Args:
        observed: ``(labels, bits_per_dim)``, each ``(N, B)``.
        x: ``(B, ...)`` clean inputs; ``result``: their attack's result; ``y``: ``(B,)`` labels.
        thresholds: detector thresholds in bits/dim.
        eps: the L2 budget; ``bounds``: the box; ``rule``: in ``(0, 1]``.

    Returns:
        One :class:`~flows.attacks.NoiseVerification` per threshold.

    Raises:
        ValueError: shapes that do not match, or ``rule`` outside ``(0, 1]``.
    """
    labels, bits = observed
    draws, b = labels.shape
    if bits.shape != (draws, b) or result.adversarial.shape != x.shape or len(x) != b:
        raise ValueError(
            f"observed: labels {tuple(labels.shape)} and bits {tuple(bits.shape)} must both be "
            f"(N, B) with B = len(x) = {len(x)}, adversarials shaped like x"
        )
    if isinstance(rule, bool) or not 0.0 < rule <= 1.0:
        raise ValueError(f"rule: must lie in (0, 1], got {rule!r}")
    adv = result.adversarial.detach()
    lo, hi = bounds
    in_bounds = ((adv >= lo) & (adv <= hi)).flatten(1).all(dim=1).cpu()
    l2 = flat_l2(adv, x).cpu()
    within = l2 <= eps
    reference = (y if result.targets is None else result.targets).cpu()
    hit = labels != reference if result.targets is None else labels == reference
    eligible = result.success.cpu() & in_bounds & within
    need = math.ceil(rule * draws - 1e-9)
    fooled = hit.sum(0)
    out = []
    for threshold in thresholds:
        rejected = bits > threshold  # LikelihoodDetector.detected
        fooled_undetected = (hit & ~rejected).sum(0)
        out.append(
            NoiseVerification(
                claimed=result.success.cpu().clone(),
                in_bounds=in_bounds,
                l2=l2,
                within_eps=within,
                fooled_draws=fooled,
                fooled_undetected_draws=fooled_undetected,
                detected_draws=rejected.sum(0),
                fools_classifier=eligible & (fooled >= need),
                success_undetected=eligible & (fooled_undetected >= need),
                draws=draws,
                rule=float(rule),
            )
        )
    return out


# -- the ensemble from per-example verdicts ---------------------------------------------------------


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


def verified_median_l2(
    verification: Verification | NoiseVerification, of: str = "success_undetected"
) -> float | None:
    """The median L2 of the *verified* successes: of the examples with ``of`` True
    (``"success_undetected"`` or ``"fools_classifier"``); None when there are none.

    The attacks' own claims (``AttackResult.success``) include adversarials that the
    verification rejects (outside ε, or not fooling under fresh noise); only verified ones count.
    The median of an even count is the mean of the two middle values (``torch.quantile``; note
    that ``Tensor.median`` returns the lower one).
    """
    if of not in ("success_undetected", "fools_classifier"):
        raise ValueError(f"of: must be 'success_undetected' or 'fools_classifier', got {of!r}")
    distances = verification.l2[getattr(verification, of)]
    if len(distances) == 0:
        return None
    return torch.quantile(distances.double(), 0.5).item()


def noise_statistics(
    verification: NoiseVerification | Verification, confidence: float = 0.95
) -> dict:
    """Table 2's percentages with Wilson intervals, and the median L2 of verified successes.

    For either verification (deterministic or over noise)::

        {"n", "success_undetected_pct", "fools_classifier_pct",   # as table2_statistics
         "success_undetected": {"pct", "low_pct", "high_pct", "successes", "n", "confidence"},
         "fools_classifier": {...},
         "median_l2_success_undetected", "median_l2_fools_classifier"}  # verified_median_l2

    and, for a :class:`NoiseVerification`, ``"draws"``, ``"rule"``, ``"eligible"`` (claimed, in
    bounds and within ε) and, over the eligible examples, the distribution of
    ``p_fool`` / ``p_fool_undetected`` (``"quantiles"``: min, q25, median, q75, max; ``"mean"``; None
    without eligible examples) and ``"undecided"``: how many eligible examples' per-example
    Wilson interval over the ``N`` draws contains ``rule``, i.e. whose verdict ``N`` draws do not
    settle at this confidence.
    """
    n = len(verification.l2)
    if n == 0:
        raise ValueError("verification: no examples to summarise")
    stats: dict = {"n": n}
    for key in ("success_undetected", "fools_classifier"):
        cell = percentage_with_interval(int(getattr(verification, key).sum()), n, confidence)
        stats[f"{key}_pct"] = cell["pct"]
        stats[key] = cell
    for key in ("success_undetected", "fools_classifier"):
        stats[f"median_l2_{key}"] = verified_median_l2(verification, key)
    if isinstance(verification, NoiseVerification):
        eligible = verification.eligible
        stats.update(draws=verification.draws, rule=verification.rule)
        stats["eligible"] = int(eligible.sum())
        for key in ("fooled_draws", "fooled_undetected_draws"):
            name = "p_fool" if key == "fooled_draws" else "p_fool_undetected"
            counts = getattr(verification, key)[eligible]
            stats[name] = _distribution(counts, verification.draws, verification.rule, confidence)
    return stats


#: the names of the quantiles (0, ¼, ½, ¾, 1) that :func:`noise_statistics` reports.
QUANTILE_NAMES = ("min", "q25", "median", "q75", "max")


def _distribution(counts: Tensor, draws: int, rule: float, confidence: float) -> dict | None:
    """Quantiles and mean of ``counts / draws`` and the number of undecided examples."""
    if len(counts) == 0:
        return None
    p = counts.double() / draws
    levels = torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0], dtype=torch.float64)
    undecided = 0
    for k in counts.tolist():
        low, high = wilson_interval(k, draws, confidence)
        undecided += low <= rule <= high
    return {
        "quantiles": dict(zip(QUANTILE_NAMES, torch.quantile(p, levels).tolist(), strict=True)),
        "mean": p.mean().item(),
        "undecided": undecided,
    }


def _passes(num_examples: int, draws: int, max_rows: int) -> list[tuple[slice, int]]:
    """``(examples, draws)`` blocks covering ``num_examples × draws`` rows, at most ``max_rows``
    rows each: whole groups of examples with all their draws, or one example's draws in pieces
    when ``draws > max_rows``."""
    per_pass = max(1, max_rows // draws)
    block = min(draws, max_rows)
    passes = []
    for start in range(0, num_examples, per_pass):
        part = slice(start, min(start + per_pass, num_examples))
        done = 0
        while done < draws:
            passes.append((part, min(block, draws - done)))
            done += passes[-1][1]
    return passes


def _check_positive_int(name: str, value: object) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")


def _geometry(
    threat_model: ThreatModel, x: Tensor, result: AttackResult, y: Tensor, eps: float | None
) -> tuple[Tensor, Tensor | None, Tensor, Tensor, Tensor]:
    """The deterministic checks of both verifications, after validating the arguments:
    ``(adversarials, targets, in_bounds, l2, within_eps)`` (the last three ``(B,)``)."""
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
    return adv, targets, in_bounds, l2, within
