"""Boundary attack, plain and on the C+1-way decision, on models with known answers."""

import pytest
import torch

from flows.attacks import (
    BoundaryAttack,
    DecisionModel,
    LikelihoodDetector,
    Misclassified,
    NotDetected,
    TargetedMisclassified,
    ThreatModel,
    modified_boundary_attack,
    random_targets,
    select_starting_points,
)

BUDGET = 2000


def classify(model):
    """The labels-only model of a flows-style model's classifier."""
    return DecisionModel(lambda z: model.class_log_likelihoods(z).argmax(1))


def decide(fn, **options):
    return DecisionModel(fn, **options)


def test_untargeted_within_10_percent_of_analytic_in_budget(two_gaussian, class0_points):
    x, y = class0_points
    analytic = -(x.flatten(1) @ two_gaussian.u)
    result = BoundaryAttack(max_queries=BUDGET, seed=1)(classify(two_gaussian), x, Misclassified(y))
    assert result.success.all() and result.targets is None
    assert (result.queries <= BUDGET).all()
    assert (result.l2 >= analytic * (1 - 1e-9)).all()
    assert (result.l2 <= 1.1 * analytic).all()
    assert (two_gaussian.class_log_likelihoods(result.adversarial).argmax(1) == 1).all()


def test_targeted_linear_three_classes_from_noise(model_classes):
    _, Linear = model_classes
    weight = [[1.0, 0.0, 0.5, 0.0], [0.0, 1.0, 0.0, 0.0], [-1.0, -1.0, 0.0, 1.0]]
    model = Linear(weight, [0.3, 0.0, 0.0], offset=-1000.0)
    x = torch.tensor([[0.1, 0.1, 0.0, -0.2], [0.1, -0.2, 0.3, 0.0]], dtype=torch.float64)
    y, targets = torch.tensor([0, 0]), torch.tensor([2, 1])
    expected = torch.tensor([model.min_distance(x[0], 0, 2), model.min_distance(x[1], 0, 1)])
    result = BoundaryAttack(max_queries=BUDGET)(
        decide(lambda z: model(z).argmax(1), num_classes=3), x, TargetedMisclassified(targets, y)
    )
    assert torch.equal(model(result.adversarial).argmax(1), targets)
    assert torch.equal(result.targets, targets)
    assert (result.l2 <= 1.1 * expected.double()).all()
    assert (result.l2 >= expected.double() * (1 - 1e-9)).all()


def test_bounds_always_respected(model_classes):
    """An optimum on the box face: every returned coordinate stays inside."""
    _, Linear = model_classes
    model = Linear([[0.0, 0.0, 0.0], [1.0, 0.2, 0.0]], [0.0, -0.45])
    x = torch.tensor([[0.45, -0.3, 0.5], [-0.5, 0.5, -0.5]], dtype=torch.float64)
    result = BoundaryAttack(max_queries=1000)(
        decide(lambda z: model(z).argmax(1)), x, Misclassified(torch.zeros(2, dtype=torch.long))
    )
    assert result.success.all()
    assert result.adversarial.min() >= -0.5 and result.adversarial.max() <= 0.5
    assert (model(result.adversarial).argmax(1) == 1).all()


def test_deterministic_under_seed_and_batch_size_invariant(two_gaussian, class0_points):
    x, y = class0_points
    attack, model = BoundaryAttack(max_queries=300, seed=7), classify(two_gaussian)
    whole = attack(model, x, Misclassified(y))
    again = attack(model, x, Misclassified(y))
    split = attack(model, x, Misclassified(y), batch_size=4)
    for other in (again, split):
        assert torch.equal(other.adversarial, whole.adversarial)
        assert torch.equal(other.queries, whole.queries)
    other_seed = BoundaryAttack(max_queries=300, seed=8)(model, x, Misclassified(y))
    assert not torch.equal(other_seed.adversarial, whole.adversarial)


def test_constant_model_reports_initialisation_failure():
    x = torch.zeros(3, 4, dtype=torch.float64)
    constant = decide(lambda z: torch.zeros(len(z), dtype=torch.long))
    result = BoundaryAttack(init_attempts=20)(constant, x, Misclassified(torch.zeros(3).long()))
    assert not result.success.any()
    assert torch.isinf(result.l2).all()
    assert torch.equal(result.adversarial, x)
    assert all("initialisation failed" in s and "20" in s for s in result.status)
    assert (result.queries == 1 + 20).all()


def test_non_adversarial_starting_points_are_reported(two_gaussian, class0_points):
    x, y = class0_points
    attack = BoundaryAttack(max_queries=100)
    result = attack(classify(two_gaussian), x, Misclassified(y), starts=x.flip(0))
    assert not result.success.any()
    assert all(s == "starting point is not adversarial" for s in result.status)


def test_several_candidate_starts_keep_the_closest_after_bisection():
    """Adversarial where z_0 >= 0.4 or z_0 <= -0.1 (two disconnected regions): from candidates
    (B, S, ...) the bisected start is the nearest crossing whatever their order, a non-adversarial
    candidate is skipped, and the queries are 1 (clean) + 1 per candidate + the bisections."""
    model = decide(lambda z: ((z[:, 0] >= 0.4) | (z[:, 0] <= -0.1)).long(), bounds=(-0.5, 0.5))
    x, y = torch.zeros(1, 4, dtype=torch.float64), torch.zeros(1, dtype=torch.long)
    far, near, inert = (torch.zeros(4, dtype=torch.float64) for _ in range(3))
    far[0], near[0], inert[1] = 0.5, -0.5, 0.3
    attack = BoundaryAttack(steps=0, init_binary_steps=30)
    for order in ([far, near], [near, far], [inert, near, far]):
        result = attack(model, x, Misclassified(y), starts=torch.stack(order)[None])
        assert result.success.all()
        assert result.l2.item() == pytest.approx(0.1, abs=1e-8)
        assert result.queries.item() == 1 + len(order) + 2 * 30
    alone = attack(model, x, Misclassified(y), starts=far[None, None])
    assert alone.l2.item() == pytest.approx(0.4, abs=1e-8)
    assert torch.equal(
        alone.adversarial, attack(model, x, Misclassified(y), starts=far[None]).adversarial
    )
    none = attack(model, x, Misclassified(y), starts=torch.stack([inert, inert])[None])
    assert not none.success.any() and none.status == ("starting point is not adversarial",)
    with pytest.raises(ValueError, match=r"starts must have shape"):
        attack(model, x, Misclassified(y), starts=torch.zeros(1, 2, 3, dtype=torch.float64))


def test_already_adversarial_input_is_returned_unchanged(two_gaussian):
    x = two_gaussian.on_axis([0.1])
    result = BoundaryAttack()(classify(two_gaussian), x, Misclassified(torch.tensor([0])))
    assert result.success.all() and result.l2.item() == 0 and result.queries.item() == 1


def c_plus_1(two_gaussian, threshold=6.2):
    det = LikelihoodDetector(threshold=threshold, num_dims=two_gaussian.dim)
    tm = ThreatModel(
        two_gaussian.class_log_likelihoods, two_gaussian.bits_per_dim, det, num_classes=2
    )
    return tm, det


def test_modified_boundary_attack_respects_detector_and_is_near_analytic(two_gaussian):
    m = two_gaussian
    tm, det = c_plus_1(m)
    s0 = torch.tensor([-0.3, -0.2, -0.35])
    x, y = m.on_axis(s0), torch.zeros(3, dtype=torch.long)
    pool_s = torch.linspace(-0.4, 0.4, 9)
    pool_x, pool_y = m.on_axis(pool_s), (pool_s > 0).long()
    result = modified_boundary_attack(BoundaryAttack(max_queries=BUDGET), tm, x, y, pool_x, pool_y)
    targets = result.targets
    assert targets.tolist() == [1, 1, 1]
    assert result.success.all()
    assert torch.equal(tm.decision(result.adversarial), targets)
    assert not det.detected(m.bits_per_dim(result.adversarial)).any()
    analytic = (m.first_undetected_s(det.threshold) - s0).double()
    assert (result.l2 >= analytic * (1 - 1e-6)).all()
    assert (result.l2 <= 1.1 * analytic).all()


def test_c_plus_1_attack_from_noise_cannot_initialise(two_gaussian):
    """Section 6.2: random images are all "non-image", so the plain initialisation fails."""
    tm, _ = c_plus_1(two_gaussian)
    x = two_gaussian.on_axis([-0.3, -0.2])
    y, targets = torch.zeros(2, dtype=torch.long), torch.ones(2, dtype=torch.long)
    criterion = TargetedMisclassified(targets, y) & NotDetected(tm.detector)
    result = BoundaryAttack(init_attempts=50)(tm, x, criterion)
    assert not result.success.any()
    assert all("initialisation failed" in s for s in result.status)


def test_untargeted_c_plus_1_never_counts_non_image_as_success(two_gaussian):
    tm, det = c_plus_1(two_gaussian, threshold=5.9)
    x = two_gaussian.on_axis([-0.25])
    start = two_gaussian.on_axis([0.25])
    assert tm.decision(x).item() == 0 and tm.decision(start).item() == 1
    decision = decide(tm.decision, reject_label=2)  # the C+1-way decision, labels only
    criterion = Misclassified(torch.tensor([0])) & NotDetected()
    result = BoundaryAttack(max_queries=500)(decision, x, criterion, starts=start)
    assert result.success.all()
    assert tm.decision(result.adversarial).item() == 1
    assert not det.detected(two_gaussian.bits_per_dim(result.adversarial)).any()


def test_starting_points_are_correct_undetected_images_of_the_target(two_gaussian):
    tm, _ = c_plus_1(two_gaussian)
    pool_s = torch.tensor([-0.25, 0.25, 0.02, 0.3, -0.02])  # ±0.02 lie in the detected gap
    pool_x, pool_y = two_gaussian.on_axis(pool_s), torch.tensor([0, 1, 1, 0, 0])
    targets = torch.tensor([1, 1, 1, 1, 0, 0])
    starts = select_starting_points(tm, pool_x, pool_y, targets, seed=3)
    assert torch.equal(starts[:4], pool_x[1:2].expand(4, -1, -1, -1))
    assert torch.equal(starts[4:], pool_x[:1].expand(2, -1, -1, -1))
    with pytest.raises(ValueError, match="no pool image of class 1"):
        select_starting_points(tm, pool_x[2:], pool_y[2:], targets, seed=3)


def test_random_targets_differ_from_labels_and_cover_classes():
    y = torch.arange(10).repeat(50)
    t = random_targets(y, 10, seed=0)
    assert (t != y).all() and set(t.tolist()) == set(range(10))
    assert torch.equal(t, random_targets(y, 10, seed=0))


def test_invalid_hyperparameters():
    with pytest.raises(ValueError):
        BoundaryAttack(step_adaptation=1.0)
    with pytest.raises(ValueError):
        BoundaryAttack(init_attempts=0)


def test_low_frequency_proposals_span_only_the_coarse_grid():
    """proposal_scale s: every draw is a bilinear upsampling of a (C, H/s, W/s) draw, so many
    draws span exactly C·(H/s)·(W/s) dimensions; s = 1 spans all C·H·W."""
    from flows.attacks.boundary import _NoiseBank

    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    shape = torch.Size((2, 8, 8))
    for scale, rank in ((1, 128), (2, 32), (4, 8)):
        bank = _NoiseBank(gens, shape, torch.float64, torch.device("cpu"), scale=scale)
        draws = torch.cat([bank.draw(torch.arange(3)) for _ in range(80)])
        assert draws.shape == (240, 2, 8, 8)
        assert torch.linalg.matrix_rank(draws.flatten(1)).item() == rank


def test_low_frequency_proposals_near_analytic_and_batch_invariant(model_classes):
    TwoGaussian, _ = model_classes
    model = TwoGaussian(dim=64, shape=(1, 8, 8))
    gen = torch.Generator().manual_seed(0)
    noise = 0.05 * torch.randn(4, 64, generator=gen, dtype=torch.float64)
    x = (model.means[0] + noise).reshape(4, 1, 8, 8)
    y = torch.zeros(4, dtype=torch.long)
    analytic = -(x.flatten(1) @ model.u)
    attack = BoundaryAttack(max_queries=BUDGET, seed=1, proposal_scale=2)
    whole = attack(classify(model), x, Misclassified(y))
    split = attack(classify(model), x, Misclassified(y), batch_size=3)
    assert whole.success.all() and (whole.queries <= BUDGET).all()
    assert (whole.l2 >= analytic * (1 - 1e-9)).all() and (whole.l2 <= 1.1 * analytic).all()
    assert torch.equal(split.adversarial, whole.adversarial)
    assert torch.equal(split.queries, whole.queries)


def test_proposal_scale_validation(two_gaussian, class0_points):
    with pytest.raises(ValueError, match="proposal_scale"):
        BoundaryAttack(proposal_scale=0)
    x, y = class0_points
    with pytest.raises(ValueError, match="proposal_scale"):
        low = BoundaryAttack(max_queries=50, proposal_scale=2)
        low(classify(two_gaussian), x.flatten(1), Misclassified(y))


def test_spherical_moves_walk_along_a_boundary_without_getting_farther():
    """Adversarial iff ‖z − x‖ ≥ r: the bisected start is (nearly) optimal, so every final
    candidate, at (1 − source_step)·d < r, fails. Brendel et al.'s rule then never moves; with
    spherical moves the walk travels along the sphere, never farther than the start. With a
    reject_label the default turns the moves off."""
    gen = torch.Generator().manual_seed(0)
    centre = 0.2 * (torch.rand(1, 1, 4, 4, dtype=torch.float64, generator=gen) - 0.5)
    x = centre.expand(3, 1, 4, 4).clone()  # three examples, three random walks
    r = 0.3

    def outside(z):
        return ((z - centre).flatten(1).norm(dim=1) >= r).long()

    model, y = decide(outside), torch.zeros(3, dtype=torch.long)
    kwargs = dict(max_queries=300, seed=3)
    start = BoundaryAttack(steps=0, **kwargs)(model, x, Misclassified(y)).adversarial
    still = BoundaryAttack(spherical_moves=False, **kwargs)(model, x, Misclassified(y))
    moved = BoundaryAttack(**kwargs)(model, x, Misclassified(y))
    assert torch.equal(still.adversarial, start)
    for result in (still, moved):
        assert result.success.all()
        assert (result.l2 >= r).all()
        assert (result.l2 <= (start - x).flatten(1).norm(dim=1)).all()
    # moved far along the sphere: the angle to the start direction is large
    a, b = (start - x).flatten(1), (moved.adversarial - x).flatten(1)
    cosine = (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1))
    assert (cosine < 0.9).all()
    # on a C+1-way decision (a reject_label, NotDetected) the default is Brendel et al.'s rule
    rejecting, detection = decide(outside, reject_label=2), Misclassified(y) & NotDetected()
    c_plus_1 = BoundaryAttack(**kwargs)(rejecting, x, detection)
    assert torch.equal(c_plus_1.adversarial, still.adversarial)
    forced = BoundaryAttack(spherical_moves=True, **kwargs)(rejecting, x, detection)
    assert torch.equal(forced.adversarial, moved.adversarial)


def test_spherical_moves_default_follows_the_criterion(two_gaussian, class0_points):
    """The default decides from the criterion: off when it involves NotDetected."""
    from flows.attacks.boundary import _involves_detection
    from flows.attacks.criteria import Misclassified, NotDetected, Observation

    y = torch.zeros(3, dtype=torch.long)
    assert not _involves_detection(Misclassified(y))
    assert _involves_detection(NotDetected())
    assert _involves_detection(Misclassified(y) & NotDetected())
    x, labels = class0_points

    class RejectsNothing:  # a detector that rejects nothing: the criteria differ only in name
        bounds, num_classes = (-0.5, 0.5), 2

        def observe(self, z):
            scores = two_gaussian.class_log_likelihoods(z)
            return Observation(logits=scores, rejected=torch.zeros(len(z), dtype=torch.bool))

    model = RejectsNothing()

    runs = {}
    for moves in (None, True, False):
        for detect in (False, True):
            criterion = Misclassified(labels) & NotDetected() if detect else Misclassified(labels)
            attack = BoundaryAttack(max_queries=300, seed=2, spherical_moves=moves)
            runs[moves, detect] = attack(model, x, criterion).adversarial
    assert torch.equal(runs[None, False], runs[True, False])
    assert torch.equal(runs[None, True], runs[False, True])
    assert not torch.equal(runs[True, False], runs[False, False])


# --- decision_draws: majority decisions on randomised models ------------------------------------


def test_decision_draws_on_a_deterministic_model_only_repeat_the_queries(
    two_gaussian, class0_points
):
    """With equal draws every vote is unanimous: the same walk, on a ThreatModel and on a
    labels-only DecisionModel; M = 3 at quorum 1/2 needs 2 votes, and a unanimous vote is
    certain after 2 draws, so every decision costs 2 queries."""
    x, y = class0_points
    tm = ThreatModel(two_gaussian.class_log_likelihoods, num_classes=2)
    for model in (tm, classify(two_gaussian)):
        one = BoundaryAttack(steps=100, seed=1)(model, x, Misclassified(y))
        three = BoundaryAttack(steps=100, seed=1, decision_draws=3)(model, x, Misclassified(y))
        assert torch.equal(three.adversarial, one.adversarial)
        assert torch.equal(three.queries, 2 * one.queries)


def test_decision_draws_are_a_sequential_strict_vote():
    """A labels-only model whose verdicts are scripted per example, draw after draw: each round
    is one batched call (draw-major) of M - v + 1 draws per open point (v: the votes needed), a
    point stops drawing once its outcome is certain, and the verdict is the full vote's: more
    than quorum·M of the M draws."""
    scripts: dict[int, list[int]] = {}
    drawn: dict[int, int] = {}
    calls = []

    def decision_fn(z):
        calls.append(len(z))
        example = (z[:, 0] > 0).long()  # example 0 is the point -0.25·1, example 1 +0.25·1
        out = torch.empty(len(z), dtype=torch.long)
        for e in example.unique().tolist():
            rows = torch.nonzero(example == e).flatten()  # its draws, in order
            out[rows] = torch.tensor(scripts[e][drawn[e] : drawn[e] + len(rows)])
            drawn[e] += len(rows)
        return out  # label 1: adversarial for y = 0

    x = torch.tensor([[-0.25] * 3, [0.25] * 3], dtype=torch.float64)
    y = torch.zeros(2, dtype=torch.long)

    def run(attack, script0, script1):
        scripts.update({0: script0, 1: script1})
        drawn.update({0: 0, 1: 0})
        calls.clear()
        # steps=0: the clean inputs are decided, then the starting points (= x)
        return attack(decide(decision_fn), x, Misclassified(y), starts=x)

    # M = 4, quorum 1/2: 3 votes needed, rounds of 2 draws
    majority = BoundaryAttack(steps=0, init_binary_steps=0, decision_draws=4)
    result = run(majority, [0, 0, 1, 1, 1, 0], [0, 1, 1, 0, 1, 0, 0, 0])
    # clean: example 0 rejected after 2 misses, example 1 after 4 draws (2 votes, a tie);
    # starts: example 0 accepted at its 3rd vote, example 1 rejected at its 3rd miss
    assert calls == [2 * 2, 2, 2 * 2, 2 * 2]
    assert result.success.tolist() == [True, False]
    assert result.queries.tolist() == [2 + 4, 4 + 4]
    # quorum 3/4: every draw must vote (more than 3 of 4), rounds of 1 draw
    strict = BoundaryAttack(steps=0, init_binary_steps=0, decision_draws=4, decision_quorum=0.75)
    result = run(strict, [1, 1, 1, 0, 1, 1, 1, 1], [0, 1, 1, 1, 0])
    assert result.success.tolist() == [True, False]
    assert result.queries.tolist() == [4 + 4, 1 + 4]
    assert calls == [2, 1, 1, 1] + [2] * 4


def test_decision_draws_never_exceed_the_query_budget(two_gaussian, class0_points):
    x, y = class0_points
    budget = 301  # not a multiple of M = 3: the last decision must not be started
    attack = BoundaryAttack(max_queries=budget, seed=1, decision_draws=3)
    result = attack(classify(two_gaussian), x, Misclassified(y))
    assert result.success.all()
    assert (result.queries <= budget).all() and (result.queries > budget - 2 * 3).all()


def test_modified_boundary_attack_with_decision_draws(two_gaussian):
    """The starting points and the walk use M draws; on a deterministic model the same result."""
    m = two_gaussian
    tm, _ = c_plus_1(m)
    x, y = m.on_axis(torch.tensor([-0.3, -0.2])), torch.zeros(2, dtype=torch.long)
    pool_s = torch.linspace(-0.4, 0.4, 9)
    pool_x, pool_y = m.on_axis(pool_s), (pool_s > 0).long()
    one = modified_boundary_attack(BoundaryAttack(steps=100), tm, x, y, pool_x, pool_y)
    three = modified_boundary_attack(
        BoundaryAttack(steps=100, decision_draws=3), tm, x, y, pool_x, pool_y
    )
    assert one.success.all()
    assert torch.equal(three.adversarial, one.adversarial)
    assert torch.equal(three.queries, 2 * one.queries)  # unanimous votes: 2 of 3 draws decide


def test_decision_draws_validation():
    for bad in (0, 2.0, True):
        with pytest.raises(ValueError, match="decision_draws: must be an integer >= 1"):
            BoundaryAttack(decision_draws=bad)
    for bad in (0.4, 1.0):
        with pytest.raises(ValueError, match=r"decision_quorum: must lie in \[0.5, 1\)"):
            BoundaryAttack(decision_quorum=bad)
