"""Wrong-class outliers (Section 6.4): the margin bound and the NLL given the wrong class."""

import math

import numpy as np
import pytest
import torch

from flows.analysis import (
    fraction_flagged,
    margin_bounds,
    minimal_margin,
    outlier_summary,
    paper_margin_bound,
    worst_case_probability,
    wrong_class_nll,
)
from flows.measures import bits_per_dim


def test_paper_bound_for_ten_classes_is_about_6_in_base_10_not_in_nats():
    exact = math.log(10.0) + math.log((1 - 1e-5) / 1e-5)
    assert paper_margin_bound(10, 1e-5) == pytest.approx(exact, rel=1e-15)
    assert paper_margin_bound(10, 1e-5) == pytest.approx(13.8155, abs=1e-4)
    assert paper_margin_bound(10, 1e-5, base=10) == pytest.approx(math.log10(10 * 99999), rel=1e-15)
    assert paper_margin_bound(10, 1e-5, base=10) == pytest.approx(6.0, abs=1e-5)
    assert paper_margin_bound(10, 1e-5, base=2) == pytest.approx(exact / math.log(2), rel=1e-15)
    bounds = margin_bounds(10, 1e-5)
    assert bounds["paper_bound_nats"] == paper_margin_bound(10, 1e-5)
    assert bounds["paper_bound_log10"] == pytest.approx(6.0, abs=1e-5)
    assert bounds["paper_bound_bits"] == pytest.approx(19.93, abs=0.01)
    assert bounds["probability_at_minimal_margin"] == pytest.approx(1 - 1e-5, rel=1e-12)


CASES = [(c, d) for c in (2, 3, 10, 100) for d in (0.4, 0.1, 1e-3, 1e-5)]


def _worst_case_logits(num_classes: int, margin: float) -> torch.Tensor:
    """True class 0 at ``margin``, every wrong class at 0: the least confident such logits."""
    logits = torch.zeros(num_classes, dtype=torch.float64)
    logits[0] = margin
    return logits


@pytest.mark.parametrize("num_classes, delta", CASES, ids=[f"C{c}-d{d:g}" for c, d in CASES])
def test_margin_bounds_guarantee_the_confidence_on_constructed_logits(num_classes, delta):
    paper, minimal = paper_margin_bound(num_classes, delta), minimal_margin(num_classes, delta)
    assert minimal < paper  # log(C − 1) < log C: the paper's bound is sufficient, not tight
    assert torch.softmax(_worst_case_logits(num_classes, paper), 0)[0] >= 1 - delta
    at_minimal = torch.softmax(_worst_case_logits(num_classes, minimal), 0)[0].item()
    assert at_minimal == pytest.approx(1 - delta, rel=1e-12)
    below = torch.softmax(_worst_case_logits(num_classes, minimal - 1e-3), 0)[0].item()
    assert below < 1 - delta
    for margin in (minimal, paper, paper + 1.0):
        assert worst_case_probability(margin, num_classes) == pytest.approx(
            torch.softmax(_worst_case_logits(num_classes, margin), 0)[0].item(), rel=1e-12
        )


def test_any_logits_with_the_paper_margin_are_confident(rng):
    num_classes, delta = 10, 1e-5
    margin = paper_margin_bound(num_classes, delta)
    for _ in range(200):
        logits = rng.normal(0.0, 50.0, num_classes)
        true = int(rng.integers(num_classes))
        others = np.delete(np.arange(num_classes), true)
        logits[true] = logits[others].max() + margin + rng.exponential(1.0)
        p = torch.softmax(torch.from_numpy(logits), 0)[true].item()
        assert p >= 1 - delta


@pytest.mark.parametrize("bad", [(1, 0.1), (10, 0.0), (10, 1.0)])
def test_margin_bounds_reject_degenerate_arguments(bad):
    with pytest.raises(ValueError):
        paper_margin_bound(*bad)


def test_wrong_class_nll_picks_the_most_likely_wrong_class():
    logp = torch.tensor(
        [[-10.0, -12.0, -11.0], [-20.0, -25.0, -21.0], [-5.0, -4.0, -9.0]], dtype=torch.float64
    )
    labels = torch.tensor([0, 2, 0])
    result = wrong_class_nll(logp, labels, num_dims=4, num_bins=1)
    assert result.wrong_class.tolist() == [2, 0, 1]
    assert result.nll_true_nats.tolist() == [10.0, 21.0, 5.0]
    assert result.nll_wrong_nats.tolist() == [11.0, 20.0, 4.0]
    assert result.gap_nats.tolist() == [1.0, -1.0, -1.0]
    assert result.correct.tolist() == [True, False, False]
    assert result.num_classes == 3


def test_nll_units_follow_the_bits_per_dim_convention(rng):
    logp = torch.from_numpy(rng.normal(-3000.0, 200.0, (50, 10)))
    labels = torch.from_numpy(rng.integers(0, 10, 50))
    result = wrong_class_nll(logp, labels, num_dims=1024)
    true_logp = logp.gather(1, labels[:, None]).squeeze(1)
    torch.testing.assert_close(result.nll_true_bits_per_dim, bits_per_dim(true_logp, 1024))
    torch.testing.assert_close(result.nll_true_nats, -true_logp + 1024 * math.log(256))
    torch.testing.assert_close(result.gap_bits_per_dim, result.gap_nats / (1024 * math.log(2)))
    assert torch.all(result.gap_nats[result.correct] > 0)
    assert torch.equal(result.correct, logp.argmax(1) == labels)


def test_fraction_flagged_counts_values_above_the_threshold():
    values = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert fraction_flagged(values, 2.0) == 0.5
    assert fraction_flagged(values, 4.0) == 0.0
    with pytest.raises(ValueError):
        fraction_flagged(values[:0], 1.0)


def test_outlier_summary_compares_the_gap_with_the_spread_of_nll(rng):
    n, dims = 400, 1024
    base = rng.normal(-3000.0, 200.0, n)  # spread of the NLL over images: 200 nats
    logp = np.repeat(base[:, None], 10, axis=1) + rng.normal(0.0, 1.0, (n, 10))
    labels = rng.integers(0, 10, n)
    logp[np.arange(n), labels] += rng.uniform(5.0, 30.0, n)  # all correct, gaps of 5–30 nats
    result = wrong_class_nll(torch.from_numpy(logp), torch.from_numpy(labels), dims)
    threshold = result.nll_true_bits_per_dim.max().item()
    summary = outlier_summary(result, threshold, delta=1e-5)
    assert summary["accuracy"] == 1.0
    assert summary["fraction_true_flagged"] == 0.0
    nll_true = result.nll_true_nats.numpy()
    gap = result.gap_nats.numpy()
    assert summary["std_nll_true_nats"] == pytest.approx(nll_true.std(ddof=1), rel=1e-9)
    assert summary["median_gap_nats"] == pytest.approx(np.median(gap), rel=1e-9)
    assert summary["fraction_gap_below_std"] == 1.0  # gaps ≤ 31 nats, std ≈ 200
    assert summary["std_over_median_gap"] > 5
    expected_above = np.mean(gap >= paper_margin_bound(10, 1e-5))
    assert summary["fraction_gap_above_paper_bound"] == pytest.approx(expected_above)
    assert summary["fraction_wrong_flagged"] == pytest.approx(
        np.mean(result.nll_wrong_bits_per_dim.numpy() > threshold)
    )
    assert summary["margin_bounds"] == margin_bounds(10, 1e-5)
    assert summary["num_images_correct"] == n
