"""Proposition 1's items checked by the report, against independent computations."""

import math

import numpy as np
import pytest
from scipy import integrate

from counterexample import Counterexample, check_proposition, sample_norms
from counterexample.annulus import log_unit_ball_volume
from counterexample.proposition import (
    attack_success_probability,
    ball_probability_bound,
    log_density_total_variation,
    log_median_q_density,
    tv_distance,
)

SMALL_EPS_CASES = [(0.1, 0.01, 0.1), (0.05, 0.001, 0.5), (0.2, 0.1, 0.9), (1e-3, 1e-5, 1e-4)]


@pytest.mark.parametrize("eps, delta, Delta", SMALL_EPS_CASES, ids=str)
def test_report_holds_for_small_eps(eps, delta, Delta):
    ce = Counterexample.from_targets(eps, delta, Delta)
    report = check_proposition(ce, eps, delta)
    assert report.all_hold, str(report)
    text = str(report)
    assert "item 5" in text and "item 7b" in text and str(ce.d) in text


@pytest.mark.parametrize("eps, delta, Delta", SMALL_EPS_CASES, ids=str)
def test_attack_probability_is_half_the_shell_mass_for_Delta_below_one(eps, delta, Delta):
    ce = Counterexample.from_targets(eps, delta, Delta)
    assert attack_success_probability(ce, delta) == pytest.approx((1 - ce.lambda1) / 2, rel=1e-12)


def test_one_third_claim_fails_at_the_minimal_dimension_for_large_eps():
    """With eps large, condition 3 lets lambda1 be near 1, so (1 - lambda1)/2 < 1/3."""
    ce = Counterexample.from_targets(10.0, 0.4, 0.5)
    assert ce.lambda1 > 1 / 3
    report = check_proposition(ce, 10.0, 0.4)
    assert not report.all_hold
    failing = [name for name, _, ok in report.rows if ok is False]
    assert failing == ["P(x attackable with items 1-5) > 1/3"]


def test_median_density_matches_sampled_median():
    ce = Counterexample(8, 0.4, 0.3, 0.05)
    r, _ = sample_norms(ce, 200_001, "p", None, rng=0)
    log_q = ce.log_q_marginal(r)
    assert np.median(log_q) == pytest.approx(log_median_q_density(ce), rel=1e-12)


def test_tv_distance_by_integration():
    ce = Counterexample(5, 0.3, 0.25, 0.1)
    c_d = math.exp(log_unit_ball_volume(5))

    def abs_diff(r, y):
        return abs(math.exp(float(ce.log_p_joint(r, y))) - math.exp(float(ce.log_q_joint(r, y))))

    total = 0.0
    for y in (0, 1):
        for a, b in [(0, 1 - 1e-12), (1 + 1e-12, 1.3), (2, 3)]:
            val, _ = integrate.quad(
                lambda r, y=y: abs_diff(r, y) * 5 * c_d * r**4, a, b, epsrel=1e-12
            )
            total += val
    assert tv_distance(ce) == pytest.approx(0.5 * total, rel=1e-9)


def test_ball_probability_bound_is_a_bound_and_decays_with_d():
    ce = Counterexample(6, 0.5, 0.3, 0.05)
    # a ball of radius Delta centred at the origin: its exact p-mass must not exceed the bound
    exact = 0.5 * (0.3 + 0.05) * 0.5**6
    assert exact <= ball_probability_bound(ce) * (1 + 1e-12)
    bounds = [ball_probability_bound(Counterexample(d, 0.5, 0.3, 0.05)) for d in (10, 50, 200)]
    assert bounds[0] > bounds[1] > bounds[2]


def test_density_total_variation_grows_linearly_in_d():
    """Reading (b) of item 7: the jumps at 1+Delta and 3 give about d/2 (1-l1)/(1+D) + d/6."""
    values = []
    for d in (1000, 2000, 4000):
        ce = Counterexample(d, 0.5, 0.01, 0.001)
        values.append(math.exp(log_density_total_variation(ce, "p")))
        expected = d / 2 * (1 - 0.01) / 1.5 + d / 2 * (1 - 0.001) / 3 + d / 2 * (0.011)
        assert values[-1] == pytest.approx(expected, rel=1e-3)
    assert values[1] / values[0] == pytest.approx(2, rel=1e-3)


def test_density_total_variation_in_one_dimension_by_hand():
    """d = 1: p(x) is piecewise constant on the line; TV = sum of jumps at ±R (2 points each)."""
    ce = Counterexample(1, 0.5, 0.4, 0.2)
    # densities on |x| in (0,1), (1,1.5), (2,3), with c_1 = 2 (the interval [-R, R] has length 2R)
    ball = 0.5 * (0.4 / 2 + 0.2 / 2)
    shell = 0.5 * 0.6 / (2 * 0.5)
    ann = 0.5 * 0.8 / (2 * 1.0)
    jumps = abs(ball - shell) + abs(shell - 0) + abs(0 - ann) + abs(ann - 0)
    assert math.exp(log_density_total_variation(ce, "p")) == pytest.approx(2 * jumps, rel=1e-12)


def test_tiny_Delta_keeps_posteriors_exact_at_the_minimal_dimension():
    """fl(1 + 1e-8) is off by ~1e-17; d log(fl(1+Delta)) would be off by ~1e-7 at d ~ 1e9."""
    ce = Counterexample.from_targets(0.1, 0.01, 1e-8)
    ball = np.array([1 - 2.5e-9, 0.5])
    assert ce.q_posterior(ball)[:, 0] == pytest.approx(ce.lemma1_q_class0_in_ball(), rel=1e-12)
    assert check_proposition(ce, 0.1, 0.01).all_hold
