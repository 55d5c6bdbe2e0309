"""The sympy derivations equal the numeric implementation."""

import math

import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from counterexample import dimension, lemmas, symbolic
from counterexample.symbolic import SYMBOLS


def test_annulus_density_is_derived_from_normalisation():
    d, c_d, Delta = SYMBOLS["d"], SYMBOLS["c_d"], SYMBOLS["Delta"]
    assert sp.simplify(symbolic.annulus_density(0, 1) - 1 / c_d) == 0
    assert (
        sp.simplify(symbolic.annulus_density(1, 1 + Delta) - 1 / (c_d * ((1 + Delta) ** d - 1)))
        == 0
    )


def test_lemma1_derivation_gives_eqs_11_and_12():
    l1, l2, d, Delta = (SYMBOLS[k] for k in ("lambda1", "lambda2", "d", "Delta"))
    p0, q0 = symbolic.lemma1_posteriors()
    assert sp.simplify(p0 - l1 / (l1 + l2)) == 0
    assert sp.simplify(q0 - 1 / (1 + l2 * (1 + Delta) ** d)) == 0


@settings(max_examples=25, deadline=None)
@given(
    d=st.integers(1, 400),
    Delta=st.floats(0.01, 2.0),
    lambda1=st.floats(1e-4, 0.99),
    c_d=st.floats(0.1, 10.0),
)
def test_lemma2_and_3_derivations_equal_numeric(d, Delta, lambda1, c_d):
    kl2 = symbolic.evaluate(symbolic.lemma2_kl(), d=d, Delta=Delta, lambda1=lambda1, c_d=c_d)
    kl3 = symbolic.evaluate(symbolic.lemma3_kl(), d=d, Delta=Delta, lambda1=lambda1, c_d=c_d)
    assert kl2 == pytest.approx(lemmas.kl_q_p_conditional(d, Delta, lambda1), rel=1e-10, abs=1e-14)
    assert kl3 == pytest.approx(lemmas.kl_p_q_conditional(d, Delta, lambda1), rel=1e-10, abs=1e-14)


def test_kl_derivations_do_not_depend_on_the_ball_volume():
    c_d = SYMBOLS["c_d"]
    assert sp.simplify(sp.diff(symbolic.lemma2_kl(), c_d)) == 0
    assert sp.simplify(sp.diff(symbolic.lemma3_kl(), c_d)) == 0


def test_condition1_holds_with_equality_at_the_proofs_lambda2():
    assert symbolic.condition1_gap() == 0


@settings(max_examples=25, deadline=None)
@given(
    d=st.integers(1, 500),
    Delta=st.floats(0.01, 2.0),
    delta=st.floats(1e-4, 0.49),
    lambda1=st.floats(1e-6, 0.99),
)
def test_condition2_algebra(d, Delta, delta, lambda1):
    threshold = symbolic.evaluate(symbolic.condition2_threshold(), d=d, Delta=Delta, delta=delta)
    K = (1 - delta) / delta
    assert threshold == pytest.approx(K**2 * (1 + Delta) ** (-d), rel=1e-10)
    # equals the lower end of the package's feasible interval
    lg = dimension._Log(math, 1.0, delta, Delta)
    assert math.log(threshold) == pytest.approx(lg.log_lower(d), rel=1e-10, abs=1e-10)
    # and q(0|x) is decreasing in lambda1, so "<= delta" means "lambda1 >= threshold"
    slope = symbolic.evaluate(
        symbolic.condition2_direction(), d=d, Delta=Delta, delta=delta, lambda1=lambda1
    )
    assert slope < 0
