"""L2 Auto-PGD on models with analytic answers: linear scores, the box, EOT, the detector."""

import math
from fractions import Fraction

import pytest
import torch

import flows
from flows.attacks import (
    FreshNoise,
    LikelihoodDetector,
    Misclassified,
    NotDetected,
    TargetedMisclassified,
    ThreatModel,
    flows_threat_model,
    mean_over_draws,
)
from flows.attacks.apgd import (
    APGDL2,
    apgd_checkpoints,
    c_plus_one_scores,
    project_to_ball_and_box,
)
from flows.attacks.base import flat_l2
from flows.attacks.criteria import log_posterior_margin

SCALE = 1000.0  # class scores of the order of log-likelihoods


def linear_two_class(w: torch.Tensor, noise_std: float = 0.0, seed: int = 0) -> ThreatModel:
    """Scores ``SCALE · (w·x, −w·x) − 1000``; with ``noise_std`` plus ``N(0, noise_std²)`` per
    class score and row, fresh at every call (the deployed randomised model)."""

    def scores(x, generator=None):
        s = x.flatten(1) @ w.to(x.dtype)
        out = SCALE * torch.stack([s, -s], dim=1) - 1000.0
        if noise_std:
            out = out + noise_std * torch.randn(out.shape, generator=generator, dtype=x.dtype)
        return out

    if noise_std:
        return ThreatModel(FreshNoise(scores, seed), num_classes=2, randomised=True)
    return ThreatModel(scores, num_classes=2)


def points_at_distance(w: torch.Tensor, distance: torch.Tensor, spread: float, gen) -> torch.Tensor:
    """Class-0 points ``(n, D)`` at ``distance`` ``(n,)`` from the boundary ``w·x = 0`` (unit
    ``w``), plus a random part orthogonal to ``w`` of scale ``spread``."""
    noise = spread * torch.randn(len(distance), len(w), generator=gen, dtype=w.dtype)
    noise = noise - (noise @ w)[:, None] * w
    return distance[:, None] * w + noise


def unit(d: int, gen) -> torch.Tensor:
    w = torch.randn(d, generator=gen, dtype=torch.float64)
    return w / w.norm()


def checkpoints_oracle(steps: int) -> list[int]:
    """The paper's recursion in exact fractions: w_j = ceil(p_j N) for p_j <= 1, j >= 1."""
    p = [Fraction(0), Fraction(22, 100)]
    while True:
        step = max(p[-1] - p[-2] - Fraction(3, 100), Fraction(6, 100))
        if p[-1] + step > 1:
            break
        p.append(p[-1] + step)
    return sorted({math.ceil(q * steps) for q in p[1:]} - {0})


@pytest.mark.parametrize("steps", [1, 7, 10, 100, 250, 1000])
def test_checkpoints_follow_the_paper_recursion(steps):
    assert list(apgd_checkpoints(steps)) == checkpoints_oracle(steps)
    points = apgd_checkpoints(steps)
    assert points[0] == math.ceil(0.22 * steps - 1e-9) and points[-1] <= steps


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_linear_model_success_iff_eps_exceeds_the_analytic_distance(dtype):
    """The minimal L2 to cross w·x = 0 is |w·x| / ||w||: APGD succeeds at 1.01 of it (the point
    crosses, within ε) and never claims success at 0.99 of it."""
    gen = torch.Generator().manual_seed(0)
    w = unit(10, gen)
    distance = 0.05
    x = points_at_distance(w, torch.full((6,), distance, dtype=w.dtype), 0.1, gen).to(dtype)
    tm = linear_two_class(w)
    y = torch.zeros(6, dtype=torch.long)
    assert torch.equal(tm.classify(x), y)

    above = APGDL2(eps=1.01 * distance)(tm, x, Misclassified(y))
    assert above.success.all() and above.status == ("success",) * 6
    margin = log_posterior_margin(tm.observe(above.adversarial).logits, y)
    assert (margin < 0).all() and (tm.classify(above.adversarial) == 1).all()
    l2 = flat_l2(above.adversarial, x)
    assert torch.equal(l2, above.l2)
    assert (l2 <= 1.01 * distance).all() and (l2 >= distance * (1 - 1e-5)).all()

    below = APGDL2(eps=0.99 * distance, steps=40)(tm, x, Misclassified(y))
    assert not below.success.any() and torch.isinf(below.l2).all()
    assert torch.equal(below.adversarial, x)  # the clean input where none was found
    assert all(s.startswith("no adversarial within eps") for s in below.status)
    assert (below.queries == 41).all()  # steps + 1 evaluated points, one restart, K = 1


def test_box_constrained_distance_and_constraints_at_the_box_edge():
    """A coordinate at the lower bound that the gradient pushes further down is pinned: the
    minimal adversarial moves the other coordinates only, at distance (w·x)/||w_rest|| > the
    unconstrained |w·x|/||w||. Between the two nothing in the box crosses."""
    gen = torch.Generator().manual_seed(1)
    d = 8
    w = torch.ones(d, dtype=torch.float64) / math.sqrt(d)
    x = torch.rand(5, d, generator=gen, dtype=torch.float64) * 0.2 + 0.2
    x[:, 0] = -0.5  # at the lower bound
    x[1, 3] = 0.5  # at the upper bound (the attack moves it down)
    tm = linear_two_class(w)
    y = torch.zeros(5, dtype=torch.long)
    free = (x @ w) / w.norm()
    pinned = (x @ w) / w[1:].norm()  # the rest move by (x·w)/(D-1) each, staying in the box
    assert (x[:, 1:] - (x @ w / w[1:].pow(2).sum())[:, None] * w[1:] > -0.5).all()
    for i in range(5):
        xi, yi = x[i : i + 1], y[i : i + 1]
        between = APGDL2(eps=float((free[i] + pinned[i]) / 2), steps=40)(tm, xi, Misclassified(yi))
        assert not between.success.any()
        inside = APGDL2(eps=1.02 * float(pinned[i]))(tm, xi, Misclassified(yi))
        assert inside.success.all()
        adv = inside.adversarial
        assert adv.min() >= -0.5 and adv.max() <= 0.5
        assert flat_l2(adv, xi) <= 1.02 * pinned[i] and flat_l2(adv, xi) >= pinned[i] * (1 - 1e-9)
        # without momentum the ball-then-clip iteration at step size 2ε stalls short of the
        # pinned optimum; the step-size halving at a checkpoint gets there
        no_momentum = APGDL2(eps=1.02 * float(pinned[i]), momentum=1.0)(tm, xi, Misclassified(yi))
        assert no_momentum.success.all()
        assert no_momentum.queries.item() > apgd_checkpoints(100)[0] + 1
        unbounded = APGDL2(eps=math.inf, steps=5)(tm, xi, Misclassified(yi))
        assert unbounded.success.all()
        assert unbounded.adversarial.min() >= -0.5 and unbounded.adversarial.max() <= 0.5


def test_projection_is_feasible_and_keeps_feasible_points():
    gen = torch.Generator().manual_seed(2)
    bounds = (-0.5, 0.5)
    x = torch.rand(200, 3, 4, generator=gen) - 0.5
    far = 3 * torch.randn(200, 3, 4, generator=gen)
    for eps in (1e-4, 0.3, 2.0, 100.0):
        out = project_to_ball_and_box(far, x, eps, bounds)
        assert (flat_l2(out, x) <= eps).all()
        assert out.min() >= -0.5 and out.max() <= 0.5
    # a tiny ball: float32 rounding of x + δ is ~1e-3 of ε, yet every row lands on its sphere
    # (none falls back to x) and none outside
    out = project_to_ball_and_box(far, x, 1e-4, bounds)
    assert (flat_l2(out, x) > 0.99e-4).all()
    inside = (x + 0.01 * torch.randn(200, 3, 4, generator=gen)).clamp(*bounds)
    torch.testing.assert_close(project_to_ball_and_box(inside, x, 1.0, bounds), inside)
    assert torch.equal(project_to_ball_and_box(far, x, math.inf, bounds), far.clamp(*bounds))


def test_targeted_linear_three_classes_reach_the_target_region(model_classes):
    """Targeted at log-likelihood scale: success at 1.01 of the distance to the target's
    hyperplane (which borders the target region here), none at 0.99."""
    _, Linear = model_classes
    weight = [[1.0, 0.0, 0.5, 0.0], [0.0, 1.0, 0.0, 0.0], [-1.0, -1.0, 0.0, 1.0]]
    model = Linear(weight, [0.3, 0.0, 0.0], offset=-1000.0)
    tm = ThreatModel(model, num_classes=3)
    x = torch.tensor([[0.1, 0.1, 0.0, -0.2], [0.1, -0.2, 0.3, 0.0]], dtype=torch.float64)
    y, targets = torch.tensor([0, 0]), torch.tensor([2, 1])
    assert torch.equal(tm.classify(x), y)
    for i in range(2):
        xi, crit = x[i : i + 1], TargetedMisclassified(targets[i : i + 1], y[i : i + 1])
        dist = model.min_distance(xi, 0, int(targets[i]))
        result = APGDL2(eps=1.01 * dist)(tm, xi, crit)
        assert result.success.all() and torch.equal(result.targets, targets[i : i + 1])
        assert torch.equal(tm.classify(result.adversarial), targets[i : i + 1])
        assert dist * (1 - 1e-9) <= result.l2.item() <= 1.01 * dist
        assert not APGDL2(eps=0.99 * dist, steps=30)(tm, xi, crit).success.any()


def test_results_do_not_depend_on_batching():
    gen = torch.Generator().manual_seed(3)
    w = unit(6, gen)
    x = points_at_distance(w, 0.02 + 0.1 * torch.rand(6, generator=gen, dtype=w.dtype), 0.1, gen)
    tm, y = linear_two_class(w), torch.zeros(6, dtype=torch.long)
    for first_start in ("random", "clean"):
        attack = APGDL2(eps=0.07, steps=20, restarts=2, seed=5, first_start=first_start)
        whole = attack(tm, x, Misclassified(y))
        parts = attack(tm, x, Misclassified(y), batch_size=2)
        assert whole.success.any() and not whole.success.all()
        assert torch.equal(whole.adversarial, parts.adversarial)
        assert torch.equal(whole.queries, parts.queries) and whole.status == parts.status
    random_first = dict(steps=20, restarts=2, first_start="random")
    whole = APGDL2(eps=0.07, seed=5, **random_first)(tm, x, Misclassified(y))
    other_seed = APGDL2(eps=0.07, seed=6, **random_first)(tm, x, Misclassified(y))
    assert not torch.equal(other_seed.adversarial[whole.success], whole.adversarial[whole.success])
    # from the clean start the first run uses no randomness: one restart ignores the seed
    clean = [APGDL2(eps=0.07, steps=20, seed=s)(tm, x, Misclassified(y)) for s in (5, 6)]
    assert clean[0].success.any()
    assert torch.equal(clean[0].adversarial, clean[1].adversarial)


def survival(tm: ThreatModel, adv: torch.Tensor, y: torch.Tensor, draws: int) -> torch.Tensor:
    """``(B,)`` fraction of ``draws`` fresh single draws under which ``adv`` is misclassified."""
    wrong = tm.observe(adv, draws=draws).logits.argmax(1) != y.repeat(draws)
    return mean_over_draws(wrong.double(), draws)


class NoisyLinear:
    """The randomised linear model of the EOT tests and 16 class-0 points near its boundary.

    Margin m(x) = s_0 − s_1 = 2000 w·x plus N(0, σ²) noise, σ = 20√2 ≈ 28.3 nats, so a point
    fools one fresh draw with probability Φ(−m/σ). The points lie at distances
    d* ∈ [0, 2]·σ_d from the boundary (σ_d = σ/2000, the noise in input units).
    """

    noise_std = 20.0
    sigma = noise_std * math.sqrt(2)
    sigma_d = sigma / (2 * SCALE)

    def __init__(self, seed: int = 0, n: int = 16):
        gen = torch.Generator().manual_seed(seed)
        self.w = unit(16, gen)
        self.distance = self.sigma_d * torch.linspace(0.0, 2.0, n, dtype=torch.float64)
        self.x = points_at_distance(self.w, self.distance, 0.05, gen)
        self.y = torch.zeros(n, dtype=torch.long)
        self.tm = linear_two_class(self.w, self.noise_std, seed=seed)

    def attack(
        self, extra: float, draws: int, kappa: float, stop_at_success: bool = True
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """APGD at ε = d* + ``extra``·σ_d per point: the successes ``(n,)`` and the survival of
        the successful points under 2000 fresh single draws each (standard error ≤ 0.011),
        checked against the closed form Φ(−m/σ)."""
        results = []
        for i in range(len(self.x)):
            attack = APGDL2(
                eps=float(self.distance[i] + extra * self.sigma_d),
                steps=50,
                eot_draws=draws,
                confidence=kappa,
                stop_at_success=stop_at_success,
            )
            results.append(attack(self.tm, self.x[i : i + 1], Misclassified(self.y[i : i + 1])))
            assert (results[-1].queries % draws == 0).all()
            if not stop_at_success:  # every step is taken
                assert (results[-1].queries == draws * (attack.steps + 1)).all()
        success = torch.cat([r.success for r in results])
        adv = torch.cat([r.adversarial for r in results])[success]
        measured = survival(self.tm, adv, self.y[success], 2000)
        analytic = torch.distributions.Normal(0.0, 1.0).cdf(
            -2 * SCALE * (adv @ self.w) / self.sigma
        )
        assert ((measured - analytic).abs() < 0.05).all()  # ≈ 4.5 standard errors
        return success, measured


def test_eot_adversarials_survive_fresh_noise():
    """ε = d* + 2σ_d. With K = 32 draws and κ = 2σ (a majority of draws clearing 2σ means
    m ≲ −2σ), every point succeeds and fools fresh draws with probability ≥ 0.9. With K = 1 and
    κ = 0 the attack stops at its first success on one draw (a lucky draw, or the first step,
    short of the ball's surface), and its points survive less often."""
    model = NoisyLinear()
    eot_success, eot_survival = model.attack(2.0, 32, 2 * model.sigma)
    assert eot_success.all()
    assert eot_survival.mean() >= 0.9 and eot_survival.min() >= 0.9
    single_success, single_survival = model.attack(2.0, 1, 0.0)
    assert single_success.all()
    assert single_survival.mean() < eot_survival.mean()


def test_running_to_the_end_returns_points_deeper_than_the_first_success():
    """ε = d* + 2σ_d, K = 8, κ = 0. The first point holding in a majority of 8 draws lies near
    the boundary of the expected decision; running every step and keeping the successful point of
    lowest EOT loss returns points that all survive fresh draws with probability >= 0.9."""
    model = NoisyLinear()
    first, first_survival = model.attack(2.0, 8, 0.0)
    deep, deep_survival = model.attack(2.0, 8, 0.0, stop_at_success=False)
    assert first.all() and deep.all()
    # APGD's first step (2ε) overshoots to the ball's surface for most points; the others stop
    # at the first majority, on the boundary (measured: 0.33 and 0.48), where running on helps
    assert first_survival.min() < 0.6
    assert deep_survival.min() >= 0.9 and deep_survival.mean() >= first_survival.mean()


def test_near_the_boundary_single_draw_successes_survive_about_half_and_eot_claims_none():
    """ε = d* + σ_d/2: every point of the ball fools a fresh draw with probability at most
    Φ(0.5) ≈ 0.69. With K = 1 and κ = 0 the attack still claims success on (nearly) every
    point, which then survives fresh draws about half the time; with K = 32 and κ = 2σ it
    claims none (a majority of 32 draws clearing 2σ there has probability < 1e-9)."""
    model = NoisyLinear()
    single_success, single_survival = model.attack(0.5, 1, 0.0)
    assert single_success.double().mean() >= 0.75
    assert 0.3 <= single_survival.mean() <= 0.75
    eot_success, _ = model.attack(0.5, 32, 2 * model.sigma)
    assert not eot_success.any()


@pytest.mark.parametrize("mode", ["sum", "logit"])
@pytest.mark.parametrize("targeted", [False, True], ids=["untargeted", "targeted"])
def test_detector_modes_reach_the_closest_undetected_misclassification(
    two_gaussian, mode, targeted
):
    """TwoGaussian (conftest): from s₀·u the closest input that is class 1 and undetected is s*·u
    at L2 s* − s₀. Both ways of folding in the detector succeed with ε 2% above it and the
    decision is then class 1 (not "non-image"); 2% below it nothing is claimed."""
    m = two_gaussian
    det = LikelihoodDetector(threshold=6.2, num_dims=m.dim)
    s_star = m.first_undetected_s(det.threshold)
    s0 = torch.tensor([-0.3, -0.2, -0.35, -0.25])
    x, y = m.on_axis(s0), torch.zeros(4, dtype=torch.long)
    tm = ThreatModel(m.class_log_likelihoods, m.bits_per_dim, det, num_classes=2)
    assert torch.equal(tm.decision(x), y)
    for i in range(4):
        xi, yi = x[i : i + 1], y[i : i + 1]
        part = TargetedMisclassified(1 - yi, yi) if targeted else Misclassified(yi)
        criterion = part & NotDetected(det)
        optimum = s_star - float(s0[i])
        found = APGDL2(eps=1.02 * optimum, detector_mode=mode)(tm, xi, criterion)
        assert found.success.all()
        assert torch.equal(tm.decision(found.adversarial), torch.tensor([1]))
        assert optimum * (1 - 1e-6) <= found.l2.item() <= 1.02 * optimum
        short = APGDL2(eps=0.98 * optimum, detector_mode=mode, steps=30)(tm, xi, criterion)
        assert not short.success.any()


def test_non_image_score_wins_iff_the_detector_fires(two_gaussian):
    m = two_gaussian
    det = LikelihoodDetector(threshold=6.2, num_dims=m.dim)
    gen = torch.Generator().manual_seed(4)
    s = 0.7 * torch.rand(300, generator=gen, dtype=torch.float64) - 0.35  # along the axis
    x = s[:, None] * m.u + 0.03 * torch.randn(300, m.dim, generator=gen, dtype=torch.float64)
    logits, bpd = m.class_log_likelihoods(x), m.bits_per_dim(x)
    detected = det.detected(bpd)
    assert 20 < detected.sum() < 280  # both verdicts occur
    scores = c_plus_one_scores(logits, bpd, det)
    assert scores.shape == (300, 3)
    assert torch.equal(scores.argmax(1) == 2, detected)
    tm = ThreatModel(m.class_log_likelihoods, m.bits_per_dim, det, num_classes=2)
    assert torch.equal(scores.argmax(1), tm.decision(x.reshape(300, *m.shape)))
    # at b = T exactly the detector accepts, and the tie goes to the class
    at_threshold = torch.full((300,), det.threshold, dtype=torch.float64)
    assert (c_plus_one_scores(logits, at_threshold, det).argmax(1) < 2).all()


def test_logit_mode_needs_a_detector_in_the_criterion(two_gaussian, class0_points):
    x, y = class0_points
    m = two_gaussian
    det = LikelihoodDetector(threshold=6.2, num_dims=m.dim)
    tm = ThreatModel(m.class_log_likelihoods, m.bits_per_dim, det, num_classes=2)
    with pytest.raises(ValueError, match="NotDetected"):
        APGDL2(eps=1.0, detector_mode="logit")(tm, x, Misclassified(y))
    with pytest.raises(ValueError, match="bits/dim"):
        APGDL2(eps=1.0, detector_mode="logit")(
            tm.with_detector(None), x, Misclassified(y) & NotDetected(det)
        )


@pytest.mark.parametrize(
    "name, value",
    [
        ("eps", 0.0),
        ("eps", -1.0),
        ("eps", math.nan),
        ("eps", True),
        ("steps", 0),
        ("steps", 2.5),
        ("restarts", 0),
        ("eot_draws", 0),
        ("rho", 0.0),
        ("rho", 1.5),
        ("momentum", 0.0),
        ("momentum", 1.1),
        ("confidence", -1.0),
        ("confidence", math.inf),
        ("detector_mode", "max"),
        ("first_start", "zero"),
        ("seed", -1),
        ("stop_at_success", 1),
    ],
)
def test_invalid_hyperparameters_raise_naming_them(name, value):
    kwargs = {"eps": 1.0, name: value}
    with pytest.raises(ValueError, match=name):
        APGDL2(**kwargs)


def test_on_tiny_glow_under_fresh_noise_with_eot():
    gen = torch.Generator().manual_seed(0)
    model = flows.build_model("tiny", "reweight", num_classes=10, generator=gen)
    x = torch.rand((3, *model.config.data_shape), generator=gen) - 0.5
    model.initialise(x, torch.Generator().manual_seed(1))
    model.eval()
    tm = flows_threat_model(model, noise="fresh")
    y = tm.classify(x, draws=5)
    result = APGDL2(eps=1.0, steps=4, eot_draws=2)(tm, x, Misclassified(y))
    assert result.adversarial.shape == x.shape and result.success.shape == (3,)
    assert result.adversarial.min() >= -0.5 and result.adversarial.max() <= 0.5
    assert (flat_l2(result.adversarial, x) <= 1.0).all()
    # at most (steps + 1) evaluated points of K = 2 rows each; exactly that without success
    assert (result.queries <= 10).all() and (result.queries[~result.success] == 10).all()
