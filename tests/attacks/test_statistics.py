"""Wilson score intervals (:mod:`flows.attacks.statistics`) against independent oracles.

Oracles: the closed-form special cases k = 0, k = n and k = n/2 (derived by hand from the
formula), SciPy's ``binomtest(...).proportion_ci(method="wilson")``, and the exact coverage
``Σ_k Binomial(k; n, p) [p ∈ CI(k)]`` summed with SciPy's binomial pmf.
"""

import math

import numpy as np
import pytest
import torch
from scipy.stats import binom, binomtest, norm

from flows.attacks.statistics import (
    draws_for_half_width,
    format_percentage,
    percentage_with_interval,
    wilson_half_width_at_half,
    wilson_interval,
)

Z95 = norm.ppf(0.975)


@pytest.mark.parametrize("n", [1, 10, 37, 100])
def test_special_cases_in_closed_form(n):
    # k = 0: centre = half-width = z²/(2(n + z²))  ->  [0, z²/(n + z²)]
    assert wilson_interval(0, n) == (0.0, pytest.approx(Z95**2 / (n + Z95**2), rel=1e-12))
    # k = n: the mirror image  ->  [n/(n + z²), 1]
    assert wilson_interval(n, n) == (pytest.approx(n / (n + Z95**2), rel=1e-12), 1.0)
    if n % 2 == 0:  # k = n/2: 1/2 ± z / (2 √(n + z²))
        half = Z95 / (2 * math.sqrt(n + Z95**2))
        low, high = wilson_interval(n // 2, n)
        assert (low, high) == (pytest.approx(0.5 - half, rel=1e-12), pytest.approx(0.5 + half))
        assert wilson_half_width_at_half(n) == pytest.approx(half, rel=1e-12)


@pytest.mark.parametrize(
    "k, n, confidence",
    [(0, 10, 0.95), (5, 10, 0.95), (10, 10, 0.95), (3, 17, 0.9), (41, 100, 0.99), (1, 2, 0.5)],
    ids=["0of10", "5of10", "10of10", "3of17-90", "41of100-99", "1of2-50"],
)
def test_matches_scipy_wilson(k, n, confidence):
    expected = binomtest(k, n).proportion_ci(confidence_level=confidence, method="wilson")
    low, high = wilson_interval(k, n, confidence)
    assert low == pytest.approx(expected.low, abs=1e-12)
    assert high == pytest.approx(expected.high, abs=1e-12)
    assert 0.0 <= low <= k / n <= high <= 1.0


def test_coverage_of_the_95_interval_for_n_100():
    """Exact coverage over all k (no Monte Carlo error) stays >= 0.93 for p = 0.1 … 0.9, and
    the interval is not grossly conservative either (a wrong z, e.g. 99 %, would give ≈ 0.99)."""
    n = 100
    k = np.arange(n + 1)
    coverages = []
    for p in np.linspace(0.1, 0.9, 17):
        covers = np.array(
            [low <= p <= high for low, high in (wilson_interval(int(i), n) for i in k)]
        )
        coverages.append(binom.pmf(k, n, p)[covers].sum())
    assert min(coverages) >= 0.93
    assert 0.935 <= float(np.mean(coverages)) <= 0.96


def test_interval_narrows_with_n_and_widens_with_confidence():
    widths = [np.subtract(*wilson_interval(n // 5, n)[::-1]) for n in (10, 40, 160, 640)]
    assert all(a > b for a, b in zip(widths, widths[1:], strict=False))
    narrow, wide = wilson_interval(7, 20, 0.8), wilson_interval(7, 20, 0.99)
    assert wide[0] < narrow[0] and narrow[1] < wide[1]


@pytest.mark.parametrize("half_width", [0.2, 0.1, 0.05, 0.03])
def test_draws_for_half_width_is_the_smallest_sufficient_n(half_width):
    n = draws_for_half_width(half_width)
    assert n == max(1, math.ceil(Z95**2 / (4 * half_width**2) - Z95**2))  # e.g. h = 0.1: 93
    widest = max((h - lo) / 2 for lo, h in (wilson_interval(k, n) for k in range(n + 1)))
    assert widest <= half_width  # holds for every observable p̂ …
    assert Z95 / (2 * math.sqrt(n - 1 + Z95**2)) > half_width  # … and not at p̂ = 1/2 with n − 1


def test_percentage_helpers_agree_with_the_interval():
    cell = percentage_with_interval(4, 10)
    low, high = wilson_interval(4, 10)
    assert cell == {
        "pct": 40.0,
        "low_pct": 100 * low,
        "high_pct": 100 * high,
        "successes": 4,
        "n": 10,
        "confidence": 0.95,
    }
    scipy_ci = binomtest(4, 10).proportion_ci(method="wilson")
    assert format_percentage(4, 10) == f"40.0 [{100 * scipy_ci.low:.1f}, {100 * scipy_ci.high:.1f}]"
    assert format_percentage(1, 3, digits=0).startswith("33 [")


def test_integer_types_from_numpy_and_torch():
    assert wilson_interval(np.int64(3), torch.tensor(10)) == wilson_interval(3, 10)


@pytest.mark.parametrize(
    "args, name",
    [
        ((0, 0), "n"),
        ((1, -5), "n"),
        ((1, 2.0), "n"),
        ((True, 2), "successes"),
        ((-1, 10), "successes"),
        ((11, 10), "successes"),
        ((1, 10, 1.0), "confidence"),
        ((1, 10, 0.0), "confidence"),
    ],
    ids=["n0", "n-neg", "n-float", "k-bool", "k-neg", "k-above-n", "conf1", "conf0"],
)
def test_bad_arguments_name_the_argument(args, name):
    with pytest.raises(ValueError, match=f"^{name}:"):
        wilson_interval(*args)


def test_bad_half_width():
    for bad in (0.0, 0.5, -0.1):
        with pytest.raises(ValueError, match="half_width"):
            draws_for_half_width(bad)
    with pytest.raises(ValueError, match="n:"):
        wilson_half_width_at_half(0)
