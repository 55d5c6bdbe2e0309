"""Monte Carlo: exact samplers (KS tests against the exact CDF), KLs and the attack within 5 SE."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from scipy import stats

from counterexample import (
    Counterexample,
    monte_carlo_kl,
    sample_annulus_norms,
    sample_annulus_points,
    sample_points,
    simulate_attack,
)
from counterexample.annulus import annulus_log_cdf


@pytest.mark.parametrize(
    "a, b, d",
    [
        (0.0, 1.0, 1),
        (0.0, 1.0, 7),
        (1.0, 1.1, 50),
        (2.0, 3.0, 10**4),
        (1.0, 1.001, 10**6),
        (0.0, 1.5, 10**9),
    ],
    ids=str,
)
def test_norm_sampler_matches_exact_cdf(a, b, d):
    r = sample_annulus_norms(20_000, a, b, d, rng=7)
    assert ((r >= a) & (r <= b)).all()
    u = np.exp(annulus_log_cdf(r, a, b, d))  # probability integral transform: U(0,1) if exact
    assert stats.kstest(u, "uniform").pvalue > 1e-3


def test_norm_sampler_at_a_billion_dimensions_resolves_the_outer_shell():
    """At d = 1e9 almost all mass is within ~1/d of b; the gaps b - r are Exp with mean b/d."""
    d, b = 10**9, 1.5
    r = sample_annulus_norms(50_000, 0.0, b, d, rng=3)
    gaps = (b - r) * d / b
    assert stats.kstest(gaps, "expon").pvalue > 1e-3


def test_point_sampler_norms_and_isotropy():
    d = 10_000
    x = sample_annulus_points(500, 1.0, 1.1, d, rng=11)
    assert x.shape == (500, d)
    norms = np.linalg.norm(x, axis=1)
    assert ((norms >= 1.0 - 1e-12) & (norms <= 1.1 + 1e-12)).all()
    directions = x / norms[:, None]
    # uniform directions: each coordinate has mean 0 and variance 1/d; the mean direction is ~0
    mean_dir = directions.mean(axis=0)
    assert np.linalg.norm(mean_dir) == pytest.approx(math.sqrt(1 / 500), rel=0.1)
    assert directions.var() == pytest.approx(1 / d, rel=0.02)


def test_point_sampler_refuses_to_exhaust_memory():
    with pytest.raises(MemoryError, match="norm samplers"):
        sample_annulus_points(10**5, 0.0, 1.0, 10**5)


def test_samplers_are_deterministic_under_a_seed():
    ce = Counterexample(30, 0.2, 0.2, 0.05)
    a, ya = sample_points(ce, 100, "p", None, rng=5)
    b, yb = sample_points(ce, 100, "p", None, rng=5)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ya, yb)


# parameters where both regions have visible mass, so the estimators have non-zero variance
MC_CASES = [
    Counterexample(10, 0.1, 0.3, 0.05),
    Counterexample(40, 0.05, 0.1, 0.01),
    Counterexample(3, 0.5, 0.6, 0.3),
]


@pytest.mark.parametrize("ce", MC_CASES, ids=lambda c: f"d={c.d}")
@pytest.mark.parametrize("direction", ["q||p", "p||q"])
@pytest.mark.parametrize("joint", [False, True], ids=["conditional", "joint"])
def test_monte_carlo_kl_within_5_standard_errors(ce, direction, joint):
    est = monte_carlo_kl(ce, direction, joint, n=200_000, rng=2024)
    exact = getattr(ce, f"kl_{direction[0]}_{direction[3]}_{'joint' if joint else 'conditional'}")()
    assert est.stderr > 0
    assert abs(est.z_score(exact)) < 5


def test_monte_carlo_kl_with_full_points_in_high_dimension():
    ce = Counterexample(2000, 0.001, 0.4, 0.1)  # (1.001)^2000 ~ 7.4: both regions sampled
    for direction in ("q||p", "p||q"):
        est = monte_carlo_kl(ce, direction, joint=True, n=3000, rng=9, points=True)
        exact = ce.kl_q_p_joint() if direction == "q||p" else ce.kl_p_q_joint()
        assert abs(est.z_score(exact)) < 5


def test_monte_carlo_kl_at_a_billion_dimensions():
    ce = Counterexample(10**9, 1e-3, 1e-3, 1e-5)
    est = monte_carlo_kl(ce, "p||q", joint=False, n=200_000, rng=1)
    assert abs(est.z_score(ce.kl_p_q_conditional())) < 5


@pytest.mark.parametrize("points", [False, True], ids=["norms", "points"])
def test_simulated_attack_matches_theory(points):
    ce = Counterexample.from_targets(0.1, 0.01, 0.01)  # d = 1422
    sim = simulate_attack(ce, 0.01, n=4000 if points else 200_000, rng=4, points=points)
    assert sim.theory == pytest.approx((1 - ce.lambda1) / 2)
    assert abs(sim.estimate.z_score(sim.theory)) < 5
    assert sim.n_success == sim.n_attacked > 0
    assert sim.max_distance < ce.Delta
    assert all(rate == 1.0 for rate in sim.item_rates.values())


def test_attack_fails_where_the_model_is_not_fooled():
    """With lambda2 too small, q still predicts class 0 in the ball: item 2/3 fail, no success."""
    ce = Counterexample(20, 0.1, 0.2, 1e-9)  # lambda2 (1+Delta)^d ~ 7e-9: q(0|ball) ~ 1
    sim = simulate_attack(ce, 0.01, n=50_000, rng=0)
    assert sim.n_attacked > 0 and sim.n_success == 0
    assert sim.theory == 0.0
    assert sim.item_rates["item2"] == 0.0


@settings(max_examples=15, deadline=None)
@given(
    eps=st.floats(1e-3, 0.3),
    delta=st.floats(1e-4, 0.3),
    Delta=st.floats(0.01, 0.9),
    seed=st.integers(0, 2**31),
)
def test_attack_rate_agrees_with_theory_for_random_targets(eps, delta, Delta, seed):
    ce = Counterexample.from_targets(eps, delta, Delta)
    sim = simulate_attack(ce, delta, n=20_000, rng=seed)
    assert abs(sim.estimate.z_score(sim.theory)) < 5


def test_monte_carlo_log_ratios_are_exact_at_a_billion_dimensions():
    """log c_d ~ -9e9 cancels in the log-ratio: every q-sample lies in the shell, where the ratio is
    log(1 - 1/V) - log(1 - lambda1), reproduced to rounding."""
    ce = Counterexample.from_targets(0.1, 0.01, 2e-8, d=10**9)
    est = monte_carlo_kl(ce, "q||p", n=10_000, rng=0)
    shell_term = math.log1p(-math.exp(-ce.log_volume_ratio)) - math.log1p(-ce.lambda1)
    assert est.mean == pytest.approx(shell_term, rel=1e-12)
