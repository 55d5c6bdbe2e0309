r"""Lemmas 1–3 of Appendix C in closed form: posteriors, both KL divergences, and the lemma bounds.

Notation: :math:`V = (1+\Delta)^d` is the volume ratio of the balls of radius :math:`1+\Delta` and 1;
everything is computed from :math:`\log V = d \log(1+\Delta)`, never from :math:`V`.

**Why the KLs are Bernoulli KLs.** Class 1 is modelled perfectly (:math:`q(x|1) = p(x|1)`), and on
class 0 both :math:`p(x|0)` and :math:`q(x|0)` are constant on the unit ball :math:`B` and on the
shell :math:`S = R^d(1, 1+\Delta)`. Their masses are :math:`p(B|0) = \lambda_1` and
:math:`q(B|0) = 1/V`, so the KL divergence between the conditionals equals the KL divergence between
the Bernoulli distributions of the event :math:`\{x \in B\}` — exactly the sums of eqs. (13)–(17).

**Joint versus conditional.** By the chain rule,

.. math::  KL(q(x,y) \,\|\, p(x,y)) = KL(q(y)\|p(y)) + \sum_y q(y)\,KL(q(x|y)\|p(x|y))
           = \tfrac12\,KL(q(x|0)\,\|\,p(x|0)),

because :math:`p(y) = q(y) = 1/2` and the class-1 term vanishes. The proof of Lemma 2 writes the joint
KL *equal* to the conditional one, dropping the factor :math:`p(y=0) = 1/2`; the lemmas' conclusions
still hold (the joint KL is half the conditional one, so it is smaller), but the functions here return
the exact values: ``kl_*_joint = kl_*_conditional / 2``.
"""

from __future__ import annotations

import math

from .annulus import log1mexp

__all__ = [
    "log_volume_ratio",
    "bernoulli_kl",
    "lemma1_p_class0_in_ball",
    "lemma1_q_class0_in_ball",
    "lemma1_log_q_class0_in_ball",
    "kl_q_p_conditional",
    "kl_p_q_conditional",
    "kl_q_p_joint",
    "kl_p_q_joint",
    "lemma2_bound",
    "lemma3_bound",
    "lemma2_hypotheses_hold",
    "lemma3_hypotheses_hold",
]


def log_volume_ratio(d: int, Delta: float) -> float:
    r""":math:`\log V = d\,\log(1+\Delta)` (``log1p`` keeps it accurate for tiny :math:`\Delta`)."""
    return d * math.log1p(Delta)


def _softplus(t: float) -> float:
    """log(1 + e^t) without overflow."""
    return t + math.log1p(math.exp(-t)) if t > 0 else math.log1p(math.exp(t))


def _relative_entropy_term(log_t: float, log_s: float) -> float:
    r""":math:`g(t, s) = t\log(t/s) - t + s \ge 0` from :math:`\log t, \log s`, without cancellation.

    For :math:`t \approx s` it is :math:`s\,h(w)`, :math:`w = t/s - 1 = \mathrm{expm1}(\log t - \log s)`,
    :math:`h(w) = (1+w)\log(1+w) - w = \sum_{k\ge2} (-1)^k w^k / (k(k-1))`.
    """
    if log_s == -math.inf:
        return math.inf if log_t > -math.inf else 0.0
    s = math.exp(log_s)
    if log_t == -math.inf:
        return s
    diff = log_t - log_s
    if abs(diff) > 0.5:
        t = math.exp(log_t)
        return t * diff - t + s
    w = math.expm1(diff)
    if abs(w) < 0.05:
        h = sum((-1) ** k * w**k / (k * (k - 1)) for k in range(2, 14))
    else:
        h = (1.0 + w) * math.log1p(w) - w
    return s * h


def bernoulli_kl(log_a: float, log_b: float) -> float:
    r"""KL divergence between Bernoulli(a) and Bernoulli(b), from :math:`\log a` and :math:`\log b`.

    .. math::  KL(a\|b) = a \log\frac ab + (1-a)\log\frac{1-a}{1-b}
               = g(a, b) + g(1-a, 1-b), \qquad g(t, s) = t\log\frac ts - t + s \ge 0,

    (the linear terms cancel), with :math:`0 \log 0 = 0`. Each :math:`g` is computed without
    cancellation (:func:`_relative_entropy_term`), so the result is non-negative and accurate to a few
    ulps even when :math:`a \approx b`; :math:`\log(1-a)` is ``log1mexp(log a)``, so
    :math:`a = e^{-10^9}` is handled exactly.
    """
    return _relative_entropy_term(log_a, log_b) + _relative_entropy_term(
        float(log1mexp(log_a)), float(log1mexp(log_b))
    )


def lemma1_p_class0_in_ball(lambda1: float, lambda2: float) -> float:
    r"""Lemma 1, eq. (11): :math:`p(0|x) = \lambda_1 / (\lambda_1 + \lambda_2)` for :math:`\|x\|<1`."""
    return lambda1 / (lambda1 + lambda2)


def lemma1_log_q_class0_in_ball(d: int, Delta: float, lambda2: float) -> float:
    r"""Lemma 1, eq. (12) in log-space: :math:`\log q(0|x) = -\log(1 + \lambda_2 (1+\Delta)^d)`."""
    if lambda2 == 0.0:
        return 0.0
    return -_softplus(math.log(lambda2) + log_volume_ratio(d, Delta))


def lemma1_q_class0_in_ball(d: int, Delta: float, lambda2: float) -> float:
    r"""Lemma 1, eq. (12): :math:`q(0|x) = 1 / (1 + \lambda_2 (1+\Delta)^d)` for :math:`\|x\| < 1`."""
    return math.exp(lemma1_log_q_class0_in_ball(d, Delta, lambda2))


def kl_q_p_conditional(d: int, Delta: float, lambda1: float) -> float:
    r"""Lemma 2, eqs. (13)–(15): :math:`KL(q(x|0)\,\|\,p(x|0))`, exactly.

    .. math::  \frac{-\log(\lambda_1 V)}{V} + \frac{V-1}{V}\log\frac{V-1}{(1-\lambda_1)V}
               = KL\bigl(\mathrm{Ber}(1/V)\,\|\,\mathrm{Ber}(\lambda_1)\bigr).
    """
    return bernoulli_kl(
        -log_volume_ratio(d, Delta), math.log(lambda1) if lambda1 > 0 else -math.inf
    )


def kl_p_q_conditional(d: int, Delta: float, lambda1: float) -> float:
    r"""Lemma 3, eqs. (16)–(17): :math:`KL(p(x|0)\,\|\,q(x|0))`, exactly.

    .. math::  \lambda_1 \log(\lambda_1 V) + (1-\lambda_1)\log\frac{(1-\lambda_1)V}{V-1}
               = KL\bigl(\mathrm{Ber}(\lambda_1)\,\|\,\mathrm{Ber}(1/V)\bigr).
    """
    return bernoulli_kl(
        math.log(lambda1) if lambda1 > 0 else -math.inf, -log_volume_ratio(d, Delta)
    )


def kl_q_p_joint(d: int, Delta: float, lambda1: float) -> float:
    r""":math:`KL(q(x,y)\,\|\,p(x,y)) = \tfrac12 KL(q(x|0)\|p(x|0))` (chain rule; see module doc)."""
    return 0.5 * kl_q_p_conditional(d, Delta, lambda1)


def kl_p_q_joint(d: int, Delta: float, lambda1: float) -> float:
    r""":math:`KL(p(x,y)\,\|\,q(x,y)) = \tfrac12 KL(p(x|0)\|q(x|0))` (chain rule; see module doc)."""
    return 0.5 * kl_p_q_conditional(d, Delta, lambda1)


def lemma2_bound(lambda1: float) -> float:
    r"""Lemma 2's bound, eq. (15): :math:`KL(q(x|0)\|p(x|0)) \le \log\frac{1}{1-\lambda_1}`.

    Valid when :math:`\lambda_1 > 1/V`; then it is even strict, so :math:`\lambda_1 \le 1-e^{-\epsilon}`
    already gives :math:`KL < \epsilon`.
    """
    return -math.log1p(-lambda1)


def lemma3_bound(d: int, Delta: float, lambda1: float) -> float:
    r"""Lemma 3's bound, eq. (17): :math:`KL(p(x|0)\|q(x|0)) \le \lambda_1 d \log(1+\Delta)`.

    Valid when :math:`1/V \le \lambda_1 \le 1` (the second term of eq. (17) is then :math:`\le 0`).
    """
    return lambda1 * log_volume_ratio(d, Delta)


def lemma2_hypotheses_hold(d: int, Delta: float, lambda1: float, eps: float) -> bool:
    r"""Lemma 2's hypotheses: :math:`\lambda_1 > (1+\Delta)^{-d}` and :math:`\lambda_1 < 1 - e^{-\epsilon}`."""
    return (
        lambda1 > 0
        and math.log(lambda1) > -log_volume_ratio(d, Delta)
        and lambda1 < -math.expm1(-eps)
    )


def lemma3_hypotheses_hold(d: int, Delta: float, lambda1: float, eps: float) -> bool:
    r"""Lemma 3's hypotheses: :math:`1 > \lambda_1 > (1+\Delta)^{-d}` and
    :math:`\lambda_1 < \epsilon / (d \log(1+\Delta))`."""
    return (
        0 < lambda1 < 1
        and math.log(lambda1) > -log_volume_ratio(d, Delta)
        and lambda1 < eps / log_volume_ratio(d, Delta)
    )
