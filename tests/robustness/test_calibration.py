"""The calibration models' known answers, each against an independent oracle.

Oracles: the counterexample package's closed-form densities; quadrature of the radial density
(normalisation); the small-smoothing asymptotics of the normaliser; Monte Carlo accuracies with
their standard errors; bisection along the axis; exhaustive grids of the plane (d = 2) and
searches along rays and random directions (d = 300) for the optimal undetected adversarial.
"""

import math

import numpy as np
import pytest
import torch
from scipy import optimize
from scipy.special import ndtr

from counterexample import Counterexample
from counterexample.annulus import log_unit_ball_volume
from flows.measures import marginal_log_prob, predictions
from flows.robustness import (
    CounterexampleModel,
    Interval,
    TwoGaussianModel,
    check_model,
    log_density_level,
)

TAU = 5e-4  # the smoothing the attacks are calibrated with


@pytest.fixture(scope="module")
def exact():
    return CounterexampleModel.from_targets(d=300)


@pytest.fixture(scope="module")
def smooth():
    return CounterexampleModel.from_targets(d=300, smoothing=TAU)


def radial_bpd(model, r):
    return float(model.radial_bits_per_dim(torch.tensor([r], dtype=torch.float64))[0])


def undetected_adversarial(model, z, y, threshold):
    """``(N,)`` bool, straight from the model: misclassified (argmax) and bits/dim <= T."""
    with torch.no_grad():
        wrong = predictions(model.class_log_likelihoods(z)) != y
        return wrong & (model.bits_per_dim(z) <= threshold)


def sampled_accuracy(model, n, seed):
    x, y = model.sample(n, seed=seed)
    with torch.no_grad():
        correct = predictions(model.class_log_likelihoods(x)) == y
    return correct.double().mean().item()


# --- the counterexample of Section 3 ---------------------------------------------------------


def test_exact_model_is_the_packages_q(exact):
    ce = exact.construction
    x, _ = exact.sample(300, seed=1)
    x = torch.cat(
        [x, exact.sample_annulus(50, seed=2)[0], 1.5 * x[:5] / x[:5].norm(dim=1)[:, None]]
    )
    ours = exact.class_log_likelihoods(x).numpy()
    theirs = np.stack([ce.log_q_conditional_at(x.numpy(), y) for y in (0, 1)], axis=1)
    assert np.array_equal(np.isneginf(ours), np.isneginf(theirs))
    finite = np.isfinite(theirs)
    np.testing.assert_allclose(ours[finite], theirs[finite], rtol=1e-13, atol=0)
    log_q = np.logaddexp(theirs[:, 0], theirs[:, 1]) - math.log(2)
    expected_bpd = -log_q / (ce.d * math.log(2)) + 8
    np.testing.assert_allclose(exact.bits_per_dim(x).numpy(), expected_bpd, rtol=1e-13)


@pytest.mark.parametrize("tau", [1e-3, TAU, 1e-4], ids=["tau=1e-3", "tau=5e-4", "tau=1e-4"])
def test_smoothed_class_densities_are_normalised(tau):
    """∫ q(x|c) dx = d c_d ∫ r^{d-1} q(r|c) dr = 1, by the trapezoid rule on a fine radial grid
    (exponentially accurate here: the integrand is smooth and vanishes at both ends)."""
    model = CounterexampleModel.from_targets(d=300, smoothing=tau)
    d = model.num_dims
    r = torch.linspace(1e-6, 3.2, 400_001, dtype=torch.float64)
    log_integrand = model.radial_log_likelihoods(r) + ((d - 1) * r.log())[:, None]
    log_mass = torch.logsumexp(log_integrand, 0) + math.log(float(r[1] - r[0]))
    log_mass += math.log(d) + log_unit_ball_volume(d)
    torch.testing.assert_close(log_mass, torch.zeros(2, dtype=torch.float64), rtol=0, atol=1e-7)


@pytest.mark.parametrize("tau", [1e-4, 2e-4], ids=["tau=1e-4", "tau=2e-4"])
def test_smoothing_shifts_the_inner_density_by_its_asymptotic_normaliser(exact, tau):
    r"""Inside U(0, b): log q_τ − log q_0 = −(log Z_τ − log Z_0) ≈ −(π²/6) d(d−1) τ²/b²
    (expanding r^{d-1} at the edge: σ − 1[r<b] is odd, and ∫ t(σ(t) − H(t)) dt = −π²/6)."""
    model = CounterexampleModel.from_targets(d=300, smoothing=tau)
    d, b = model.num_dims, 1 + model.construction.Delta
    r = torch.tensor([0.5], dtype=torch.float64)
    shift = (exact.radial_log_likelihoods(r) - model.radial_log_likelihoods(r))[0, 0].item()
    expected = math.pi**2 / 6 * d * (d - 1) * tau**2 / b**2
    assert shift == pytest.approx(expected, rel=0.03)


def test_section_3_answer_is_the_radial_move_into_the_unit_ball(exact):
    """τ = 0: for annulus points d* = ||x|| − 1 at every T that accepts the ball; nothing below
    the ball's bits/dim; class-1 shell points move into the annulus, d* = ||x|| − (1 + Δ)."""
    x, y = exact.sample_annulus(50, seed=3)
    r = x.norm(dim=1)
    assert bool(((r > 1) & (r <= 1.1)).all())
    ball, annulus, shell = radial_bpd(exact, 0.5), radial_bpd(exact, 1.05), radial_bpd(exact, 2.5)
    assert ball < annulus < shell
    for threshold in (ball, (ball + annulus) / 2, annulus, shell):
        torch.testing.assert_close(
            exact.optimal_distance(x, y, threshold), r - 1, rtol=1e-14, atol=0
        )
    assert exact.undetected_adversarial_radii(0, annulus) == [Interval(0.0, 1.0)]
    assert exact.undetected_adversarial_radii(0, shell) == [Interval(0.0, 1.0), Interval(2.0, 3.0)]
    assert torch.isinf(exact.optimal_distance(x, y, ball - 1e-9)).all()
    points, labels = exact.sample(400, seed=4)
    outer = (labels == 1) & (points.norm(dim=1) >= 2)
    z, yz = points[outer], labels[outer]
    torch.testing.assert_close(
        exact.optimal_distance(z, yz, annulus), z.norm(dim=1) - 1.1, rtol=1e-12, atol=0
    )
    moved = exact.optimal_adversarial(x, y, annulus)
    torch.testing.assert_close(moved.norm(dim=1), torch.ones(50, dtype=torch.float64))
    torch.testing.assert_close((moved - x).norm(dim=1), r - 1)


@pytest.mark.parametrize("level", ["annulus", "between"], ids=["T=annulus", "T=between"])
def test_smoothed_optimum_is_attained_and_never_beaten_along_rays(smooth, level):
    """d = 300, τ = 5e-4. The radial move a hair past d* is an undetected adversarial, a hair
    short is not; no point on 60 rays (angles 0..1.2 rad from the radial direction) × 400 steps
    is an undetected adversarial closer than d*."""
    x, y = smooth.sample_annulus(3, seed=5)
    annulus, ball = radial_bpd(smooth, 1.05), radial_bpd(smooth, 0.5)
    threshold = annulus if level == "annulus" else (annulus + ball) / 2
    best = smooth.optimal_distance(x, y, threshold)
    assert bool(torch.isfinite(best).all()) and bool((best > 0.05).all())
    step = smooth.optimal_adversarial(x, y, threshold) - x
    torch.testing.assert_close(step.norm(dim=1), best, rtol=1e-12, atol=0)
    assert undetected_adversarial(smooth, x + (1 + 1e-9) * step, y, threshold).all()
    assert not undetected_adversarial(smooth, x + (1 - 1e-7) * step, y, threshold).any()
    gen = torch.Generator().manual_seed(0)
    for i in range(3):
        inward = -x[i] / x[i].norm()
        other = torch.randn(60, x.shape[1], generator=gen, dtype=torch.float64)
        other -= (other @ inward)[:, None] * inward
        other /= other.norm(dim=1, keepdim=True)
        angles = torch.linspace(0, 1.2, 60, dtype=torch.float64)[:, None]
        rays = torch.cos(angles) * inward + torch.sin(angles) * other
        lengths = torch.linspace(0, 1.5 * best[i].item(), 400, dtype=torch.float64)
        z = (x[i] + lengths[:, None, None] * rays[None]).reshape(-1, x.shape[1])
        hit = undetected_adversarial(smooth, z, y[i], threshold)
        assert hit.any()
        closest = (z[hit] - x[i]).norm(dim=1).min().item()
        assert closest >= best[i].item() * (1 - 1e-9)


def test_smoothed_boundary_moves_out_by_tau_log_lambda2_volume_ratio():
    r"""d*(τ) = ||x|| − r*, r* − 1 = τ log(λ2 (1+Δ)^d) to first order: the class-1 density falls
    like e^{−(r−1)/τ} outside the unit ball; as τ → 0, d* → ||x|| − 1 (Section 3)."""
    for tau in (1e-3, 3e-4, 1e-4):
        model = CounterexampleModel.from_targets(d=300, smoothing=tau)
        ce = model.construction
        x, y = model.sample_annulus(4, seed=6)
        shift = x.norm(dim=1) - 1 - model.optimal_distance(x, y, radial_bpd(model, 1.05))
        log_ratio = math.log(ce.lambda2) + ce.d * math.log1p(ce.Delta)
        torch.testing.assert_close(
            shift, torch.full((4,), tau * log_ratio, dtype=torch.float64), rtol=0.02, atol=0
        )


@pytest.mark.parametrize(
    "construction, smoothing, closed_form",
    [
        (Counterexample(d=20, Delta=0.5, lambda1=0.3, lambda2=0.05), 0.0, 1 - 0.3 / 2),
        (Counterexample(d=2, Delta=0.5, lambda1=0.3, lambda2=0.3), 0.0, 1 - 0.3 / 2),
        (Counterexample(d=20, Delta=0.5, lambda1=0.3, lambda2=0.05), 0.02, None),
    ],
    ids=["ball-to-class-1", "ball-to-class-0", "smoothed"],
)
def test_accuracy_is_exact_and_matches_samples(construction, smoothing, closed_form):
    """λ2 (1+Δ)^d = 166 > 1: the unit ball goes to class 1 and its class-0 points (λ1) are
    wrong; = 0.675 < 1: it goes to class 0 and its class-1 points (λ2) are wrong. Monte Carlo:
    20000 samples of p, within 4 standard errors."""
    model = CounterexampleModel(construction, smoothing)
    exact_accuracy = model.accuracy()
    if closed_form is not None:
        assert exact_accuracy == pytest.approx(closed_form, rel=1e-12)
    n = 20_000
    stderr = math.sqrt(exact_accuracy * (1 - exact_accuracy) / n)
    assert abs(sampled_accuracy(model, n, seed=7) - exact_accuracy) <= 4 * stderr


@pytest.mark.parametrize("smoothing", [0.0, 0.05], ids=["exact", "smoothed"])
def test_exhaustive_search_of_the_plane_agrees_with_the_optimal_distance(smoothing):
    """d = 2: every point of a 0.005 grid of [−3.5, 3.5]² is tested; no grid point that is an
    undetected adversarial is closer than d*, and the closest is within the grid's resolution."""
    ce = Counterexample(d=2, Delta=0.5, lambda1=0.3, lambda2=0.6)
    model = CounterexampleModel(ce, smoothing)
    axis = torch.arange(-3.5, 3.5 + 1e-9, 0.005, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    x, y = model.sample(12, seed=8)
    for threshold in (radial_bpd(model, 1.2), radial_bpd(model, 2.5)):
        best = model.optimal_distance(x, y, threshold)
        assert int(((best > 0.01) & torch.isfinite(best)).sum()) >= 4
        for label in (0, 1):
            hit = undetected_adversarial(model, grid, label, threshold)
            members = grid[hit]
            assert len(members) > 0
            for i in torch.nonzero(y == label).flatten().tolist():
                brute = (members - x[i]).norm(dim=1).min().item() if len(members) else math.inf
                assert best[i].item() <= brute + 1e-12
                assert brute <= best[i].item() + 0.005


def test_calibration_models_pass_check_model(smooth):
    x, _ = smooth.sample(64, seed=9)
    check = check_model(smooth, x)
    assert check.passed and not check.randomised and check.bits_per_dim_consistent
    gauss = TwoGaussianModel()
    check = check_model(gauss, gauss.sample(64, seed=9)[0])
    assert check.passed and not check.randomised and check.bits_per_dim_consistent


def test_counterexample_model_validation(exact):
    ce = exact.construction
    with pytest.raises(ValueError, match=r"smoothing: must be a number in \[0, 1/\(2\(d-1\)\)\]"):
        CounterexampleModel(ce, 0.01)
    with pytest.raises(ValueError, match="smoothing"):
        CounterexampleModel(ce, -1e-4)
    with pytest.raises(ValueError, match="construction: must be a counterexample.Counterexample"):
        CounterexampleModel("q", 0.0)
    with pytest.raises(ValueError, match="x: must have d = 300 entries"):
        exact.class_log_likelihoods(torch.zeros(2, 3))
    with pytest.raises(ValueError, match="y: must be an integer tensor"):
        exact.optimal_distance(torch.zeros(2, 300), torch.zeros(3).long(), 6.0)
    with pytest.raises(ValueError, match=r"y: labels must lie in \[0, 2\)"):
        exact.optimal_distance(torch.zeros(2, 300), torch.tensor([0, 2]), 6.0)
    with pytest.raises(ValueError, match="y: must be a class label"):
        exact.undetected_adversarial_radii(2, 6.0)
    with pytest.raises(ValueError, match="n: must be an integer >= 1"):
        exact.sample(0)


# --- two Gaussians -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "model",
    [TwoGaussianModel(), TwoGaussianModel(dim=50, a=0.1, sigma=0.1)],
    ids=["d=300,a/sigma=2", "d=50,a/sigma=1"],
)
def test_accuracy_is_the_bayes_accuracy_within_sampling_error(model):
    """20000 test points; |accuracy − Φ(a/σ)| within 4 standard errors plus the rejection's
    bound ε/(1 − ε), ε the probability that a draw falls outside the box."""
    n = 20_000
    bayes = model.bayes_accuracy()
    assert bayes == pytest.approx(float(ndtr(model.a / model.sigma)), rel=1e-15)
    x, y = model.sample(n, seed=10)
    assert x.min() >= model.bounds[0] and x.max() <= model.bounds[1]
    assert abs(y.double().mean().item() - 0.5) <= 4 * math.sqrt(0.25 / n)
    stderr = math.sqrt(bayes * (1 - bayes) / n)
    outside = model.outside_probability()
    slack = 4 * stderr + outside / (1 - outside)
    assert abs(sampled_accuracy(model, n, seed=10) - bayes) <= slack


def test_outside_probability_matches_monte_carlo():
    model = TwoGaussianModel(dim=10, a=0.1, sigma=0.1, bounds=(-0.25, 0.25))
    rng = np.random.default_rng(11)
    n = 200_000
    y = rng.integers(0, 2, size=n)
    x = rng.normal((2 * y[:, None] - 1) * 0.1 / math.sqrt(10), 0.1, size=(n, 10))
    outside = (np.abs(x) > 0.25).any(axis=1).mean()
    expected = model.outside_probability()
    assert 0.1 < expected < 0.2
    assert abs(outside - expected) <= 4 * math.sqrt(expected * (1 - expected) / n)


def test_detector_with_slack_gives_the_hyperplane_distance():
    model = TwoGaussianModel()
    x, y = model.sample(200, seed=12)
    threshold = model.bits_per_dim(x).max().item() + 1.0
    signed = (x @ model.axis) * (1 - 2 * y)  # > 0: misclassified
    best = model.optimal_distance(x, y, threshold)
    expected = torch.clamp(-signed, min=0)
    torch.testing.assert_close(best, expected, rtol=1e-13, atol=1e-15)
    assert bool((signed > 0).any())  # some misclassified points, at distance 0


def test_on_axis_points_match_bisection_along_the_axis():
    """x = s0 u; T = bits/dim at s·u (s = 0.08): the first undetected point of class 1 on the axis
    is s·u (bits/dim falls along [0, a]), so d* = s − s0; bisection checks the root."""
    model = TwoGaussianModel()
    u = model.axis
    s0 = torch.tensor([-0.3, -0.2, -0.16, -0.05], dtype=torch.float64)
    x, y = s0[:, None] * u, torch.zeros(4, dtype=torch.long)
    threshold = model.bits_per_dim(0.08 * u[None]).item()
    torch.testing.assert_close(
        model.optimal_distance(x, y, threshold), 0.08 - s0, rtol=1e-10, atol=0
    )
    low, high = 0.0, model.a  # the oracle: bisection on the model's own bits/dim
    for _ in range(60):
        mid = (low + high) / 2
        low, high = (
            (low, mid) if model.bits_per_dim(mid * u[None]).item() <= threshold else (mid, high)
        )
    assert high == pytest.approx(0.08, abs=1e-12)
    flipped = model.optimal_distance(-x, torch.ones(4, dtype=torch.long), threshold)
    torch.testing.assert_close(flipped, 0.08 - s0, rtol=1e-10, atol=0)  # class 1 by symmetry


def binding_points(model, quantile):
    """T = the ``quantile`` of 2000 test points' bits/dim, and the correctly classified points
    among 300 whose optimum the detector moves (d* > 1.05 × the hyperplane distance)."""
    xs, ys = model.sample(2000, seed=13)
    threshold = model.bits_per_dim(xs).quantile(quantile).item()
    x, y = xs[:300], ys[:300]
    best = model.optimal_distance(x, y, threshold)
    hyperplane = -(x @ model.axis) * (1 - 2 * y)
    keep = torch.nonzero((hyperplane > 0) & (best > 1.05 * hyperplane)).flatten()
    assert len(keep) >= 20
    return model, x[keep], y[keep], threshold


@pytest.fixture(
    scope="module",
    params=[(TwoGaussianModel(), 0.5), (TwoGaussianModel(20, 0.3, 0.05, (-1.0, 1.0)), 0.1)],
    ids=["d=300,at-hyperplane", "d=20,interior"],
)
def binding(request):
    """d = 300 (σ√d ≫ a: the optimum crosses at t = 0) and d = 20 (σ√d < a, g(0) < 0: the
    boundary point is detected, the optimum lies at t > 0)."""
    model, quantile = request.param
    return binding_points(model, quantile)


def test_high_dimensional_optimum_crosses_the_hyperplane_in_closed_form():
    """σ√d ≫ a (the defaults): g is nearly flat and the minimum is at t = 0,
    d*² = t0² + (ρ0 − √g(0))², g(0) = −a² − 2σ²(d/2 · log(2πσ²) + L_T)."""
    model, x, y, threshold = binding_points(TwoGaussianModel(), 0.5)
    s = x @ model.axis
    t0 = s * (1 - 2 * y)
    rho0 = (x - s[:, None] * model.axis).norm(dim=1)
    level = log_density_level(threshold, model.num_dims)
    sigma2 = model.sigma**2
    g0 = -(model.a**2) - 2 * sigma2 * (model.dim / 2 * math.log(2 * math.pi * sigma2) + level)
    assert 0 < g0 and bool((rho0**2 > g0).all())
    expected = (t0**2 + (rho0 - math.sqrt(g0)) ** 2).sqrt()
    torch.testing.assert_close(
        model.optimal_distance(x, y, threshold), expected, rtol=1e-12, atol=0
    )
    signed = (model.optimal_adversarial(x, y, threshold) @ model.axis) * (1 - 2 * y)
    torch.testing.assert_close(signed, torch.zeros_like(signed), rtol=0, atol=1e-15)


def test_binding_optimum_is_attained_inside_the_box_and_never_beaten(binding):
    """The minimiser a hair past d* is an undetected adversarial, a hair short is not; it lies
    in the box; random search around it (200 directions × 300 steps) finds nothing closer."""
    model, x, y, threshold = binding
    best = model.optimal_distance(x, y, threshold)
    target = model.optimal_adversarial(x, y, threshold)
    assert target.min() >= model.bounds[0] and target.max() <= model.bounds[1]
    step = target - x
    torch.testing.assert_close(step.norm(dim=1), best, rtol=1e-12, atol=0)
    assert undetected_adversarial(model, x + (1 + 1e-7) * step, y, threshold).all()
    assert not undetected_adversarial(model, x + (1 - 1e-5) * step, y, threshold).any()
    gen = torch.Generator().manual_seed(1)
    for i in range(2):
        unit = step[i] / step[i].norm()
        noise = torch.randn(200, x.shape[1], generator=gen, dtype=torch.float64)
        spread = torch.logspace(-2, 0.5, 200, dtype=torch.float64)[:, None]
        directions = unit + spread * noise / noise.norm(dim=1, keepdim=True)
        directions /= directions.norm(dim=1, keepdim=True)
        lengths = torch.linspace(0, 2 * best[i].item(), 300, dtype=torch.float64)
        z = (x[i] + lengths[:, None, None] * directions[None]).reshape(-1, x.shape[1])
        hit = undetected_adversarial(model, z, y[i], threshold)
        assert hit.any()
        assert (z[hit] - x[i]).norm(dim=1).min().item() >= best[i].item() * (1 - 1e-9)


def test_binding_optimum_agrees_with_a_constrained_solver_in_full_dimension():
    """SLSQP on min ||z − x||² s.t. log p(z) >= L_T and (1 − 2y) u·z >= 0, in all 300
    coordinates (no reduction), from the clean point: the same distance to 1e-9. (In the
    interior regime, d = 20, SLSQP is unreliable from any start tried: the exhaustive d = 2 grid
    checks that regime.)"""
    model, x, y, threshold = binding_points(TwoGaussianModel(), 0.5)
    level = log_density_level(threshold, model.num_dims)
    u = model.axis.numpy()
    best = model.optimal_distance(x, y, threshold)

    def log_density(z):
        zt = torch.tensor(z, requires_grad=True)
        value = marginal_log_prob(model.class_log_likelihoods(zt[None]))[0]
        (grad,) = torch.autograd.grad(value, zt)
        return value.item() - level, grad.numpy()

    for i in range(5):
        x0, sign = x[i].numpy(), 1 - 2 * int(y[i])
        constraints = [
            {
                "type": "ineq",
                "fun": lambda z: log_density(z)[0],
                "jac": lambda z: log_density(z)[1],
            },
            {"type": "ineq", "fun": lambda z, s=sign: s * (u @ z), "jac": lambda z, s=sign: s * u},
        ]
        result = optimize.minimize(
            lambda z, c=x0: ((z - c) ** 2).sum(),
            x0,
            jac=lambda z, c=x0: 2 * (z - c),
            constraints=constraints,
            method="SLSQP",
            options={"maxiter": 500, "ftol": 1e-15},
        )
        # status 8 ("positive directional derivative for linesearch"): SLSQP stopped at the
        # limit of float64 resolution with ftol = 1e-15 (seen with one intra-op thread, whose
        # summation order differs); the point must still be feasible and optimal to 1e-9
        assert result.success or result.status == 8, result.message
        assert all(c["fun"](result.x) >= -1e-9 for c in constraints)
        assert math.sqrt(result.fun) == pytest.approx(best[i].item(), rel=1e-9)


def test_exhaustive_search_of_the_plane_two_gaussians():
    """d = 2: a 0.004 grid of [−3, 3]²; T at the 30% quantile of test bits/dim, so the detector
    binds for most points; brute force and d* agree to the grid's resolution, never better."""
    model = TwoGaussianModel(dim=2, a=1.0, sigma=0.5, bounds=(-3.0, 3.0))
    axis = torch.arange(-3.0, 3.0 + 1e-9, 0.004, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    x, y = model.sample(400, seed=14)
    threshold = model.bits_per_dim(x).quantile(0.3).item()
    x, y = x[:10], y[:10]
    best = model.optimal_distance(x, y, threshold)
    hyperplane = (-(x @ model.axis) * (1 - 2 * y)).clamp(min=0)
    assert int((best > hyperplane + 1e-3).sum()) >= 3  # the detector binds for some of them
    for label in (0, 1):
        members = grid[undetected_adversarial(model, grid, label, threshold)]
        for i in torch.nonzero(y == label).flatten().tolist():
            brute = (members - x[i]).norm(dim=1).min().item()
            assert best[i].item() <= brute + 1e-12
            assert brute <= best[i].item() + 0.004


def test_no_undetected_adversarial_below_the_class_densities_peak():
    """A threshold below every achievable bits/dim: d* = inf, and the point is returned as is."""
    model = TwoGaussianModel()
    x, y = model.sample(4, seed=15)
    peak = model.bits_per_dim(model.means).min().item()
    assert torch.isinf(model.optimal_distance(x, y, peak - 0.01)).all()
    assert torch.equal(model.optimal_adversarial(x, y, peak - 0.01), x)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"dim": 0}, "dim: must be an integer >= 1"),
        ({"a": 0.0}, "a: must be a finite number > 0"),
        ({"sigma": math.inf}, "sigma: must be a finite number > 0"),
        ({"bounds": (0.5, -0.5)}, "bounds: must be finite with lo < hi"),
    ],
    ids=["dim", "a", "sigma", "bounds"],
)
def test_two_gaussian_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TwoGaussianModel(**kwargs)
