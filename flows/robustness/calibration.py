r"""Two models with known answers, to calibrate the robustness test's attacks and statistics.

Both are :class:`~flows.robustness.protocol.ConditionalGenerativeModel`\ s in float64 with a
uniform class prior, bits/dim :math:`\mathrm{bpd}(x) = -\log p(x)/(D\ln 2) + \log_2 256` with
``D = d`` (:func:`flows.measures.bits_per_dim`), and a likelihood detector that rejects
:math:`\mathrm{bpd}(x) > T`, i.e. :math:`\log p(x) < L_T = D \ln 2\,(\log_2 256 - T)`. For a
labelled point ``(x, y)`` each gives the *optimal undetected adversarial distance*

.. math::
    d^*_T(x, y) = \inf\{\|z - x\|_2 : \hat y(z) \ne y,\ \mathrm{bpd}(z) \le T\},
    \qquad \hat y(z) = \arg\max_c \log p(z \mid c),

the smallest L2 perturbation that the criterion ``Misclassified(y) & NotDetected(detector)``
accepts (ties go to the smaller class, as ``argmax``; an infimum, approached from inside the
set), so an attack's found/optimal distance ratio is measured, not guessed.

:class:`CounterexampleModel`: the model q of the paper's Section 3 (eqs. 3–4; Appendix C, eqs.
9–10) on points of :math:`\mathbb{R}^d`, the data p for test points, and for a point of the
annulus :math:`1 < \|x\| \le 1 + \Delta` the answer the paper gives: the radial move into the unit
ball, :math:`d^* = \|x\| - 1`.

:class:`TwoGaussianModel`: :math:`p(x \mid y) = \mathcal N(\mp a u, \sigma^2 I_d)`, the model is
the data distribution, Bayes accuracy :math:`\Phi(a/\sigma)`, and :math:`d^*_T` from a
two-dimensional reduction.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import ClassVar, NamedTuple

import numpy as np
import torch
from scipy import integrate, optimize
from scipy.special import ndtr
from torch import Tensor
from torch.nn.functional import logsigmoid

from counterexample import Counterexample, sample_annulus_points, sample_points
from counterexample.annulus import (
    annulus_interval_probability,
    log_radial_volume,
    log_unit_ball_volume,
)
from flows.measures import NUM_BINS, bits_per_dim, marginal_log_prob, predictions

__all__ = [
    "CounterexampleModel",
    "Interval",
    "TwoGaussianModel",
    "log_density_level",
]


def log_density_level(threshold: float, num_dims: int) -> float:
    r""":math:`L_T = D \ln 2\,(\log_2 256 - T)`: the log-density (nats) at which bits/dim is
    ``threshold``; the detector accepts :math:`\log p(x) \ge L_T`."""
    return num_dims * math.log(2.0) * (math.log2(NUM_BINS) - threshold)


class Interval(NamedTuple):
    """A closed interval of radii ``[lo, hi]`` (``hi`` may be ``inf``; ``lo == hi`` a sphere)."""

    lo: float
    hi: float


class _Component(NamedTuple):
    """``weight * U(a, b)``, one uniform-annulus component; ``log_b`` is log b computed exactly."""

    weight: float
    a: float
    b: float
    log_b: float


# ----------------------------------------------------------------------------------------------
# The counterexample of Section 3
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CounterexampleModel:
    r"""The model q of Section 3 as a conditional generative model on :math:`\mathbb{R}^d`.

    Class log-likelihoods (eqs. 9–10, :class:`counterexample.Counterexample`), at ``r = ||x||``:

    .. math::
        q(x \mid 0) = U(0, 1+\Delta), \qquad
        q(x \mid 1) = \lambda_2 U(0, 1) + (1 - \lambda_2) U(2, 3), \qquad
        U(a, b)(x) = \frac{\mathbb 1[a \le \|x\| \le b]}{c_d (b^d - a^d)},

    :math:`c_d` the volume of the unit ball; the test points come from the data p (eqs. 7–8):
    :meth:`sample` (both classes), :meth:`sample_annulus` (class 0 on the shell
    :math:`1 < \|x\| \le 1 + \Delta`, the points Section 3 attacks).

    **Optimal undetected adversarial (radial reduction).** Every class log-likelihood, hence the
    decision and bits/dim, is a function of the radius, so the undetected adversarials of a label
    ``y`` form a radial set :math:`\{z : \|z\| \in S_T(y)\}`,

    .. math::
        S_T(y) = \{s \ge 0 : \hat y(s) \ne y,\ \mathrm{bpd}(s) \le T\}, \qquad
        d^*_T(x, y) = \operatorname{dist}(\|x\|, S_T(y)) = \inf_{s \in S_T(y)} |\,\|x\| - s\,|,

    since :math:`\|x - z\| \ge |\|x\| - \|z\||` (the reverse triangle inequality) with equality
    for :math:`z = x\,s/\|x\|`: the optimum is the radial move (:meth:`optimal_adversarial`).
    It stays within :attr:`bounds` (:math:`|z_i| \le \|z\| \le R`).

    For the exact model (``smoothing = 0``) with :math:`\lambda_2 (1+\Delta)^d > 1` and
    :math:`\Delta < 1`, the radial regions are the ball :math:`[0, 1]` (class 1, since
    :math:`q(x|1)/q(x|0) = \lambda_2(1+\Delta)^d` there; the highest density), the annulus
    :math:`(1, 1+\Delta]` (class 0), the gap :math:`(1+\Delta, 2)` (zero density, detected at any
    T), the shell :math:`[2, 3]` (class 1, the lowest density) and beyond 3 (zero density). For a
    class-0 point of the annulus, with :math:`T \ge \mathrm{bpd}_{\text{ball}}`,

    .. math::
        d^*_T = \min\bigl(\|x\| - 1,\ 2 - \|x\|\ [\text{if } T \ge \mathrm{bpd}_{\text{shell}}]\bigr)
        = \|x\| - 1 \quad (\Delta \le 1/2),

    the radial move into the unit ball of Section 3 (Fig. 2); for
    :math:`T < \mathrm{bpd}_{\text{ball}}` nothing is undetected and :math:`d^* = \infty`.
    :meth:`undetected_adversarial_radii` gives :math:`S_T(y)` as intervals, exactly (from the
    region edges 0, 1, 1+Δ, 2, 3).

    **Smoothing** (``smoothing = τ > 0``). The exact densities are piecewise constant: their
    gradient is zero (or undefined) everywhere, so gradient attacks get no signal, and the
    class log-likelihoods are ``-inf`` outside their supports. For gradient attacks each
    indicator is replaced by a product of logistic edges, normalised exactly,

    .. math::
        h_{a,b}(r) = \sigma\!\Bigl(\frac{b - r}{\tau}\Bigr)\,
                     \sigma\!\Bigl(\frac{r - a}{\tau}\Bigr)^{[a > 0]}, \qquad
        Z_{a,b} = d\,c_d \int_0^\infty r^{d-1} h_{a,b}(r)\,dr,

    (a smooth, everywhere positive density :math:`h/Z`; :math:`Z` by adaptive quadrature),
    which tends to the exact model as :math:`\tau \to 0`. The radial reduction still holds, and
    :math:`S_T(y)` is found numerically: membership on a grid of step :math:`\tau/8` over
    :math:`[0, R + 200\tau]` (intervals narrower than that may be missed), each edge refined by
    bisection to rounding. Near the unit sphere the class-1 density falls like
    :math:`e^{-(r-1)/\tau}`, so the decision boundary moves out to
    :math:`r^* \approx 1 + \tau \log(\lambda_2 (1+\Delta)^d)` and :math:`d^*` of an annulus
    point is :math:`\|x\| - r^*`. ``smoothing`` must be at most :math:`1/(2(d-1))`, so that the
    outer edge's decay beats the volume growth :math:`r^{d-1}` (the mass stays near the annulus).
    The attack calibration uses τ = 5e-4 at d = 300 (``from_targets(d=300, smoothing=5e-4)``), where
    :math:`r^* - 1 = 0.0057` against :math:`d^* \approx 0.09`, and the inner log-densities move
    by :math:`\approx (\pi^2/6)\,d(d-1)\tau^2/b^2 = 0.03` nats (the normaliser's expansion).

    Attributes:
        construction: the :class:`counterexample.Counterexample` (d, Δ, λ1, λ2).
        smoothing: τ >= 0 (0: the exact model of the paper).
    """

    construction: Counterexample
    smoothing: float = 0.0
    num_classes: ClassVar[int] = 2
    randomised: ClassVar[bool] = False
    _log_norms: dict = field(init=False, repr=False, compare=False)

    def __post_init__(self):
        if not isinstance(self.construction, Counterexample):
            raise ValueError(
                f"construction: must be a counterexample.Counterexample, got "
                f"{type(self.construction).__name__}"
            )
        d = self.construction.d
        limit = 1.0 / (2 * max(d - 1, 1))
        tau = self.smoothing
        if isinstance(tau, bool) or not isinstance(tau, int | float) or not 0 <= tau <= limit:
            raise ValueError(
                f"smoothing: must be a number in [0, 1/(2(d-1))] = [0, {limit:.6g}] at d={d}, "
                f"got {tau!r}"
            )
        norms = {
            (c.a, c.b): self._log_normaliser(c) for y in (0, 1) for c in self._components("q", y)
        }
        object.__setattr__(self, "_log_norms", norms)

    @classmethod
    def from_targets(
        cls,
        eps: float = 0.1,
        delta: float = 0.01,
        Delta: float = 0.1,
        d: int | None = 300,
        smoothing: float = 0.0,
    ) -> CounterexampleModel:
        r"""The construction of Proposition 1 for :math:`(\epsilon, \delta, \Delta)` at dimension
        ``d`` (:meth:`counterexample.Counterexample.from_targets`; None: the smallest feasible)."""
        return cls(Counterexample.from_targets(eps, delta, Delta, d=d), smoothing)

    # ------------------------------------------------------------------------- the protocol
    @property
    def num_dims(self) -> int:
        """D = d."""
        return self.construction.d

    @property
    def bounds(self) -> tuple[float, float]:
        r"""``(-R, R)``, :math:`R = \max(3, 1 + \Delta)`: the cube holds the ball of radius R,
        every test point and every radial move."""
        radius = max(3.0, 1.0 + self.construction.Delta)
        return (-radius, radius)

    def class_log_likelihoods(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        r"""``(B, 2)`` float64: :math:`\log q(x \mid c)` for ``x`` ``(B, d)`` (or ``(B, ...)``
        with d entries), differentiable when ``smoothing > 0``. ``generator`` is unused (the
        model draws no noise)."""
        return self.radial_log_likelihoods(self._radii(x))

    def bits_per_dim(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``(B,)`` float64: :func:`flows.measures.bits_per_dim` of log q(x), D = d."""
        return bits_per_dim(marginal_log_prob(self.class_log_likelihoods(x)), self.num_dims)

    # ------------------------------------------------------------------------- radial profile
    def radial_log_likelihoods(self, r: Tensor) -> Tensor:
        r"""``(N, 2)`` float64: :math:`\log q(x \mid c)` at points of norm ``r`` ``(N,)``."""
        r = r.to(torch.float64)
        columns = []
        for y in (0, 1):
            terms = [
                math.log(c.weight) - self._log_norms[(c.a, c.b)] + self._log_edge(r, c)
                for c in self._components("q", y)
            ]
            columns.append(torch.logsumexp(torch.stack(terms, dim=1), dim=1))
        scores = torch.stack(columns, dim=1)
        if self.smoothing == 0:
            scores = scores + 0.0 * r[:, None]  # piecewise constant: zero gradient, in the graph
        return scores

    def radial_bits_per_dim(self, r: Tensor) -> Tensor:
        """``(N,)`` float64: bits/dim at points of norm ``r``."""
        return bits_per_dim(marginal_log_prob(self.radial_log_likelihoods(r)), self.num_dims)

    # ------------------------------------------------------------------------- known answers
    def undetected_adversarial_radii(self, y: int, threshold: float) -> list[Interval]:
        r""":math:`S_T(y)` as disjoint closed intervals of radii, in increasing order: where the
        model's decision is not ``y`` and bits/dim is at most ``threshold``."""
        _check_label(y)

        def member(s: Tensor) -> Tensor:
            scores = self.radial_log_likelihoods(s)
            bpd = bits_per_dim(marginal_log_prob(scores), self.num_dims)
            return (predictions(scores) != y) & (bpd <= threshold)

        return self._radial_set(member)

    def decision_radii(self, y: int) -> list[Interval]:
        """The radii where the model decides ``y``, as intervals (see
        :meth:`undetected_adversarial_radii`)."""
        _check_label(y)
        return self._radial_set(lambda s: predictions(self.radial_log_likelihoods(s)) == y)

    def optimal_distance(self, x: Tensor, y: Tensor, threshold: float) -> Tensor:
        r"""``(B,)`` float64: :math:`d^*_T(x, y) = \operatorname{dist}(\|x\|, S_T(y))` for
        ``x`` ``(B, d)`` and labels ``y`` ``(B,)`` (``inf`` where :math:`S_T(y)` is empty, 0
        where ``x`` already is an undetected adversarial)."""
        r, y = self._radii(x).detach(), _check_labels(y, len(x))
        out = torch.full_like(r, math.inf)
        for label in (0, 1):
            rows = y == label
            if not bool(rows.any()):
                continue
            for lo, hi in self.undetected_adversarial_radii(label, threshold):
                gap = torch.clamp(torch.maximum(lo - r[rows], r[rows] - hi), min=0)
                out[rows] = torch.minimum(out[rows], gap)
        return out

    def optimal_adversarial(self, x: Tensor, y: Tensor, threshold: float) -> Tensor:
        r"""``(B, d)`` float64: the closest point of the closure of the undetected adversarials,
        :math:`x\,s^*/\|x\|` (the radial move; ``x`` itself where none exists)."""
        z, r = x.flatten(1).detach().to(torch.float64), self._radii(x).detach()
        y = _check_labels(y, len(x))
        target = r.clone()
        best = torch.full_like(r, math.inf)
        for label in (0, 1):
            if not bool((y == label).any()):
                continue
            for lo, hi in self.undetected_adversarial_radii(label, threshold):
                s = torch.clamp(r, min=lo, max=hi)
                closer = (y == label) & ((s - r).abs() < best)
                best = torch.where(closer, (s - r).abs(), best)
                target = torch.where(closer, s, target)
        return z * (target / r.clamp(min=torch.finfo(r.dtype).tiny))[:, None]

    def accuracy(self) -> float:
        r"""The model's accuracy on the data p, exactly:
        :math:`\tfrac12 \sum_y P_p(\hat y(x) = y \mid y)`, each term the p-mass of
        :meth:`decision_radii` (annulus probabilities, :mod:`counterexample.annulus`). For
        ``smoothing = 0`` and :math:`\lambda_2(1+\Delta)^d > 1` it is :math:`1 - \lambda_1/2`
        (the class-0 points of the unit ball are misclassified)."""
        total = 0.0
        for y in (0, 1):
            for lo, hi in self.decision_radii(y):
                for c in self._components("p", y):
                    mass = annulus_interval_probability(
                        lo, hi, c.a, c.b, self.num_dims, log_b=c.log_b
                    )
                    total += 0.5 * c.weight * mass
        return total

    # ------------------------------------------------------------------------- test points
    def sample(self, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        """``n`` labelled test points ``(x, y)`` ``((n, d), (n,))`` from the data p (eqs. 7–8),
        float64 / int64, reproducible from ``seed`` (:func:`counterexample.sample_points`)."""
        _check_count(n)
        x, y = sample_points(self.construction, n, "p", rng=np.random.default_rng(seed))
        return torch.from_numpy(x), torch.from_numpy(y).long()

    def sample_annulus(self, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        r"""``n`` class-0 points of the annulus :math:`1 \le \|x\| \le 1 + \Delta`, uniform on it
        (p's class-0 shell component, probability :math:`(1-\lambda_1)/2` of p), with labels 0:
        the points Section 3 attacks."""
        _check_count(n)
        ce = self.construction
        rng = np.random.default_rng(seed)
        x = sample_annulus_points(n, 1.0, 1.0 + ce.Delta, ce.d, rng)
        return torch.from_numpy(x), torch.zeros(n, dtype=torch.long)

    # ------------------------------------------------------------------------- internals
    def _components(self, which: str, y: int) -> list[_Component]:
        """The components of q (eqs. 9–10) or p (eqs. 7–8) given class y (zero weights left out)."""
        ce = self.construction
        outer, log_outer = 1.0 + ce.Delta, math.log1p(ce.Delta)
        if y == 1:
            parts = [
                _Component(ce.lambda2, 0.0, 1.0, 0.0),
                _Component(1 - ce.lambda2, 2.0, 3.0, math.log(3.0)),
            ]
        elif which == "q":
            parts = [_Component(1.0, 0.0, outer, log_outer)]
        else:
            parts = [
                _Component(ce.lambda1, 0.0, 1.0, 0.0),
                _Component(1 - ce.lambda1, 1.0, outer, log_outer),
            ]
        return [c for c in parts if c.weight > 0]

    def _log_normaliser(self, c: _Component) -> float:
        r""":math:`\log Z_{a,b}`: :math:`\log c_d + \log(b^d - a^d)` exactly for τ = 0, else
        :math:`\log(d\,c_d) + \log\int_0^\infty r^{d-1} h_{a,b}(r)\,dr` by adaptive quadrature
        of the integrand scaled by :math:`b^{d-1}` (its order of magnitude near the outer edge)."""
        d, tau = self.construction.d, self.smoothing
        if tau == 0:
            return log_unit_ball_volume(d) + log_radial_volume(c.a, c.b, d, log_b=c.log_b)

        def scaled(r: float) -> float:
            log_h = (
                -math.log1p(math.exp(-(c.b - r) / tau))
                if (c.b - r) / tau > -700
                else (c.b - r) / tau
            )
            if c.a > 0:
                t = (r - c.a) / tau
                log_h += -math.log1p(math.exp(-t)) if t > -700 else t
            return math.exp((d - 1) * (math.log(r) - c.log_b) + log_h) if r > 0 else 0.0

        lo, hi = max(0.0, c.a - 40 * tau), c.b + 80 * tau
        points = [p for p in (c.a, c.b) if lo < p < hi]
        value, _ = integrate.quad(scaled, lo, hi, points=points, limit=500, epsabs=0, epsrel=1e-12)
        return math.log(d) + log_unit_ball_volume(d) + (d - 1) * c.log_b + math.log(value)

    def _log_edge(self, r: Tensor, c: _Component) -> Tensor:
        r""":math:`\log h_{a,b}(r)` (τ > 0) or :math:`\log \mathbb 1[a \le r \le b]` (τ = 0)."""
        tau = self.smoothing
        if tau == 0:
            inside = (r >= c.a) & (r <= c.b)
            return torch.where(inside, 0.0, -math.inf).to(torch.float64).detach()
        out = logsigmoid((c.b - r) / tau)
        if c.a > 0:
            out = out + logsigmoid((r - c.a) / tau)
        return out

    def _radii(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() < 2:
            raise ValueError(f"x: must be a batch (B, d) of points, got {getattr(x, 'shape', x)!r}")
        z = x.flatten(1)
        if z.shape[1] != self.num_dims:
            raise ValueError(
                f"x: must have d = {self.num_dims} entries per point, got shape {tuple(x.shape)}"
            )
        return z.to(torch.float64).norm(dim=1)

    def _radial_set(self, member: Callable[[Tensor], Tensor]) -> list[Interval]:
        """The set of radii where ``member`` holds, as closed intervals (exact for τ = 0)."""
        if self.smoothing == 0:
            return self._radial_set_exact(member)
        return self._radial_set_smooth(member)

    def _radial_set_exact(self, member: Callable[[Tensor], Tensor]) -> list[Interval]:
        """τ = 0: the profile is constant on each open interval between the edges and on each
        edge; test one point of each piece and merge adjacent members."""
        edges = sorted({0.0, 1.0, 1.0 + self.construction.Delta, 2.0, 3.0})
        pieces: list[Interval] = []
        for i, e in enumerate(edges):
            pieces.append(Interval(e, e))
            upper = edges[i + 1] if i + 1 < len(edges) else math.inf
            pieces.append(Interval(e, upper))
        probes = torch.tensor(
            [
                p.lo if p.lo == p.hi else (p.lo + p.hi) / 2 if p.hi < math.inf else p.lo + 1
                for p in pieces
            ],
            dtype=torch.float64,
        )
        inside = member(probes).tolist()
        return _merge([p for p, keep in zip(pieces, inside, strict=True) if keep])

    def _radial_set_smooth(self, member: Callable[[Tensor], Tensor]) -> list[Interval]:
        """τ > 0: membership on a grid of step τ/8, edges refined by bisection; a set that
        reaches the grid's end is followed outwards by doubling the radius."""
        tau = self.smoothing
        top = self.bounds[1] + 200 * tau
        grid = torch.linspace(0.0, top, int(math.ceil(top / (tau / 8))) + 1, dtype=torch.float64)
        inside = member(grid)
        out: list[Interval] = []
        change = torch.nonzero(inside[1:] != inside[:-1]).flatten().tolist()
        starts = ([0] if bool(inside[0]) else []) + [i + 1 for i in change if bool(inside[i + 1])]
        ends = [i for i in change if bool(inside[i])]
        for k, start in enumerate(starts):
            lo = 0.0 if start == 0 else _bisect(member, float(grid[start - 1]), float(grid[start]))
            if k < len(ends):
                hi = _bisect(member, float(grid[ends[k] + 1]), float(grid[ends[k]]))
            else:
                hi = _follow_outwards(member, top)
            out.append(Interval(lo, hi))
        return out


def _bisect(member: Callable[[Tensor], Tensor], outside: float, inside: float) -> float:
    """The edge between a radius ``outside`` the set and one ``inside``, to rounding; returns
    the last radius found inside (the closure's edge)."""
    for _ in range(200):
        mid = (outside + inside) / 2
        if mid in (outside, inside):
            break
        if bool(member(torch.tensor([mid], dtype=torch.float64))[0]):
            inside = mid
        else:
            outside = mid
    return inside


def _follow_outwards(member: Callable[[Tensor], Tensor], start: float) -> float:
    """The outer edge of a set that holds at ``start``: double the radius until it no longer
    holds, then bisect; ``inf`` if it still holds at 2^60 · start."""
    inside = start
    for _ in range(60):
        candidate = 2 * inside
        if not bool(member(torch.tensor([candidate], dtype=torch.float64))[0]):
            return _bisect(member, candidate, inside)
        inside = candidate
    return math.inf


def _merge(intervals: list[Interval]) -> list[Interval]:
    """Sorted, touching closed intervals joined."""
    merged: list[Interval] = []
    for iv in sorted(intervals):
        if merged and iv.lo <= merged[-1].hi:
            merged[-1] = Interval(merged[-1].lo, max(merged[-1].hi, iv.hi))
        else:
            merged.append(iv)
    return merged


# ----------------------------------------------------------------------------------------------
# Two Gaussians
# ----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class TwoGaussianModel:
    r"""Two isotropic Gaussian classes in d dimensions, the model being the data distribution.

    .. math::
        p(x \mid y) = \mathcal N(x;\ \mu_y, \sigma^2 I_d), \quad
        \mu_0 = -a u,\ \mu_1 = +a u,\ u = \mathbf 1/\sqrt d, \quad p(y) = \tfrac12.

    **Bayes accuracy.** Bayes' rule decides by the sign of :math:`t = u^\top x \sim
    \mathcal N(\pm a, \sigma^2)`, so the accuracy (of the model, which is Bayes' rule) is
    :math:`\Phi(a/\sigma)` (:meth:`bayes_accuracy`). :meth:`sample` draws test points within
    :attr:`bounds` by rejection: conditioning on the box moves the accuracy by at most
    :math:`\varepsilon/(1-\varepsilon)`, :math:`\varepsilon` = :meth:`outside_probability`
    (closed form; 1.6e-7 for the defaults).

    **Optimal undetected adversarial (reduction to two dimensions).** Write a point as
    :math:`x = s u + w` (:math:`w \perp u`, :math:`\rho = \|w\|`) and, for label ``y``, let
    :math:`t = (1 - 2y)\,s` (the coordinate towards the other class). Then

    .. math::
        \log p(x) = -\frac{t^2 + a^2 + \rho^2}{2\sigma^2} + \log\cosh\frac{a t}{\sigma^2}
                    - \frac d2 \log(2\pi\sigma^2),

    so the detector accepts ``x`` iff :math:`\rho^2 \le g(t)` with

    .. math::
        g(t) = 2\sigma^2 \Bigl[\log\cosh\frac{a t}{\sigma^2} - \frac d2 \log(2\pi\sigma^2) - L_T\Bigr]
               - t^2 - a^2,

    and the model decides against ``y`` iff :math:`t > 0` (label 0; :math:`t \ge 0` for label 1,
    the tie going to class 0). For fixed ``t`` the nearest admissible point keeps the direction
    of ``w`` and clips its length to :math:`\sqrt{g(t)}`, hence, with :math:`(t_0, \rho_0)` the
    coordinates of ``x``,

    .. math::
        d^*_T(x, y)^2 = \min_{t \in [t_-, t_+]} (t - t_0)^2
                        + \bigl(\rho_0 - \sqrt{g(t)}\bigr)_+^2,

    where :math:`[t_-, t_+] = \{t \ge 0 : g(t) \ge 0\}` is an interval (``g`` is even and, on
    :math:`t > 0`, increases up to the root :math:`t_m` of :math:`a \tanh(a t/\sigma^2) = t`
    (:math:`t_m = 0` when :math:`a \le \sigma`) and decreases after), empty (:math:`d^* =
    \infty`) when :math:`g(t_m) < 0`. When :math:`g(0) \ge 0`, :math:`t = 0` is a local
    minimum (the derivative there is :math:`-2t_0 > 0`, ``g`` being even), with
    :math:`d^{*2} = t_0^2 + (\rho_0 - \sqrt{g(0)})_+^2`: cross the hyperplane and pull the
    orthogonal part in to the detector's radius; in high dimension (:math:`\sigma\sqrt d \gg a`,
    the defaults) ``g`` is nearly flat and this is the minimum, whereas for
    :math:`\sigma\sqrt d < a` the boundary point can be detected (:math:`g(0) < 0`) and the
    minimum lies at :math:`t > 0`. Closed forms: when the boundary point is accepted,
    :math:`g(0) \ge \rho_0^2`, the detector does not bind and :math:`d^* = \max(0, -t_0)`, the
    distance to the hyperplane :math:`u^\top x = 0`; on the axis (:math:`\rho_0 = 0`),
    :math:`d^* = t_- - t_0` for :math:`t_0 \le t_-`. Otherwise the one-dimensional minimum is
    taken on a grid of 4097 points refined by bounded Brent (scipy), the roots
    :math:`t_\pm` by Brent's method. The box (:attr:`bounds`) is not a constraint of
    :math:`d^*`: :meth:`optimal_adversarial` gives the minimiser, to check that it lies inside.

    Attributes:
        dim: d.
        a: half the distance between the class means, > 0.
        sigma: σ > 0.
        bounds: the input range.
    """

    dim: int = 300
    a: float = 0.16
    sigma: float = 0.08
    bounds: tuple[float, float] = (-0.5, 0.5)
    num_classes: ClassVar[int] = 2
    randomised: ClassVar[bool] = False

    def __post_init__(self):
        if isinstance(self.dim, bool) or not isinstance(self.dim, int) or self.dim < 1:
            raise ValueError(f"dim: must be an integer >= 1, got {self.dim!r}")
        for name in ("a", "sigma"):
            value = getattr(self, name)
            if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
                raise ValueError(f"{name}: must be a finite number > 0, got {value!r}")
        lo, hi = self.bounds
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
            raise ValueError(f"bounds: must be finite with lo < hi, got {self.bounds!r}")

    # ------------------------------------------------------------------------- the protocol
    @property
    def num_dims(self) -> int:
        """D = d."""
        return self.dim

    @property
    def axis(self) -> Tensor:
        """``u`` ``(d,)`` float64, the unit vector from μ0 to μ1."""
        return torch.full((self.dim,), 1.0 / math.sqrt(self.dim), dtype=torch.float64)

    @property
    def means(self) -> Tensor:
        """``(2, d)`` float64: μ0 = −a u, μ1 = +a u."""
        return torch.stack([-self.a * self.axis, self.a * self.axis])

    def class_log_likelihoods(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        r"""``(B, 2)`` float64: :math:`-\|x - \mu_c\|^2/(2\sigma^2) - \frac d2\log(2\pi\sigma^2)`
        for ``x`` ``(B, d)`` (or ``(B, ...)`` with d entries). ``generator`` is unused."""
        z = self._flat(x)
        sq = (z[:, None, :] - self.means[None]).pow(2).sum(-1)
        return -sq / (2 * self.sigma**2) - self.dim / 2 * math.log(2 * math.pi * self.sigma**2)

    def bits_per_dim(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``(B,)`` float64: :func:`flows.measures.bits_per_dim` of log p(x), D = d."""
        return bits_per_dim(marginal_log_prob(self.class_log_likelihoods(x)), self.dim)

    # ------------------------------------------------------------------------- known answers
    def bayes_accuracy(self) -> float:
        r""":math:`\Phi(a/\sigma)`."""
        return float(ndtr(self.a / self.sigma))

    def outside_probability(self) -> float:
        r"""The probability that a draw of p lies outside :attr:`bounds`:
        :math:`1 - \prod_i \bigl(\Phi(\frac{hi - m_i}{\sigma}) - \Phi(\frac{lo - m_i}{\sigma})\bigr)`,
        :math:`m_i = \pm a u_i`, for the class whose draws leave the box more often (the two
        differ when the box is not symmetric about 0)."""
        lo, hi = self.bounds
        worst = 0.0
        for m in (-self.a / math.sqrt(self.dim), self.a / math.sqrt(self.dim)):
            # log P(inside) per coordinate, computed stably from both tails
            outside = ndtr((lo - m) / self.sigma) + ndtr((m - hi) / self.sigma)
            log_inside = self.dim * math.log1p(-outside)
            worst = max(worst, -math.expm1(log_inside))
        return worst

    def optimal_distance(self, x: Tensor, y: Tensor, threshold: float) -> Tensor:
        """``(B,)`` float64: :math:`d^*_T(x, y)` (the class docstring's formula); ``inf`` where no
        undetected adversarial exists."""
        return self._optimum(x, y, threshold)[0]

    def optimal_adversarial(self, x: Tensor, y: Tensor, threshold: float) -> Tensor:
        r"""``(B, d)`` float64: the minimiser :math:`t^* \cdot (1-2y)\,u + w_0 \min(1,
        \sqrt{g(t^*)}/\rho_0)` (on the boundary of the undetected adversarials; ``x`` itself
        where none exists)."""
        return self._optimum(x, y, threshold)[1]

    # ------------------------------------------------------------------------- test points
    def sample(self, n: int, seed: int = 0) -> tuple[Tensor, Tensor]:
        """``n`` labelled test points ``((n, d), (n,))`` from p (labels uniform), float64 /
        int64, within :attr:`bounds` (rejection), reproducible from ``seed``."""
        _check_count(n)
        rng = np.random.default_rng(seed)
        lo, hi = self.bounds
        xs, ys, have = [], [], 0
        while have < n:
            y = rng.integers(0, 2, size=n)
            x = rng.standard_normal((n, self.dim)) * self.sigma
            x += ((2 * y - 1) * self.a)[:, None] / math.sqrt(self.dim)
            keep = ((x >= lo) & (x <= hi)).all(axis=1)
            xs.append(x[keep])
            ys.append(y[keep])
            have += int(keep.sum())
        x, y = np.concatenate(xs)[:n], np.concatenate(ys)[:n]
        return torch.from_numpy(x), torch.from_numpy(y).long()

    # ------------------------------------------------------------------------- internals
    def _flat(self, x: Tensor) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() < 2:
            raise ValueError(f"x: must be a batch (B, d) of points, got {getattr(x, 'shape', x)!r}")
        z = x.flatten(1)
        if z.shape[1] != self.dim:
            raise ValueError(
                f"x: must have d = {self.dim} entries per point, got shape {tuple(x.shape)}"
            )
        return z.to(torch.float64)

    def _g(self, t: np.ndarray | float, level: float) -> np.ndarray:
        r""":math:`g(t)` for the log-density level :math:`L_T` = ``level``."""
        s2 = self.sigma**2
        z = np.abs(self.a * np.asarray(t, dtype=np.float64) / s2)
        log_cosh = z + np.log1p(np.exp(-2 * z)) - math.log(2.0)
        const = self.dim / 2 * math.log(2 * math.pi * s2) + level
        return 2 * s2 * (log_cosh - const) - np.asarray(t) ** 2 - self.a**2

    def _feasible_interval(self, level: float) -> tuple[float, float] | None:
        """``[t_-, t_+]``, or None when empty."""
        a, s2 = self.a, self.sigma**2
        if a * a <= s2:
            peak = 0.0
        else:  # the positive root of a tanh(a t / σ²) = t lies in (0, a]
            peak = optimize.brentq(lambda t: a * math.tanh(a * t / s2) - t, 1e-300, a, xtol=1e-15)
        g = lambda t: float(self._g(t, level))  # noqa: E731
        if g(peak) < 0:
            return None
        low = 0.0 if g(0.0) >= 0 else optimize.brentq(g, 0.0, peak, xtol=1e-15, rtol=1e-15)
        far = max(peak, a) + 1.0
        while g(far) >= 0:
            far *= 2
        high = optimize.brentq(g, peak, far, xtol=1e-15, rtol=1e-15)
        return low, high

    def _optimum(self, x: Tensor, y: Tensor, threshold: float) -> tuple[Tensor, Tensor]:
        z = self._flat(x).detach()
        y = _check_labels(y, len(z))
        u = self.axis
        sign = (1 - 2 * y).to(torch.float64)
        s0 = z @ u
        w0 = z - s0[:, None] * u
        rho0 = w0.norm(dim=1)
        t0 = (sign * s0).numpy()
        level = log_density_level(threshold, self.dim)
        interval = self._feasible_interval(level)
        dist = np.full(len(z), math.inf)
        t_star = t0.copy()
        radius = rho0.numpy().copy()
        if interval is not None:
            low, high = interval
            for i in range(len(z)):
                dist[i], t_star[i], radius[i] = self._minimise(
                    t0[i], float(rho0[i]), low, high, level
                )
        t_star = torch.from_numpy(t_star)
        scale = torch.from_numpy(radius) / rho0.clamp(min=torch.finfo(torch.float64).tiny)
        point = (sign * t_star)[:, None] * u + w0 * scale.clamp(max=1.0)[:, None]
        point = torch.where(torch.from_numpy(np.isfinite(dist))[:, None], point, z)
        return torch.from_numpy(dist), point

    def _minimise(
        self, t0: float, rho0: float, low: float, high: float, level: float
    ) -> tuple[float, float, float]:
        """``(d*, t*, ρ*)`` for one point."""

        def radius(t: np.ndarray | float) -> np.ndarray:
            return np.minimum(rho0, np.sqrt(np.maximum(self._g(t, level), 0.0)))

        def f(t: np.ndarray | float) -> np.ndarray:
            return (np.asarray(t) - t0) ** 2 + (rho0 - radius(t)) ** 2

        if low == 0.0 and float(self._g(0.0, level)) >= rho0**2 and t0 <= 0:
            return -t0, 0.0, rho0  # the detector does not bind: the hyperplane
        if low <= t0 <= high and float(self._g(t0, level)) >= rho0**2:
            return 0.0, t0, rho0  # already an undetected adversarial
        grid = np.linspace(low, high, 4097)
        values = f(grid)
        k = int(np.argmin(values))
        left, right = grid[max(k - 1, 0)], grid[min(k + 1, len(grid) - 1)]
        best_t, best_f = float(grid[k]), float(values[k])
        if right > left:
            res = optimize.minimize_scalar(
                lambda t: float(f(t)),
                bounds=(left, right),
                method="bounded",
                options={"xatol": 1e-14},
            )
            if res.fun < best_f:
                best_t, best_f = float(res.x), float(res.fun)
        return math.sqrt(best_f), best_t, float(radius(best_t))


def _check_label(y: object) -> None:
    if y not in (0, 1) or isinstance(y, bool):
        raise ValueError(f"y: must be a class label 0 or 1, got {y!r}")


def _check_labels(y: Tensor, n: int) -> Tensor:
    if (
        not isinstance(y, Tensor)
        or y.shape != (n,)
        or y.is_floating_point()
        or y.dtype == torch.bool
    ):
        raise ValueError(
            f"y: must be an integer tensor ({n},) of labels, got {getattr(y, 'shape', y)!r}"
        )
    if bool(((y < 0) | (y > 1)).any()):
        raise ValueError(f"y: labels must lie in [0, 2), got {y.unique().tolist()}")
    return y.long()


def _check_count(n: object) -> None:
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ValueError(f"n: must be an integer >= 1, got {n!r}")
