"""The segment bound on models with known answers: a linear classifier (the crossing of the segment
with the hyperplane), the two-Gaussian model with its detector (the first undetected class-1
point on the axis), a randomised linear classifier (majority decisions), and the tiny GLOW."""

import math

import pytest
import torch

import flows
from flows.attacks import (
    DecisionModel,
    LikelihoodDetector,
    Misclassified,
    NotDetected,
    ThreatModel,
    flows_threat_model,
    verify,
)
from flows.attacks.segment import SegmentAttack, segment_bound, select_other_class_images
from flows.noise import FreshNoise

THRESHOLD = 6.2  # bits/dim: the two-Gaussian axis is detected for |s| < s* ≈ 0.083


def two_gaussian_threat_model(model, threshold=THRESHOLD):
    det = LikelihoodDetector(threshold, model.dim)
    tm = ThreatModel(model.class_log_likelihoods, model.bits_per_dim, det, num_classes=2)
    return tm, det


def crossing(weight, bias, x, end):
    """α* where the score difference f = s₁ − s₀ (affine) changes sign on x → end."""
    w, c = weight[1] - weight[0], bias[1] - bias[0]
    fx, fe = x.flatten() @ w + c, end.flatten() @ w + c
    return (fx / (fx - fe)).item()


def test_linear_segment_bound_is_the_crossing_with_the_hyperplane(model_classes):
    """Class scores of order −10³ (log-likelihoods); three ends per example: the closest crossing
    is returned, within the stated bisection tolerance ‖e − x‖ / (G·2^S) above it, and the query
    count is 1 (clean) + per end the grid points up to the first hit (⌈α*·G⌉) + S."""
    _, Linear = model_classes
    weight = torch.tensor([[0.0, 0.0, 0.0, 0.0], [1.0, -0.5, 0.25, 0.7]], dtype=torch.float64)
    bias = torch.tensor([0.0, -0.05], dtype=torch.float64)
    model = Linear(weight, bias, offset=-1000.0)
    tm = ThreatModel(model, num_classes=2)
    gen = torch.Generator().manual_seed(0)
    x = -0.1 - 0.3 * torch.rand(4, 4, generator=gen, dtype=torch.float64)  # f < 0: class 0
    ends = 0.1 + 0.35 * torch.rand(4, 3, 4, generator=gen, dtype=torch.float64)  # f > 0
    y = torch.zeros(4, dtype=torch.long)
    attack = SegmentAttack(grid=32, bisection_steps=20)
    result = attack(tm, x, Misclassified(y), ends=ends)

    assert result.success.all() and result.targets is None
    assert (model(result.adversarial).argmax(1) == 1).all()
    g, s = attack.grid, attack.bisection_steps
    for i in range(4):
        alphas = [crossing(weight, bias, x[i], ends[i, k]) for k in range(3)]
        lengths = [(ends[i, k] - x[i]).norm().item() for k in range(3)]
        expected = min(a * d for a, d in zip(alphas, lengths, strict=True))
        tolerance = max(lengths) / (g * 2**s)  # 3.8e-8 here
        assert expected - 1e-12 <= result.l2[i].item() <= expected + tolerance
        assert result.queries[i].item() == 1 + sum(math.ceil(a * g) + s for a in alphas)


def test_two_gaussian_axis_first_undetected_class_1_point(two_gaussian):
    """On the axis s·u the segment passes through points that are class 1 but detected
    (0 < s < s*): the segment bound stops at s*, the plain classifier's at s = 0."""
    tm, det = two_gaussian_threat_model(two_gaussian)
    s_star = two_gaussian.first_undetected_s(THRESHOLD)
    starts, stops = [-0.2, -0.25, -0.15], [0.22, 0.25, 0.2]
    x, ends = two_gaussian.on_axis(starts), two_gaussian.on_axis(stops)
    y = torch.zeros(3, dtype=torch.long)
    attack = SegmentAttack(grid=64, bisection_steps=20)

    result = attack(tm, x, Misclassified(y) & NotDetected(det), ends=ends)
    s_found = result.adversarial.flatten(1) @ two_gaussian.u
    for i, (a, b) in enumerate(zip(starts, stops, strict=True)):
        tolerance = (b - a) / (64 * 2**20)
        assert s_star - 1e-12 <= s_found[i].item() <= s_star + tolerance
    assert (two_gaussian.bits_per_dim(result.adversarial) <= THRESHOLD).all()

    plain = attack(tm.with_detector(None), x, Misclassified(y), ends=ends)
    s_plain = plain.adversarial.flatten(1) @ two_gaussian.u
    assert (s_plain > 0).all() and (s_plain < 1e-6).all()
    assert (two_gaussian.bits_per_dim(plain.adversarial) > THRESHOLD).all()  # detected


def _pool(model):
    """Class-1 images near μ₁, class-0 images near μ₀, and unusable ones (labelled 1): three on
    the axis near 0 (detected) and two at μ₀ (classified 0)."""
    gen = torch.Generator().manual_seed(5)
    near1 = model.means[1] + 0.03 * torch.randn(8, model.dim, generator=gen, dtype=torch.float64)
    near0 = model.means[0] + 0.03 * torch.randn(4, model.dim, generator=gen, dtype=torch.float64)
    detected = model.on_axis([0.0, 0.01, 0.02]).flatten(1)
    wrong = model.means[0].expand(2, -1)
    images = torch.cat([near1, near0, detected, wrong]).reshape(-1, *model.shape)
    labels = torch.tensor([1] * 8 + [0] * 4 + [1] * 5)
    return images, labels


def test_segment_bound_from_pool_keeps_the_closest_success(two_gaussian, class0_points):
    x, y = class0_points
    tm, det = two_gaussian_threat_model(two_gaussian)
    pool_x, pool_y = _pool(two_gaussian)
    attack = SegmentAttack(grid=32, bisection_steps=16)
    result = segment_bound(attack, tm, x, y, pool_x, pool_y, n_candidates=3, seed=2)

    assert result.success.all() and result.targets is None
    assert (tm.decision(result.adversarial) == 1).all()  # class 1, not "non-image" (2)
    assert (two_gaussian.bits_per_dim(result.adversarial) <= THRESHOLD).all()
    assert (result.l2 >= -(x.flatten(1) @ two_gaussian.u)).all()  # beyond the hyperplane
    assert verify(tm, x, result, y).success_undetected.all()

    ends, _ = select_other_class_images(tm, x, y, pool_x, pool_y, n_candidates=3, seed=2)
    criterion = Misclassified(y) & NotDetected(det)
    single = torch.stack(
        [attack(tm, x, criterion, ends=ends[:, k]).l2 for k in range(3)], dim=1
    )  # (B, 3): one segment at a time
    assert torch.equal(result.l2, single.min(dim=1).values)
    assert (single.max(dim=1).values > single.min(dim=1).values).all()  # the choice matters


SIGMA = 0.1  # noise of the randomised linear classifier's score difference
WEIGHT = torch.tensor([1.0, -0.5, 0.25, 0.0], dtype=torch.float64)


def _noisy_linear(x, generator=None):
    """Scores (−10³, −10³ + f(x) + σ·ε), f = w·x, ε ~ N(0, 1) per row: class 1 with probability
    Φ(f(x)/σ) per draw."""
    f = x.flatten(1) @ WEIGHT.to(x.dtype)
    noise = SIGMA * torch.randn(len(x), generator=generator, dtype=x.dtype)
    return torch.stack([torch.full_like(f, -1000.0), -1000.0 + f + noise], dim=1)


def test_randomised_majority_decisions_find_the_even_odds_point():
    """Majority over M = 101 draws: the point found has a per-draw fooling probability
    Φ(f/σ) in [0.3, 0.7] (a majority of 101 draws at p = 0.3 holds with probability 5e-6),
    i.e. it is where the noise-free classifier flips; each decision costs 101 queries."""
    tm = ThreatModel(FreshNoise(_noisy_linear, seed=0), num_classes=2, randomised=True)
    gen = torch.Generator().manual_seed(1)
    x = torch.stack([torch.tensor([-0.4, 0.0, 0.0, 0.0])] * 4).double()
    x = x + 0.05 * torch.rand(4, 4, generator=gen, dtype=torch.float64)
    ends = torch.tensor([0.4, 0.0, 0.0, 0.0], dtype=torch.float64).expand(4, -1).clone()
    y = torch.zeros(4, dtype=torch.long)
    attack = SegmentAttack(grid=16, bisection_steps=10, draws=101)
    result = attack(tm, x, Misclassified(y), ends=ends)

    assert result.success.all()
    p = torch.distributions.Normal(0.0, 1.0).cdf(result.adversarial @ WEIGHT / SIGMA)
    assert ((p >= 0.3) & (p <= 0.7)).all(), p
    assert (result.queries % 101 == 0).all()
    assert (result.queries >= 101 * (1 + attack.bisection_steps)).all()


def test_unsuccessful_and_clean_adversarial_examples(two_gaussian, class0_points):
    x, y = class0_points
    tm, det = two_gaussian_threat_model(two_gaussian)
    criterion = Misclassified(y) & NotDetected(det)
    same_class = x.flip(0)  # class-0 ends: the criterion never holds on the segment
    result = SegmentAttack(grid=8, bisection_steps=4)(tm, x, criterion, ends=same_class)
    assert not result.success.any() and torch.isinf(result.l2).all()
    assert torch.equal(result.adversarial, x)
    assert all("none of the 8 grid points" in s for s in result.status)
    assert (result.queries == 1 + 8).all()  # the clean input, then the whole grid

    class1 = two_gaussian.on_axis([0.2, 0.22])  # already adversarial for label 0
    ends = two_gaussian.on_axis([-0.2, -0.22])
    clean = SegmentAttack()(tm, class1, Misclassified(y[:2]) & NotDetected(det), ends=ends)
    assert clean.success.all() and (clean.l2 == 0).all() and (clean.queries == 1).all()


def test_batch_size_invariant(two_gaussian, class0_points):
    x, y = class0_points
    tm, det = two_gaussian_threat_model(two_gaussian)
    pool_x, pool_y = _pool(two_gaussian)
    attack = SegmentAttack(grid=16, bisection_steps=8)
    whole = segment_bound(attack, tm, x, y, pool_x, pool_y, n_candidates=2, nearest=True)
    split = segment_bound(
        attack, tm, x, y, pool_x, pool_y, n_candidates=2, nearest=True, batch_size=4
    )
    assert torch.equal(whole.adversarial, split.adversarial)
    assert torch.equal(whole.queries, split.queries)


@pytest.mark.parametrize(
    "options, argument",
    [
        ({"grid": 0}, "grid"),
        ({"bisection_steps": -1}, "bisection_steps"),
        ({"draws": 0}, "draws"),
        ({"draws": True}, "draws"),
        ({"grid": 2.5}, "grid"),
    ],
    ids=["grid-0", "bisection-negative", "draws-0", "draws-bool", "grid-float"],
)
def test_bad_hyperparameters_name_the_argument(options, argument):
    with pytest.raises(ValueError, match=argument):
        SegmentAttack(**options)


def test_bad_inputs_name_the_argument(two_gaussian, class0_points):
    x, y = class0_points
    tm, det = two_gaussian_threat_model(two_gaussian)
    criterion = Misclassified(y) & NotDetected(det)
    attack = SegmentAttack(grid=4, bisection_steps=2)
    with pytest.raises(ValueError, match="ends"):
        attack(tm, x, criterion, ends=x[:3])
    with pytest.raises(ValueError, match="ends"):
        attack(tm, x, criterion, ends=x + 1.0)  # out of bounds
    with pytest.raises(ValueError, match="ends"):
        attack(tm, x, criterion, ends=x[:, None, :][:, :0])  # no end image
    with pytest.raises(ValueError, match="draws"):
        labels_only = DecisionModel(lambda z: tm.decision(z), num_classes=2, reject_label=2)
        SegmentAttack(draws=3)(labels_only, x, Misclassified(y) & NotDetected(), ends=x)
    pool_x, pool_y = _pool(two_gaussian)
    with pytest.raises(ValueError, match="n_candidates"):
        segment_bound(attack, tm, x, y, pool_x, pool_y, n_candidates=9)  # 8 usable class-1
    with pytest.raises(ValueError, match="pool_y"):
        segment_bound(attack, tm, x, y, pool_x, pool_y[:-1])


def tiny_glow():
    """The tiny GLOW, untrained but initialised, with class means drawn at random (an untrained
    prior gives every class the same score: argmax would be decided by rounding); 16 images, and
    a detector that accepts all of them."""
    gen = torch.Generator().manual_seed(0)
    model = flows.build_model("tiny", "reweight", num_classes=10, generator=gen).eval()
    images = torch.rand((16, *model.config.data_shape), generator=gen) - 0.5
    model.initialise(images, torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.prior.means.copy_(torch.randn(model.prior.means.shape, generator=gen))
    probe = flows_threat_model(model, LikelihoodDetector(100.0, model.num_dims), noise_seed=3)
    threshold = probe.bits_per_dim(images).max().item() + 0.01
    detector = LikelihoodDetector(threshold, model.num_dims)
    tm = flows_threat_model(model, detector, noise_seed=3, bits_from_class_scores=True)
    return model, tm, images


def test_segment_bound_on_tiny_glow():
    """The real GLOW under fixed noise: every example gets an end image of another class, and the
    results verify on the C+1-way decision."""
    model, tm, images = tiny_glow()
    labels = tm.classify(images)
    x, y = images[:3], labels[:3]
    result = segment_bound(
        SegmentAttack(grid=16, bisection_steps=8), tm, x, y, images[3:], labels[3:]
    )
    assert result.success.all()
    decided = tm.decision(result.adversarial)
    assert (decided != y).all() and (decided != model.num_classes).all()
    assert verify(tm, x, result, y).success_undetected.all()
