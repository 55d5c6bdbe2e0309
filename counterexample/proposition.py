r"""Proposition 1, items 1–7, checked exactly on a :class:`~counterexample.Counterexample`.

All densities are constant on the radial regions cut at :math:`\|x\| \in \{1, 1+\Delta, 2, 3\}`, so
every probability below is a finite sum over regions, computed exactly in log-space.

**The attack** (Fig. 2, red arrows). A class-0 point x in the shell :math:`1 < \|x\| \le 1+\Delta` is
moved radially to :math:`\bar x = x\,\rho/\|x\|` with :math:`\rho = \max(0, (\|x\| + 1 - \Delta)/2)`,
half-way between the farthest allowed radius :math:`\|x\| - \Delta` and the unit sphere: inside the unit
ball, at distance :math:`\|x\|-\rho < \Delta`.

**Items as checked** (:func:`attack_conditions`), for the Bayes label :math:`y_p` (the ground truth)
and the model's label :math:`y_q` (arg-max posteriors):

1. :math:`y_q(x) = y_p(x)`, :math:`p(y_p(x)|x) \ge 1-\delta`, :math:`q(y_q(x)|x) \ge 1-\delta`;
2. :math:`y_p(\bar x) = y_p(x)` and :math:`y_q(\bar x) \ne y_p(\bar x)` (the paper's printed item 2,
   ":math:`y_q(x) \ne y(\bar x)`, :math:`y_q(\bar x) = y(\bar x)`", contradicts itself; we check its
   stated meaning, "we change the prediction without changing the ground-truth label");
3. :math:`q(y_q(\bar x)|\bar x) \ge 1-\delta` and :math:`p(y_p(\bar x)|\bar x) \ge 1-\delta` (the paper
   prints ":math:`q(y_q(\bar x)|\bar x) < \delta`", i.e. the probability of the *true* class, and
   :math:`p > 1-\delta` strictly; but the proof's condition 1 gives :math:`p(0|\bar x) = 1-\delta`
   exactly, so we check ≥, as the proof establishes);
4. :math:`\|x - \bar x\| < \Delta`;
5. :math:`q(\bar x) \ge` the median of :math:`q(X)`, :math:`X \sim p` (the lower median).

Confidence comparisons that hold with equality by construction are checked to a relative tolerance of
1e-12 (``rtol``), since :math:`\lambda_2 = \frac{\delta}{1-\delta}\lambda_1` is rounded to a float.

**The probability 1/3.** For :math:`\Delta < 1` the attack succeeds exactly on the class-0 shell,
with probability :math:`(1-\lambda_1)/2`, which exceeds 1/3 only when :math:`\lambda_1 < 1/3`. The
proof's five conditions do not imply this (condition 3 allows :math:`\lambda_1` up to
:math:`1-e^{-\epsilon}`); Section 3 assumes it informally (":math:`1 \gg \lambda_1`"). For large
:math:`\epsilon` the minimal dimension can therefore fail the 1/3 claim — the report says so.

**Item 6** is reported as the upper bound
:math:`\sup_c P_p(B(c, \Delta)) \le \max_x p(x)\,c_d\,\Delta^d`, which decays like
:math:`\Delta^d` for :math:`\Delta < 1` (the item makes no claim for :math:`\Delta \ge 1`).

**Item 7** ("the total variation can be made as small as desired") is ambiguous; both readings are
reported. (a) The total-variation *distance* :math:`TV(p(x,y), q(x,y)) = \tfrac12|\lambda_1 - V^{-1}|`,
which is as small as desired by taking :math:`\lambda_1` small (large d). (b) The total variation of
the *density function*, :math:`\int\|\nabla p\|` in the distributional sense, which is what the proof's
appeal to the divergence theorem and sphere areas suggests: the density jumps on the spheres
:math:`\|x\| = R` with areas :math:`d\,c_d R^{d-1}`, and since the density values scale like
:math:`1/c_d`, this total variation *grows* linearly in d for this construction (the jumps at
:math:`1+\Delta` and 3 contribute about :math:`\tfrac d2 (1-\lambda_1)/(1+\Delta)` and :math:`d/6`), so
under reading (b) the paper's remark does not hold for this p. We report it exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from .annulus import annulus_interval_probability, log1mexp
from .construction import Counterexample
from .dimension import feasible_lambda1_interval, validate_targets

__all__ = [
    "Region",
    "radial_regions",
    "attacked_radius",
    "attack_conditions",
    "log_median_q_density",
    "attack_success_probability",
    "ball_probability_bound",
    "tv_distance",
    "log_density_total_variation",
    "PropositionReport",
    "check_proposition",
]


@dataclass(frozen=True)
class Region:
    """A radial interval (lo, hi] on which every density of the construction is constant."""

    lo: float
    hi: float
    p_mass: tuple[float, float]  # P_p(y, lo < ||x|| <= hi) for y = 0, 1 (joint, includes the 1/2)

    @property
    def representative(self) -> float:
        return 0.5 * (self.lo + self.hi)


def radial_regions(ce: Counterexample) -> list[Region]:
    """The regions cut at radii 1, 1+Delta, 2, 3 (sorted, duplicates removed), with p's class masses."""
    cuts = sorted({0.0, 1.0, 1.0 + ce.Delta, 2.0, 3.0})
    regions = []
    for lo, hi in zip(cuts[:-1], cuts[1:], strict=True):
        masses = []
        for y in (0, 1):
            m = sum(
                c.weight * annulus_interval_probability(lo, hi, c.a, c.b, ce.d, log_b=c.log_b)
                for c in ce._components("p", y)
                if c.weight > 0
            )
            masses.append(0.5 * m)
        regions.append(Region(lo, hi, (masses[0], masses[1])))
    return regions


def attacked_radius(r: np.ndarray, Delta: float) -> np.ndarray:
    r"""The attack's target radius :math:`\rho = \max(0, (r + 1 - \Delta)/2)` for shell points."""
    return np.maximum(0.0, 0.5 * (np.asarray(r, dtype=np.float64) + 1.0 - Delta))


def _at_least(a: np.ndarray, b: float, rtol: float) -> np.ndarray:
    return a >= b - rtol * abs(b)


def log_median_q_density(ce: Counterexample) -> float:
    r"""Lower median of :math:`\log q(X)` for :math:`X \sim p` (the "median density" of item 5)."""
    return _log_median_scaled(ce) - ce.log_unit_ball_volume


def _log_median_scaled(ce: Counterexample) -> float:
    """The same median for the scaled density log(c_d q(x)), used for exact comparisons."""
    pairs = []
    for reg in radial_regions(ce):
        mass = sum(reg.p_mass)
        if mass > 0:
            pairs.append((float(ce.log_scaled_marginal(reg.representative, "q")), mass))
    pairs.sort()
    cumulative = 0.0
    for value, mass in pairs:
        cumulative += mass
        if cumulative >= 0.5 * (1 - 1e-15):
            return value
    return pairs[-1][0]


def attack_conditions(
    ce: Counterexample,
    delta: float,
    r: np.ndarray,
    r_bar: np.ndarray,
    distance: np.ndarray,
    log_median_scaled: float | None = None,
    rtol: float = 1e-12,
) -> dict[str, np.ndarray]:
    """Items 1–5 for points of norm ``r`` attacked to norm ``r_bar`` at ``distance`` (arrays).

    ``log_median_scaled`` (computed when omitted) is the median of log(c_d q(X)), X ~ p.
    """
    r = np.asarray(r, dtype=np.float64)
    r_bar = np.asarray(r_bar, dtype=np.float64)
    if log_median_scaled is None:
        log_median_scaled = _log_median_scaled(ce)
    p_x, q_x = ce.p_posterior(r), ce.q_posterior(r)
    p_b, q_b = ce.p_posterior(r_bar), ce.q_posterior(r_bar)
    with np.errstate(invalid="ignore"):
        yp_x, yq_x = np.argmax(p_x, -1), np.argmax(q_x, -1)
        yp_b, yq_b = np.argmax(p_b, -1), np.argmax(q_b, -1)
        conf = 1.0 - delta
        item1 = (
            (yq_x == yp_x) & _at_least(p_x.max(-1), conf, rtol) & _at_least(q_x.max(-1), conf, rtol)
        )
        item2 = (yp_b == yp_x) & (yq_b != yp_b)
        item3 = _at_least(q_b.max(-1), conf, rtol) & _at_least(p_b.max(-1), conf, rtol)
        item4 = np.asarray(distance) < ce.Delta
        item5 = ce.log_scaled_marginal(r_bar, "q") >= log_median_scaled
    return {"item1": item1, "item2": item2, "item3": item3, "item4": item4, "item5": item5}


def attack_success_probability(ce: Counterexample, delta: float) -> float:
    """Exact P over (x, y) ~ p that y = 0, x is in the shell and the attack meets items 1–5."""
    log_median = _log_median_scaled(ce)
    total = 0.0
    for reg in radial_regions(ce):
        if reg.lo < 1.0 or reg.hi > 1.0 + ce.Delta or reg.p_mass[0] == 0:
            continue
        r = np.array([reg.representative])
        r_bar = attacked_radius(r, ce.Delta)
        ok = attack_conditions(ce, delta, r, r_bar, r - r_bar, log_median)
        if all(bool(v[0]) for v in ok.values()):
            total += reg.p_mass[0]
    return total


def ball_probability_bound(ce: Counterexample, radius: float | None = None) -> float:
    r"""Upper bound on :math:`\sup_c P_p(\|X - c\| \le \rho)`: :math:`\max_x p(x)\,c_d\,\rho^d` (≤ 1).

    ``radius`` defaults to :math:`\Delta` (item 6).
    """
    rho = ce.Delta if radius is None else radius
    log_max_scaled = max(
        float(ce.log_scaled_marginal(reg.representative, "p")) for reg in radial_regions(ce)
    )
    log_bound = log_max_scaled + ce.d * math.log(rho)
    return math.exp(min(log_bound, 0.0))


def tv_distance(ce: Counterexample) -> float:
    r""":math:`TV(p(x,y), q(x,y)) = \tfrac12|\lambda_1 - (1+\Delta)^{-d}|` (item 7, reading a)."""
    return 0.5 * abs(ce.lambda1 - math.exp(-ce.log_volume_ratio))


def log_density_total_variation(ce: Counterexample, which: str = "p") -> float:
    r"""log of :math:`\int\|\nabla f\|` for the marginal density f = p(x) or q(x) (item 7, reading b).

    .. math::  TV(f) = \sum_R |f(R^-) - f(R^+)|\; d\,c_d\,R^{d-1}, \qquad R \in \{1, 1+\Delta, 2, 3\}.
    """
    regions = radial_regions(ce)
    values = [float(ce.log_scaled_marginal(reg.representative, which)) for reg in regions]
    values.append(-math.inf)
    terms = []
    for i, reg in enumerate(regions):
        a, b = values[i], values[i + 1]
        if a == b:
            continue
        hi, lo = max(a, b), min(a, b)
        log_jump = hi + float(log1mexp(lo - hi)) if lo > -math.inf else hi
        log_r = math.log1p(ce.Delta) if reg.hi == 1.0 + ce.Delta else math.log(reg.hi)
        terms.append(log_jump + math.log(ce.d) + (ce.d - 1) * log_r)
    return float(np.logaddexp.reduce(terms)) if terms else -math.inf


@dataclass
class PropositionReport:
    """The outcome of :func:`check_proposition`; ``str(report)`` is a readable table."""

    eps: float
    delta: float
    construction: Counterexample
    rows: list[tuple[str, str, bool | None]] = field(default_factory=list)

    @property
    def all_hold(self) -> bool:
        """Whether every checked item holds (rows that are reported only, with None, are skipped)."""
        return all(ok for _, _, ok in self.rows if ok is not None)

    def __str__(self) -> str:
        ce = self.construction
        head = (
            f"Proposition 1 at eps={self.eps:g}, delta={self.delta:g}, Delta={ce.Delta:g}: "
            f"d={ce.d}, lambda1={ce.lambda1:.6g}, lambda2={ce.lambda2:.6g}"
        )
        width = max(len(name) for name, _, _ in self.rows)
        lines = [head, "-" * len(head)]
        for name, value, ok in self.rows:
            mark = "  info" if ok is None else ("  OK  " if ok else "  FAIL")
            lines.append(f"{mark}  {name:<{width}}  {value}")
        lines.append(f"all checked items hold: {self.all_hold}")
        return "\n".join(lines)


def check_proposition(
    ce: Counterexample, eps: float, delta: float, rtol: float = 1e-12
) -> PropositionReport:
    """Check eq. (18), the proof's five conditions and items 1–7 of Proposition 1 on ``ce``."""
    eps, delta, _ = validate_targets(eps, delta, ce.Delta)
    rep = PropositionReport(eps, delta, ce)
    add = rep.rows.append
    kl_qp, kl_pq = ce.kl_q_p_joint(), ce.kl_p_q_joint()
    add(
        (
            "(18) KL(q(x,y)||p(x,y)) < eps",
            f"{kl_qp:.6g} (conditional {ce.kl_q_p_conditional():.6g}, Lemma 2 bound {ce.lemma2_bound():.6g})",
            kl_qp < eps,
        )
    )
    add(
        (
            "(18) KL(p(x,y)||q(x,y)) < eps",
            f"{kl_pq:.6g} (conditional {ce.kl_p_q_conditional():.6g}, Lemma 3 bound {ce.lemma3_bound():.6g})",
            kl_pq < eps,
        )
    )
    interval = feasible_lambda1_interval(ce.d, eps, delta, ce.Delta)
    p0 = ce.lemma1_p_class0_in_ball()
    add(
        (
            "condition 1: lambda1/(lambda1+lambda2) >= 1-delta",
            f"{p0:.12g}",
            bool(_at_least(np.array(p0), 1 - delta, rtol)),
        )
    )
    add(
        (
            "conditions 2-5: lambda1 in the feasible interval",
            str(interval),
            interval.contains(ce.lambda1),
        )
    )
    p_attack = attack_success_probability(ce, delta)
    add(
        (
            "P(x attackable with items 1-5) > 1/3",
            f"{p_attack:.6g} (= (1-lambda1)/2 = {(1 - ce.lambda1) / 2:.6g} when Delta < 1)",
            p_attack > 1 / 3,
        )
    )
    # items at a representative shell point
    r = np.array([1.0 + 0.5 * ce.Delta])
    r_bar = attacked_radius(r, ce.Delta)
    log_median = log_median_q_density(ce)
    items = attack_conditions(ce, delta, r, r_bar, r - r_bar, _log_median_scaled(ce), rtol)
    p_x, q_x, p_b, q_b = (
        ce.p_posterior(r)[0],
        ce.q_posterior(r)[0],
        ce.p_posterior(r_bar)[0],
        ce.q_posterior(r_bar)[0],
    )
    add(
        (
            "item 1: y_q(x)=y_p(x), both confidences >= 1-delta",
            f"p(.|x)={p_x.round(12)}, q(.|x)={q_x.round(12)}",
            bool(items["item1"][0]),
        )
    )
    add(
        (
            "item 2: ground truth kept, model decision flipped",
            f"y_p(x_bar)={int(np.argmax(p_b))}, y_q(x_bar)={int(np.argmax(q_b))}",
            bool(items["item2"][0]),
        )
    )
    add(
        (
            "item 3: both confident at x_bar (>= 1-delta)",
            f"p(.|x_bar)={p_b.round(12)}, q(.|x_bar)={q_b.round(12)}",
            bool(items["item3"][0]),
        )
    )
    add(
        (
            "item 4: ||x - x_bar|| < Delta",
            f"{float((r - r_bar)[0]):.6g} for ||x||={float(r[0]):.6g}",
            bool(items["item4"][0]),
        )
    )
    log_q_bar = float(ce.log_q_marginal(r_bar)[0])
    add(
        (
            "item 5: log q(x_bar) >= log median q density",
            f"{log_q_bar:.6g} >= {log_median:.6g}",
            bool(items["item5"][0]),
        )
    )
    bound = ball_probability_bound(ce)
    add(
        (
            "item 6: sup_c P_p(B(c, Delta)) <= max p * vol(B_Delta)",
            f"{bound:.6g}" + ("" if ce.Delta < 1 else " (item 6 assumes Delta < 1)"),
            None,
        )
    )
    add(("item 7a: TV distance between p(x,y) and q(x,y)", f"{tv_distance(ce):.6g}", None))
    log_tv = log_density_total_variation(ce, "p")
    add(
        (
            "item 7b: total variation of the density p(x)",
            f"{math.exp(log_tv):.6g} (grows ~ d; see module doc)",
            None,
        )
    )
    return rep
