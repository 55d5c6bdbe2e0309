"""Criteria: verdicts, hinge losses, composition, and margins at log-likelihood scale."""

import math

import pytest
import torch

from flows.attacks import (
    And,
    LikelihoodDetector,
    Misclassified,
    NotDetected,
    Observation,
    TargetedMisclassified,
    log_posterior_margin,
)

SCORES = torch.tensor(
    [
        [-1000.0, -1003.0, -1001.5],  # class 0 wins, runner-up class 2
        [-1210.2, -1200.0, -1200.7],  # class 1 wins, runner-up class 2
        [-998.0, -997.0, -999.0],  # class 1 wins, runner-up class 0
    ],
    dtype=torch.float64,
)


def test_margin_picks_runner_up_at_log_likelihood_scale():
    reference = torch.tensor([0, 1, 0])
    margin = log_posterior_margin(SCORES, reference)
    torch.testing.assert_close(margin, torch.tensor([1.5, 0.7, -1.0], dtype=torch.float64))
    # a one-hot multiplication (zeroing the reference score) would "find" a runner-up score of 0
    zeroed = SCORES * (1 - torch.nn.functional.one_hot(reference, 3))
    assert (zeroed.max(dim=1).values == 0).all()


def test_margin_is_invariant_to_a_per_row_shift_and_exact_in_float32():
    reference = torch.tensor([0, 1, 2])
    base = log_posterior_margin(SCORES, reference)
    shifted = log_posterior_margin((SCORES - 5000.0).float(), reference)
    torch.testing.assert_close(shifted.double(), base, atol=2e-3, rtol=0)


@pytest.mark.parametrize(
    "scores,ref", [(torch.zeros(3, 1), torch.zeros(3)), (torch.zeros(3), None)], ids=["C=1", "1d"]
)
def test_margin_rejects_bad_shapes(scores, ref):
    with pytest.raises(ValueError, match="scores must be"):
        log_posterior_margin(scores, torch.zeros(3, dtype=torch.long) if ref is None else ref)


def test_misclassified_and_targeted_verdicts_and_losses():
    obs = Observation(logits=SCORES)
    y = torch.tensor([0, 1, 0])
    mis = Misclassified(y)
    assert mis.is_adversarial(obs).tolist() == [False, False, True]
    torch.testing.assert_close(mis.loss(obs), torch.tensor([1.5, 0.7, 0.0], dtype=torch.float64))
    torch.testing.assert_close(
        mis.loss(obs, confidence=2.0), torch.tensor([3.5, 2.7, 1.0], dtype=torch.float64)
    )
    t = torch.tensor([2, 2, 1])
    tgt = TargetedMisclassified(t)
    assert tgt.is_adversarial(obs).tolist() == [False, False, True]
    torch.testing.assert_close(tgt.loss(obs), torch.tensor([1.5, 0.7, 0.0], dtype=torch.float64))


def test_loss_is_zero_exactly_where_verdict_holds(rng):
    scores = torch.as_tensor(rng.normal(size=(200, 4)) * 3 - 1000)
    y = torch.as_tensor(rng.integers(0, 4, size=200))
    obs = Observation(logits=scores)
    for criterion in (Misclassified(y), TargetedMisclassified(y)):
        assert torch.equal(criterion.loss(obs) <= 0, criterion.is_adversarial(obs))


def test_not_detected_with_threshold_and_with_c_plus_1_decision():
    det = LikelihoodDetector(threshold=1.4, num_dims=1024)
    obs = Observation(logits=SCORES, bits_per_dim=torch.tensor([1.0, 1.4, 1.5]))
    assert NotDetected(det).is_adversarial(obs).tolist() == [True, True, False]
    torch.testing.assert_close(
        NotDetected(det).loss(obs),
        torch.tensor([0.0, 0.0, 0.1 * 1024 * math.log(2)]),
    )
    decision = Observation(
        labels=torch.tensor([3, 1, 0]), rejected=torch.tensor([True, False, False])
    )
    assert NotDetected().is_adversarial(decision).tolist() == [False, True, True]
    with pytest.raises(ValueError, match="needs bits_per_dim"):
        NotDetected().is_adversarial(Observation(logits=SCORES))


def test_and_combines_verdicts_sums_losses_flattens_and_selects():
    det = LikelihoodDetector(threshold=1.4, num_dims=10)
    y = torch.tensor([0, 1, 0])
    obs = Observation(logits=SCORES, bits_per_dim=torch.tensor([1.0, 1.0, 2.0]))
    both = Misclassified(y) & NotDetected(det)
    assert isinstance(both, And)
    assert both.is_adversarial(obs).tolist() == [False, False, False]
    expected = Misclassified(y).loss(obs) + NotDetected(det).loss(obs)
    torch.testing.assert_close(both.loss(obs), expected)
    triple = both & TargetedMisclassified(torch.tensor([1, 1, 1]))
    assert len(triple.criteria) == 3
    sub = both.select(torch.tensor([2]))
    sub_obs = Observation(logits=SCORES[2:], bits_per_dim=torch.tensor([1.0]))
    assert sub.is_adversarial(sub_obs).tolist() == [True]


def test_loss_without_scores_raises():
    with pytest.raises(ValueError, match="needs class scores"):
        Misclassified(torch.tensor([0])).loss(Observation(labels=torch.tensor([1])))
