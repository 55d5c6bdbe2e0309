"""Lemmas 1-3: closed forms against numerical radial integration, the bounds, Bayes' rule."""

import math

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from scipy import integrate

from counterexample import Counterexample, lemmas
from counterexample.annulus import log_unit_ball_volume

PROPS = settings(max_examples=40, deadline=None)

dims = st.integers(min_value=1, max_value=40)
Deltas = st.floats(min_value=0.01, max_value=2.0)
lams = st.floats(min_value=1e-4, max_value=0.999)


def _radial_integral_u(fn, lo, hi, d):
    r"""∫_{lo<=|x|<=hi} fn(|x|) dx = c_d ∫_{lo^d}^{hi^d} fn(u^{1/d}) du  (substitution u = r^d)."""
    c_d = math.exp(log_unit_ball_volume(d))
    value, _ = integrate.quad(
        lambda u: fn(u ** (1.0 / d)), lo**d, hi**d, epsabs=0, epsrel=1e-13, limit=200
    )
    return c_d * value


def _radial_integral_r(fn, lo, hi, d):
    r"""∫_{lo<=|x|<=hi} fn(|x|) dx = d c_d ∫ fn(r) r^{d-1} dr  (no substitution)."""
    c_d = math.exp(log_unit_ball_volume(d))
    value, _ = integrate.quad(
        lambda r: fn(r) * r ** (d - 1), lo, hi, epsabs=0, epsrel=1e-13, limit=200
    )
    return d * c_d * value


def _kl_by_integration(ce, first, second, integral):
    """KL(first(x|0) || second(x|0)) by integrating f log(f/g) over the ball and the shell."""
    log_f = getattr(ce, f"log_{first}_conditional")
    log_g = getattr(ce, f"log_{second}_conditional")

    def integrand(r):
        lf, lg = float(log_f(r, 0)), float(log_g(r, 0))
        return math.exp(lf) * (lf - lg)

    eta = 1e-12  # stay off the boundary spheres, where both pieces are defined
    return integral(integrand, 0.0, 1.0 - eta, ce.d) + integral(
        integrand, 1.0 + eta, 1.0 + ce.Delta, ce.d
    )


@PROPS
@given(d=dims, Delta=Deltas, lambda1=lams)
def test_lemma2_closed_form_equals_radial_integration(d, Delta, lambda1):
    ce = Counterexample(d, Delta, lambda1, lambda1 / 3)
    closed = ce.kl_q_p_conditional()
    numeric = _kl_by_integration(ce, "q", "p", _radial_integral_u)
    assert closed == pytest.approx(numeric, rel=1e-8, abs=1e-12)


@PROPS
@given(d=dims, Delta=Deltas, lambda1=lams)
def test_lemma3_closed_form_equals_radial_integration(d, Delta, lambda1):
    ce = Counterexample(d, Delta, lambda1, lambda1 / 3)
    closed = ce.kl_p_q_conditional()
    numeric = _kl_by_integration(ce, "p", "q", _radial_integral_u)
    assert closed == pytest.approx(numeric, rel=1e-8, abs=1e-12)


@pytest.mark.parametrize(
    "d, Delta, lambda1", [(1, 0.5, 0.3), (2, 0.2, 0.05), (5, 1.0, 0.5), (12, 0.1, 0.2)]
)
def test_kls_equal_integration_in_r_without_substitution(d, Delta, lambda1):
    ce = Counterexample(d, Delta, lambda1, 0.01)
    assert ce.kl_q_p_conditional() == pytest.approx(
        _kl_by_integration(ce, "q", "p", _radial_integral_r), rel=1e-8
    )
    assert ce.kl_p_q_conditional() == pytest.approx(
        _kl_by_integration(ce, "p", "q", _radial_integral_r), rel=1e-8
    )


@PROPS
@given(d=dims, Delta=Deltas, lambda1=lams, lambda2=lams)
def test_joint_kls_by_chain_rule_over_both_classes(d, Delta, lambda1, lambda2):
    """KL of the joints = sum over y of q(y) KL(q(x|y)||p(x|y)), integrated for both classes."""
    ce = Counterexample(d, Delta, lambda1, lambda2)
    total_qp = total_pq = 0.0
    for y in (0, 1):
        for first, second in (("q", "p"), ("p", "q")):
            log_f = getattr(ce, f"log_{first}_joint")
            log_g = getattr(ce, f"log_{second}_joint")

            def integrand(r, log_f=log_f, log_g=log_g, y=y):
                lf, lg = float(log_f(r, y)), float(log_g(r, y))
                return 0.0 if lf == -math.inf else math.exp(lf) * (lf - lg)

            pieces = [(0, 1), (1, 1 + Delta)] if y == 0 else [(0, 1), (2, 3)]
            value = sum(_radial_integral_u(integrand, a + 1e-12, b - 1e-12, d) for a, b in pieces)
            if first == "q":
                total_qp += value
            else:
                total_pq += value
    assert ce.kl_q_p_joint() == pytest.approx(total_qp, rel=1e-8, abs=1e-12)
    assert ce.kl_p_q_joint() == pytest.approx(total_pq, rel=1e-8, abs=1e-12)
    assert ce.kl_q_p_joint() == pytest.approx(ce.kl_q_p_conditional() / 2, rel=1e-15)


@PROPS
@given(d=dims, Delta=Deltas, lambda1=lams, lambda2=lams)
def test_densities_are_normalised(d, Delta, lambda1, lambda2):
    ce = Counterexample(d, Delta, lambda1, lambda2)
    for which in ("p", "q"):
        for y in (0, 1):
            log_f = getattr(ce, f"log_{which}_conditional")
            mass = sum(
                _radial_integral_u(
                    lambda r, y=y, log_f=log_f: math.exp(float(log_f(r, y))), a, b, d
                )
                for a, b in [(0, 1 - 1e-12), (1 + 1e-12, 1 + Delta), (2, 3)]
                if not (y == 0 and a == 2) and not (y == 1 and a > 0.5 and a < 2)
            )
            assert mass == pytest.approx(1.0, rel=1e-9), (which, y)


def _log_uniform_between(log_lo, log_hi, t):
    """A point at fraction t of the log-interval (log_lo, log_hi)."""
    return math.exp(log_lo + t * (log_hi - log_lo))


fractions = st.floats(min_value=0.0, max_value=1.0, exclude_min=True, exclude_max=True)


@PROPS
@given(d=st.integers(1, 10**9), Delta=st.floats(1e-6, 3.0), t=fractions, eps=st.floats(1e-6, 10.0))
def test_lemma2_bound_holds_under_its_hypotheses(d, Delta, t, eps):
    log_lo = -lemmas.log_volume_ratio(d, Delta)
    log_hi = math.log(-math.expm1(-eps))
    assume(log_lo < log_hi)
    lambda1 = _log_uniform_between(log_lo, log_hi, t)
    assume(lemmas.lemma2_hypotheses_hold(d, Delta, lambda1, eps))
    kl = lemmas.kl_q_p_conditional(d, Delta, lambda1)
    assert 0.0 <= kl <= lemmas.lemma2_bound(lambda1) * (1 + 1e-12)
    assert kl < eps
    assert lemmas.kl_q_p_joint(d, Delta, lambda1) < eps


@PROPS
@given(d=st.integers(1, 10**9), Delta=st.floats(1e-6, 3.0), t=fractions, eps=st.floats(1e-6, 10.0))
def test_lemma3_bound_holds_under_its_hypotheses(d, Delta, t, eps):
    log_lo = -lemmas.log_volume_ratio(d, Delta)
    log_hi = min(0.0, math.log(eps) - math.log(lemmas.log_volume_ratio(d, Delta)))
    assume(log_lo < log_hi)
    lambda1 = _log_uniform_between(log_lo, log_hi, t)
    assume(lemmas.lemma3_hypotheses_hold(d, Delta, lambda1, eps))
    kl = lemmas.kl_p_q_conditional(d, Delta, lambda1)
    assert 0.0 <= kl <= lemmas.lemma3_bound(d, Delta, lambda1) * (1 + 1e-12)
    assert kl < eps


def test_lemma2_bound_can_fail_without_hypothesis():
    """The hypothesis lambda1 > (1+Delta)^-d matters: below it the bound is violated."""
    d, Delta = 3, 0.1
    lambda1 = 0.2 * math.exp(-lemmas.log_volume_ratio(d, Delta))
    assert lemmas.kl_q_p_conditional(d, Delta, lambda1) > lemmas.lemma2_bound(lambda1)


@pytest.mark.parametrize("d", [10**6, 10**9, 10**12])
def test_kls_at_huge_dimension_are_finite_and_match_their_limits(d):
    """(1+Delta)^-d underflows; the exact KLs tend to Bernoulli limits computed independently."""
    Delta, lambda1 = 1e-3, 1e-4
    log_v = d * math.log1p(Delta)
    assert lemmas.kl_q_p_conditional(d, Delta, lambda1) == pytest.approx(
        -math.log1p(-lambda1), rel=1e-12
    )
    limit = lambda1 * (math.log(lambda1) + log_v) + (1 - lambda1) * math.log1p(-lambda1)
    assert lemmas.kl_p_q_conditional(d, Delta, lambda1) == pytest.approx(limit, rel=1e-12)


@PROPS
@given(
    d=st.integers(2, 60), Delta=Deltas, lambda1=lams, lambda2=lams, seed=st.integers(0, 2**32 - 1)
)
def test_posteriors_equal_bayes_rule_at_sampled_points(d, Delta, lambda1, lambda2, seed):
    from counterexample import sample_points

    ce = Counterexample(d, Delta, lambda1, lambda2)
    rng = np.random.default_rng(seed)
    for which in ("p", "q"):
        x, _ = sample_points(ce, 50, which, None, rng)
        post = getattr(ce, f"{which}_posterior_at")(x)
        f0 = np.exp(getattr(ce, f"log_{which}_conditional_at")(x, 0))
        f1 = np.exp(getattr(ce, f"log_{which}_conditional_at")(x, 1))
        with np.errstate(invalid="ignore", divide="ignore"):
            bayes0 = f0 / (f0 + f1)  # equal priors 1/2 cancel
        ok = np.isfinite(bayes0)
        np.testing.assert_allclose(post[ok, 0], bayes0[ok], rtol=1e-12, atol=1e-300)
        np.testing.assert_allclose(post.sum(-1)[ok], 1.0, rtol=1e-14)


@PROPS
@given(d=st.integers(1, 10**9), Delta=st.floats(1e-6, 3.0), lambda1=lams, lambda2=lams)
def test_lemma1_closed_forms_inside_the_unit_ball(d, Delta, lambda1, lambda2):
    ce = Counterexample(d, Delta, lambda1, lambda2)
    r = np.array([0.0, 0.3, 0.999])
    assert ce.p_posterior(r)[:, 0] == pytest.approx(lambda1 / (lambda1 + lambda2), rel=1e-13)
    # eq. (12) evaluated independently with mpmath at 50 digits
    import mpmath

    with mpmath.workdps(50):
        expected = 1 / (1 + mpmath.mpf(lambda2) * mpmath.power(1 + mpmath.mpf(Delta), d))
    assert ce.q_posterior(r)[:, 0] == pytest.approx(float(expected), rel=1e-9, abs=1e-300)
    assert ce.lemma1_q_class0_in_ball() == pytest.approx(float(expected), rel=1e-9, abs=1e-300)


def test_posteriors_are_nan_where_no_class_has_mass():
    ce = Counterexample(5, 0.5, 0.1, 0.1)
    post = ce.q_posterior(np.array([1.7, 3.5]))
    assert np.isnan(post).all()
