r"""The uniform distribution :math:`U(a, b)` on the annulus :math:`R^d(a, b)` (paper, Appendix C).

:math:`R^d(a, b) = \{x \in \mathbb{R}^d : a \le \|x\| \le b\}` and :math:`U(a, b)` has the density

.. math::  u_{a,b}(x) = \frac{1}{c_d\,(b^d - a^d)} \quad (a \le \|x\| \le b), \qquad
           c_d = \frac{\pi^{d/2}}{\Gamma(d/2 + 1)},

the volume of the unit ball. Everything here is in log-space and never forms :math:`b^d`, so it stays
finite and accurate for d up to 1e9 and beyond:

.. math::  \log(b^d - a^d) = d \log b + \log\bigl(1 - e^{d \log(a/b)}\bigr).

Radii like :math:`b = 1+\Delta` are not exact in floating point for tiny :math:`\Delta`, and
:math:`d\log(\mathrm{fl}(1+\Delta))` is off by about :math:`d\,\Delta\,2^{-53}`; every function
therefore takes an optional ``log_b`` (e.g. ``log1p(Delta)``) that replaces :math:`\log b`.

Boundaries :math:`\|x\| = a, b` belong to the annulus, as in the paper's definition; they are null
sets, so no probability depends on that choice.
"""

from __future__ import annotations

import numpy as np
from scipy.special import gammaln

__all__ = [
    "log1mexp",
    "log_unit_ball_volume",
    "log_radial_volume",
    "log_annulus_volume",
    "annulus_log_density",
    "annulus_log_cdf",
    "annulus_interval_probability",
]


def log1mexp(t: np.ndarray | float) -> np.ndarray:
    r""":math:`\log(1 - e^{t})` for :math:`t \le 0`, accurate everywhere (Mächler 2012).

    Returns ``-inf`` at ``t = 0`` and 0 at ``t = -inf``.
    """
    t = np.asarray(t, dtype=np.float64)
    with np.errstate(divide="ignore"):
        return np.where(t > -np.log(2.0), np.log(-np.expm1(t)), np.log1p(-np.exp(t)))


def log_unit_ball_volume(d: int) -> float:
    r""":math:`\log c_d = \tfrac d2 \log\pi - \log\Gamma(\tfrac d2 + 1)`."""
    return 0.5 * d * np.log(np.pi) - float(gammaln(0.5 * d + 1.0))


def _log_radius(b: float, log_b: float | None) -> float:
    return float(np.log(b)) if log_b is None else float(log_b)


def log_radial_volume(a: float, b: float, d: int, *, log_b: float | None = None) -> float:
    r""":math:`\log(b^d - a^d)` for :math:`0 \le a < b`, without forming :math:`b^d`."""
    if not 0.0 <= a < b:
        raise ValueError(f"need 0 <= a < b, got a={a!r}, b={b!r}")
    lb = _log_radius(b, log_b)
    if a == 0.0:
        return d * lb
    return d * lb + float(log1mexp(d * (np.log(a) - lb)))


def log_annulus_volume(a: float, b: float, d: int, *, log_b: float | None = None) -> float:
    r""":math:`\log \mathrm{vol}\,R^d(a,b) = \log c_d + \log(b^d - a^d)`."""
    return log_unit_ball_volume(d) + log_radial_volume(a, b, d, log_b=log_b)


def annulus_log_density(
    r: np.ndarray, a: float, b: float, d: int, *, log_b: float | None = None
) -> np.ndarray:
    r"""Log-density of :math:`U(a,b)` at points of norm ``r`` (any shape); ``-inf`` off the annulus."""
    r = np.asarray(r, dtype=np.float64)
    inside = (r >= a) & (r <= b)
    return np.where(inside, -log_annulus_volume(a, b, d, log_b=log_b), -np.inf)


def annulus_log_cdf(
    r: np.ndarray, a: float, b: float, d: int, *, log_b: float | None = None
) -> np.ndarray:
    r""":math:`\log P(\|X\| \le r)` for :math:`X \sim U(a,b)`:

    .. math::  P(\|X\| \le r) = \frac{r^d - a^d}{b^d - a^d}, \quad a \le r \le b.
    """
    r = np.asarray(r, dtype=np.float64)
    rr = np.clip(r, a, b)
    with np.errstate(divide="ignore", invalid="ignore"):
        log_num = np.where(
            rr <= a,
            -np.inf,
            d * np.log(rr) + (log1mexp(d * (np.log(a) - np.log(rr))) if a > 0 else 0.0),
        )
    return np.where(r >= b, 0.0, log_num - log_radial_volume(a, b, d, log_b=log_b))


def annulus_interval_probability(
    lo: float, hi: float, a: float, b: float, d: int, *, log_b: float | None = None
) -> float:
    r""":math:`P(lo < \|X\| \le hi)` for :math:`X \sim U(a, b)`, computed as a difference in log-space."""
    if hi <= lo:
        return 0.0
    log_hi = float(annulus_log_cdf(hi, a, b, d, log_b=log_b))
    log_lo = float(annulus_log_cdf(lo, a, b, d, log_b=log_b))
    if log_hi == -np.inf:
        return 0.0
    return float(np.exp(log_hi + log1mexp(min(log_lo - log_hi, 0.0))))
