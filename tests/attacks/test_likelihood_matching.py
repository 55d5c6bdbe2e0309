"""Likelihood matching on the two-Gaussian model (exact log-likelihoods), under zero-mean score
noise (EOT), and on the tiny GLOW; the pool helper that picks its target images."""

import math

import pytest
import torch

from flows.attacks import (
    DecisionModel,
    Misclassified,
    NotDetected,
    ThreatModel,
    verify,
)
from flows.attacks.likelihood_matching import LikelihoodMatching, likelihood_matching_attack
from flows.attacks.segment import select_other_class_images
from flows.noise import FreshNoise
from tests.attacks.test_segment import THRESHOLD, _pool, tiny_glow, two_gaussian_threat_model


def class1_targets(model, n=6, seed=1):
    """``n`` real class-1 images near μ₁ (all classified 1 and accepted at T = 6.2)."""
    gen = torch.Generator().manual_seed(seed)
    noise = 0.03 * torch.randn(n, model.dim, generator=gen, dtype=torch.float64)
    return (model.means[1] + noise).reshape(n, *model.shape)


def closest_matching_distance(model, x, target):
    """``(B,)`` the distance from x to the nearest point with the class log-likelihoods of the
    target: v depends on x' only through s = u·x' and r = ‖x' − s·u‖ (distances to μ₀, μ₁ on the
    axis u), so the nearest such point is s_t·u + r_t·x_⊥/‖x_⊥‖."""
    u = model.u
    x, target = x.flatten(1), target.flatten(1)
    s_t = target @ u
    r_t = (target - s_t[:, None] * u).norm(dim=1)
    s_x = x @ u
    r_x = (x - s_x[:, None] * u).norm(dim=1)
    return torch.sqrt((s_x - s_t) ** 2 + (r_x - r_t) ** 2)


def test_matching_reaches_the_target_likelihood_vector(two_gaussian, class0_points):
    """After 2000 Adam steps the class log-likelihoods match the target's to a relative error
    below 2e-3 (measured: 3e-4; 0.028 after 500 steps: the log-likelihood term, in units of √D
    nats, is the slow direction here), and the matched point is about as close to x as the
    nearest point with those log-likelihoods (within 1%; Adam's per-coordinate steps need not
    reach that very point)."""
    x, _ = class0_points
    tm, _ = two_gaussian_threat_model(two_gaussian)
    target = class1_targets(two_gaussian)
    matched = LikelihoodMatching(steps=2000).match(tm, x, target)

    v, v_t = two_gaussian.class_log_likelihoods(matched), two_gaussian.class_log_likelihoods(target)
    relative = (v - v_t).norm(dim=1) / v_t.norm(dim=1)
    assert (relative < 2e-3).all(), relative
    assert (matched.min() >= -0.5) and (matched.max() <= 0.5)
    distance = (matched - x).flatten(1).norm(dim=1)
    assert (distance <= 1.01 * closest_matching_distance(two_gaussian, x, target)).all()
    v_x = two_gaussian.class_log_likelihoods(x)
    assert ((v_x - v_t).norm(dim=1) > 100 * (v - v_t).norm(dim=1)).all()  # it did move


def test_attack_returns_the_closest_fooling_iterate(two_gaussian, class0_points):
    """The returned point is classified 1 and accepted (bits/dim <= T, recomputed on the model),
    beyond the hyperplane, and the closest of the path: no farther than the matched point (the
    last iterate) nor than the result of a shorter run."""
    x, y = class0_points
    tm, det = two_gaussian_threat_model(two_gaussian)
    target = class1_targets(two_gaussian)
    attack = LikelihoodMatching(steps=300)
    result = attack(tm, x, Misclassified(y) & NotDetected(det), target_images=target)

    assert result.success.all() and result.targets is None
    assert (two_gaussian.class_log_likelihoods(result.adversarial).argmax(1) == 1).all()
    assert (two_gaussian.bits_per_dim(result.adversarial) <= THRESHOLD).all()
    assert (result.l2 >= -(x.flatten(1) @ two_gaussian.u)).all()
    matched = attack.match(tm, x, target)
    assert (result.l2 <= (matched - x).flatten(1).norm(dim=1) + 1e-12).all()
    # 40 steps walk a prefix of the same path (Adam has no schedule): never closer
    shorter = LikelihoodMatching(steps=40)(
        tm, x, Misclassified(y) & NotDetected(det), target_images=target
    )
    assert shorter.success.all() and (result.l2 <= shorter.l2).all()
    assert (result.queries == 1 + attack.steps + 1).all()  # the target, then every iterate
    assert verify(tm, x, result, y).success_undetected.all()

    split = attack(tm, x, Misclassified(y) & NotDetected(det), target_images=target, batch_size=4)
    assert torch.equal(split.adversarial, result.adversarial)


SIGMA = 1.0  # nats: zero-mean Gaussian noise on each class score


def test_eot_matches_the_noise_free_target_under_score_noise(two_gaussian, class0_points):
    """Scores v(x) + σ·ε, ε ~ N(0, I) per row and draw. The log-posteriors and log p(x) of these
    scores are nearly affine in them here (the class log-likelihoods differ by ≥ 10 nats ≫ σ), so
    E of the squared mismatch is the noise-free mismatch plus a constant, and EOT over K draws
    aims at the noise-free target, up to the error of the target (the mean of K draws at x_t,
    σ/√K per class) and of the gradient's noise. With K = 32 and 2000 steps the noise-free
    scores end within 3σ/√K = 0.53 nats of the target's (measured 0.33; 0.45 after 1000
    steps); with K = 1 they do not (measured 2.5). The fooling iterate is class 1 per draw with
    probability Φ((v₁ − v₀)/(σ√2)) > 0.99."""

    def noisy(z, generator=None):
        v = two_gaussian.class_log_likelihoods(z)
        return v + SIGMA * torch.randn(v.shape, generator=generator, dtype=v.dtype)

    x, y = class0_points
    _, det = two_gaussian_threat_model(two_gaussian)
    target = class1_targets(two_gaussian)
    v_t = two_gaussian.class_log_likelihoods(target)

    def deployed():
        return ThreatModel(
            FreshNoise(noisy, seed=0),
            two_gaussian.bits_per_dim,
            det,
            num_classes=2,
            bits_from_class_scores=True,
            randomised=True,
        )

    k = 32
    matched = LikelihoodMatching(steps=2000, draws=k).match(deployed(), x, target)
    error = (two_gaussian.class_log_likelihoods(matched) - v_t).abs().amax()
    assert error < 3 * SIGMA / math.sqrt(k), error
    single = LikelihoodMatching(steps=2000).match(deployed(), x, target)
    assert (two_gaussian.class_log_likelihoods(single) - v_t).abs().amax() > error

    attack = LikelihoodMatching(steps=300, draws=k)
    result = attack(deployed(), x, Misclassified(y) & NotDetected(det), target_images=target)
    assert result.success.all()
    assert (result.queries == k * (1 + attack.steps + 1)).all()
    v = two_gaussian.class_log_likelihoods(result.adversarial)
    per_draw = torch.distributions.Normal(0.0, 1.0).cdf((v[:, 1] - v[:, 0]) / (SIGMA * 2**0.5))
    assert (per_draw > 0.99).all(), per_draw


def test_eot_iterates_are_judged_by_the_majority_of_draws(two_gaussian, class0_points):
    """Classifier only, small steps, K = 101: an iterate counts when more than half of its draws
    are class 1, so the returned point is class 1 per draw with probability Φ((v₁ − v₀)/(σ√2))
    >= 0.3 (a majority of 101 draws at 0.3 holds with probability 5e-6; measured 0.40–0.64, near
    the even odds of the noise-free boundary; judged by one draw, as low as 0.02)."""

    def noisy(z, generator=None):
        v = two_gaussian.class_log_likelihoods(z)
        return v + SIGMA * torch.randn(v.shape, generator=generator, dtype=v.dtype)

    x, y = class0_points
    deployed = ThreatModel(FreshNoise(noisy, seed=0), num_classes=2, randomised=True)
    attack = LikelihoodMatching(steps=300, stepsize=3e-3, draws=101)
    result = attack(deployed, x, Misclassified(y), target_images=class1_targets(two_gaussian))
    assert result.success.all()
    v = two_gaussian.class_log_likelihoods(result.adversarial)
    per_draw = torch.distributions.Normal(0.0, 1.0).cdf((v[:, 1] - v[:, 0]) / (SIGMA * 2**0.5))
    assert (per_draw >= 0.3).all(), per_draw


def test_pool_helper_picks_usable_images_of_another_class(two_gaussian, class0_points):
    """Pool (see ``_pool``): 8 usable class-1 images (0..7), 4 usable class-0 (8..11), 3 detected
    and 2 misclassified images labelled 1 (12..16): class-0 examples only ever get 0..7."""
    x, y = class0_points
    tm, _ = two_gaussian_threat_model(two_gaussian)
    pool_x, pool_y = _pool(two_gaussian)
    flat = pool_x.flatten(1)

    def indices(images):
        return [[int((flat == im.flatten()).all(1).nonzero()) for im in row] for row in images]

    images, labels = select_other_class_images(tm, x, y, pool_x, pool_y, n_candidates=8, seed=0)
    assert images.shape == (6, 8, *two_gaussian.shape) and torch.equal(labels, torch.ones(6, 8))
    assert all(sorted(row) == list(range(8)) for row in indices(images))
    assert (tm.decision(images.flatten(0, 1)) == 1).all()

    nearest, _ = select_other_class_images(tm, x, y, pool_x, pool_y, n_candidates=3, nearest=True)
    gaps = (flat[:8][None] - x.flatten(1)[:, None]).norm(dim=2)  # (6, 8)
    assert indices(nearest) == gaps.argsort(dim=1)[:, :3].tolist()

    picks = [
        indices(select_other_class_images(tm, x, y, pool_x, pool_y, n_candidates=2, seed=s)[0])
        for s in (0, 0, 1)
    ]
    assert picks[0] == picks[1] and picks[0] != picks[2]  # reproducible under the seed

    class1 = two_gaussian.on_axis([0.2, 0.25])
    other, labels = select_other_class_images(
        tm, class1, torch.ones(2, dtype=torch.long), pool_x, pool_y, n_candidates=4
    )
    assert torch.equal(labels, torch.zeros(2, 4)) and all(
        sorted(row) == [8, 9, 10, 11] for row in indices(other)
    )
    targeted, labels = select_other_class_images(
        tm, x, y, pool_x, pool_y, targets=torch.ones(6, dtype=torch.long)
    )
    assert torch.equal(labels, torch.ones(6, 1))


def test_convenience_function_with_pool_and_targets(two_gaussian, class0_points):
    x, y = class0_points
    tm, _ = two_gaussian_threat_model(two_gaussian)
    pool_x, pool_y = _pool(two_gaussian)
    targets = torch.ones(6, dtype=torch.long)
    result = likelihood_matching_attack(
        LikelihoodMatching(steps=200), tm, x, y, pool_x, pool_y, nearest=True, targets=targets
    )
    assert torch.equal(result.targets, targets)
    assert verify(tm, x, result, y).success_undetected.all()


@pytest.mark.parametrize(
    "options, argument",
    [
        ({"steps": 0}, "steps"),
        ({"stepsize": 0.0}, "stepsize"),
        ({"stepsize": math.inf}, "stepsize"),
        ({"distance_weight": -1.0}, "distance_weight"),
        ({"draws": 0}, "draws"),
        ({"draws": 2.0}, "draws"),
    ],
    ids=["steps-0", "stepsize-0", "stepsize-inf", "weight-negative", "draws-0", "draws-float"],
)
def test_bad_hyperparameters_name_the_argument(options, argument):
    with pytest.raises(ValueError, match=argument):
        LikelihoodMatching(**options)


def test_bad_inputs_name_the_argument(two_gaussian, class0_points):
    x, y = class0_points
    tm, det = two_gaussian_threat_model(two_gaussian)
    criterion = Misclassified(y) & NotDetected(det)
    attack = LikelihoodMatching(steps=2)
    target = class1_targets(two_gaussian)
    with pytest.raises(ValueError, match="target_images"):
        attack(tm, x, criterion, target_images=target[:3])
    with pytest.raises(ValueError, match="target_images"):
        attack(tm, x, criterion, target_images=target + 1.0)
    with pytest.raises(ValueError, match="target_images"):
        attack(tm, x, criterion, target_images=target.index_fill(0, torch.tensor([2]), math.nan))
    with pytest.raises(ValueError, match="model"):
        labels_only = DecisionModel(lambda z: tm.decision(z), num_classes=2, reject_label=2)
        attack(labels_only, x, Misclassified(y) & NotDetected(), target_images=target)
    with pytest.raises(ValueError, match="x"):
        attack(tm, x + 1.0, criterion, target_images=target)
    pool_x, pool_y = _pool(two_gaussian)
    with pytest.raises(ValueError, match="targets"):
        likelihood_matching_attack(attack, tm, x, y, pool_x, pool_y, targets=y)  # = true labels
    with pytest.raises(ValueError, match="pool_x"):
        likelihood_matching_attack(attack, tm, x, y, pool_x[:, :1], pool_y)


def test_matching_on_tiny_glow():
    """The real GLOW under fixed noise: 50 steps bring the log-posteriors at least 5× closer to
    the target image's (measured: 8.6–15×) and bits/dim at least 2× closer (measured 2.8–4.0×),
    in bounds; a returned success verifies."""
    _, tm, images = tiny_glow()
    labels = tm.classify(images)
    x, y = images[:3], labels[:3]
    targets, _ = select_other_class_images(tm, x, y, images[3:], labels[3:], nearest=True)
    attack = LikelihoodMatching(steps=50)
    matched = attack.match(tm, x, targets[:, 0])
    with torch.no_grad():
        target, clean, end = (tm.observe(z) for z in (targets[:, 0], x, matched))

    def gaps(obs):
        posterior = torch.log_softmax(obs.logits, 1) - torch.log_softmax(target.logits, 1)
        return posterior.norm(dim=1), (obs.bits_per_dim - target.bits_per_dim).abs()

    (posterior_before, bpd_before), (posterior_after, bpd_after) = gaps(clean), gaps(end)
    assert (posterior_after * 5 < posterior_before).all(), (posterior_before, posterior_after)
    assert (bpd_after * 2 < bpd_before).all(), (bpd_before, bpd_after)
    assert matched.min() >= -0.5 and matched.max() <= 0.5
    result = attack(tm, x, Misclassified(y) & NotDetected(tm.detector), target_images=targets[:, 0])
    verdicts = verify(tm, x, result, y)
    assert torch.equal(verdicts.success_undetected, result.success) and result.success.any()
