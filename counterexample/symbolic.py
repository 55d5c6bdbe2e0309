r"""Symbolic derivations (sympy) of Lemma 1's posteriors, Lemma 2/3's closed forms and condition 2.

Every expression is *derived* from the densities by radial integration — not typed in — so the test
suite can compare the derivation with the numeric implementation in :mod:`counterexample.lemmas`:

* :func:`annulus_density` solves :math:`\int_a^b k\, d\,c_d\, r^{d-1}\,dr = 1` for the constant
  density k of :math:`U(a, b)` (the volume element of radial shells is :math:`d\,c_d\,r^{d-1}\,dr`);
* :func:`lemma1_posteriors` applies Bayes' rule inside the unit ball (eqs. 11–12);
* :func:`lemma2_kl` and :func:`lemma3_kl` integrate :math:`f\log(f/g)` over the ball and the shell
  (eqs. 13–17);
* :func:`condition2_threshold` solves condition 2 of the proof for :math:`\lambda_1` with
  :math:`\lambda_2 = \frac{\delta}{1-\delta}\lambda_1`, and :func:`condition2_direction` shows that
  :math:`q(0|x)` decreases in :math:`\lambda_1`, so "≤ δ" is "λ1 ≥ threshold".
"""

from __future__ import annotations

from functools import cache

import sympy as sp

__all__ = [
    "SYMBOLS",
    "annulus_density",
    "lemma1_posteriors",
    "lemma2_kl",
    "lemma3_kl",
    "condition1_gap",
    "condition2_threshold",
    "condition2_direction",
    "evaluate",
]

d, Delta, lambda1, lambda2, delta, r, c_d = sp.symbols(
    "d Delta lambda1 lambda2 delta r c_d", positive=True
)
SYMBOLS = {
    "d": d,
    "Delta": Delta,
    "lambda1": lambda1,
    "lambda2": lambda2,
    "delta": delta,
    "c_d": c_d,
}


def _shell_integral(integrand_constant: sp.Expr, a: sp.Expr, b: sp.Expr) -> sp.Expr:
    """∫_a^b C d c_d r^(d-1) dr for a density-level constant C (radial integration)."""
    return sp.simplify(sp.integrate(integrand_constant * d * c_d * r ** (d - 1), (r, a, b)))


@cache
def annulus_density(a: sp.Expr, b: sp.Expr) -> sp.Expr:
    r"""The constant k with :math:`\int_{R^d(a,b)} k\,dx = 1`, i.e. :math:`1/(c_d(b^d - a^d))`."""
    k = sp.Symbol("k", positive=True)
    (solution,) = sp.solve(sp.Eq(_shell_integral(k, a, b), 1), k)
    return sp.simplify(solution)


def _densities() -> dict[str, sp.Expr]:
    """Class-0 densities on the ball and the shell, and the class-1 density on the ball."""
    ball = annulus_density(sp.Integer(0), sp.Integer(1))
    shell = annulus_density(sp.Integer(1), 1 + Delta)
    big_ball = annulus_density(sp.Integer(0), 1 + Delta)
    return {
        "p0_ball": lambda1 * ball,
        "p0_shell": (1 - lambda1) * shell,
        "q0_ball": big_ball,
        "q0_shell": big_ball,
        "p1_ball": lambda2 * ball,
    }


@cache
def lemma1_posteriors() -> tuple[sp.Expr, sp.Expr]:
    r"""Bayes' rule inside the unit ball: :math:`(p(0|x), q(0|x))`, eqs. (11) and (12)."""
    f = _densities()
    p0 = sp.simplify(f["p0_ball"] / (f["p0_ball"] + f["p1_ball"]))
    q0 = sp.simplify(f["q0_ball"] / (f["q0_ball"] + f["p1_ball"]))
    return p0, q0


def _kl(first: dict[str, sp.Expr], second: dict[str, sp.Expr]) -> sp.Expr:
    ball = _shell_integral(first["ball"] * sp.log(first["ball"] / second["ball"]), 0, 1)
    shell = _shell_integral(first["shell"] * sp.log(first["shell"] / second["shell"]), 1, 1 + Delta)
    return ball + shell


@cache
def lemma2_kl() -> sp.Expr:
    r""":math:`KL(q(x|0)\|p(x|0))` by radial integration (eqs. 13–14)."""
    f = _densities()
    return _kl(
        {"ball": f["q0_ball"], "shell": f["q0_shell"]},
        {"ball": f["p0_ball"], "shell": f["p0_shell"]},
    )


@cache
def lemma3_kl() -> sp.Expr:
    r""":math:`KL(p(x|0)\|q(x|0))` by radial integration (eqs. 16–17)."""
    f = _densities()
    return _kl(
        {"ball": f["p0_ball"], "shell": f["p0_shell"]},
        {"ball": f["q0_ball"], "shell": f["q0_shell"]},
    )


def _lambda2_choice() -> sp.Expr:
    return delta / (1 - delta) * lambda1


@cache
def condition1_gap() -> sp.Expr:
    r""":math:`\frac{\lambda_1}{\lambda_1+\lambda_2} - (1-\delta)` at the proof's :math:`\lambda_2`: 0."""
    p0, _ = lemma1_posteriors()
    return sp.simplify(p0.subs(lambda2, _lambda2_choice()) - (1 - delta))


@cache
def condition2_threshold() -> sp.Expr:
    r"""Solve :math:`q(0|x) = \delta` for :math:`\lambda_1`: :math:`\left(\frac{1-\delta}{\delta}\right)^2(1+\Delta)^{-d}`."""
    _, q0 = lemma1_posteriors()
    (solution,) = sp.solve(sp.Eq(q0.subs(lambda2, _lambda2_choice()), delta), lambda1)
    return sp.simplify(solution)


@cache
def condition2_direction() -> sp.Expr:
    r""":math:`\partial q(0|x) / \partial\lambda_1` at the proof's :math:`\lambda_2` (negative)."""
    _, q0 = lemma1_posteriors()
    return sp.simplify(sp.diff(q0.subs(lambda2, _lambda2_choice()), lambda1))


def evaluate(expr: sp.Expr, digits: int = 30, **values: float) -> float:
    """Evaluate an expression at the given symbol values (by name) with ``digits`` significant digits."""
    subs = {
        SYMBOLS[name]: sp.Float(repr(float(v)), digits) if name != "d" else sp.Integer(v)
        for name, v in values.items()
    }
    return float(sp.N(expr.subs(subs), digits))
