"""Carlini–Wagner L2 on models with an analytic minimal adversarial."""

import pytest
import torch

from flows.attacks import (
    CarliniWagnerL2,
    LikelihoodDetector,
    Misclassified,
    NotDetected,
    Observation,
    TargetedMisclassified,
    ThreatModel,
)

FAST = {"binary_search_steps": 6, "steps": 300}


def classifier(logits_fn, num_classes=2):
    """The threat model of a plain classifier (no detector)."""
    return ThreatModel(logits_fn, num_classes=num_classes)


@pytest.mark.parametrize("initial_const", [1e-3, "auto"], ids=["c0=1e-3", "c0=auto"])
@pytest.mark.parametrize("warm_start", [True, False], ids=["warm", "restart"])
def test_untargeted_two_gaussian_within_1e_2_relative(
    two_gaussian, class0_points, warm_start, initial_const
):
    x, y = class0_points
    analytic = -(x.flatten(1) @ two_gaussian.u)
    attack = CarliniWagnerL2(warm_start=warm_start, initial_const=initial_const, **FAST)
    result = attack(classifier(two_gaussian.class_log_likelihoods), x, Misclassified(y))
    assert result.success.all() and result.targets is None
    torch.testing.assert_close(result.l2, analytic, rtol=1e-2, atol=0)
    labels = two_gaussian.class_log_likelihoods(result.adversarial).argmax(1)
    assert (labels == 1).all()
    assert (result.queries > 0).all() and result.status == ("success",) * 6


def test_targeted_linear_three_classes_at_log_likelihood_scale(model_classes):
    """Scores of order −10³: targeted and untargeted distances match the hyperplane distances."""
    _, Linear = model_classes
    weight = [[1.0, 0.0, 0.5, 0.0], [0.0, 1.0, 0.0, 0.0], [-1.0, -1.0, 0.0, 1.0]]
    model = Linear(weight, [0.3, 0.0, 0.0], offset=-1000.0)
    x = torch.tensor([[0.1, 0.1, 0.0, -0.2], [0.1, -0.2, 0.3, 0.0]], dtype=torch.float64)
    y = model(x).argmax(1)
    assert y.tolist() == [0, 0]
    dist = {t: torch.tensor([model.min_distance(xi, 0, t) for xi in x]) for t in (1, 2)}
    nearest = torch.where(dist[1] < dist[2], 1, 2)
    assert nearest.tolist() == [1, 2]  # different runner-ups, so a wrong pick would show
    untargeted = CarliniWagnerL2(**FAST)(classifier(model, 3), x, Misclassified(y))
    assert torch.equal(model(untargeted.adversarial).argmax(1), nearest)
    torch.testing.assert_close(
        untargeted.l2, torch.minimum(dist[1], dist[2]).double(), rtol=1e-2, atol=0
    )
    targets = torch.tensor([2, 1])
    targeted = CarliniWagnerL2(**FAST)(classifier(model, 3), x, TargetedMisclassified(targets, y))
    assert torch.equal(model(targeted.adversarial).argmax(1), targets)
    assert torch.equal(targeted.targets, targets)  # the result carries the criterion's targets
    expected = torch.stack([dist[2][0], dist[1][1]]).double()
    torch.testing.assert_close(targeted.l2, expected, rtol=1e-2, atol=0)


def test_detection_aware_matches_analytic_and_plain_cw_is_detected(two_gaussian):
    m = two_gaussian
    det = LikelihoodDetector(threshold=6.2, num_dims=m.dim)
    s0 = torch.tensor([-0.3, -0.2, -0.35])
    x, y = m.on_axis(s0), torch.zeros(3, dtype=torch.long)
    assert not det.detected(m.bits_per_dim(x)).any()
    s_star = m.first_undetected_s(det.threshold)
    plain = CarliniWagnerL2(**FAST)(classifier(m.class_log_likelihoods), x, Misclassified(y))
    assert plain.success.all() and det.detected(m.bits_per_dim(plain.adversarial)).all()
    tm = ThreatModel(m.class_log_likelihoods, m.bits_per_dim, det, num_classes=2)
    aware = CarliniWagnerL2(**FAST)(tm, x, Misclassified(y) & NotDetected(det))
    assert aware.success.all()
    assert not det.detected(m.bits_per_dim(aware.adversarial)).any()
    assert (m.class_log_likelihoods(aware.adversarial).argmax(1) == 1).all()
    torch.testing.assert_close(aware.l2, (s_star - s0).double(), rtol=1e-2, atol=0)


def test_bits_from_class_scores_equal_the_two_encoding_attack_with_one_call_per_step(two_gaussian):
    """bits_from_class_scores: bits/dim from the same class log-likelihoods (D = the detector's
    num_dims); bits_per_dim is never called."""
    m = two_gaussian
    det = LikelihoodDetector(threshold=6.2, num_dims=m.dim)
    x, y = m.on_axis(torch.tensor([-0.3, -0.2, -0.35])), torch.zeros(3, dtype=torch.long)
    calls = {"scores": 0, "bits": 0}

    def scores(z):
        calls["scores"] += 1
        return m.class_log_likelihoods(z)

    def bits(z):
        calls["bits"] += 1
        return m.bits_per_dim(z)

    criterion = Misclassified(y) & NotDetected(det)
    two = ThreatModel(scores, bits, det, num_classes=2)
    two_encodings = CarliniWagnerL2(**FAST)(two, x, criterion)
    assert calls["bits"] == calls["scores"] > 0
    calls.update(scores=0, bits=0)
    one = ThreatModel(scores, bits, det, num_classes=2, bits_from_class_scores=True)
    one_encoding = CarliniWagnerL2(**FAST)(one, x, criterion)
    assert calls["bits"] == 0 and calls["scores"] > 0
    assert torch.equal(one_encoding.success, two_encodings.success) and one_encoding.success.all()
    torch.testing.assert_close(one_encoding.l2, two_encodings.l2, rtol=1e-6, atol=1e-9)
    assert not det.detected(m.bits_per_dim(one_encoding.adversarial)).any()
    with pytest.raises(ValueError, match="bits_from_class_scores needs a detector"):
        ThreatModel(scores, num_classes=2, bits_from_class_scores=True)


def test_auto_initial_const_is_twice_the_lagrange_multiplier_of_a_linear_model(model_classes):
    """Linear scores: c0 = 2 c*, c* = 2 margin / ||w_y - w_j||^2 the constrained optimum's multiplier.

    The hinge's log-posterior margin s_y - s_j is linear in x, so the linearisation is exact and
    the minimiser of ||d||^2 + c * hinge is the minimal adversarial for every c >= c*; one
    binary-search step from c0 already lands on it (within the tolerance of Adam's last steps)."""
    _, Linear = model_classes
    weight = [[1.0, 0.0, 0.5, 0.0], [0.0, 1.0, 0.0, 0.0], [-1.0, -1.0, 0.0, 1.0]]
    model = Linear(weight, [0.3, 0.0, 0.0], offset=-1000.0)
    x = torch.tensor([[0.1, 0.1, 0.0, -0.2], [0.1, -0.2, 0.3, 0.0]], dtype=torch.float64)
    y = model(x).argmax(1)
    expected = {}
    attack = CarliniWagnerL2(initial_const="auto")
    const = attack._linearised_const(classifier(model, 3), x, Misclassified(y))
    w = torch.tensor(weight, dtype=torch.float64)
    scores = model(x)
    for i in range(2):
        runner_up = max((j for j in range(3) if j != y[i]), key=lambda j: scores[i, j].item())
        margin = scores[i, y[i]] - scores[i, runner_up]
        expected[i] = 2 * (2 * margin / (w[y[i]] - w[runner_up]).pow(2).sum())
    torch.testing.assert_close(const, torch.stack([expected[0], expected[1]]), rtol=1e-12, atol=0)
    one_step = CarliniWagnerL2(initial_const="auto", binary_search_steps=1, steps=300)
    result = one_step(classifier(model, 3), x, Misclassified(y))
    dist = torch.tensor(
        [min(model.min_distance(xi, 0, t) for t in (1, 2)) for xi in x], dtype=torch.float64
    )
    assert result.success.all()
    torch.testing.assert_close(result.l2, dist, rtol=1e-2, atol=0)


def test_confidence_gives_the_requested_log_posterior_margin(two_gaussian, class0_points):
    x, y = class0_points
    attack = CarliniWagnerL2(confidence=3.0, **FAST)
    result = attack(classifier(two_gaussian.class_log_likelihoods), x, Misclassified(y))
    log_post = torch.log_softmax(two_gaussian.class_log_likelihoods(result.adversarial), 1)
    assert (log_post[:, 1] - log_post[:, 0] >= 3.0).all()


def test_bounds_respected_when_the_box_binds(model_classes):
    """The unconstrained optimum lies outside [−0.5, 0.5]; the result stays inside."""
    _, Linear = model_classes
    model = Linear([[0.0, 0.0], [1.0, 0.2]], [0.0, -0.45])
    x = torch.tensor([[0.3, 0.0], [0.45, -0.3]], dtype=torch.float64)
    result = CarliniWagnerL2(**FAST)(classifier(model), x, Misclassified(torch.zeros(2).long()))
    assert result.success.all()
    assert result.adversarial.min() >= -0.5 and result.adversarial.max() <= 0.5
    assert (result.l2 > torch.tensor([model.min_distance(xi, 0, 1) for xi in x])).all()


def test_deterministic_and_batch_size_invariant(two_gaussian, class0_points):
    x, y = class0_points
    attack = CarliniWagnerL2(binary_search_steps=3, steps=100)
    model = classifier(two_gaussian.class_log_likelihoods)
    whole = attack(model, x, Misclassified(y))
    again = attack(model, x, Misclassified(y))
    split = attack(model, x, Misclassified(y), batch_size=4)
    for other in (again, split):
        torch.testing.assert_close(other.adversarial, whole.adversarial, rtol=0, atol=1e-12)
        assert torch.equal(other.queries, whole.queries)
        assert torch.equal(other.success, whole.success)


def test_constant_model_fails_and_never_claims_success():
    x = torch.zeros(3, 5, dtype=torch.float64)

    def constant(z):
        scores = torch.tensor([2.0, 1.0], dtype=z.dtype).expand(len(z), 2)
        return scores + 0 * z.sum(1, keepdim=True)  # differentiable, gradient zero

    result = CarliniWagnerL2(**FAST)(classifier(constant), x, Misclassified(torch.zeros(3).long()))
    assert not result.success.any()
    assert torch.isinf(result.l2).all()
    assert torch.equal(result.adversarial, x)
    assert all("no adversarial" in s for s in result.status)


def test_already_misclassified_input_costs_nothing(model_classes):
    _, Linear = model_classes
    model = Linear([[1.0, 0.0], [0.0, 1.0]], [0.0, 0.0])
    x = torch.tensor([[0.0, 0.3]], dtype=torch.float64)
    attack = CarliniWagnerL2(binary_search_steps=1, steps=10)
    result = attack(classifier(model), x, Misclassified(torch.tensor([0])))
    assert result.success.all() and result.l2.item() < 1e-5


def test_argument_validation(two_gaussian, class0_points):
    x, y = class0_points
    scores = two_gaussian.class_log_likelihoods
    with pytest.raises(ValueError, match="must be given together"):
        ThreatModel(scores, abs, num_classes=2)
    with pytest.raises(ValueError, match="bits_from_class_scores needs a detector"):
        ThreatModel(scores, num_classes=2, bits_from_class_scores=True)
    with pytest.raises(ValueError, match="needs a detector and bits_per_dim"):  # no bits/dim
        CarliniWagnerL2(**FAST)(
            classifier(scores), x, Misclassified(y) & NotDetected(LikelihoodDetector(6.2, 8))
        )
    with pytest.raises(ValueError, match="bounds"):
        CarliniWagnerL2()(classifier(scores), x + 1.0, Misclassified(y))
    with pytest.raises(ValueError, match="labels must have shape"):
        CarliniWagnerL2()(classifier(scores), x, Misclassified(y[:2]))
    with pytest.raises(ValueError, match=r"logits_fn: must return class scores \(6, 3\)"):
        CarliniWagnerL2()(classifier(scores, 3), x, Misclassified(y))
    with pytest.raises(ValueError, match="steps"):
        CarliniWagnerL2(steps=0)
    for bad in (0, -1.0, "linear"):
        with pytest.raises(ValueError, match="initial_const"):
            CarliniWagnerL2(initial_const=bad)


def test_any_model_with_observe_bounds_and_num_classes(two_gaussian, class0_points):
    """The attack needs only ``observe``, ``bounds`` and ``num_classes`` of its model."""
    x, y = class0_points

    class Own:
        bounds, num_classes = (-0.5, 0.5), 2

        def observe(self, z):
            return Observation(logits=two_gaussian.class_log_likelihoods(z))

    result = CarliniWagnerL2(**FAST)(Own(), x, Misclassified(y))
    assert result.success.all()
    hook = CarliniWagnerL2(**FAST).run(Own(), x, Misclassified(y))  # one batch, not validated
    assert torch.equal(hook.adversarial, result.adversarial)


@pytest.mark.parametrize("slope, expect_success", [(0.01, False), (0.2, True)])
def test_float32_win_below_rounding_of_large_scores_is_not_a_success(slope, expect_success):
    """Class scores ≈ −5000 in float32 (a flows model's scale; 1 ULP ≈ 4.9e-4 nats).

    s_1 − s_0 = slope · (x_0 − 0.4): at the box corner x_0 = 0.5 class 1 wins by 1e-3 nats with
    slope 0.01 (2 ULP, a tie under other rounding, so never counted) and by 0.02 with slope 0.2
    (then the attack succeeds, and the win survives re-evaluation in float64)."""
    x = torch.zeros(2, 2, dtype=torch.float32)

    def scores(z):
        base = torch.full((len(z), 1), -5000.0, dtype=z.dtype) + 0 * z[:, :1]
        return torch.cat([base, base + slope * (z[:, :1] - 0.4)], dim=1)

    result = CarliniWagnerL2(**FAST)(classifier(scores), x, Misclassified(torch.zeros(2).long()))
    assert torch.equal(result.success, torch.full((2,), expect_success))
    if expect_success:
        margin = slope * (result.adversarial[:, 0].double() - 0.4)
        assert (margin > 8 * torch.finfo(torch.float32).eps * 5000).all()  # well clear of a tie
        assert (result.adversarial[:, 0] < 0.5).all()
    else:
        assert torch.equal(result.adversarial, x)


# --- space="box": projected Adam in x space ------------------------------------------------------


def at_lower_bound_model():
    """Scores ±500·g(x), g = Σ_{i<4} (x_i + 0.5) − 0.04: only coordinates 0..3 matter, and the
    inputs have them exactly at the lower bound −0.5. The minimal adversarial raises each of
    them by 0.01: L2 = 0.02 (the other coordinates, inside the box, stay)."""

    def scores(z):
        g = (z.flatten(1)[:, :4] + 0.5).sum(1) - 0.04
        return torch.stack([-500 * g, 500 * g], dim=1)

    x = torch.zeros(3, 8, dtype=torch.float64)
    x[:, :4] = -0.5
    x[:, 4:] = torch.tensor([[0.1, -0.2, 0.3, 0.0], [0.2, 0.2, -0.1, 0.4], [-0.3, 0.1, 0.0, 0.25]])
    return classifier(scores), x, torch.zeros(3, dtype=torch.long), 0.02


def test_box_space_moves_coordinates_at_the_bound_where_tanh_cannot():
    """4 × 60 steps: in tanh space a coordinate at the bound has dx/dw ≈ 1e-6 and moves by 0.01
    only after ~500 steps of 1e-2, so no adversarial is found (early abort off: not a matter of
    stopping); projected Adam in x space finds the minimal one. Given 9 × 300 steps, tanh gets
    there too: the budget, not the problem, is what fails."""
    model, x, y, analytic = at_lower_bound_model()
    few = {"binary_search_steps": 4, "steps": 60, "abort_early": False}
    tanh = CarliniWagnerL2(space="tanh", **few)(model, x, Misclassified(y))
    box = CarliniWagnerL2(space="box", **few)(model, x, Misclassified(y))
    assert not tanh.success.any()
    assert box.success.all()
    torch.testing.assert_close(box.l2, torch.full((3,), analytic, dtype=x.dtype), rtol=1e-2, atol=0)
    assert torch.equal(box.adversarial[:, 4:], x[:, 4:])  # only the coordinates that matter
    assert (box.adversarial[:, :4] >= -0.5).all()
    long = CarliniWagnerL2(space="tanh", binary_search_steps=9, steps=300)
    assert long(model, x, Misclassified(y)).success.all()


def test_box_space_untargeted_two_gaussian_within_1e_2_relative(two_gaussian, class0_points):
    x, y = class0_points
    analytic = -(x.flatten(1) @ two_gaussian.u)
    attack = CarliniWagnerL2(space="box", **FAST)
    result = attack(classifier(two_gaussian.class_log_likelihoods), x, Misclassified(y))
    assert result.success.all()
    torch.testing.assert_close(result.l2, analytic, rtol=1e-2, atol=0)
    assert (two_gaussian.class_log_likelihoods(result.adversarial).argmax(1) == 1).all()


def test_box_space_respects_the_bounds_when_they_bind(model_classes):
    """For the second input the unconstrained optimum lies outside [−0.5, 0.5]: the projection
    keeps every iterate, hence the result, inside, at the box-constrained optimum."""
    _, Linear = model_classes
    model = Linear([[0.0, 0.0], [1.0, 0.2]], [0.0, -0.45])
    x = torch.tensor([[0.3, 0.0], [0.45, -0.3]], dtype=torch.float64)
    attack = CarliniWagnerL2(space="box", **FAST)
    result = attack(classifier(model), x, Misclassified(torch.zeros(2).long()))
    assert result.success.all()
    assert result.adversarial.min() >= -0.5 and result.adversarial.max() <= 0.5
    assert (result.l2 > torch.tensor([model.min_distance(xi, 0, 1) for xi in x])).all()
    # second input: the optimum has x₀ = 0.5 (+0.05), then 0.2·x₁ ≥ 0.45 − 0.5: x₁ = −0.25 (+0.05)
    torch.testing.assert_close(
        result.l2[1], torch.tensor(2 * 0.05**2, dtype=x.dtype).sqrt(), rtol=1e-2, atol=0
    )


def test_eot_and_space_validation():
    for bad in (0, -2, 1.5, True):
        with pytest.raises(ValueError, match="eot_draws: must be an integer >= 1"):
            CarliniWagnerL2(eot_draws=bad)
    with pytest.raises(ValueError, match="space: must be 'tanh' or 'box'"):
        CarliniWagnerL2(space="x")
