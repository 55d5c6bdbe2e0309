"""The construction object: validation, densities by norm and at points, from_targets."""

import math

import numpy as np
import pytest

from counterexample import Counterexample, feasible_lambda1_interval, find_dimension
from counterexample.annulus import (
    annulus_interval_probability,
    annulus_log_cdf,
    log1mexp,
    log_radial_volume,
    log_unit_ball_volume,
)


def test_unit_ball_volume_matches_known_values():
    assert math.exp(log_unit_ball_volume(1)) == pytest.approx(2.0)
    assert math.exp(log_unit_ball_volume(2)) == pytest.approx(math.pi)
    assert math.exp(log_unit_ball_volume(3)) == pytest.approx(4 / 3 * math.pi)


@pytest.mark.parametrize(
    "a, b, d", [(0.0, 1.0, 3), (1.0, 1.1, 7), (2.0, 3.0, 20), (1.0, 1.0 + 1e-9, 5)]
)
def test_radial_volume_and_cdf_against_direct_powers(a, b, d):
    assert log_radial_volume(a, b, d) == pytest.approx(
        math.log(b**d - a**d), rel=1e-6 if b - a < 1e-6 else 1e-13
    )
    r = a + 0.37 * (b - a)
    assert math.exp(annulus_log_cdf(r, a, b, d)) == pytest.approx(
        (r**d - a**d) / (b**d - a**d), rel=1e-6
    )
    lo, hi = a + 0.1 * (b - a), a + 0.8 * (b - a)
    assert annulus_interval_probability(lo, hi, a, b, d) == pytest.approx(
        (hi**d - lo**d) / (b**d - a**d), rel=1e-6
    )


def test_log1mexp_is_accurate_on_both_branches():
    import mpmath

    for t in (-1e-20, -1e-5, -0.5, -1.0, -30.0, -800.0):
        with mpmath.workdps(60):
            expected = float(mpmath.log(1 - mpmath.exp(mpmath.mpf(t))))
        assert float(log1mexp(t)) == pytest.approx(expected, rel=1e-14)
    assert log1mexp(0.0) == -np.inf and log1mexp(-np.inf) == 0.0


@pytest.mark.parametrize(
    "field, value, error",
    [
        ("d", 0, ValueError),
        ("d", -3, ValueError),
        ("d", 2.5, TypeError),
        ("d", True, TypeError),
        ("Delta", 0.0, ValueError),
        ("Delta", float("nan"), ValueError),
        ("lambda1", 1.5, ValueError),
        ("lambda2", -0.1, ValueError),
        ("lambda1", "x", TypeError),
    ],
)
def test_invalid_construction_arguments_raise_naming_the_field(field, value, error):
    kwargs = {"d": 5, "Delta": 0.1, "lambda1": 0.1, "lambda2": 0.01, field: value}
    with pytest.raises(error, match=field):
        Counterexample(**kwargs)


def test_from_targets_uses_minimal_dimension_and_feasible_lambda():
    ce = Counterexample.from_targets(0.1, 0.01, 0.1)
    assert ce.d == find_dimension(0.1, 0.01, 0.1)
    assert feasible_lambda1_interval(ce.d, 0.1, 0.01, 0.1).contains(ce.lambda1)
    assert ce.lambda2 == pytest.approx(0.01 / 0.99 * ce.lambda1, rel=1e-15)


def test_from_targets_rejects_infeasible_choices():
    d = find_dimension(0.1, 0.01, 0.1)
    with pytest.raises(ValueError, match="smallest feasible d"):
        Counterexample.from_targets(0.1, 0.01, 0.1, d=d - 1)
    with pytest.raises(ValueError, match="outside the feasible interval"):
        Counterexample.from_targets(0.1, 0.01, 0.1, lambda1=0.5)


def test_point_and_norm_versions_agree(rng):
    ce = Counterexample(12, 0.3, 0.2, 0.05)
    x = rng.standard_normal((30, 12)) * 0.6
    r = np.linalg.norm(x, axis=1)
    for y in (0, 1):
        np.testing.assert_array_equal(ce.log_p_conditional_at(x, y), ce.log_p_conditional(r, y))
        np.testing.assert_array_equal(ce.log_q_joint_at(x, y), ce.log_q_joint(r, y))
    np.testing.assert_array_equal(ce.q_posterior_at(x), ce.q_posterior(r))
    with pytest.raises(ValueError, match="shape"):
        ce.log_p_conditional_at(x[:, :5], 0)


def test_joint_and_marginal_relations():
    ce = Counterexample(4, 0.5, 0.3, 0.1)
    r = np.linspace(0.01, 3.2, 50)
    for which in ("p", "q"):
        cond = [getattr(ce, f"log_{which}_conditional")(r, y) for y in (0, 1)]
        joint = [getattr(ce, f"log_{which}_joint")(r, y) for y in (0, 1)]
        np.testing.assert_allclose(np.exp(joint[0]), 0.5 * np.exp(cond[0]), rtol=1e-14)
        marginal = getattr(ce, f"log_{which}_marginal")(r)
        np.testing.assert_allclose(
            np.exp(marginal), np.exp(joint[0]) + np.exp(joint[1]), rtol=1e-14
        )


def test_model_equals_data_on_class_one_and_uniform_on_class_zero():
    ce = Counterexample(6, 0.2, 0.3, 0.1)
    r = np.array([0.2, 0.9, 1.1, 2.5])
    np.testing.assert_array_equal(ce.log_q_conditional(r, 1), ce.log_p_conditional(r, 1))
    q0 = ce.log_q_conditional(r[:3], 0)
    assert np.ptp(q0) == 0.0  # constant on the ball of radius 1 + Delta
    assert ce.log_q_conditional(np.array([1.25]), 0)[0] == -np.inf


def test_everything_finite_at_a_billion_dimensions():
    ce = Counterexample(10**9, 1e-3, 1e-4, 1e-6)
    r = np.array([0.5, 1.0005])
    assert np.isfinite(ce.log_p_conditional(r, 0)).all()
    assert np.isfinite(ce.log_q_conditional(r, 0)).all()
    assert ce.q_posterior(r)[0, 1] == 1.0  # q(1|x) = 1 - 1/(1 + lambda2 e^{~1e6}) rounds to 1
    assert all(math.isfinite(v) for v in ce.kl_summary().values())


def test_unknown_class_label_is_rejected():
    with pytest.raises(ValueError, match="y must be 0 or 1"):
        Counterexample(3, 0.1, 0.1, 0.1).log_p_conditional(np.array([0.5]), 2)
