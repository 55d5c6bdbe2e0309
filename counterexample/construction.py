r"""The annulus-mixture counterexample of Section 3 (eqs. 3–4) and Appendix C (eqs. 7–10).

Data distribution p and model q, with :math:`p(y) = q(y) = 1/2`:

.. math::
    p(x|0) &= \lambda_1 U(0,1) + (1-\lambda_1)\,U(1, 1+\Delta) \\
    p(x|1) &= \lambda_2 U(0,1) + (1-\lambda_2)\,U(2, 3) \\
    q(x|0) &= U(0, 1+\Delta) \\
    q(x|1) &= p(x|1)

All densities are radial, so every method takes the norm ``r`` of the points (any array shape);
the ``*_at`` variants take the points themselves, shaped ``(..., d)``. Values are natural logs,
computed in float64 without ever forming :math:`(1+\Delta)^d`, so d = 1e9 is fine. Where both class
densities vanish (:math:`1+\Delta < \|x\| < 2` or :math:`\|x\| > 3`) posteriors are NaN.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from . import lemmas
from ._validation import check_dimension, check_real
from .annulus import log_radial_volume, log_unit_ball_volume
from .dimension import feasible_lambda1_interval, find_dimension, validate_targets

__all__ = ["Counterexample"]

_LOG_HALF = math.log(0.5)


class Component(NamedTuple):
    """One uniform-annulus component ``weight * U(a, b)``; ``log_b`` is log(b) computed exactly."""

    weight: float
    a: float
    b: float
    log_b: float


def _log(x: float) -> float:
    return math.log(x) if x > 0 else -math.inf


@dataclass(frozen=True)
class Counterexample:
    r"""The construction at fixed :math:`(d, \Delta, \lambda_1, \lambda_2)`.

    Build it directly, or with :meth:`from_targets` from the proposition's :math:`(\epsilon, \delta,
    \Delta)`: minimal d from :func:`~counterexample.find_dimension`, :math:`\lambda_1` at the
    geometric midpoint of the feasible interval and :math:`\lambda_2 = \frac{\delta}{1-\delta}\lambda_1`.
    """

    d: int
    Delta: float
    lambda1: float
    lambda2: float

    def __post_init__(self) -> None:
        object.__setattr__(self, "d", check_dimension("d", self.d))
        object.__setattr__(self, "Delta", check_real("Delta", self.Delta, low=0.0))
        for name in ("lambda1", "lambda2"):
            value = check_real(
                name,
                getattr(self, name),
                low=0.0,
                high=1.0,
                low_inclusive=True,
                high_inclusive=True,
            )
            object.__setattr__(self, name, value)

    # ---------------------------------------------------------------- construction from targets
    @classmethod
    def from_targets(
        cls,
        eps: float,
        delta: float,
        Delta: float,
        d: int | None = None,
        lambda1: float | None = None,
    ) -> Counterexample:
        r"""The construction of Proposition 1 for :math:`(\epsilon, \delta, \Delta)`.

        ``d`` defaults to the smallest feasible dimension; ``lambda1`` to the geometric midpoint of the
        feasible interval at that d. Raises ``ValueError`` if the given d or lambda1 is infeasible.
        """
        eps, delta, Delta = validate_targets(eps, delta, Delta)
        d = find_dimension(eps, delta, Delta) if d is None else check_dimension("d", d)
        interval = feasible_lambda1_interval(d, eps, delta, Delta)
        if interval.empty:
            raise ValueError(
                f"no lambda1 satisfies Proposition 1's conditions at d={d} for eps={eps}, "
                f"delta={delta}, Delta={Delta}; the smallest feasible d is "
                f"{find_dimension(eps, delta, Delta)}"
            )
        if lambda1 is None:
            lambda1 = interval.geometric_midpoint()
            if lambda1 == 0.0:
                raise ValueError(
                    f"the feasible lambda1 at d={d} (log lambda1 in [{interval.log_lower:.6g}, "
                    f"{interval.log_upper:.6g}]) underflows double precision; use larger eps/Delta"
                )
        elif not interval.contains(check_real("lambda1", lambda1, low=0.0, high=1.0)):
            raise ValueError(f"lambda1={lambda1!r} is outside the feasible interval {interval}")
        return cls(d=d, Delta=Delta, lambda1=lambda1, lambda2=delta / (1.0 - delta) * lambda1)

    # ---------------------------------------------------------------- basic quantities
    @property
    def log_volume_ratio(self) -> float:
        r""":math:`\log V = d \log(1+\Delta)`."""
        return lemmas.log_volume_ratio(self.d, self.Delta)

    @property
    def log_unit_ball_volume(self) -> float:
        r""":math:`\log c_d`."""
        return log_unit_ball_volume(self.d)

    def norms(self, x: np.ndarray) -> np.ndarray:
        """Euclidean norms of points ``x`` shaped ``(..., d)``, in float64."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 0 or x.shape[-1] != self.d:
            raise ValueError(f"points must have shape (..., d={self.d}), got shape {x.shape}")
        return np.linalg.norm(x, axis=-1)

    # ---------------------------------------------------------------- densities by norm
    def _components(self, which: str, y: int) -> list[Component]:
        """The uniform-annulus mixture components of p or q given class y."""
        if y not in (0, 1):
            raise ValueError(f"y must be 0 or 1, got {y!r}")
        if y == 1:
            return [
                Component(self.lambda2, 0.0, 1.0, 0.0),
                Component(1.0 - self.lambda2, 2.0, 3.0, math.log(3.0)),
            ]
        outer = 1.0 + self.Delta
        log_outer = math.log1p(self.Delta)  # exact even where fl(1 + Delta) is not
        if which == "q":
            return [Component(1.0, 0.0, outer, log_outer)]
        return [
            Component(self.lambda1, 0.0, 1.0, 0.0),
            Component(1.0 - self.lambda1, 1.0, outer, log_outer),
        ]

    def _log_scaled_mixture(self, r: np.ndarray, which: str, y: int) -> np.ndarray:
        r"""log of :math:`c_d\,f(x|y)`: the density with respect to the measure under which the unit
        ball has volume 1. Dropping the huge common :math:`\log c_d` (about :math:`-\tfrac d2\log d`)
        keeps posteriors accurate to rounding at any d."""
        r = np.asarray(r, dtype=np.float64)
        out = np.full(r.shape, -np.inf)
        for w, a, b, log_b in self._components(which, y):
            if w > 0:
                inside = (r >= a) & (r <= b)
                term = np.where(
                    inside, _log(w) - log_radial_volume(a, b, self.d, log_b=log_b), -np.inf
                )
                out = np.logaddexp(out, term)
        return out

    def log_scaled_conditional(self, r: np.ndarray, which: str, y: int) -> np.ndarray:
        r""":math:`\log(c_d\, f(x|y))` for f = p or q (``which``): the log-density minus
        :math:`\log c_d`. Differences of these (log-ratios, posteriors) keep full precision at any d,
        whereas :math:`\log c_d \approx -\tfrac d2 \log d` swamps them in the plain log-densities."""
        if which not in ("p", "q"):
            raise ValueError(f"which must be 'p' or 'q', got {which!r}")
        return self._log_scaled_mixture(r, which, y)

    def log_scaled_marginal(self, r: np.ndarray, which: str) -> np.ndarray:
        r""":math:`\log(c_d\, f(x))` for the marginal f = p(x) or q(x), see :meth:`log_scaled_conditional`."""
        return _LOG_HALF + np.logaddexp(
            self.log_scaled_conditional(r, which, 0), self.log_scaled_conditional(r, which, 1)
        )

    def _log_mixture(self, r: np.ndarray, which: str, y: int) -> np.ndarray:
        return self._log_scaled_mixture(r, which, y) - self.log_unit_ball_volume

    def log_p_conditional(self, r: np.ndarray, y: int) -> np.ndarray:
        r""":math:`\log p(x|y)` at points of norm ``r`` (eqs. 7–8)."""
        return self._log_mixture(r, "p", y)

    def log_q_conditional(self, r: np.ndarray, y: int) -> np.ndarray:
        r""":math:`\log q(x|y)` at points of norm ``r`` (eqs. 9–10)."""
        return self._log_mixture(r, "q", y)

    def log_p_joint(self, r: np.ndarray, y: int) -> np.ndarray:
        r""":math:`\log p(x, y) = \log\tfrac12 + \log p(x|y)`."""
        return _LOG_HALF + self.log_p_conditional(r, y)

    def log_q_joint(self, r: np.ndarray, y: int) -> np.ndarray:
        r""":math:`\log q(x, y) = \log\tfrac12 + \log q(x|y)`."""
        return _LOG_HALF + self.log_q_conditional(r, y)

    def log_p_marginal(self, r: np.ndarray) -> np.ndarray:
        r""":math:`\log p(x) = \log\sum_y p(x, y)`."""
        return np.logaddexp(self.log_p_joint(r, 0), self.log_p_joint(r, 1))

    def log_q_marginal(self, r: np.ndarray) -> np.ndarray:
        r""":math:`\log q(x) = \log\sum_y q(x, y)`; the detector of item 5 thresholds this."""
        return np.logaddexp(self.log_q_joint(r, 0), self.log_q_joint(r, 1))

    # ---------------------------------------------------------------- posteriors (Lemma 1)
    @staticmethod
    def _posterior(log_joint0: np.ndarray, log_joint1: np.ndarray) -> np.ndarray:
        """Bayes' rule in log-space; shape (..., 2); NaN where both joints vanish."""
        logs = np.stack([log_joint0, log_joint1], axis=-1)
        m = np.max(logs, axis=-1, keepdims=True)
        with np.errstate(invalid="ignore"):
            w = np.exp(logs - m)
            return w / w.sum(axis=-1, keepdims=True)

    def p_posterior(self, r: np.ndarray) -> np.ndarray:
        r""":math:`(p(0|x), p(1|x))` at norm ``r``, shape ``r.shape + (2,)``; eq. (11) inside the ball."""
        return self._posterior(
            self._log_scaled_mixture(r, "p", 0), self._log_scaled_mixture(r, "p", 1)
        )

    def q_posterior(self, r: np.ndarray) -> np.ndarray:
        r""":math:`(q(0|x), q(1|x))` at norm ``r``, shape ``r.shape + (2,)``; eq. (12) inside the ball."""
        return self._posterior(
            self._log_scaled_mixture(r, "q", 0), self._log_scaled_mixture(r, "q", 1)
        )

    # ---------------------------------------------------------------- the same, at points x
    def log_p_conditional_at(self, x: np.ndarray, y: int) -> np.ndarray:
        """:meth:`log_p_conditional` at points ``x`` shaped ``(..., d)``."""
        return self.log_p_conditional(self.norms(x), y)

    def log_q_conditional_at(self, x: np.ndarray, y: int) -> np.ndarray:
        """:meth:`log_q_conditional` at points ``x`` shaped ``(..., d)``."""
        return self.log_q_conditional(self.norms(x), y)

    def log_p_joint_at(self, x: np.ndarray, y: int) -> np.ndarray:
        """:meth:`log_p_joint` at points ``x`` shaped ``(..., d)``."""
        return self.log_p_joint(self.norms(x), y)

    def log_q_joint_at(self, x: np.ndarray, y: int) -> np.ndarray:
        """:meth:`log_q_joint` at points ``x`` shaped ``(..., d)``."""
        return self.log_q_joint(self.norms(x), y)

    def p_posterior_at(self, x: np.ndarray) -> np.ndarray:
        """:meth:`p_posterior` at points ``x`` shaped ``(..., d)``."""
        return self.p_posterior(self.norms(x))

    def q_posterior_at(self, x: np.ndarray) -> np.ndarray:
        """:meth:`q_posterior` at points ``x`` shaped ``(..., d)``."""
        return self.q_posterior(self.norms(x))

    # ---------------------------------------------------------------- Lemmas 1–3 in closed form
    def lemma1_p_class0_in_ball(self) -> float:
        r"""Eq. (11): :math:`p(0|x) = \lambda_1/(\lambda_1+\lambda_2)` for :math:`\|x\| < 1`."""
        return lemmas.lemma1_p_class0_in_ball(self.lambda1, self.lambda2)

    def lemma1_q_class0_in_ball(self) -> float:
        r"""Eq. (12): :math:`q(0|x) = 1/(1+\lambda_2(1+\Delta)^d)` for :math:`\|x\| < 1`."""
        return lemmas.lemma1_q_class0_in_ball(self.d, self.Delta, self.lambda2)

    def kl_q_p_conditional(self) -> float:
        r"""Lemma 2: :math:`KL(q(x|0)\|p(x|0))`, exact."""
        return lemmas.kl_q_p_conditional(self.d, self.Delta, self.lambda1)

    def kl_p_q_conditional(self) -> float:
        r"""Lemma 3: :math:`KL(p(x|0)\|q(x|0))`, exact."""
        return lemmas.kl_p_q_conditional(self.d, self.Delta, self.lambda1)

    def kl_q_p_joint(self) -> float:
        r""":math:`KL(q(x,y)\|p(x,y))`, exact: half the conditional one (see :mod:`.lemmas`)."""
        return lemmas.kl_q_p_joint(self.d, self.Delta, self.lambda1)

    def kl_p_q_joint(self) -> float:
        r""":math:`KL(p(x,y)\|q(x,y))`, exact: half the conditional one (see :mod:`.lemmas`)."""
        return lemmas.kl_p_q_joint(self.d, self.Delta, self.lambda1)

    def lemma2_bound(self) -> float:
        r""":math:`\log\frac{1}{1-\lambda_1}`, Lemma 2's bound on the conditional :math:`KL(q\|p)`."""
        return lemmas.lemma2_bound(self.lambda1)

    def lemma3_bound(self) -> float:
        r""":math:`\lambda_1 d\log(1+\Delta)`, Lemma 3's bound on the conditional :math:`KL(p\|q)`."""
        return lemmas.lemma3_bound(self.d, self.Delta, self.lambda1)

    def kl_summary(self) -> dict[str, float]:
        """Both KLs, conditional and joint, with the lemma bounds beside them."""
        return {
            "KL(q(x|0)||p(x|0))": self.kl_q_p_conditional(),
            "KL(q(x,y)||p(x,y))": self.kl_q_p_joint(),
            "Lemma 2 bound log(1/(1-lambda1))": self.lemma2_bound(),
            "KL(p(x|0)||q(x|0))": self.kl_p_q_conditional(),
            "KL(p(x,y)||q(x,y))": self.kl_p_q_joint(),
            "Lemma 3 bound lambda1*d*log(1+Delta)": self.lemma3_bound(),
        }
