"""The likelihood detector: verdicts, thresholds from quantiles, recall, units of ℓ_det."""

import math

import pytest
import torch

from flows import paper
from flows.attacks import PAPER_THRESHOLDS, LikelihoodDetector


def test_paper_thresholds_have_one_home_and_are_bits_per_dim():
    """The detector's thresholds are flows.paper's (no second copy), one per dataset that has a
    recall and a budget, each a bits/dim in (0, 8): 8 bits/dim is the uniform density on the 8-bit
    data range, so a threshold at or above it would accept uniform noise images."""
    assert PAPER_THRESHOLDS is paper.PAPER_THRESHOLDS
    assert set(PAPER_THRESHOLDS) == set(paper.PAPER_RECALL) == set(paper.PAPER_EPS)
    for threshold in PAPER_THRESHOLDS.values():
        assert 0 < threshold < 8
        det = LikelihoodDetector(threshold=threshold, num_dims=1024)
        assert det.detected(torch.tensor([8.0])).all()


def test_verdict_is_strictly_above_threshold_and_recall_counts_accepted():
    det = LikelihoodDetector(threshold=4.0, num_dims=3072)
    bpd = torch.tensor([3.0, 4.0, 4.01, 5.0])
    assert det.detected(bpd).tolist() == [False, False, True, True]
    assert det.recall(bpd) == 0.5


@pytest.mark.parametrize("quantile", [0.5, 0.786, 0.9, 1.0])
def test_quantile_threshold_has_at_least_that_recall_and_is_tight(rng, quantile):
    bpd = torch.as_tensor(rng.normal(3.5, 0.3, size=1000))
    det = LikelihoodDetector.from_quantile(bpd, quantile, num_dims=3072)
    recall = det.recall(bpd)
    assert quantile <= recall < quantile + 1.5 / 1000
    assert det.threshold in bpd.tolist()


def test_excess_nats_equals_paper_loss_in_nats(two_gaussian):
    """ℓ_det = max{0, −log p(x') − T} with T converted to nats of the same density."""
    m = two_gaussian
    det = LikelihoodDetector(threshold=6.2, num_dims=m.dim)
    x = m.on_axis(torch.linspace(-0.3, 0.3, 13))
    nll = -m.log_prob(x)
    # T in nats: the nll whose bits/dim is exactly T under the model's convention
    t_nats = det.threshold * m.dim * math.log(2) - m.dim * math.log(256)
    expected = torch.clamp(nll - t_nats, min=0)
    torch.testing.assert_close(det.excess_nats(m.bits_per_dim(x)), expected)
    assert (expected > 0).any() and (expected == 0).any()


def test_invalid_arguments():
    with pytest.raises(ValueError, match="quantile"):
        LikelihoodDetector.from_quantile(torch.ones(3), 0.0, num_dims=1)
    with pytest.raises(ValueError, match="threshold"):
        LikelihoodDetector(threshold=math.nan, num_dims=1)
    with pytest.raises(ValueError, match="num_dims"):
        LikelihoodDetector(threshold=1.0, num_dims=0)
