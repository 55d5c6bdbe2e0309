r"""Binomial proportions with Wilson score intervals, for Table 2 and the noise verification.

Every percentage the attack experiments report is a binomial proportion: ``k`` successes among
``n`` attacked images (Table 2), or ``k`` fooled draws among ``N`` noise draws of one adversarial
(:func:`~flows.attacks.verification.verify_over_noise`). With ``n`` of the order of 10–100 the
sampling error is several percentage points, so each is reported with its Wilson (1927) score
interval, which, unlike the normal ("Wald") interval, stays inside ``[0, 1]``, is not empty at
``k = 0`` or ``k = n``, and keeps close to its nominal coverage for small ``n`` (Brown, Cai &
DasGupta 2001, "Interval estimation for a binomial proportion", Statist. Sci. 16(2)).

.. math::
    \hat p = \frac{k}{n}, \qquad z = \Phi^{-1}\!\left(1 - \frac{1 - \gamma}{2}\right),

    \text{centre} = \frac{\hat p + \frac{z^2}{2n}}{1 + \frac{z^2}{n}}, \qquad
    \text{half-width} = \frac{z}{1 + \frac{z^2}{n}}
        \sqrt{\frac{\hat p (1 - \hat p)}{n} + \frac{z^2}{4 n^2}},

with ``γ`` the confidence (0.95: ``z ≈ 1.95996``). The interval is ``centre ± half-width``; it
is exactly ``[0, ·]`` at ``k = 0`` and ``[·, 1]`` at ``k = n``.

Planning the number of draws. The half-width is largest at ``p̂ = 1/2``, where it simplifies to
``z / (2 √(n + z²))``; :func:`draws_for_half_width` inverts this.
"""

from __future__ import annotations

import math
import operator
from statistics import NormalDist

__all__ = [
    "draws_for_half_width",
    "format_percentage",
    "percentage_with_interval",
    "wilson_half_width_at_half",
    "wilson_interval",
]


def wilson_interval(successes: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    r"""Wilson (1927) score interval ``(low, high)`` for a binomial proportion (see the module).

    Args:
        successes: ``k``, an integer in ``[0, n]``.
        n: the number of trials, an integer ``>= 1``.
        confidence: ``γ`` in ``(0, 1)``.

    Returns:
        ``(low, high)``, proportions with ``0 <= low <= k/n <= high <= 1``; ``low = 0`` exactly at
        ``k = 0`` and ``high = 1`` exactly at ``k = n``.

    Raises:
        ValueError: naming the argument: ``n`` not an integer ``>= 1``, ``successes`` not an
            integer in ``[0, n]``, ``confidence`` outside ``(0, 1)``.
    """
    n = _count("n", n, 1)
    successes = _count("successes", successes, 0)
    if successes > n:
        raise ValueError(f"successes: must lie in [0, n] = [0, {n}], got {successes}")
    z = _z(confidence)
    p_hat = successes / n
    shrink = 1.0 + z * z / n
    centre = (p_hat + z * z / (2 * n)) / shrink
    half_width = z / shrink * math.sqrt(p_hat * (1.0 - p_hat) / n + z * z / (4 * n * n))
    low = 0.0 if successes == 0 else max(0.0, centre - half_width)
    high = 1.0 if successes == n else min(1.0, centre + half_width)
    return low, high


def wilson_half_width_at_half(n: int, confidence: float = 0.95) -> float:
    r"""The largest Wilson half-width over ``p̂`` for ``n`` trials, reached at ``p̂ = 1/2``:

    .. math::
        h(n) = \frac{z}{2 \sqrt{n + z^2}}.
    """
    n = _count("n", n, 1)
    z = _z(confidence)
    return z / (2.0 * math.sqrt(n + z * z))


def draws_for_half_width(half_width: float, confidence: float = 0.95) -> int:
    r"""The smallest ``n`` whose Wilson interval has half-width ``<= half_width`` for *every*
    ``p̂`` (the worst case ``p̂ = 1/2``, :func:`wilson_half_width_at_half`):

    .. math::
        n = \max\left(1, \left\lceil \frac{z^2}{4 h^2} - z^2 \right\rceil\right).

    E.g. ``h = 0.1`` at 95 %: 93 draws; ``h = 0.05``: 381.

    Raises:
        ValueError: ``half_width`` outside ``(0, 0.5)`` or ``confidence`` outside ``(0, 1)``.
    """
    if not 0.0 < half_width < 0.5:
        raise ValueError(f"half_width: must lie in (0, 0.5), got {half_width!r}")
    z = _z(confidence)
    n = max(1, math.ceil(z * z / (4.0 * half_width * half_width) - z * z))
    # guard the ceiling against rounding: the closed form must hold at n and fail at n − 1
    while wilson_half_width_at_half(n, confidence) > half_width:
        n += 1
    while n > 1 and wilson_half_width_at_half(n - 1, confidence) <= half_width:
        n -= 1
    return n


def percentage_with_interval(
    successes: int, n: int, confidence: float = 0.95
) -> dict[str, float | int]:
    """JSON-ready percentage of ``successes`` among ``n`` with its Wilson interval, in percent:
    ``{"pct", "low_pct", "high_pct", "successes", "n", "confidence"}``."""
    low, high = wilson_interval(successes, n, confidence)
    successes, n = operator.index(successes), operator.index(n)
    return {
        "pct": 100.0 * successes / n,
        "low_pct": 100.0 * low,
        "high_pct": 100.0 * high,
        "successes": successes,
        "n": n,
        "confidence": float(confidence),
    }


def format_percentage(successes: int, n: int, confidence: float = 0.95, digits: int = 1) -> str:
    """A table cell: ``"40.0 [16.8, 68.7]"`` (percentage and Wilson interval, ``digits``
    decimals)."""
    cell = percentage_with_interval(successes, n, confidence)
    return f"{cell['pct']:.{digits}f} [{cell['low_pct']:.{digits}f}, {cell['high_pct']:.{digits}f}]"


def _z(confidence: float) -> float:
    """The two-sided standard normal quantile ``Φ⁻¹(1 − (1 − γ)/2)``."""
    if isinstance(confidence, bool) or not 0.0 < confidence < 1.0:
        raise ValueError(f"confidence: must lie in (0, 1), got {confidence!r}")
    return NormalDist().inv_cdf(0.5 + confidence / 2.0)


def _count(name: str, value: object, minimum: int) -> int:
    """``value`` as a Python int (any integer type: int, NumPy, a 0-d integer tensor), checked
    ``>= minimum``; ``ValueError`` naming ``name`` otherwise (a bool is refused)."""
    try:
        count = None if isinstance(value, bool) else operator.index(value)
    except TypeError:
        count = None
    if count is None or count < minimum:
        raise ValueError(f"{name}: must be an integer >= {minimum}, got {value!r}")
    return count
