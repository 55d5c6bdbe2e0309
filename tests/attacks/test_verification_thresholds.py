"""Verification at several detector thresholds from one observation of the deployed model
(:func:`flows.attacks.observe_draws`, :func:`flows.attacks.verify_at_thresholds`): equal to
:func:`flows.attacks.verify_over_noise` at each threshold with the same seeded draws."""

from dataclasses import replace

import pytest
import torch

from flows.attacks import (
    AttackResult,
    LikelihoodDetector,
    ThreatModel,
    observe_draws,
    verify_at_thresholds,
    verify_over_noise,
)
from flows.noise import FreshNoise


def _toy(seed: int, threshold: float, spread: float = 0.4) -> ThreatModel:
    """A randomised 3-class linear classifier: scores W x + Gaussian noise of ``spread``, and a
    'bits/dim' that is |x|² plus noise; every call draws fresh noise from a generator seeded
    with ``seed`` (FreshNoise), the deployed model's contract."""
    weights = torch.tensor([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])

    def scores(x, generator=None):
        noise = torch.randn(len(x), 3, generator=generator, dtype=x.dtype)
        return x.flatten(1) @ weights.T.to(x.dtype) + spread * noise

    def bits(x, generator=None):
        noise = torch.randn(len(x), generator=generator, dtype=x.dtype)
        return x.flatten(1).pow(2).sum(1) + 0.05 * noise

    return ThreatModel(
        logits_fn=FreshNoise(scores, seed),
        bits_per_dim_fn=FreshNoise(bits, seed + 1),
        detector=LikelihoodDetector(threshold, 4),
        num_classes=3,
        randomised=True,
    )


def _toy_result(targeted: bool) -> tuple[torch.Tensor, AttackResult, torch.Tensor]:
    generator = torch.Generator().manual_seed(3)
    x = torch.rand(40, 4, generator=generator, dtype=torch.float64) * 0.6 - 0.3
    adv = (x + 0.2 * torch.randn(x.shape, generator=generator, dtype=x.dtype)).clamp(-0.5, 0.5)
    adv[0, 0] = 0.7  # out of the box: never a success
    success = torch.rand(40, generator=generator) < 0.8
    y = torch.randint(0, 3, (40,), generator=generator)
    targets = (y + 1) % 3 if targeted else None
    status = tuple("success" if s else "failed" for s in success.tolist())
    l2 = (adv - x).flatten(1).norm(dim=1)
    result = AttackResult(adv, success, l2, torch.ones(40, dtype=torch.long), status, targets)
    return x, result, y


@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
def test_verify_at_thresholds_equals_verify_over_noise_with_the_same_draws(targeted):
    """Each threshold's verdicts from one observation equal verify_over_noise's with a threat
    model of that threshold and the same seeds (the same draws), and success grows with T."""
    x, result, y = _toy_result(targeted)
    thresholds = [0.2, 0.3, 1.0]
    observed = observe_draws(_toy(7, 0.3), result.adversarial, draws=16)
    assert observed[0].shape == (16, 40) and observed[1].shape == (16, 40)
    ours = verify_at_thresholds(observed, x, result, y, thresholds, eps=0.35)
    previous = None
    for threshold, mine in zip(thresholds, ours, strict=True):
        reference = verify_over_noise(_toy(7, threshold), x, result, y, draws=16, eps=0.35)
        for name in (
            "fooled_draws",
            "fooled_undetected_draws",
            "detected_draws",
            "fools_classifier",
            "success_undetected",
            "in_bounds",
            "within_eps",
        ):
            assert torch.equal(getattr(mine, name), getattr(reference, name)), (threshold, name)
        assert torch.allclose(mine.l2, reference.l2)
        if previous is not None:
            assert bool((previous.success_undetected <= mine.success_undetected).all())
        previous = mine
    assert 0 < int(ours[0].success_undetected.sum()) < int(ours[-1].success_undetected.sum())
    assert not bool(ours[-1].fools_classifier[0])  # out of the box


def test_observe_draws_needs_a_randomised_model_with_a_detector():
    tm = _toy(0, 0.1)
    with pytest.raises(ValueError, match="randomised"):
        observe_draws(replace(tm, randomised=False), torch.zeros(2, 4), draws=4)
    with pytest.raises(ValueError, match="draws"):
        observe_draws(tm, torch.zeros(2, 4), draws=513)
