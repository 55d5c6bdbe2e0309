"""Likelihood matching when the class scores are not log-likelihoods (as the Split prior's ``z_s``
logits): the detector's statistic must be matched too.

The toy: D = 8, class scores ``s(x) = (−k x₀, k x₀)`` (logits that read coordinate 0 only) and a
density that is a mixture of two Gaussians at ``μ₀ = (−a, c, 0, …)`` and ``μ₁ = (a, −c, 0, …)``
(σ = 0.05), which sets bits/dim. The classifier's boundary is x₀ = 0, but every point
``(x₀ ≥ 0, c, …)`` lies at least ``a`` from μ₀ and ``2c`` from μ₁: the detector rejects the whole
misclassified half of the line through a class-0 point along e₀, the only direction the logits
see. Matching the logits alone (this attack's first form, whose loss had no detector term on
such a model) therefore ends detected; matching the log-posteriors *and* bits/dim ends at the
target's verdicts, and the attack succeeds on every point.
"""

import math

import torch

from flows.attacks import LikelihoodDetector, Misclassified, NotDetected, ThreatModel, verify
from flows.attacks.likelihood_matching import LikelihoodMatching

D, K_SCORE, A, C, SIGMA = 8, 20.0, 0.2, 0.08, 0.05


def means() -> torch.Tensor:
    mu = torch.zeros(2, D, dtype=torch.float64)
    mu[0, :2] = torch.tensor([-A, C])
    mu[1, :2] = torch.tensor([A, -C])
    return mu


def scores(x: torch.Tensor) -> torch.Tensor:
    z = x.flatten(1)[:, 0]
    return K_SCORE * torch.stack([-z, z], dim=1)


def log_density(x: torch.Tensor) -> torch.Tensor:
    sq = ((x.flatten(1)[:, None, :] - means()[None].to(x.dtype)) ** 2).sum(-1)
    log_normal = -sq / (2 * SIGMA**2) - D / 2 * math.log(2 * math.pi * SIGMA**2)
    return torch.logsumexp(log_normal, dim=1) - math.log(2)


def bits_per_dim(x: torch.Tensor) -> torch.Tensor:
    return (-log_density(x) + D * math.log(256)) / (D * math.log(2))


def points(label: int, n: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return means()[label] + 0.02 * torch.randn(n, D, generator=gen, dtype=torch.float64)


def setup():
    x, target = points(0, 5, seed=0), points(1, 5, seed=1)
    # accept what lies within 3 nats of the peak density (a typical point: 0.64 nats below)
    peak = log_density(means()[:1]).item()
    threshold = (-(peak - 3.0) + D * math.log(256)) / (D * math.log(2))
    detector = LikelihoodDetector(threshold, D)
    tm = ThreatModel(scores, bits_per_dim, detector, num_classes=2)
    return tm, detector, x, target


def test_the_toy_needs_the_detector_term():
    """Clean points and targets are accepted and correctly classified; along e₀ from every clean
    point, each misclassified point of the box is detected."""
    tm, detector, x, target = setup()
    assert torch.equal(tm.decision(x), torch.zeros(5, dtype=torch.long))
    assert torch.equal(tm.decision(target), torch.ones(5, dtype=torch.long))
    t = torch.linspace(0.0, 1.0, 201, dtype=torch.float64)
    for row in x:
        line = row.repeat(len(t), 1)
        line[:, 0] = (row[0] + t).clamp(max=0.5)
        wrong = scores(line).argmax(1) == 1
        assert wrong.any() and detector.detected(bits_per_dim(line[wrong])).all()


def test_matching_logits_alone_ends_detected_matching_bits_per_dim_too_succeeds():
    tm, detector, x, target = setup()
    y = torch.zeros(5, dtype=torch.long)
    # without bits/dim the loss is the log-posteriors' alone: the logits' match, detected
    logits_only = ThreatModel(scores, num_classes=2)
    ends = LikelihoodMatching(steps=300).match(logits_only, x, target)
    assert (scores(ends).argmax(1) == 1).all()
    assert detector.detected(bits_per_dim(ends)).all()
    # with bits/dim: the matched point has the target's log-posteriors and bits/dim (measured:
    # to 1e-15), hence its verdicts. (The loss is not convex: with the modes 2c = 0.4 apart,
    # μ₁'s pull across the valley is e^-32 and the descent settled detected at x₀ ≈ 0.07.)
    matched = LikelihoodMatching(steps=1000).match(tm, x, target)
    posterior_gap = torch.log_softmax(scores(matched), 1) - torch.log_softmax(scores(target), 1)
    assert posterior_gap.abs().max() < 1e-3
    assert (bits_per_dim(matched) - bits_per_dim(target)).abs().max() < 1e-3
    assert torch.equal(tm.decision(matched), torch.ones(5, dtype=torch.long))
    # the attack returns a verified undetected misclassification for every point
    result = LikelihoodMatching(steps=300)(
        tm, x, Misclassified(y) & NotDetected(detector), target_images=target
    )
    assert result.success.all()
    assert verify(tm, x, result, y).success_undetected.all()
