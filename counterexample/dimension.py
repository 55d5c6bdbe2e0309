r"""The smallest dimension of Proposition 1 and the feasible interval of :math:`\lambda_1`.

The proof of Proposition 1 (Appendix C) asks for a :math:`\lambda_1` satisfying five conditions,
with :math:`\lambda_2 = \frac{\delta}{1-\delta}\lambda_1`:

1. :math:`\frac{\lambda_1}{\lambda_1+\lambda_2} \ge 1-\delta` — holds with *equality* for this
   :math:`\lambda_2`, for every :math:`\lambda_1 > 0`;
2. :math:`\frac{1}{1+\lambda_2(1+\Delta)^d} \le \delta`
   :math:`\iff \lambda_1 \ge K^2 (1+\Delta)^{-d}`, with :math:`K = \frac{1-\delta}{\delta}`;
3. :math:`\lambda_1 \le 1 - e^{-\epsilon}`;
4. :math:`\lambda_1 > (1+\Delta)^{-d}` — implied by 2, strictly, because :math:`K > 1` for
   :math:`\delta < 1/2`;
5. :math:`\lambda_1 < \frac{\epsilon}{d\log(1+\Delta)}`.

So the feasible set is the interval :math:`[K^2(1+\Delta)^{-d},\ \min(1-e^{-\epsilon},
\frac{\epsilon}{d\log(1+\Delta)}))`, closed on the right when condition 3 binds.

**Strictness, as printed and where the paper is inconsistent.** The inequalities are taken exactly as
the proof lists them (≥, ≤, ≤, >, <). Two places disagree elsewhere in the paper: Lemma 2 assumes
:math:`\lambda_1 < 1-e^{-\epsilon}` strictly while condition 3 reads ≤ — we keep ≤, because Lemma 2's
bound is itself strict whenever condition 4 holds (see :func:`counterexample.lemmas.lemma2_bound`),
so :math:`KL < \epsilon` as claimed in (18) still follows; and item 3 of the proposition asks for
:math:`p(y|\bar x) > 1-\delta` strictly, which condition 1 (≥, attained with equality by the proof's
choice of :math:`\lambda_2`) cannot give — see :mod:`counterexample.proposition`.

**Eq. (19) drops condition 3.** The proof's final inequality keeps only conditions 2 and 5. Whenever
:math:`K^2(1+\Delta)^{-d} > 1-e^{-\epsilon}` at the eq.-(19) dimension — large :math:`\epsilon`,
:math:`\delta` not tiny — eq. (19) returns too small a d; :func:`find_dimension` uses all five
conditions, :func:`find_dimension_eq19` reproduces the paper's shortcut for comparison.

**Exact search.** Writing :math:`L = \log(1+\Delta)`, condition (2∧3) reads
:math:`dL \ge 2\log K - \log(1-e^{-\epsilon})` (an upper set of d) and condition (2∧5) reads
:math:`h(d) = dL - \log d > 2\log K - \log\epsilon + \log L`, where h decreases up to :math:`d = 1/L`
and increases after, so the feasible set is an upper set above the larger root of
:math:`t - \log t = \log(K^2/\epsilon)` (:math:`t = dL`). Closed-form estimates place the answer, and a
galloping integer search with exact checks pins it: no scan over d. Each check is made in
double-precision log-space; when its margin is within rounding error it is redone with 60 significant
digits (mpmath), so the integer returned is exact for the floating-point inputs given.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

import mpmath

from ._validation import check_dimension, check_real

__all__ = [
    "LambdaInterval",
    "feasible_lambda1_interval",
    "is_feasible",
    "find_dimension",
    "find_dimension_eq19",
    "paper_dimension_expression",
    "leading_order_dimension",
    "validate_targets",
]

_MP_DIGITS = 60
_FLOAT_INT_LIMIT = 2**1000  # beyond it float(d) overflows soon; use the exact path only
_REL_TOL = 1e-13


def validate_targets(eps: object, delta: object, Delta: object) -> tuple[float, float, float]:
    """Check (eps, delta, Delta): eps > 0, 0 < delta < 1/2, Delta > 0, all finite reals."""
    return (
        check_real("eps", eps, low=0.0),
        check_real("delta", delta, low=0.0, high=0.5),
        check_real("Delta", Delta, low=0.0),
    )


# --------------------------------------------------------------------------------------------
# Exact comparisons: double precision first, 60 digits when the margin is within rounding error.
# --------------------------------------------------------------------------------------------
class _Log:
    """The log-space quantities of the conditions, for one arithmetic backend (math or mpmath)."""

    def __init__(self, M, eps, delta, Delta):
        self.M = M
        self.L = M.log1p(Delta)
        self.log_L = M.log(self.L)
        self.two_log_K = 2 * (M.log1p(-delta) - M.log(delta))
        self.log_eps = M.log(eps)
        self.log_u3 = M.log(-M.expm1(-eps))

    def log_lower(self, d):
        """log of condition 2's bound: 2 log K - d L."""
        return self.two_log_K - d * self.L

    def log_u5(self, d):
        """log of condition 5's bound: log eps - log d - log L."""
        return self.log_eps - self.M.log(d) - self.log_L


class _Checker:
    """Signs of the condition margins at integer d for fixed (eps, delta, Delta).

    Double precision first; when a margin is within rounding error of zero (relative 1e-13 of the
    magnitudes involved, about 500 ulps), it is recomputed with 60 significant digits (mpmath).
    """

    def __init__(self, eps: float, delta: float, Delta: float, digits: int = _MP_DIGITS):
        self.args = (eps, delta, Delta)
        self.digits = digits
        self.fl = _Log(math, *self.args)
        fl = self.fl
        self._scale0 = 1.0 + abs(fl.two_log_K) + abs(fl.log_eps) + abs(fl.log_u3) + abs(fl.log_L)
        self._mp: _Log | None = None

    def sign(self, margin_fn: Callable[[_Log, object], object], d: int) -> int:
        if d < _FLOAT_INT_LIMIT:
            margin = margin_fn(self.fl, float(d))
            scale = self._scale0 + abs(float(d) * self.fl.L) + abs(math.log(d))
            if abs(margin) > _REL_TOL * scale:
                return 1 if margin > 0 else -1
        with mpmath.workdps(self.digits):
            exact = margin_fn(self.mp(), mpmath.mpf(d))
            return 0 if exact == 0 else (1 if exact > 0 else -1)

    def mp(self) -> _Log:
        """The 60-digit (or more, for astronomically large d) backend, built once."""
        if self._mp is None:
            with mpmath.workdps(self.digits):
                self._mp = _Log(mpmath.mp, *(mpmath.mpf(a) for a in self.args))
        return self._mp

    def cond3(self, d: int) -> bool:
        """Conditions 2 and 3 compatible at d."""
        return self.sign(_margin_cond3, d) >= 0

    def cond5(self, d: int) -> bool:
        """Conditions 2 and 5 compatible at d."""
        return self.sign(_margin_cond5, d) > 0

    def feasible(self, d: int) -> bool:
        return self.cond3(d) and self.cond5(d)


def _margin_cond3(lg: _Log, d):
    """>= 0 iff the lower bound of condition 2 satisfies condition 3 (closed-closed)."""
    return lg.log_u3 - lg.log_lower(d)


def _margin_cond5(lg: _Log, d):
    """> 0 iff the lower bound of condition 2 is below condition 5's open bound."""
    return lg.log_u5(d) - lg.log_lower(d)


def _margin_u3_minus_u5(lg: _Log, d):
    return lg.log_u3 - lg.log_u5(d)


@dataclass(frozen=True)
class LambdaInterval:
    r"""The feasible :math:`\lambda_1` at fixed d, in log-space (bounds may underflow as floats).

    ``log_lower`` is condition 2's bound (closed), ``log_upper`` the smaller of conditions 3 (closed)
    and 5 (open); ``upper_condition`` says which one binds. ``empty`` is decided exactly, and so are
    :meth:`contains` and :meth:`geometric_midpoint` when the interval comes from
    :func:`feasible_lambda1_interval`: at the minimal d the interval can be narrower than the rounding
    error of the float bounds (relative width below :math:`\log(1+\Delta)`, e.g. 8e-16 for
    ``eps=0.1, delta=0.01, Delta=1e-15``), so comparisons within rounding error of a bound are redone
    in high precision (mpmath), like the dimension search.
    """

    d: int
    log_lower: float
    log_upper: float
    upper_closed: bool
    upper_condition: int
    empty: bool
    _checker: _Checker | None = field(default=None, repr=False, compare=False)

    lower_closed = True

    @property
    def lower(self) -> float:
        return math.exp(self.log_lower)

    @property
    def upper(self) -> float:
        return math.exp(self.log_upper)

    def contains(self, lambda1: float) -> bool:
        """Whether ``lambda1`` satisfies the five conditions (compared in log-space, exactly)."""
        if self.empty or not lambda1 > 0:
            return False
        x = math.log(lambda1)
        ch = self._checker
        if ch is None:  # built by hand: double precision only
            return self._float_contains(x)
        if self.d < _FLOAT_INT_LIMIT:
            tol = _REL_TOL * (ch._scale0 + abs(float(self.d) * ch.fl.L) + math.log(self.d) + abs(x))
            m_lo, m_hi = x - self.log_lower, self.log_upper - x
            if abs(m_lo) > tol and abs(m_hi) > tol:
                return self._float_contains(x)
        with mpmath.workdps(ch.digits):
            mp = ch.mp()
            big_x = mpmath.log(mpmath.mpf(lambda1))
            big_d = mpmath.mpf(self.d)
            upper = mp.log_u3 if self.upper_condition == 3 else mp.log_u5(big_d)
            above = big_x >= mp.log_lower(big_d)
            below = big_x <= upper if self.upper_closed else big_x < upper
            return bool(above and below)

    def _float_contains(self, x: float) -> bool:
        above = x >= self.log_lower
        below = x <= self.log_upper if self.upper_closed else x < self.log_upper
        return above and below

    def geometric_midpoint(self) -> float:
        r""":math:`\sqrt{\text{lower}\cdot\text{upper}}`, a point well inside the interval.

        The double nearest to it, checked with :meth:`contains`; when the double-precision midpoint
        misses the interval (narrower than the rounding error of its float bounds), it is recomputed
        in high precision. Raises ``ValueError`` if the interval is empty or holds no double at all.
        Returns 0.0 when the midpoint underflows.
        """
        if self.empty:
            raise ValueError(f"the feasible lambda1 interval at d={self.d} is empty")
        mid = math.exp(0.5 * (self.log_lower + self.log_upper))
        if mid == 0.0 or self.contains(mid) or self._checker is None:
            return mid
        ch = self._checker
        with mpmath.workdps(ch.digits):
            mp = ch.mp()
            big_d = mpmath.mpf(self.d)
            lo = mp.log_lower(big_d)
            up = mp.log_u3 if self.upper_condition == 3 else mp.log_u5(big_d)
            width = float(up - lo)
            mid = float(mpmath.exp((lo + up) / 2))
        candidates = [mid]
        down = up_ = mid
        for _ in range(4):
            down, up_ = math.nextafter(down, 0.0), math.nextafter(up_, 1.0)
            candidates += [down, up_]
        for value in candidates:
            if self.contains(value):
                return value
        raise ValueError(
            f"no double-precision number lies in the feasible lambda1 interval at d={self.d}: its "
            f"relative width {width:.3g} is below float64 resolution (about 1.1e-16); use a larger d"
        )

    def __str__(self) -> str:
        if self.empty:
            return f"empty at d={self.d}"
        right = "]" if self.upper_closed else ")"
        return (
            f"[{self.lower:.6g}, {self.upper:.6g}{right}  (log: [{self.log_lower:.6g}, "
            f"{self.log_upper:.6g}{right}; upper bound from condition {self.upper_condition})"
        )


def feasible_lambda1_interval(d: int, eps: float, delta: float, Delta: float) -> LambdaInterval:
    r"""The :math:`\lambda_1` satisfying conditions 1–5 of Proposition 1's proof at dimension d.

    .. math::  \Bigl[K^2(1+\Delta)^{-d},\ \min\bigl(1-e^{-\epsilon},\
               \tfrac{\epsilon}{d\log(1+\Delta)}\bigr)\Bigr\rangle, \qquad K = \tfrac{1-\delta}{\delta}.
    """
    eps, delta, Delta = validate_targets(eps, delta, Delta)
    d = check_dimension("d", d)
    checker = _checker_for(eps, delta, Delta)
    lg = checker.fl
    # at a tie the open bound (condition 5) is the binding one
    cond3_binds = checker.sign(_margin_u3_minus_u5, d) < 0
    empty = not checker.feasible(d)
    return LambdaInterval(
        d=d,
        log_lower=lg.log_lower(float(d)),
        log_upper=lg.log_u3 if cond3_binds else lg.log_u5(float(d)),
        upper_closed=cond3_binds,
        upper_condition=3 if cond3_binds else 5,
        empty=empty,
        _checker=checker,
    )


def is_feasible(d: int, eps: float, delta: float, Delta: float) -> bool:
    """Whether some lambda1 satisfies conditions 1–5 at dimension d."""
    eps, delta, Delta = validate_targets(eps, delta, Delta)
    return _checker_for(eps, delta, Delta).feasible(check_dimension("d", d))


def _first_true(pred: Callable[[int], bool], guess: int, known_false: int) -> int:
    """Smallest n > known_false with pred(n), for pred monotone (False then True) above known_false.

    Gallops from ``guess`` (in either direction) and then bisects: O(log |answer - guess|) calls.
    """
    guess = max(guess, known_false + 1)
    if pred(guess):
        hi, step = guess, 1
        lo = hi - step
        while lo > known_false and pred(lo):
            hi, step = lo, step * 2
            lo = hi - step
        lo = max(lo, known_false)
    else:
        lo, step = guess, 1
        hi = lo + step
        while not pred(hi):
            lo, step = hi, step * 2
            hi = lo + step
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if pred(mid):
            hi = mid
        else:
            lo = mid
    return hi


def _larger_root(c: float) -> float:
    r"""Larger root :math:`t \ge 1` of :math:`t - \log t = c` (:math:`c \ge 1`), by Newton."""
    t = 1.0 + math.sqrt(2.0 * (c - 1.0)) if c < 3.0 else c + math.log(c)
    for _ in range(50):
        step = (t - math.log(t) - c) / (1.0 - 1.0 / t)
        t -= step
        if abs(step) <= 1e-15 * t:
            break
    return t


def find_dimension(eps: float, delta: float, Delta: float) -> int:
    r"""Smallest integer d for which some :math:`\lambda_1` satisfies the five conditions of
    Proposition 1's proof (with :math:`\lambda_2 = \frac{\delta}{1-\delta}\lambda_1`).

    Exact (not the :math:`\tilde O` expression, see :func:`paper_dimension_expression`), fast (closed
    form estimates plus a galloping integer search; microseconds even when d is in the billions).

    Args:
        eps: the KL budget :math:`\epsilon > 0` of eq. (18).
        delta: the confidence parameter, :math:`0 < \delta < 1/2`.
        Delta: the perturbation radius, :math:`\Delta > 0`.

    Raises:
        TypeError, ValueError: for arguments outside the valid domain (message names the argument).
    """
    eps, delta, Delta = validate_targets(eps, delta, Delta)
    checker = _checker_for(eps, delta, Delta)
    cond3, cond5 = checker.cond3, checker.cond5
    # Conditions 2 and 3 together: d L >= 2 log K - log(1 - e^-eps), an upper set of d.
    d_a = _first_true(cond3, _guess_cond3(checker), 0)
    if cond5(d_a):
        return d_a
    # Conditions 2 and 5: h(d) = dL - log d exceeds a constant; h is unimodal with minimum at 1/L,
    # and fails at d_a, so it fails on [d_a, max(d_a, floor(1/L))] and is monotone above.
    return _first_true(cond5, _guess_cond5(checker), _known_false_cond5(checker, d_a))


def _checker_for(eps: float, delta: float, Delta: float) -> _Checker:
    """A checker whose high-precision fallback resolves single integer steps of d.

    Above about 1e12, single steps of d are within double-precision rounding of d*log(1+Delta); the digits
    grow with log10(d) so that the exact path stays exact however small Delta is.
    """
    fl = _Log(math, eps, delta, Delta)
    magnitude = (abs(fl.two_log_K) + abs(fl.log_u3) + abs(fl.log_eps) + 1.0) / fl.L
    digits = _MP_DIGITS + (
        max(0, math.ceil(math.log10(magnitude))) if math.isfinite(magnitude) else 330
    )
    return _Checker(eps, delta, Delta, digits=digits)


_BIG = 2.0**52


def _guess_cond3(checker: _Checker) -> int:
    """ceil((2 log K - log(1 - e^-eps)) / L), in high precision when d is beyond 2**52."""
    fl = checker.fl
    estimate = (fl.two_log_K - fl.log_u3) / fl.L
    if estimate < _BIG:
        return math.ceil(estimate)
    with mpmath.workdps(checker.digits):
        mp = checker.mp()
        return int(mpmath.ceil((mp.two_log_K - mp.log_u3) / mp.L))


def _guess_cond5(checker: _Checker) -> int:
    r"""The larger root of :math:`dL - \log d = 2\log K - \log\epsilon + \log L`, rounded up.

    With :math:`t = dL` it reads :math:`t - \log t = c = \log(K^2/\epsilon)`, whose larger root is
    :math:`t = -W_{-1}(-e^{-c})` (Lambert W); no root when :math:`c < 1`.
    """
    fl = checker.fl
    c = fl.two_log_K - fl.log_eps
    if c <= 1.0:
        return 1
    estimate = _larger_root(c) / fl.L
    if estimate < _BIG:
        return math.ceil(estimate)
    with mpmath.workdps(checker.digits):
        mp = checker.mp()
        t = -mpmath.lambertw(-mpmath.exp(-(mp.two_log_K - mp.log_eps)), -1).real
        return int(mpmath.ceil(t / mp.L))


def _known_false_cond5(checker: _Checker, d_a: int) -> int:
    """A d >= d_a where (2∧5) fails and above which it is monotone, given that it fails at d_a."""
    inv_L = 1.0 / checker.fl.L
    if not math.isfinite(inv_L) or inv_L >= _BIG:
        with mpmath.workdps(checker.digits):
            floor_inv_L = int(mpmath.floor(1 / checker.mp().L))
    else:
        floor_inv_L = math.floor(inv_L)
    if floor_inv_L > d_a and not checker.cond5(floor_inv_L):
        return floor_inv_L
    return d_a


def find_dimension_eq19(eps: float, delta: float, Delta: float) -> int:
    r"""Smallest d satisfying the paper's final inequality (19) alone (conditions 2 and 5, not 3).

    .. math::  K^2 (1+\Delta)^{-d} < \lambda_1 < \frac{\epsilon}{d\log(1+\Delta)}.

    Kept for comparison only: it can return a d at which no :math:`\lambda_1` meets condition 3
    (:math:`\lambda_1 \le 1 - e^{-\epsilon}`), e.g. ``eps=10, delta=0.4, Delta=1`` gives 1 where
    :func:`find_dimension` gives 2. For small :math:`\Delta` the set of d satisfying (19) is not even
    an upper set: at small d its right side :math:`\epsilon/(d\log(1+\Delta))` exceeds 1, so (19)
    holds trivially (e.g. ``eps=1, delta=0.1, Delta=1e-3`` gives 1 against 6226), although no
    probability :math:`\lambda_1 \le 1` meets condition 3 there. The left inequality is strict here,
    as printed in (19).
    """
    eps, delta, Delta = validate_targets(eps, delta, Delta)
    checker = _checker_for(eps, delta, Delta)
    if checker.cond5(1):
        return 1
    return _first_true(checker.cond5, _guess_cond5(checker), _known_false_cond5(checker, 1))


def paper_dimension_expression(eps: float, delta: float, Delta: float) -> float:
    r"""The expression inside :math:`\tilde O(\cdot)` of Proposition 1, exactly as printed:

    .. math::  \frac{\log\frac{\delta}{1+\delta} + \log\frac1\delta}{\log(1+\Delta)}
               = \frac{-\log(1+\delta)}{\log(1+\Delta)} < 0.

    As printed it is garbled: its numerator simplifies to :math:`-\log(1+\delta)`, which is negative,
    and :math:`\epsilon` does not appear at all although d must grow as :math:`\epsilon \to 0`. See
    :func:`leading_order_dimension` for what the proof actually gives. ``eps`` is accepted (and
    validated) so the two can be called alike.
    """
    eps, delta, Delta = validate_targets(eps, delta, Delta)
    return (math.log(delta / (1 + delta)) + math.log(1 / delta)) / math.log1p(Delta)


def leading_order_dimension(eps: float, delta: float, Delta: float) -> float:
    r"""The leading order of the exact d, from conditions 2, 3 and 5 of the proof:

    .. math::  d \approx \frac{2\log\frac{1-\delta}{\delta} + \log\frac1\epsilon}{\log(1+\Delta)},

    up to the factor :math:`\log(d \log(1+\Delta))` that :math:`\tilde O` hides (condition 5) and for
    small :math:`\epsilon` (condition 3 has :math:`-\log(1-e^{-\epsilon}) \approx \log(1/\epsilon)`).
    This is presumably the expression Proposition 1 meant to print.
    """
    eps, delta, Delta = validate_targets(eps, delta, Delta)
    return (2 * (math.log1p(-delta) - math.log(delta)) - math.log(eps)) / math.log1p(Delta)
