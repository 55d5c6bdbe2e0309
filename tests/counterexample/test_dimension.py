"""find_dimension: exactness (d feasible, d-1 not) against an independent 50-digit check, validation."""

import math

import mpmath
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import counterexample
from counterexample import (
    feasible_lambda1_interval,
    find_dimension,
    find_dimension_eq19,
    is_feasible,
    leading_order_dimension,
    paper_dimension_expression,
)


def feasible_oracle(d, eps, delta, Delta, eq19_only=False):
    """Independent check in 50-digit arithmetic, straight from the five conditions of the proof.

    Condition 1 holds by the choice lambda2 = delta/(1-delta) lambda1; condition 2 is a lower bound
    on lambda1, conditions 3 and 5 upper bounds, so a lambda1 exists iff the smallest one allowed by
    condition 2, lambda1* = ((1-delta)/delta)^2 (1+Delta)^-d, satisfies 3, 4 and 5. We verify it by
    substituting lambda1* into the conditions as printed.
    """
    with mpmath.workdps(50 + int(math.log10(d + 1))):
        e, dl, D = mpmath.mpf(eps), mpmath.mpf(delta), mpmath.mpf(Delta)
        V = mpmath.power(1 + D, d)
        lam1 = ((1 - dl) / dl) ** 2 / V
        lam2 = dl / (1 - dl) * lam1
        c1 = lam1 / (lam1 + lam2) >= (1 - dl) * (1 - mpmath.mpf(10) ** -40)
        c2 = 1 / (1 + lam2 * V) <= dl * (1 + mpmath.mpf(10) ** -40)
        c3 = lam1 <= 1 - mpmath.exp(-e)
        c4 = lam1 > 1 / V
        c5 = lam1 < e / (d * mpmath.log(1 + D))
        if eq19_only:
            return c5
        return bool(c1 and c2 and c3 and c4 and c5)


targets = st.tuples(
    st.floats(min_value=1e-4, max_value=50.0),  # eps
    st.floats(min_value=1e-6, max_value=0.4999),  # delta
    st.floats(min_value=1e-5, max_value=5.0),  # Delta
)


@settings(max_examples=150, deadline=None)
@given(targets)
def test_returned_dimension_is_feasible_and_the_previous_is_not(args):
    eps, delta, Delta = args
    d = find_dimension(eps, delta, Delta)
    assert isinstance(d, int) and d >= 1
    assert feasible_oracle(d, eps, delta, Delta)
    if d > 1:
        assert not feasible_oracle(d - 1, eps, delta, Delta)
    # and the package's own interval agrees
    assert not feasible_lambda1_interval(d, eps, delta, Delta).empty
    assert is_feasible(d, eps, delta, Delta)


@pytest.mark.parametrize(
    "eps, delta, Delta",
    [
        (0.1, 0.01, 0.1),
        (1.0, 0.1, 0.5),
        (10.0, 0.4, 1.0),
        (100.0, 0.49, 0.01),
        (0.5, 0.45, 0.3),
        (3.0, 0.3, 2.0),
        (1e-3, 1e-3, 0.05),
    ],
    ids=str,
)
def test_matches_a_brute_force_scan_over_small_dimensions(eps, delta, Delta):
    d = next(n for n in range(1, 100_000) if feasible_oracle(n, eps, delta, Delta))
    assert find_dimension(eps, delta, Delta) == d


@pytest.mark.parametrize(
    "eps, delta, Delta",
    [
        (1e-3, 1e-5, 1e-6),
        (0.5, 0.49, 1e-9),
        (1e-8, 1e-8, 1e-12),
        (1.0, 0.1, 1e-15),
        (1e-2, 0.2, 1e-17),
    ],
    ids=str,
)
def test_exact_when_tiny_Delta_pushes_d_into_the_billions_and_beyond(eps, delta, Delta):
    d = find_dimension(eps, delta, Delta)
    assert d > 10**6
    assert feasible_oracle(d, eps, delta, Delta)
    assert not feasible_oracle(d - 1, eps, delta, Delta)


def test_eq19_alone_returns_an_infeasible_dimension_when_condition_3_binds():
    """Eq. (19) alone can be satisfied at a d where condition 3 fails: eps large, delta not tiny."""
    eps, delta, Delta = 10.0, 0.4, 1.0
    d19, d = find_dimension_eq19(eps, delta, Delta), find_dimension(eps, delta, Delta)
    assert d19 < d
    assert feasible_oracle(d19, eps, delta, Delta, eq19_only=True)
    assert not feasible_oracle(d19, eps, delta, Delta)


@settings(max_examples=100, deadline=None)
@given(targets)
def test_eq19_never_exceeds_the_exact_dimension(args):
    assert find_dimension_eq19(*args) <= find_dimension(*args)


@settings(max_examples=100, deadline=None)
@given(targets)
def test_exact_dimension_is_at_least_the_leading_order(args):
    """-log(1 - e^-eps) >= log(1/eps), so condition 3 alone forces d >= the leading order."""
    assert find_dimension(*args) >= leading_order_dimension(*args) - 1e-9


@settings(max_examples=50, deadline=None)
@given(targets)
def test_paper_expression_as_printed_is_negative(args):
    assert paper_dimension_expression(*args) < 0


@settings(max_examples=100, deadline=None)
@given(targets)
def test_interval_at_minimal_d_contains_its_midpoint_and_is_empty_below(args):
    eps, delta, Delta = args
    d = find_dimension(eps, delta, Delta)
    interval = feasible_lambda1_interval(d, eps, delta, Delta)
    mid = interval.geometric_midpoint()
    assert interval.contains(mid)
    assert not interval.contains(interval.lower * (1 - 1e-9))
    if d > 1:
        assert feasible_lambda1_interval(d - 1, eps, delta, Delta).empty


def test_interval_reports_the_binding_condition():
    # small eps: condition 5 (open) binds at the minimal d; large eps: condition 3 (closed)
    small = feasible_lambda1_interval(find_dimension(0.1, 0.01, 0.1), 0.1, 0.01, 0.1)
    assert (small.upper_condition, small.upper_closed) == (5, False)
    large = feasible_lambda1_interval(find_dimension(10, 0.4, 1.0), 10, 0.4, 1.0)
    assert (large.upper_condition, large.upper_closed) == (3, True)
    assert large.upper == pytest.approx(1 - math.exp(-10))


BAD = [
    (float("nan"), ValueError),
    (float("inf"), ValueError),
    (-float("inf"), ValueError),
    (True, TypeError),
    (False, TypeError),
    ("0.1", TypeError),
    (None, TypeError),
    ([0.1], TypeError),
]


@pytest.mark.parametrize("bad, error", BAD, ids=repr)
@pytest.mark.parametrize("position, name", [(0, "eps"), (1, "delta"), (2, "Delta")])
def test_invalid_types_and_non_finite_values_raise_naming_the_argument(bad, error, position, name):
    args = [0.1, 0.01, 0.1]
    args[position] = bad
    with pytest.raises(error) as info:
        find_dimension(*args)
    message = str(info.value)
    assert message.startswith(name + " ")
    assert repr(bad) in message


@pytest.mark.parametrize(
    "args, name, valid",
    [
        ((0.0, 0.01, 0.1), "eps", "(0.0, inf)"),
        ((-1.0, 0.01, 0.1), "eps", "(0.0, inf)"),
        ((0.1, 0.0, 0.1), "delta", "(0.0, 0.5)"),
        ((0.1, 0.5, 0.1), "delta", "(0.0, 0.5)"),
        ((0.1, 0.7, 0.1), "delta", "(0.0, 0.5)"),
        ((0.1, -0.1, 0.1), "delta", "(0.0, 0.5)"),
        ((0.1, 0.01, 0.0), "Delta", "(0.0, inf)"),
        ((0.1, 0.01, -2.0), "Delta", "(0.0, inf)"),
    ],
    ids=str,
)
def test_out_of_range_values_raise_with_the_valid_range(args, name, valid):
    with pytest.raises(ValueError) as info:
        find_dimension(*args)
    assert name in str(info.value) and valid in str(info.value)


def test_accepts_integers_and_numpy_floats():
    import numpy as np

    assert find_dimension(1, 0.1, 1) == find_dimension(1.0, 0.1, 1.0)
    assert find_dimension(np.float64(0.1), np.float32(0.25), np.float64(0.1)) == find_dimension(
        0.1, float(np.float32(0.25)), 0.1
    )


def test_package_exposes_the_fixed_name():
    assert counterexample.find_dimension is find_dimension
