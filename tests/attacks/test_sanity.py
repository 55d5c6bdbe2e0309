"""Sanity checks (Carlini et al. 2019): they flag a model that masks its gradients and pass on an
honest one.

The masking model is the two-Gaussian classifier of ``conftest.py`` evaluated on its input
rounded to 256 levels, ``round(255 x) / 255``: its decisions are those of the honest classifier
up to the rounding (so a decision-based attack breaks it as easily), but its gradient is exactly
zero everywhere, so a gradient attack cannot move.
"""

import dataclasses
import json
import math

import pytest
import torch

import flows
from flows.attacks import (
    BoundaryAttack,
    CarliniWagnerL2,
    FreshNoise,
    LikelihoodDetector,
    Misclassified,
    ThreatModel,
    flows_threat_model,
    verify,
    verify_over_noise,
)
from flows.attacks.ensemble import verified_l2
from flows.attacks.sanity import (
    SanityCheck,
    budget_converged,
    gradient_vs_gradient_free,
    monotone_in_eps,
    newcombe_difference_interval,
    non_finite_gradients,
    run_sanity_checks,
    success_curve,
    unbounded_success,
)
from flows.attacks.statistics import wilson_interval

N = 12  # attacked examples


@pytest.fixture
def points(two_gaussian):
    """``N`` class-0 inputs near μ_0 (float64) and their labels."""
    gen = torch.Generator().manual_seed(0)
    noise = 0.05 * torch.randn(N, two_gaussian.dim, generator=gen, dtype=torch.float64)
    x = (two_gaussian.means[0] + noise).reshape(N, *two_gaussian.shape)
    return x, torch.zeros(N, dtype=torch.long)


def honest(model):
    return ThreatModel(model.class_log_likelihoods, num_classes=2)


def masked(model):
    """The same classifier on the input rounded to 256 levels: zero gradient everywhere."""
    return ThreatModel(
        lambda z: model.class_log_likelihoods(torch.round(z * 255) / 255), num_classes=2
    )


def cw(scale=1):
    return CarliniWagnerL2(binary_search_steps=5, steps=100 * scale)


def boundary():
    return BoundaryAttack(max_queries=300, seed=0)


# --- the gradient-masking model is flagged, the honest model passes --------------------------


def test_masking_model_flagged_by_gradient_free_comparison_and_gradients(two_gaussian, points):
    x, y = points
    tm = masked(two_gaussian)
    gradient = verify(tm, x, cw()(tm, x, Misclassified(y)), y)
    free = verify(tm, x, boundary()(tm, x, Misclassified(y)), y)
    # the premise: the gradient attack is stuck, the decision-based one breaks every example
    assert not gradient.fools_classifier.any() and free.fools_classifier.all()

    check = gradient_vs_gradient_free(
        gradient.fools_classifier.double().mean().item(),
        free.fools_classifier.double().mean().item(),
        N,
    )
    assert check.passed is False and "possible gradient masking" in check.detail
    assert check.values["difference_interval"][0] > 0

    grads = non_finite_gradients(tm, x, y)
    assert grads.passed is False and "gradient masking" in grads.detail
    assert grads.values["zero"] == N and grads.values["non_finite"] == 0
    assert grads.values["fraction"] == 1.0

    unbounded = unbounded_success(gradient)
    assert unbounded.passed is False and unbounded.values["failed_examples"] == list(range(N))


def test_honest_model_passes_the_same_checks(two_gaussian, points):
    x, y = points
    tm = honest(two_gaussian)
    gradient = verify(tm, x, cw()(tm, x, Misclassified(y)), y)
    free = verify(tm, x, boundary()(tm, x, Misclassified(y)), y)
    rates = [v.fools_classifier.double().mean().item() for v in (gradient, free)]
    check = gradient_vs_gradient_free(*rates, N)
    assert check.passed is True and rates == [1.0, 1.0]
    grads = non_finite_gradients(tm, x, y)
    assert grads.passed is True and grads.values["fraction"] == 0.0
    assert unbounded_success(gradient).passed is True


def test_non_finite_gradients_counts_exactly_and_flags_above_one_percent(two_gaussian):
    """100 inputs; those with a positive first coordinate go through the rounding (zero
    gradient) or a ``0 · sqrt(0 · z)`` term (NaN gradient): the counts are known exactly, and the
    1 % threshold passes one flagged input and fails two."""
    x = 0.05 * torch.randn(100, 2, 2, 2, generator=torch.Generator().manual_seed(1)).double()
    x[:, 0, 0, 0] = -0.1
    y = two_gaussian.class_log_likelihoods(x).argmax(1)

    def model(kind):
        def logits(z):
            scores = two_gaussian.class_log_likelihoods(z)
            pick = (z[:, 0, 0, 0] > 0)[:, None]
            if kind == "zero":
                rounded = two_gaussian.class_log_likelihoods(torch.round(z * 255) / 255)
                return torch.where(pick, rounded, scores)
            # sqrt at 0 on the picked rows (d/dz = 0 · inf = NaN), at 1 elsewhere (d/dz = 0)
            at = z.flatten(1)[:, :1] * 0 + (~pick).to(z.dtype)
            return scores + 0 * torch.sqrt(at)

        return ThreatModel(logits, num_classes=2)

    for kind in ("zero", "nan"):
        for flagged, passed in ((0, True), (1, True), (2, False)):
            z = x.clone()
            z[:flagged, 0, 0, 0] = 0.1
            check = non_finite_gradients(model(kind), z, y, batch_size=32)
            assert check.passed is passed, (kind, flagged)
            assert check.values["zero" if kind == "zero" else "non_finite"] == flagged
            assert check.values["zero" if kind == "nan" else "non_finite"] == 0
            assert check.values["flagged_examples"] == list(range(flagged))


def test_non_finite_gradients_only_flags_a_gradient_zero_everywhere():
    """A model that reads one coordinate of three has a gradient zero in the other two; that is
    not masking, and the check passes."""
    w = torch.tensor([[1.0, 0.0, 0.0], [-1.0, 0.0, 0.0]], dtype=torch.float64)
    tm = ThreatModel(lambda z: z @ w.T, num_classes=2)
    x = 0.1 * torch.rand(10, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    check = non_finite_gradients(tm, x, torch.zeros(10, dtype=torch.long))
    assert check.passed is True and check.values["zero"] == 0


def test_non_finite_gradients_on_a_randomised_model_averages_draws():
    """A randomised linear model (fresh noise per row): every gradient is finite and non-zero;
    with the noise entering through a rounding instead, every one is zero."""
    w = torch.tensor([1.0, -1.0, 0.5], dtype=torch.float64)

    def scores(rounding):
        def fn(z, generator=None):
            s = z.flatten(1) @ w + 0.1 * torch.randn(len(z), generator=generator, dtype=z.dtype)
            s = torch.round(s) if rounding else s
            return torch.stack([s, -s], dim=1)

        return ThreatModel(FreshNoise(fn, 0), num_classes=2, randomised=True)

    x = 0.1 * torch.rand(20, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    y = torch.zeros(20, dtype=torch.long)
    assert non_finite_gradients(scores(False), x, y, draws=8).passed is True
    rounded = non_finite_gradients(scores(True), x, y, draws=8)
    assert rounded.passed is False and rounded.values["zero"] == 20


def test_non_finite_gradients_passes_on_tiny_glow():
    """The real model (untrained tiny GLOW under fixed noise): finite, non-zero gradients."""
    gen = torch.Generator().manual_seed(0)
    model = flows.build_model("tiny", "reweight", num_classes=10, generator=gen).eval()
    images = torch.rand((3, *model.config.data_shape), generator=gen) - 0.5
    model.initialise(images, torch.Generator().manual_seed(1))
    with torch.no_grad():
        model.prior.means.copy_(torch.randn(model.prior.means.shape, generator=gen))
    tm = flows_threat_model(model, None, noise_seed=3)
    check = non_finite_gradients(tm, images, tm.classify(images))
    assert check.passed is True and check.values["fraction"] == 0.0


def test_non_finite_gradients_validates_arguments(two_gaussian, points):
    x, y = points
    tm = honest(two_gaussian)
    with pytest.raises(ValueError, match="threshold"):
        non_finite_gradients(tm, x, y, threshold=1.0)
    with pytest.raises(ValueError, match="draws"):
        non_finite_gradients(tm, x, y, draws=0)
    with pytest.raises(ValueError, match="y"):
        non_finite_gradients(tm, x, y[:-1])


# --- unbounded success ----------------------------------------------------------------------


def test_unbounded_success_on_linear_model_with_cw(model_classes):
    """CW without a budget breaks every example of a linear three-class model, at the
    hyperplane distances; verified with eps=None the check passes."""
    _, Linear = model_classes
    model = Linear([[1.0, 0.0, 0.5], [0.0, 1.0, 0.0], [-1.0, -1.0, 1.0]], [0.2, 0.0, 0.0], -1e3)
    x = 0.2 * torch.rand(8, 3, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    tm = ThreatModel(model, num_classes=3)
    y = tm.classify(x)
    result = cw()(tm, x, Misclassified(y))
    check = unbounded_success(verify(tm, x, result, y, eps=None))
    assert check.passed is True and check.values["successes"] == 8
    # a budget below every distance: verified at ε, the same result is not "unbounded"
    with pytest.raises(ValueError, match="eps=None"):
        unbounded_success(verify(tm, x, result, y, eps=1e-6))


def test_unbounded_success_counts_undetected_only_when_asked(two_gaussian, points):
    """With a detector that rejects everything, the fooling adversarials count for
    ``require_undetected=False`` only."""
    x, y = points
    tm = ThreatModel(
        two_gaussian.class_log_likelihoods,
        two_gaussian.bits_per_dim,
        LikelihoodDetector(-1e9, two_gaussian.dim),
        num_classes=2,
    )
    v = verify(tm, x, cw()(tm.with_detector(None), x, Misclassified(y)), y)
    assert unbounded_success(v, require_undetected=False).passed is True
    strict = unbounded_success(v)
    assert strict.passed is False and strict.values["successes"] == 0


# --- monotonicity in ε ------------------------------------------------------------------------


def test_success_curve_matches_verification_at_each_eps_and_is_monotone(two_gaussian, points):
    x, y = points
    tm = honest(two_gaussian)
    result = cw()(tm, x, Misclassified(y))
    grid = [0.0, 0.15, 0.2, 0.25, 0.3, math.inf]
    curve = success_curve(verified_l2(verify(tm, x, result, y), require_undetected=True), grid)
    direct = [verify(tm, x, result, y, eps=e).fools_classifier.double().mean().item() for e in grid]
    assert curve == direct
    assert curve[0] == 0.0 and curve[-1] == 1.0 and 0 < curve[3] < 1
    assert monotone_in_eps(grid, curve, N).passed is True
    assert monotone_in_eps(grid, curve).passed is True


def test_monotone_fails_on_a_significant_drop_and_passes_within_intervals():
    n = 100
    assert monotone_in_eps([0.5, 1.0, 2.0, 3.0], [0.2, 0.5, 0.45, 0.9], n).passed is True
    check = monotone_in_eps([0.5, 1.0, 2.0, 3.0], [0.2, 0.9, 0.5, 0.95], n)
    assert check.passed is False and "falls from 0.900" in check.detail
    assert check.values["significant_drops"][0]["to_eps"] == 2.0
    # without n no tolerance: the small drop fails
    assert monotone_in_eps([0.5, 1.0, 2.0, 3.0], [0.2, 0.5, 0.45, 0.9]).passed is False


def test_monotone_catches_a_slow_drift_over_many_steps():
    """Each step drops within the intervals, but the first and last rates are far apart."""
    rates = [0.8, 0.75, 0.7, 0.65, 0.6, 0.55, 0.5]
    grid = [float(i) for i in range(1, 8)]
    assert monotone_in_eps(grid, rates, 100).passed is False
    for a, b in zip(rates, rates[1:], strict=False):  # every single step alone passes
        assert monotone_in_eps([1.0, 2.0], [a, b], 100).passed is True


def test_monotone_tolerance_is_the_wilson_overlap():
    """At n = 50 from 30/50: the largest later count whose interval lies entirely below fails,
    the next one passes (oracle: wilson_interval directly)."""
    n, k_before = 50, 30
    low_before = wilson_interval(k_before, n)[0]
    k_fail = max(k for k in range(k_before) if wilson_interval(k, n)[1] < low_before)
    assert monotone_in_eps([1.0, 2.0], [k_before / n, k_fail / n], n).passed is False
    assert monotone_in_eps([1.0, 2.0], [k_before / n, (k_fail + 1) / n], n).passed is True


@pytest.mark.parametrize(
    "grid, rates, n, match",
    [
        ([1.0], [0.5], 10, "at least two"),
        ([1.0, 1.0], [0.5, 0.5], 10, "increase strictly"),
        ([-1.0, 1.0], [0.5, 0.5], 10, ">= 0"),
        ([1.0, 2.0], [0.5], 10, "one rate per eps"),
        ([1.0, 2.0], [0.5, 1.5], 10, r"success_rates\[1\]"),
        ([1.0, 2.0], [0.5, 0.55], 10, "not a count"),
        ([1.0, 2.0], [0.5, 0.5], 0, "n: must be"),
    ],
    ids=["one-eps", "flat-grid", "negative-eps", "lengths", "rate>1", "not-k/n", "n=0"],
)
def test_monotone_validates(grid, rates, n, match):
    with pytest.raises(ValueError, match=match):
        monotone_in_eps(grid, rates, n)


# --- budget convergence ---------------------------------------------------------------------


def test_budget_converged_both_ways_at_the_wilson_half_width():
    """n = 100, 80 % at the budget: the half-width of the doubled budget's rate is the tolerance
    (oracle: wilson_interval); the largest count within it passes, one more fails."""
    n, k1 = 100, 80
    passing = [k for k in range(k1, n + 1) if (k - k1) / n <= _half_width(k, n)]
    k_last = max(passing)
    assert k_last < n  # the boundary lies inside the range
    ok = budget_converged(k1 / n, k_last / n, n)
    assert ok.passed is True
    assert ok.values["tolerance"] == pytest.approx(_half_width(k_last, n), abs=1e-12)
    bad = budget_converged(k1 / n, (k_last + 1) / n, n)
    assert bad.passed is False and "increase its budget" in bad.detail
    assert budget_converged(0.5, 0.4, n).passed is True  # a fall is noise, not divergence
    assert budget_converged(0.5, 0.5, 10).passed is True


def test_budget_converged_with_real_cw_budgets(two_gaussian, points):
    """On the honest model at ε a little above every distance, 5 × 100 and 5 × 200 steps succeed
    alike; one step per search does not converge (0 → 100 %)."""
    x, y = points
    tm = honest(two_gaussian)
    eps = 1.1 * (-(x.flatten(1) @ two_gaussian.u)).max().item()

    def rate(attack):
        v = verify(tm, x, attack(tm, x, Misclassified(y)), y, eps=eps)
        return v.fools_classifier.double().mean().item()

    assert budget_converged(rate(cw(1)), rate(cw(2)), N).passed is True
    short = CarliniWagnerL2(binary_search_steps=1, steps=1, initial_const=1e-3)
    assert rate(short) == 0.0
    assert budget_converged(rate(short), rate(cw(1)), N).passed is False


# --- gradient vs gradient-free --------------------------------------------------------------


@pytest.mark.parametrize(
    "counts, expected",
    [
        ((56, 70, 48, 80), (0.0524, 0.3339)),
        ((9, 10, 3, 10), (0.1705, 0.8090)),
        ((6, 7, 2, 7), (0.0582, 0.8062)),
        ((5, 56, 0, 29), (-0.0381, 0.1926)),
    ],
    ids=["56/70-48/80", "9/10-3/10", "6/7-2/7", "5/56-0/29"],
)
def test_newcombe_interval_matches_the_published_table(counts, expected):
    """Newcombe (1998), Table II, method 10, to the four decimals printed there."""
    low, high = newcombe_difference_interval(*counts)
    assert (round(low, 4), round(high, 4)) == expected


def test_gradient_vs_gradient_free_synthetic():
    n = 50
    assert gradient_vs_gradient_free(0.6, 0.6, n).passed is True
    assert gradient_vs_gradient_free(0.9, 0.2, n).passed is True  # gradient stronger: fine
    assert gradient_vs_gradient_free(0.6, 0.7, n).passed is True  # within the intervals
    # the boundary: the smallest free count whose Newcombe interval (checked against the
    # published table above) lies above 0 fails, one less passes
    k_free = min(k for k in range(20, n + 1) if newcombe_difference_interval(k, n, 20, n)[0] > 0)
    assert gradient_vs_gradient_free(20 / n, k_free / n, n).passed is False
    assert gradient_vs_gradient_free(20 / n, (k_free - 1) / n, n).passed is True
    check = gradient_vs_gradient_free(0.3, 0.7, n)
    assert check.passed is False and check.values["difference"] == pytest.approx(0.4)
    with pytest.raises(ValueError, match="rate_free"):
        gradient_vs_gradient_free(0.3, 0.71, n)


# --- everything at once ---------------------------------------------------------------------


def _run_all(two_gaussian, points, tm):
    x, y = points
    results = {}

    def attack_at(eps, scale):
        if scale not in results:
            results[scale] = cw(scale)(tm, x, Misclassified(y))
        return verify(tm, x, results[scale], y, eps=eps)

    free = boundary()(tm, x, Misclassified(y))
    checks = run_sanity_checks(
        attack_at,
        eps=0.35,
        eps_grid=[0.1, 0.2, 0.3, 0.4, math.inf],
        gradient_free_at=lambda eps: verify(tm, x, free, y, eps=eps),
        threat_model=tm,
        x=x,
        y=y,
    )
    return {c.name: c for c in checks}


def test_run_sanity_checks_honest_all_pass(two_gaussian, points):
    checks = _run_all(two_gaussian, points, honest(two_gaussian))
    assert list(checks) == [
        "unbounded_success",
        "monotone_in_eps",
        "budget_converged",
        "gradient_vs_gradient_free",
        "non_finite_gradients",
    ]
    assert all(c.passed is True for c in checks.values()), {n: c.detail for n, c in checks.items()}
    json.dumps([c.to_dict() for c in checks.values()], allow_nan=False)


def test_run_sanity_checks_masking_model_flagged(two_gaussian, points):
    checks = _run_all(two_gaussian, points, masked(two_gaussian))
    failed = {n for n, c in checks.items() if c.passed is False}
    assert failed == {"unbounded_success", "gradient_vs_gradient_free", "non_finite_gradients"}
    text = json.dumps([c.to_dict() for c in checks.values()], allow_nan=False)
    assert '"inf"' in text  # ε = ∞ written as a string in strict JSON


def test_run_sanity_checks_not_run_and_argument_checks(two_gaussian, points):
    x, y = points
    tm = honest(two_gaussian)
    result = cw()(tm, x, Misclassified(y))
    calls = []

    def attack_at(eps, scale):
        calls.append((eps, scale))
        return verify(tm, x, result, y, eps=eps)

    checks = run_sanity_checks(attack_at, eps=0.3, eps_grid=[0.3, math.inf])
    assert [c.passed for c in checks] == [True, True, True, None, None]
    assert checks[3].detail.startswith("not run") and checks[3].to_dict()["values"] == {}
    assert sorted(calls, key=str) == sorted({(math.inf, 1), (0.3, 1), (0.3, 2)}, key=str)
    with pytest.raises(ValueError, match="all three"):
        run_sanity_checks(attack_at, eps=0.3, threat_model=tm)


def test_sanity_check_to_dict_is_strict_json():
    check = SanityCheck("x", False, "d", {"eps": (1.0, math.inf), "nested": {"v": -math.inf}})
    assert check.to_dict()["values"] == {"eps": [1.0, "inf"], "nested": {"v": "-inf"}}
    json.dumps(check.to_dict(), allow_nan=False)


def _half_width(k, n):
    low, high = wilson_interval(k, n)
    return (high - low) / 2


def test_unbounded_success_on_the_boundary_of_a_randomised_model_counts_the_claims():
    """κ = 0 on a randomised model: CW with EOT stops on the mean decision boundary, where a
    fresh draw flips the label about half of the time. Verified under fresh noise, the
    unbounded check is then a coin flip (some examples fail the ≥ 1/2 rule although the attack
    did its job); ``on_boundary`` counts the claims and passes, and still fails an example the
    attack did not claim."""
    w = torch.tensor([1.0, -0.5, 0.25, 0.0], dtype=torch.float64)

    def scores(x, generator=None):
        noise = torch.randn(len(x), generator=generator, dtype=x.dtype)
        s = 50.0 * (x.flatten(1) @ w + 0.02 + 0.05 * noise)
        return torch.stack([-s, s], dim=1)

    gen = torch.Generator().manual_seed(4)
    x = 0.1 * (torch.rand(12, 4, generator=gen, dtype=torch.float64) - 0.5)
    x = x - ((x @ w + 0.02 + 0.15) / w.dot(w))[:, None] * w  # 0.15 / |w| on the class-0 side
    y = torch.zeros(12, dtype=torch.long)
    attack_model = ThreatModel(FreshNoise(scores, 1), num_classes=2, randomised=True)
    result = CarliniWagnerL2(binary_search_steps=5, steps=100, eot_draws=16)(
        attack_model, x, Misclassified(y)
    )
    assert bool(result.success.all())
    deployed = ThreatModel(FreshNoise(scores, 2), num_classes=2, randomised=True)
    verification = verify_over_noise(deployed, x, result, y, draws=64)
    p_fool = verification.fooled_draws.double() / 64
    assert 0.2 < float(p_fool.mean()) < 0.8  # on the boundary: about half of the draws
    strict = unbounded_success(verification)
    assert strict.passed is False
    lenient = unbounded_success(verification, on_boundary=True)
    assert lenient.passed is True and "claims" in lenient.detail
    assert lenient.values["verified_successes"] == strict.values["successes"]
    unclaimed = dataclasses.replace(result, success=result.success.clone())
    unclaimed.success[3] = False
    failing = unbounded_success(
        verify_over_noise(deployed, x, unclaimed, y, draws=64), on_boundary=True
    )
    assert failing.passed is False and failing.values["failed_examples"] == [3]
