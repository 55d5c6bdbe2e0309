r"""Monte Carlo in high dimension: exact samplers, KL estimates with standard errors, the attack.

**Sampling** :math:`U(a, b)` in :math:`\mathbb{R}^d`: a uniform direction (a normalised standard
Gaussian vector) times a radius drawn by the inverse CDF :math:`P(R \le r) = (r^d - a^d)/(b^d - a^d)`:

.. math::  R = b\,\exp\Bigl(\tfrac1d \log\bigl(u + (1-u)\,(a/b)^d\bigr)\Bigr), \qquad u \sim U(0,1),

with the inner log as ``logaddexp(log u, log(1-u) + d log(a/b))``: exact in log-space for any d (1e9
included). Norm-only samplers never build the d-dimensional points, so they work for any d; point
samplers return ``(n, d)`` arrays (memory n·d·8 bytes).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from .construction import Counterexample
from .proposition import (
    attack_conditions,
    attack_success_probability,
    attacked_radius,
)

__all__ = [
    "sample_annulus_norms",
    "sample_annulus_points",
    "sample_norms",
    "sample_points",
    "MonteCarloEstimate",
    "monte_carlo_kl",
    "AttackSimulation",
    "simulate_attack",
]

_MAX_POINT_ELEMENTS = 2 * 10**8  # 1.6 GB of float64; above this use the norm samplers


def _rng(rng: np.random.Generator | int | None) -> np.random.Generator:
    return rng if isinstance(rng, np.random.Generator) else np.random.default_rng(rng)


def sample_annulus_norms(
    n: int,
    a: float,
    b: float,
    d: int,
    rng: np.random.Generator | int | None = None,
    *,
    log_b: float | None = None,
) -> np.ndarray:
    """Norms of n points drawn from U(a, b) in R^d, shape (n,), by the log-space inverse CDF.

    ``log_b`` optionally gives log(b) exactly (e.g. ``log1p(Delta)`` for b = 1 + Delta).
    """
    if not 0.0 <= a < b:
        raise ValueError(f"need 0 <= a < b, got a={a!r}, b={b!r}")
    lb = math.log(b) if log_b is None else log_b
    u = _rng(rng).random(n)
    with np.errstate(divide="ignore"):
        log_ratio_d = d * (math.log(a) - lb) if a > 0 else -np.inf
        inner = np.logaddexp(np.log(u), np.log1p(-u) + log_ratio_d)
    return np.minimum(np.exp(lb + inner / d), b)


def _directions(n: int, d: int, rng: np.random.Generator) -> np.ndarray:
    if n * d > _MAX_POINT_ELEMENTS:
        raise MemoryError(
            f"{n} points in dimension {d} need {n * d * 8 / 1e9:.1f} GB; "
            "use the norm samplers (sample_norms) for this size"
        )
    g = rng.standard_normal((n, d))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    return g


def sample_annulus_points(
    n: int, a: float, b: float, d: int, rng: np.random.Generator | int | None = None
) -> np.ndarray:
    """n points drawn from U(a, b) in R^d, shape (n, d): uniform direction times exact radius."""
    rng = _rng(rng)
    r = sample_annulus_norms(n, a, b, d, rng)
    return _directions(n, d, rng) * r[:, None]


def _sample_component_norms(
    ce: Counterexample, n: int, which: str, y: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    r = np.empty(n)
    for cls in (0, 1):
        idx = np.flatnonzero(y == cls)
        comps = ce._components(which, cls)
        weights = np.array([c.weight for c in comps])
        pick = rng.choice(len(comps), size=idx.size, p=weights / weights.sum())
        for k, c in enumerate(comps):
            sel = idx[pick == k]
            r[sel] = sample_annulus_norms(sel.size, c.a, c.b, ce.d, rng, log_b=c.log_b)
    return r


def sample_norms(
    ce: Counterexample,
    n: int,
    which: str = "p",
    y: int | None = None,
    rng: np.random.Generator | int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Norms and labels of n draws from p or q (``which``): joint when ``y`` is None, else given y.

    Returns ``(r, y)`` with shapes (n,), (n,).
    """
    if which not in ("p", "q"):
        raise ValueError(f"which must be 'p' or 'q', got {which!r}")
    rng = _rng(rng)
    labels = rng.integers(0, 2, size=n) if y is None else np.full(n, y, dtype=np.int64)
    return _sample_component_norms(ce, n, which, labels, rng), labels


def sample_points(
    ce: Counterexample,
    n: int,
    which: str = "p",
    y: int | None = None,
    rng: np.random.Generator | int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Points ``(n, d)`` and labels ``(n,)`` drawn from p or q, joint or given y."""
    rng = _rng(rng)
    r, labels = sample_norms(ce, n, which, y, rng)
    return _directions(n, ce.d, rng) * r[:, None], labels


@dataclass(frozen=True)
class MonteCarloEstimate:
    """A sample mean with its standard error (standard deviation / sqrt(n))."""

    mean: float
    stderr: float
    n: int

    def z_score(self, exact: float) -> float:
        """(mean - exact) / stderr; 0 when both agree exactly with zero variance."""
        if self.stderr == 0:
            return 0.0 if self.mean == exact else math.inf
        return (self.mean - exact) / self.stderr

    def __str__(self) -> str:
        return f"{self.mean:.6g} ± {self.stderr:.2g} (n={self.n})"


def _estimate(values: np.ndarray) -> MonteCarloEstimate:
    n = values.size
    return MonteCarloEstimate(float(values.mean()), float(values.std(ddof=1) / math.sqrt(n)), n)


def monte_carlo_kl(
    ce: Counterexample,
    direction: str = "q||p",
    joint: bool = False,
    n: int = 100_000,
    rng: np.random.Generator | int | None = None,
    points: bool = False,
) -> MonteCarloEstimate:
    r"""Monte Carlo estimate of a KL divergence, :math:`E_{a}[\log a - \log b]`.

    Args:
        direction: ``"q||p"`` (Lemma 2) or ``"p||q"`` (Lemma 3).
        joint: estimate :math:`KL(\cdot(x,y)\|\cdot(x,y))` over (x, y) instead of the class-0
            conditional.
        points: draw full points (n, d) and evaluate the densities at points, instead of norms.
    """
    if direction not in ("q||p", "p||q"):
        raise ValueError(f"direction must be 'q||p' or 'p||q', got {direction!r}")
    rng = _rng(rng)
    first, second = direction.split("||")
    y = None if joint else 0
    if points:
        x, labels = sample_points(ce, n, first, y, rng)
        r = ce.norms(x)
    else:
        r, labels = sample_norms(ce, n, first, y, rng)
    values = np.empty(n)
    for cls in (0, 1):
        sel = labels == cls
        # log c_d cancels in the ratio: use the scaled densities, exact at any d
        values[sel] = ce.log_scaled_conditional(r[sel], first, cls) - ce.log_scaled_conditional(
            r[sel], second, cls
        )
    return _estimate(values)


@dataclass(frozen=True)
class AttackSimulation:
    """Outcome of :func:`simulate_attack`: the success rate over x ~ p beside the exact value."""

    n: int
    n_attacked: int
    n_success: int
    item_rates: dict[str, float]
    estimate: MonteCarloEstimate
    theory: float
    max_distance: float

    def __str__(self) -> str:
        items = ", ".join(f"{k} {v:.4f}" for k, v in self.item_rates.items())
        return (
            f"attacked {self.n_attacked}/{self.n} samples (class-0 shell); success rate "
            f"{self.estimate} vs exact {self.theory:.6g} (z = {self.estimate.z_score(self.theory):+.2f}); "
            f"among attacked, items hold at rates: {items}; max ||x - x_bar|| = {self.max_distance:.6g}"
        )


def simulate_attack(
    ce: Counterexample,
    delta: float,
    n: int = 100_000,
    rng: np.random.Generator | int | None = None,
    points: bool = False,
) -> AttackSimulation:
    r"""Sample (x, y) ~ p, attack every class-0 point of the shell :math:`1 < \|x\| \le 1+\Delta` by a
    radial move of less than :math:`\Delta` into the unit ball (see :mod:`.proposition`), and count
    the samples for which items 1–5 of Proposition 1 all hold.

    The success rate estimates :math:`P_{x\sim p}(\text{an undetectable confident adversarial
    exists})`, compared with the exact value (:math:`(1-\lambda_1)/2` for :math:`\Delta < 1`). With
    ``points=True`` the attack moves actual points ``x * rho / ||x||`` in R^d and the distances and
    densities are computed from the vectors.
    """
    rng = _rng(rng)
    if points:
        x, y = sample_points(ce, n, "p", None, rng)
        r = ce.norms(x)
    else:
        r, y = sample_norms(ce, n, "p", None, rng)
    attacked = (y == 0) & (r > 1.0) & (r <= 1.0 + ce.Delta)
    r_att = r[attacked]
    rho = attacked_radius(r_att, ce.Delta)
    if points:
        x_bar = x[attacked] * (rho / r_att)[:, None]
        distance = np.linalg.norm(x[attacked] - x_bar, axis=1)
        r_bar = ce.norms(x_bar)
    else:
        distance, r_bar = r_att - rho, rho
    items = attack_conditions(ce, delta, r_att, r_bar, distance)
    ok = np.logical_and.reduce(list(items.values())) if r_att.size else np.zeros(0, bool)
    success = np.zeros(n)
    success[np.flatnonzero(attacked)[ok]] = 1.0
    return AttackSimulation(
        n=n,
        n_attacked=int(attacked.sum()),
        n_success=int(ok.sum()),
        item_rates={k: float(v.mean()) if v.size else math.nan for k, v in items.items()},
        estimate=_estimate(success),
        theory=attack_success_probability(ce, delta),
        max_distance=float(distance.max()) if distance.size else 0.0,
    )
