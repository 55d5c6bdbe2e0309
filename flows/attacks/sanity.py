r"""Sanity checks of an attack evaluation, after the checklist of Carlini et al. (2019).

Carlini, Athalye, Papernot, Brendel, Rauber, Tsipras, Goodfellow, Madry & Kurakin (2019), "On
evaluating adversarial robustness" (arXiv:1902.06705), list the symptoms of an evaluation that
overstates robustness. Each check here tests one of them on *verified* results
(:mod:`flows.attacks.verification`) and returns a :class:`SanityCheck`: passed (True), failed
(False, with what to do in ``detail``) or not run (None), with the numbers in ``values``
(JSON-ready through :meth:`SanityCheck.to_dict`).

- :func:`unbounded_success`: fails when an unbounded attack (ε = ∞) leaves some example
  unbroken;
- :func:`monotone_in_eps` (with :func:`success_curve` for a minimum-norm attack): fails when
  success falls significantly as ε grows;
- :func:`budget_converged`: fails when doubling the iterations or EOT draws raises success by
  more than the Wilson half-width;
- :func:`gradient_vs_gradient_free`: fails when a gradient-free attack is significantly stronger
  than the gradient attack on the same images ("possible gradient masking");
- :func:`non_finite_gradients`: fails when more than 1 % of the inputs have a zero or non-finite
  gradient of the margin loss.

:func:`run_sanity_checks` runs them all from callables that attack and verify.

Statistics. Success rates are binomial proportions ``k / n`` over the ``n`` attacked images; each
comparison allows for their sampling error through Wilson score intervals
(:func:`~flows.attacks.statistics.wilson_interval`, 95 % by default). Comparing two rates of two
attacks uses Newcombe's (1998) hybrid score interval for a difference of proportions
(:func:`newcombe_difference_interval`): with Wilson intervals :math:`[l_j, u_j]` of
:math:`\hat p_j = k_j / n_j`,

.. math::
    \hat\theta = \hat p_1 - \hat p_2, \qquad
    \Big[\hat\theta - \sqrt{(\hat p_1 - l_1)^2 + (u_2 - \hat p_2)^2},\;
         \hat\theta + \sqrt{(u_1 - \hat p_1)^2 + (\hat p_2 - l_2)^2}\Big]

(Newcombe 1998, "Interval estimation for the difference between independent proportions:
comparison of eleven methods", Statist. Med. 17, 873–890, method 10). Both rates come from the
same images, so the samples are paired; the interval for independent samples ignores their
correlation, which is positive for attacks on the same images (the same images are hard for
both), and is then wider than a paired interval: the check errs towards passing, and a failure
is a clear one.
"""

from __future__ import annotations

import math
import operator
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import torch
from torch import Tensor

from flows.attacks.base import batches, check_inputs
from flows.attacks.criteria import log_posterior_margin
from flows.attacks.ensemble import AnyVerification, verified_success
from flows.attacks.statistics import wilson_interval
from flows.attacks.threat_model import ThreatModel, mean_over_draws

__all__ = [
    "SanityCheck",
    "budget_converged",
    "gradient_vs_gradient_free",
    "monotone_in_eps",
    "newcombe_difference_interval",
    "non_finite_gradients",
    "run_sanity_checks",
    "success_curve",
    "unbounded_success",
]

#: examples listed by index in a check's ``values`` (the first ones).
MAX_LISTED = 20


@dataclass(frozen=True)
class SanityCheck:
    """The outcome of one check.

    Attributes:
        name: the check (its function's name).
        passed: True (passed), False (failed) or None (not run).
        detail: one sentence: what was found and, on failure, what to do.
        values: the numbers behind the verdict (rates, intervals, counts, example indices).
    """

    name: str
    passed: bool | None
    detail: str
    values: dict = field(default_factory=dict)

    @staticmethod
    def not_run(name: str, reason: str) -> SanityCheck:
        """A check that was not run (``passed=None``), and why."""
        return SanityCheck(name, None, f"not run: {reason}")

    def to_dict(self) -> dict:
        """JSON-ready (strict JSON: ``inf``/``nan`` become the strings ``"inf"``, ``"-inf"``,
        ``"nan"``; tuples become lists)."""
        return {
            "name": self.name,
            "passed": self.passed,
            "detail": self.detail,
            "values": _json_safe(self.values),
        }


def unbounded_success(
    verification_at_eps_inf: AnyVerification,
    *,
    require_undetected: bool = True,
    on_boundary: bool = False,
) -> SanityCheck:
    """Passes when every example is a verified success of an attack run and verified without a
    budget (ε = ∞).

    Without a budget any image can be turned into one of another class (the segment to a real
    image of that class ends there), so an attack that leaves examples unbroken at ε = ∞ is
    failing to optimise, not meeting robustness.

    ``on_boundary``: the attack stops on the decision boundary (confidence κ = 0) of a
    randomised model, and the verification draws fresh noise (``verify_over_noise``). Such an
    adversarial fools about half of the fresh draws whatever the attack's quality, so the
    verified rule (≥ 1/2 of the draws) is a coin flip there and says nothing about whether the
    attack optimises. The check then counts the attack's own claims (``claimed``, within the
    box), which is what it is meant to test, and says so in its detail; the κ > 0 runs are the
    ones whose verified unbounded success means something.

    Args:
        verification_at_eps_inf: the verification (``verify(..., eps=None)`` or
            ``verify_over_noise``) of an attack run without a budget.
        require_undetected: count ``success_undetected`` (default; without a detector the same
            as ``fools_classifier``) or ``fools_classifier``.
        on_boundary: count the claims instead of the verified successes (above).

    Raises:
        ValueError: ``verification_at_eps_inf`` was made with a finite ε that some adversarial
            exceeds (verify with ``eps=None``).
    """
    within = verification_at_eps_inf.within_eps
    if not within.all():
        raise ValueError(
            f"verification_at_eps_inf: {int((~within).sum())} adversarials lie outside its ε: "
            "verify with eps=None (no budget)"
        )
    if on_boundary:
        success = verification_at_eps_inf.claimed.cpu() & verification_at_eps_inf.in_bounds.cpu()
        criterion = "claimed (on the boundary: verified success is a coin flip there)"
    else:
        success = verified_success(verification_at_eps_inf, require_undetected=require_undetected)
        criterion = _criterion(require_undetected)
    n, k = len(success), int(success.sum())
    failed = torch.nonzero(~success).flatten().tolist()
    values = {
        "successes": k,
        "n": n,
        "rate": k / n,
        "criterion": criterion,
        "failed_examples": failed[:MAX_LISTED],
    }
    if on_boundary:
        verified = verified_success(verification_at_eps_inf, require_undetected=require_undetected)
        values["verified_successes"] = int(verified.sum())
    if k == n:
        detail = f"all {n} examples broken at eps = inf"
        if on_boundary:
            detail += (
                f" (the attack's claims; {values['verified_successes']} of {n} also verified: "
                "κ = 0 adversarials fool about half of the fresh draws)"
            )
        return SanityCheck("unbounded_success", True, detail, values)
    return SanityCheck(
        "unbounded_success",
        False,
        f"{n - k} of {n} examples not broken at eps = inf: the attack fails to optimise "
        "(increase its steps or constants, check its loss)",
        values,
    )


def success_curve(l2_verified: Tensor, eps_grid: Sequence[float]) -> list[float]:
    """The success rate of a minimum-norm attack at each ε: the fraction of examples whose
    verified L2 is ``<= ε``.

    Args:
        l2_verified: ``(B,)`` the verified L2 per example, ``inf`` where the adversarial did not
            verify (:func:`~flows.attacks.ensemble.verified_l2`).
        eps_grid: the budgets, each ``>= 0`` (``math.inf`` allowed).

    Returns:
        one rate in ``[0, 1]`` per ε. (Verified once, without a budget, the curve cannot fall;
        verified at each ε under fresh noise, it can: :func:`monotone_in_eps` checks it.)
    """
    if not isinstance(l2_verified, Tensor) or l2_verified.dim() != 1 or len(l2_verified) == 0:
        raise ValueError("l2_verified: must be a non-empty tensor (B,) of distances")
    if torch.isnan(l2_verified).any():
        raise ValueError("l2_verified: contains NaN (use inf for failed examples)")
    grid = _eps_grid(eps_grid, increasing=False)
    d = l2_verified.double()
    return [(d <= eps).double().mean().item() for eps in grid]


def monotone_in_eps(
    eps_grid: Sequence[float],
    success_rates: Sequence[float],
    n: int | None = None,
    *,
    confidence: float = 0.95,
) -> SanityCheck:
    """Passes when success does not fall as ε grows.

    A larger budget contains every smaller one, so a success rate that falls with ε means the
    attack loses adversarials it had (a poor step size for large ε, a projection bug).

    Tolerance: the rates are measured on ``n`` images. The check fails when, for some pair
    ``ε_i < ε_j``, the Wilson interval of the rate at ``ε_j`` lies entirely below the one at
    ``ε_i`` (``high_j < low_i``); a drop within the intervals of the two rates (they overlap)
    passes. Every pair is compared, so a slow drift over many steps is caught as well as one
    drop. Without ``n`` there is no tolerance: any drop fails.

    Args:
        eps_grid: strictly increasing budgets ``>= 0`` (``math.inf`` allowed), at least two.
        success_rates: one rate in ``[0, 1]`` per ε, each a multiple of ``1/n``.
        n: the number of images behind each rate (``>= 1``), or None.
        confidence: of the Wilson intervals, in ``(0, 1)``.

    Raises:
        ValueError: naming the argument, for fewer than two ε, a grid that does not increase,
            rates outside ``[0, 1]`` or not ``k/n``, lengths that differ.
    """
    grid = _eps_grid(eps_grid, increasing=True)
    if len(grid) < 2:
        raise ValueError(f"eps_grid: needs at least two budgets, got {len(grid)}")
    rates = [_rate(f"success_rates[{i}]", r) for i, r in enumerate(success_rates)]
    if len(rates) != len(grid):
        raise ValueError(f"success_rates: needs one rate per eps ({len(grid)}), got {len(rates)}")
    if n is None:
        low = high = rates
    else:
        counts = [_count(f"success_rates[{i}]", r, n) for i, r in enumerate(rates)]
        intervals = [wilson_interval(k, n, confidence) for k in counts]
        low, high = [iv[0] for iv in intervals], [iv[1] for iv in intervals]
    drops = [(i, j) for i in range(len(grid)) for j in range(i + 1, len(grid)) if high[j] < low[i]]
    values = {
        "eps_grid": grid,
        "success_rates": rates,
        "n": n,
        "confidence": confidence if n is not None else None,
        "significant_drops": [
            {"from_eps": grid[i], "to_eps": grid[j], "from_rate": rates[i], "to_rate": rates[j]}
            for i, j in drops
        ][:MAX_LISTED],
    }
    if not drops:
        return SanityCheck("monotone_in_eps", True, "success does not fall as eps grows", values)
    i, j = max(drops, key=lambda p: rates[p[0]] - rates[p[1]])
    return SanityCheck(
        "monotone_in_eps",
        False,
        f"success falls from {rates[i]:.3f} at eps = {grid[i]} to {rates[j]:.3f} at eps = "
        f"{grid[j]}: the attack loses adversarials at larger budgets (check its step size and "
        "projection)",
        values,
    )


def budget_converged(
    rate_at_budget: float,
    rate_at_double_budget: float,
    n: int,
    *,
    confidence: float = 0.95,
) -> SanityCheck:
    r"""Passes when doubling the attack's iterations (or EOT draws) does not raise its success
    rate by more than the sampling error.

    With :math:`\hat p_1`, :math:`\hat p_2` the verified success rates at the budget and at twice
    the budget on the same ``n`` images, and :math:`[l_2, u_2]` the Wilson interval of
    :math:`\hat p_2`, the tolerance is its half-width :math:`h = (u_2 - l_2) / 2`, and the check
    fails when

    .. math::
        \hat p_2 - \hat p_1 > h.

    A gain within ``h`` is indistinguishable from sampling noise at this ``n``; a fall passes
    (noise, or a randomised model). Failing means the attack has not converged: the evaluated
    budget understates what the attack can do.

    Args:
        rate_at_budget: ``k₁ / n`` in ``[0, 1]``.
        rate_at_double_budget: ``k₂ / n`` in ``[0, 1]``.
        n: the number of images, ``>= 1``.
        confidence: of the Wilson interval, in ``(0, 1)``.
    """
    p1 = _rate("rate_at_budget", rate_at_budget)
    p2 = _rate("rate_at_double_budget", rate_at_double_budget)
    k1, k2 = _count("rate_at_budget", p1, n), _count("rate_at_double_budget", p2, n)
    low, high = wilson_interval(k2, n, confidence)
    tolerance = (high - low) / 2
    gain = (k2 - k1) / n
    values = {
        "rate_at_budget": p1,
        "rate_at_double_budget": p2,
        "n": n,
        "gain": gain,
        "tolerance": tolerance,
        "confidence": confidence,
    }
    if gain <= tolerance:
        return SanityCheck(
            "budget_converged",
            True,
            f"doubling the budget changes success by {gain:+.3f} (tolerance {tolerance:.3f})",
            values,
        )
    return SanityCheck(
        "budget_converged",
        False,
        f"doubling the budget raises success by {gain:.3f} > {tolerance:.3f}: the attack has not "
        "converged: increase its budget",
        values,
    )


def gradient_vs_gradient_free(
    rate_gradient: float, rate_free: float, n: int, *, confidence: float = 0.95
) -> SanityCheck:
    """Fails with "possible gradient masking" when a gradient-free attack is significantly
    stronger than the gradient attack on the same ``n`` images.

    A gradient attack with working gradients is at least as strong as a decision-based one at
    the same budget; if it is weaker, its gradients mislead it (rounding, saturation, noise).
    Significantly: the Newcombe interval of ``rate_free − rate_gradient``
    (:func:`newcombe_difference_interval`, at ``confidence``) lies entirely above 0. The gradient
    attack being the stronger passes.

    Args:
        rate_gradient: verified success rate ``k/n`` of the gradient attack, in ``[0, 1]``.
        rate_free: that of the gradient-free attack at the same ε, in ``[0, 1]``.
        n: the number of images, ``>= 1``.
        confidence: in ``(0, 1)``.
    """
    pg = _rate("rate_gradient", rate_gradient)
    pf = _rate("rate_free", rate_free)
    kg, kf = _count("rate_gradient", pg, n), _count("rate_free", pf, n)
    low, high = newcombe_difference_interval(kf, n, kg, n, confidence)
    values = {
        "rate_gradient": pg,
        "rate_free": pf,
        "n": n,
        "difference": (kf - kg) / n,
        "difference_interval": [low, high],
        "confidence": confidence,
    }
    if low > 0:
        return SanityCheck(
            "gradient_vs_gradient_free",
            False,
            f"possible gradient masking: the gradient-free attack succeeds on {pf:.3f}, the "
            f"gradient attack on {pg:.3f} (difference interval [{low:.3f}, {high:.3f}] above 0)",
            values,
        )
    return SanityCheck(
        "gradient_vs_gradient_free",
        True,
        f"the gradient-free attack is not significantly stronger ({pf:.3f} vs {pg:.3f})",
        values,
    )


def newcombe_difference_interval(
    successes_1: int, n_1: int, successes_2: int, n_2: int, confidence: float = 0.95
) -> tuple[float, float]:
    r"""Newcombe's (1998, method 10) hybrid score interval for :math:`p_1 - p_2`, from the
    Wilson intervals of :math:`k_1/n_1` and :math:`k_2/n_2` (the module's formula).

    Returns:
        ``(low, high)`` with ``-1 <= low <= k₁/n₁ − k₂/n₂ <= high <= 1``.

    Raises:
        ValueError: as :func:`~flows.attacks.statistics.wilson_interval` for either proportion.
    """
    l1, u1 = wilson_interval(successes_1, n_1, confidence)
    l2, u2 = wilson_interval(successes_2, n_2, confidence)
    p1, p2 = successes_1 / n_1, successes_2 / n_2
    theta = p1 - p2
    below = math.sqrt((p1 - l1) ** 2 + (u2 - p2) ** 2)
    above = math.sqrt((u1 - p1) ** 2 + (p2 - l2) ** 2)
    return max(-1.0, theta - below), min(1.0, theta + above)


def non_finite_gradients(
    threat_model: ThreatModel,
    x: Tensor,
    y: Tensor,
    *,
    draws: int = 1,
    threshold: float = 0.01,
    batch_size: int | None = None,
) -> SanityCheck:
    r"""Fraction of inputs whose margin loss has a zero or non-finite gradient; fails above
    ``threshold`` (1 %).

    The loss is the log-posterior margin of the true class (the classification term of every
    gradient attack here, without its hinge, which is legitimately flat once misclassified),

    .. math::
        m(x) = \log p(y|x) - \max_{j \ne y} \log p(j|x), \qquad g = \nabla_x m(x),

    (:func:`~flows.attacks.log_posterior_margin`); with ``draws = K > 1`` (a randomised model)
    its mean over ``K`` draws (one batched pass, :func:`~flows.attacks.mean_over_draws`). An input
    is flagged when ``m`` or some entry of ``g`` is NaN or infinite, or when ``g`` is exactly
    zero, which is what a rounding, quantising or thresholding layer gives: gradient attacks then
    stall (gradient masking, or shattered gradients in Athalye et al. 2018's terms).

    Args:
        threat_model: a :class:`~flows.attacks.ThreatModel` (``observe(x, with_detector=False,
            draws=K)``).
        x: ``(B, ...)`` inputs within the bounds.
        y: ``(B,)`` their labels, in ``[0, C)``.
        draws: ``K >= 1``.
        threshold: the largest passing fraction, in ``[0, 1)``.
        batch_size: examples per gradient evaluation (None: all at once).

    Raises:
        ValueError: naming the argument, for invalid ``x`` or ``y`` (as
            :func:`~flows.attacks.base.check_inputs`), ``draws`` or ``threshold`` out of range.
    """
    check_inputs(x, threat_model.bounds, y, num_classes=threat_model.num_classes)
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws: must be an integer >= 1, got {draws!r}")
    if isinstance(threshold, bool) or not 0 <= threshold < 1:
        raise ValueError(f"threshold: must lie in [0, 1), got {threshold!r}")
    y = y.long().to(x.device)
    zero, non_finite = [], []
    for part in batches(len(x), batch_size):
        z = x[part].detach().clone().requires_grad_(True)
        labels = y[part]
        obs = threat_model.observe(z, with_detector=False, draws=draws)
        margin = log_posterior_margin(obs.logits, labels.repeat(draws) if draws > 1 else labels)
        if draws > 1:
            margin = mean_over_draws(margin, draws)
        assert margin.shape == (len(z),), f"margin has shape {tuple(margin.shape)}"
        grad = None
        if margin.requires_grad:
            (grad,) = torch.autograd.grad(margin.sum(), z, allow_unused=True)
        if grad is None:  # the scores do not depend on the input through autograd
            grad = torch.zeros_like(z)
        flat = grad.detach().flatten(1)
        bad = ~torch.isfinite(flat).all(dim=1) | ~torch.isfinite(margin.detach())
        flat_zero = (flat == 0).all(dim=1) & ~bad
        non_finite.append(bad.cpu())
        zero.append(flat_zero.cpu())
    zero_t, non_finite_t = torch.cat(zero), torch.cat(non_finite)
    flagged = zero_t | non_finite_t
    n, count = len(x), int(flagged.sum())
    fraction = count / n
    values = {
        "n": n,
        "zero": int(zero_t.sum()),
        "non_finite": int(non_finite_t.sum()),
        "fraction": fraction,
        "threshold": threshold,
        "draws": draws,
        "flagged_examples": torch.nonzero(flagged).flatten().tolist()[:MAX_LISTED],
    }
    if fraction <= threshold:
        return SanityCheck(
            "non_finite_gradients",
            True,
            f"{count} of {n} inputs have a zero or non-finite margin gradient",
            values,
        )
    return SanityCheck(
        "non_finite_gradients",
        False,
        f"{count} of {n} inputs ({100 * fraction:.1f}% > {100 * threshold:.1f}%) have a zero or "
        "non-finite margin gradient: gradient attacks cannot work there (gradient masking); "
        "use gradient-free attacks or a differentiable surrogate (BPDA)",
        values,
    )


def run_sanity_checks(
    attack_at: Callable[[float, int], AnyVerification],
    *,
    eps: float,
    eps_grid: Sequence[float] | None = None,
    gradient_free_at: Callable[[float], AnyVerification] | None = None,
    threat_model: ThreatModel | None = None,
    x: Tensor | None = None,
    y: Tensor | None = None,
    require_undetected: bool = True,
    confidence: float = 0.95,
    on_boundary: bool = False,
) -> list[SanityCheck]:
    """All the checks of one (gradient) attack, from callables that attack and verify.

    Args:
        attack_at: ``attack_at(eps, budget_scale)`` runs the attack and returns its
            verification within ``eps`` (``math.inf``: no budget, verify with ``eps=None``);
            ``budget_scale`` is 1 (the evaluated budget) or 2 (twice the iterations, or EOT
            draws). For a minimum-norm attack it may verify one result at every ε. Each
            ``(eps, budget_scale)`` is requested once.
        eps: the budget of the evaluation (e.g. Table 2's), for the budget and
            gradient-free comparisons.
        eps_grid: budgets for :func:`monotone_in_eps` (at least two), or None (not run).
        gradient_free_at: ``gradient_free_at(eps)``: the verification of a gradient-free attack
            (Boundary, the segment bound) on the same images, or None (not run).
        threat_model, x, y: the model, inputs and labels for :func:`non_finite_gradients`
            (all three, or none: not run).
        require_undetected: what a verified success is
            (:func:`~flows.attacks.ensemble.verified_success`).
        confidence: of every interval.
        on_boundary: the attack stops on the decision boundary of a randomised model verified
            under fresh noise: :func:`unbounded_success` counts its claims.

    Returns:
        ``[unbounded_success, monotone_in_eps, budget_converged, gradient_vs_gradient_free,
        non_finite_gradients]``, those without their inputs ``passed=None``.

    Raises:
        ValueError: only some of ``threat_model``, ``x``, ``y`` given; verifications of
            different lengths; and what the checks raise.
    """
    given = [v is not None for v in (threat_model, x, y)]
    if any(given) and not all(given):
        raise ValueError("threat_model, x, y: give all three (non_finite_gradients) or none")
    cache: dict[tuple[float, int], AnyVerification] = {}
    sizes: set[int] = set()

    def rate(verification: AnyVerification) -> tuple[float, int]:
        success = verified_success(verification, require_undetected=require_undetected)
        sizes.add(len(success))
        if len(sizes) > 1:
            raise ValueError(f"verifications: cover different numbers of examples {sorted(sizes)}")
        return success.double().mean().item(), len(success)

    def at(e: float, scale: int) -> AnyVerification:
        if (e, scale) not in cache:
            cache[(e, scale)] = attack_at(e, scale)
        return cache[(e, scale)]

    unbounded = at(math.inf, 1)
    rate(unbounded)
    checks = [
        unbounded_success(unbounded, require_undetected=require_undetected, on_boundary=on_boundary)
    ]
    if eps_grid is None:
        checks.append(SanityCheck.not_run("monotone_in_eps", "no eps_grid given"))
    else:
        grid = _eps_grid(eps_grid, increasing=True)
        rates = [rate(at(e, 1)) for e in grid]
        checks.append(
            monotone_in_eps(grid, [r for r, _ in rates], rates[0][1], confidence=confidence)
        )
    p1, n = rate(at(eps, 1))
    p2, _ = rate(at(eps, 2))
    checks.append(budget_converged(p1, p2, n, confidence=confidence))
    if gradient_free_at is None:
        checks.append(SanityCheck.not_run("gradient_vs_gradient_free", "no gradient_free_at given"))
    else:
        pf, _ = rate(gradient_free_at(eps))
        checks.append(gradient_vs_gradient_free(p1, pf, n, confidence=confidence))
    if threat_model is None:
        checks.append(SanityCheck.not_run("non_finite_gradients", "no threat_model, x, y given"))
    else:
        checks.append(non_finite_gradients(threat_model, x, y))
    return checks


def _criterion(require_undetected: bool) -> str:
    return "success_undetected" if require_undetected else "fools_classifier"


def _rate(name: str, value: object) -> float:
    """``value`` as a float in ``[0, 1]``; ``ValueError`` naming ``name`` otherwise."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise ValueError(f"{name}: must be a rate in [0, 1], got {value!r}")
    return float(value)


def _count(name: str, rate: float, n: object) -> int:
    """The count ``k = rate · n``, which must be an integer (up to rounding)."""
    try:
        size = None if isinstance(n, bool) else operator.index(n)
    except TypeError:
        size = None
    if size is None or size < 1:
        raise ValueError(f"n: must be an integer >= 1, got {n!r}")
    k = round(rate * size)
    if abs(rate * size - k) > 1e-6 * size:
        raise ValueError(f"{name}: {rate!r} is not a count out of n = {size} (k/n)")
    return k


def _eps_grid(eps_grid: Sequence[float], *, increasing: bool) -> list[float]:
    """The budgets as floats ``>= 0`` (inf allowed), strictly increasing when asked."""
    try:
        grid = [float(e) for e in eps_grid]
    except (TypeError, ValueError) as error:
        raise ValueError(f"eps_grid: must be a sequence of numbers, got {eps_grid!r}") from error
    if not grid:
        raise ValueError("eps_grid: needs at least one budget")
    if any(not e >= 0 for e in grid):
        raise ValueError(f"eps_grid: budgets must be >= 0 (inf allowed), got {grid}")
    if increasing and any(b <= a for a, b in zip(grid, grid[1:], strict=False)):
        raise ValueError(f"eps_grid: must increase strictly, got {grid}")
    return grid


def _json_safe(value: object) -> object:
    """``value`` with non-finite floats as strings and tuples as lists, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value
