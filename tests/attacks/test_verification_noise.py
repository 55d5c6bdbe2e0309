"""Verification over fresh noise (:func:`verify_over_noise`) and the randomness audit of the
decision (:mod:`flows.attacks.randomness`), on toy randomised models with closed-form answers.

The toy model: two-class scores ``(s, −s)`` with ``s = x₀ + σ·ε`` and ``ε ~ N(0, 1)`` drawn per row
(:class:`~flows.noise.FreshNoise`), so an input with ``x₀`` is labelled 1 with probability
``Φ(−x₀/σ)``, and its log-posterior margin of class 0 is exactly ``2s``; an optional detector
statistic ``b = x₁ + τ·ε'`` with threshold 0 rejects with probability ``Φ(x₁/τ)``, independently.
"""

import json
import math

import pytest
import torch
from scipy.stats import norm

import flows
from flows.attacks import (
    AttackResult,
    LikelihoodDetector,
    ThreatModel,
    flows_threat_model,
    mean_over_draws,
    verify,
)
from flows.attacks.randomness import DecisionRandomness, decision_randomness, recommend_draws
from flows.attacks.statistics import draws_for_half_width, percentage_with_interval
from flows.attacks.verification import (
    NoiseVerification,
    noise_statistics,
    verified_median_l2,
    verify_over_noise,
)
from flows.noise import FreshNoise

SIGMA = 0.5  # classifier noise
TAU = 0.2  # detector noise


def _scores(sigma=SIGMA, third=None):
    def logits(x, generator=None):
        s = x[:, 0] + sigma * torch.randn(len(x), generator=generator, dtype=x.dtype)
        columns = [s, -s] + ([torch.full_like(s, third)] if third is not None else [])
        return torch.stack(columns, dim=1)

    return logits


def _statistic(tau=TAU):
    def bits_per_dim(x, generator=None):
        return x[:, 1] + tau * torch.randn(len(x), generator=generator, dtype=x.dtype)

    return bits_per_dim


def toy(detector=False, seed=0, sigma=SIGMA, third=None):
    """The randomised toy threat model (see the module); ``third``: a constant third class."""
    extra = {}
    if detector:
        extra = {
            "bits_per_dim_fn": FreshNoise(_statistic(), seed + 1),
            "detector": LikelihoodDetector(threshold=0.0, num_dims=2),
        }
    return ThreatModel(
        FreshNoise(_scores(sigma, third), seed),
        num_classes=2 if third is None else 3,
        randomised=True,
        **extra,
    )


def x0_fooling_with(p):
    """The ``x₀`` whose label is 1 (wrong for y = 0) with probability ``p``: Φ(−x₀/σ) = p."""
    return -SIGMA * norm.ppf(p)


def result_for(adversarial, success=None, targets=None, clean=None):
    b = len(adversarial)
    success = torch.ones(b, dtype=torch.bool) if success is None else success
    l2 = (adversarial - clean).flatten(1).norm(dim=1) if clean is not None else torch.zeros(b)
    return AttackResult(
        adversarial=adversarial,
        success=success,
        l2=l2.float(),
        queries=torch.zeros(b, dtype=torch.int64),
        status=("success",) * b,
        targets=targets,
    )


def batch(x0, x1=-0.4):
    """Inputs ``(B, 2)`` float64 with first coordinates ``x0`` and second ``x1``."""
    x0 = torch.as_tensor(x0, dtype=torch.float64)
    return torch.stack([x0, torch.full_like(x0, x1)], dim=1)


# --- verify_over_noise ----------------------------------------------------------------------------


def test_never_counts_an_example_whose_success_probability_is_below_the_rule():
    """20 adversarials fooling with probability 0.3 and 20 with 0.7, 200 draws each: exactly the
    0.7 ones count (P(p̂ >= 1/2 | p = 0.3, N = 200) ≈ 1e-9 per example)."""
    truth = torch.tensor([0.3] * 20 + [0.7] * 20, dtype=torch.float64)
    adv = batch([x0_fooling_with(p) for p in truth.tolist()])
    clean = batch([0.45] * 40)
    y = torch.zeros(40, dtype=torch.long)
    draws = 200
    checked = verify_over_noise(toy(), clean, result_for(adv, clean=clean), y, draws=draws)
    assert torch.equal(checked.fools_classifier, truth >= 0.5)
    assert torch.equal(checked.success_undetected, checked.fools_classifier)  # no detector
    # measured probabilities within 4 binomial standard errors of the truth, example by example
    se = torch.sqrt(truth * (1 - truth) / draws)
    assert bool(((checked.p_fool - truth).abs() <= 4 * se).all())
    # and pooled over the 20 examples of each group (4 standard errors of the pooled mean)
    for group in (slice(0, 20), slice(20, 40)):
        pooled = checked.p_fool[group].mean()
        assert abs(pooled - truth[group][0]) <= 4 * se[group][0] / math.sqrt(20)
    assert bool((checked.detected_draws == 0).all())
    # a lower rule admits the 0.3 ones as well
    lenient = verify_over_noise(
        toy(), clean, result_for(adv, clean=clean), y, draws=draws, rule=0.2
    )
    assert bool(lenient.fools_classifier.all())


@pytest.mark.parametrize("fooled", range(11), ids=lambda m: f"{m}of10")
def test_the_rule_is_at_least_the_fraction_of_draws(fooled):
    """Scripted draws: exactly ``m`` of 10 draws fool (row k·B + i is fooled when k < m).
    With rule = 1/2 the example counts iff m >= 5; with rule = 0.7 iff m >= 7."""

    def scripted(x):
        k = torch.arange(len(x)) // 1  # one example: row index = draw index
        s = torch.where(k < fooled, -1.0, 1.0).to(x.dtype)
        return torch.stack([s, -s], dim=1)

    tm = ThreatModel(scripted, num_classes=2, randomised=True)
    x = batch([0.1])
    y = torch.zeros(1, dtype=torch.long)
    half = verify_over_noise(tm, x, result_for(x, clean=x), y, draws=10)
    assert half.fooled_draws.tolist() == [fooled]
    assert half.p_fool.tolist() == [fooled / 10]
    assert bool(half.fools_classifier) == (fooled >= 5)
    strict = verify_over_noise(tm, x, result_for(x, clean=x), y, draws=10, rule=0.7)
    assert bool(strict.fools_classifier) == (fooled >= 7)


def test_detector_probabilities_are_within_binomial_error():
    """Classifier and detector draw independent noise here (two encodings), so
    P(fooled and undetected) = p_fool · (1 − p_det)."""
    p_fool = torch.tensor([0.2, 0.6, 0.8, 0.8], dtype=torch.float64)
    p_det = torch.tensor([0.3, 0.5, 0.1, 0.6], dtype=torch.float64)
    x1 = (TAU * torch.as_tensor(norm.ppf(p_det.numpy()))).tolist()  # Φ(x₁/τ) = p_det
    adv = torch.stack(
        [torch.tensor([x0_fooling_with(p), v]) for p, v in zip(p_fool, x1, strict=True)]
    ).double()
    clean = batch([0.45] * 4, x1=-0.4)
    y = torch.zeros(4, dtype=torch.long)
    draws = 800
    checked = verify_over_noise(
        toy(detector=True), clean, result_for(adv, clean=clean), y, draws=draws
    )
    for measured, truth in (
        (checked.p_fool, p_fool),
        (checked.p_detected, p_det),
        (checked.p_fool_undetected, p_fool * (1 - p_det)),
    ):
        se = torch.sqrt(truth * (1 - truth) / draws)
        assert bool(((measured - truth).abs() <= 4 * se).all()), (measured, truth)
    assert bool((checked.fooled_undetected_draws <= checked.fooled_draws).all())
    # rule 1/2 on p_fool_undetected: 0.14, 0.3, 0.72, 0.32 -> only the third
    assert checked.success_undetected.tolist() == [False, False, True, False]
    assert checked.fools_classifier.tolist() == [False, True, True, True]


def test_targeted_adversarials_are_judged_against_their_targets():
    """Three classes with scores (s, −s, −10): class 2 never wins, class 1 with p = 0.7."""
    tm = toy(third=-10.0)
    adv = batch([x0_fooling_with(0.7)] * 2)
    clean = batch([0.45] * 2)
    y = torch.zeros(2, dtype=torch.long)
    targets = torch.tensor([1, 2])
    checked = verify_over_noise(
        tm, clean, result_for(adv, targets=targets, clean=clean), y, draws=400
    )
    assert checked.p_fool[1] == 0.0
    assert abs(checked.p_fool[0].item() - 0.7) <= 4 * math.sqrt(0.21 / 400)
    assert checked.fools_classifier.tolist() == [True, False]


def test_deterministic_model_gives_the_verdicts_of_verify(two_gaussian):
    """A deterministic model labelled randomised: every probability is 0 or 1 and the verdicts are
    :func:`verify`'s, for claims, bounds and ε alike."""
    m = two_gaussian
    threshold = m.bits_per_dim(m.point(0.08)).item()  # undetected for s >= 0.08 (and s <= -0.08)
    det = LikelihoodDetector(threshold, m.dim)
    fixed = flows_threat_model(m, det, noise_seed=None, eps=0.3)
    deployed = ThreatModel(
        m.class_log_likelihoods,
        m.bits_per_dim,
        det,
        eps=0.3,
        num_classes=2,
        randomised=True,
    )
    clean = m.on_axis([-0.1] * 7)
    adv = m.on_axis([-0.05, 0.02, 0.1, 0.12, 0.19, 0.25, 0.1])
    adv[6, 0, 0, 0] = 0.6  # out of bounds
    claimed = torch.tensor([True, True, True, False, True, True, True])
    result = result_for(adv, success=claimed, clean=clean)
    y = torch.zeros(7, dtype=torch.long)
    reference = verify(fixed, clean, result, y)
    checked = verify_over_noise(deployed, clean, result, y, draws=5)
    for p in (checked.p_fool, checked.p_fool_undetected, checked.p_detected):
        assert set(p.tolist()) <= {0.0, 1.0}
    assert torch.equal(checked.fools_classifier, reference.fools_classifier)
    assert torch.equal(checked.success_undetected, reference.success_undetected)
    assert torch.equal(checked.p_detected == 1.0, reference.detected)
    assert torch.equal(checked.in_bounds, reference.in_bounds)
    assert torch.equal(checked.within_eps, reference.within_eps)
    assert torch.allclose(checked.l2, reference.l2)
    # the cases: wrong side of the boundary, fooled but detected, success, not claimed,
    # success, outside ε (0.35 > 0.3), out of bounds
    assert checked.fools_classifier.tolist() == [False, True, True, False, True, False, False]
    assert checked.success_undetected.tolist() == [False, False, True, False, True, False, False]
    assert checked.p_fool[[3, 5, 6]].tolist() == [1.0, 1.0, 1.0]  # measured, yet never counted


def test_eps_and_bounds_are_enforced_on_certain_adversarials():
    """Adversarials that fool in every draw (σ = 0.01, x₀ < −0.4) still fail the geometry: outside
    ε, out of bounds, or not claimed; the probabilities are measured all the same."""
    clean = torch.tensor([[0.45, -0.4], [0.45, -0.4], [0.45, -0.5], [0.45, -0.4]]).double()
    adv = torch.tensor([[-0.45, -0.4], [-0.49, -0.4], [-0.45, -0.55], [-0.45, -0.4]]).double()
    claimed = torch.tensor([True, True, True, False])
    y = torch.zeros(4, dtype=torch.long)
    tm = toy(sigma=0.01)
    result = result_for(adv, success=claimed, clean=clean)
    checked = verify_over_noise(tm, clean, result, y, draws=20, eps=0.92)
    assert checked.p_fool.tolist() == [1.0] * 4
    assert checked.within_eps.tolist() == [True, False, True, True]  # L2 0.9, 0.94, 0.901, 0.9
    assert checked.in_bounds.tolist() == [True, True, False, True]
    assert checked.fools_classifier.tolist() == [True, False, False, False]
    tight = verify_over_noise(tm, clean, result, y, draws=20, eps=0.5)
    assert not tight.fools_classifier.any()
    with_tm_eps = ThreatModel(tm.logits_fn, eps=0.5, num_classes=2, randomised=True)
    assert not verify_over_noise(with_tm_eps, clean, result, y, draws=4).fools_classifier.any()


def test_passes_are_chunked_to_max_rows():
    rows = []

    def spy(x):
        rows.append(len(x))
        return torch.stack([x[:, 0], -x[:, 0]], dim=1)

    tm = ThreatModel(spy, num_classes=2, randomised=True)
    clean = batch([0.3, 0.2, 0.1, -0.1, -0.2])
    adv = batch([-0.1, 0.2, -0.3, 0.1, -0.2])
    y = torch.zeros(5, dtype=torch.long)
    result = result_for(adv, clean=clean)
    whole = verify_over_noise(tm, clean, result, y, draws=4, max_rows=1000)
    assert rows == [20]
    for max_rows, draws, expected in ((7, 4, [4] * 5), (8, 4, [8, 8, 4]), (7, 10, [7, 3] * 5)):
        rows.clear()
        chunked = verify_over_noise(tm, clean, result, y, draws=draws, max_rows=max_rows)
        assert rows == expected
        assert torch.equal(chunked.p_fool, whole.p_fool)
    assert whole.fools_classifier.tolist() == [True, False, True, False, True]


def test_bad_arguments_raise_naming_them(two_gaussian):
    clean = batch([0.45, 0.4])
    y = torch.zeros(2, dtype=torch.long)
    result = result_for(batch([0.1, 0.1]), clean=clean)
    fixed = ThreatModel(_scores(), num_classes=2)
    with pytest.raises(ValueError, match="noise='fresh'"):
        verify_over_noise(fixed, clean, result, y)
    tm = toy()
    for kwargs, name in (
        ({"draws": 0}, "draws"),
        ({"draws": True}, "draws"),
        ({"rule": 0.0}, "rule"),
        ({"rule": 1.5}, "rule"),
        ({"max_rows": 0}, "max_rows"),
        ({"eps": -1.0}, "eps"),
    ):
        with pytest.raises(ValueError, match=f"^{name}:"):
            verify_over_noise(tm, clean, result, y, **kwargs)
    with pytest.raises(ValueError, match="^result:"):
        verify_over_noise(tm, clean, result_for(batch([0.1]), clean=clean[:1]), y)
    with pytest.raises(ValueError, match="^y:"):
        verify_over_noise(tm, clean, result, torch.tensor([0, 2]))


def test_records_and_noise_statistics_use_verified_successes_only():
    """Claimed adversarials fooling with p = 0.3 are near (L2 ≈ 0.19), those with p = 0.8 farther
    (L2 ≈ 0.42 … 0.52); the verified median L2 comes from the latter only."""
    p = [0.3] * 3 + [0.8] * 4
    x0 = [x0_fooling_with(v) for v in p]
    clean = batch([0.45, 0.45, 0.45, 0.0, 0.02, 0.04, 0.1])
    adv = batch(x0)
    result = result_for(adv, clean=clean)
    y = torch.zeros(7, dtype=torch.long)
    checked = verify_over_noise(toy(), clean, result, y, draws=300)
    assert checked.fools_classifier.tolist() == [False] * 3 + [True] * 4
    stats = noise_statistics(checked)
    assert stats["fools_classifier"] == percentage_with_interval(4, 7)
    assert stats["fools_classifier_pct"] == pytest.approx(400 / 7)
    assert stats["n"] == 7 and stats["draws"] == 300 and stats["rule"] == 0.5
    verified_l2 = checked.l2[3:].double()
    expected = (verified_l2.sort().values[1] + verified_l2.sort().values[2]).item() / 2
    assert stats["median_l2_fools_classifier"] == pytest.approx(expected)
    assert verified_median_l2(checked, "fools_classifier") == pytest.approx(expected)
    claims_median = torch.quantile(checked.l2.double(), 0.5).item()  # all 7 claims
    assert stats["median_l2_fools_classifier"] > claims_median + 0.02  # unverified ones excluded
    assert stats["eligible"] == 7
    assert stats["p_fool"]["undecided"] == 0  # 300 draws settle p = 0.3 and 0.8 against 1/2
    assert stats["p_fool"]["quantiles"]["min"] == checked.p_fool.min().item()
    assert stats["p_fool"]["mean"] == pytest.approx(checked.p_fool.mean().item())
    records = checked.records()
    assert json.loads(json.dumps(records)) == records
    assert [r["fooled_draws"] for r in records] == checked.fooled_draws.tolist()
    assert records[0]["p_fool"] == checked.p_fool[0].item() and records[0]["draws"] == 300


def test_noise_statistics_undecided_and_no_successes():
    """10 draws cannot settle p̂ = 0.5 or 0.6 against the rule 1/2; nothing verified: median None."""

    def scripted(x):
        row = torch.arange(len(x))  # two examples: row k·2 + i
        fooled = row // 2 < torch.where(row % 2 == 0, 5, 6)
        s = torch.where(fooled, -1.0, 1.0).to(x.dtype)
        return torch.stack([s, -s], dim=1)

    tm = ThreatModel(scripted, num_classes=2, randomised=True)
    x = batch([0.1, 0.2])
    y = torch.zeros(2, dtype=torch.long)
    checked = verify_over_noise(tm, x, result_for(x, clean=x), y, draws=10)
    assert checked.fooled_draws.tolist() == [5, 6]
    assert noise_statistics(checked)["p_fool"]["undecided"] == 2
    nothing = verify_over_noise(tm, x, result_for(x, success=torch.zeros(2, dtype=torch.bool)), y)
    stats = noise_statistics(nothing)
    assert stats["median_l2_success_undetected"] is None and stats["eligible"] == 0
    assert stats["p_fool"] is None
    assert stats["success_undetected"]["high_pct"] > 0  # Wilson: 0 of 2 is not "surely 0 %"
    with pytest.raises(ValueError, match="of"):
        verified_median_l2(nothing, "claimed")


def test_noise_statistics_accepts_a_deterministic_verification(two_gaussian):
    m = two_gaussian
    tm = flows_threat_model(m, noise_seed=None)
    clean = m.on_axis([-0.1] * 3)
    adv = m.on_axis([0.05, 0.1, -0.01])
    result = result_for(adv, clean=clean)
    stats = noise_statistics(verify(tm, clean, result, torch.zeros(3, dtype=torch.long)))
    assert stats["fools_classifier"]["successes"] == 2
    assert stats["median_l2_fools_classifier"] == pytest.approx(0.175)  # mean of 0.15 and 0.2
    assert "draws" not in stats


# --- decision_randomness and recommend_draws -------------------------------------------------------


def test_flip_rate_and_shares_match_the_closed_form():
    """Decision probabilities: non-image d = Φ(x₁/τ); class 0 (1 − d)·Φ(x₀/σ); class 1 the rest.
    Flip rate f = 1 − Σ p_c² (the estimator is unbiased: its mean over 80 independent examples
    lies within 4 standard errors of f)."""
    b, draws = 80, 40
    x0, x1 = 0.2, -0.1
    tm = toy(detector=True, seed=5)
    audit = decision_randomness(tm, batch([x0] * b, x1=x1), torch.zeros(b, dtype=torch.long), draws)
    d = norm.cdf(x1 / TAU)
    q = norm.cdf(x0 / SIGMA)
    probs = torch.tensor([(1 - d) * q, (1 - d) * (1 - q), d], dtype=torch.float64)
    flip = 1 - (probs**2).sum().item()
    assert audit.counts.shape == (b, 3)
    assert bool((audit.counts.sum(1) == draws).all())
    se = audit.flip_rate.std().item() / math.sqrt(b)
    assert abs(audit.mean_flip_rate - flip) <= 4 * se
    shares = audit.counts.double().sum(0) / (b * draws)
    assert torch.allclose(shares, probs, atol=4 * math.sqrt(0.25 / (b * draws)))
    assert audit.agreement.mean().item() == pytest.approx(probs[0].item(), abs=0.03)
    assert audit.fraction_not_unanimous == 1.0  # P(unanimous) = Σ p_c⁴⁰ ≈ 1e-10 here
    assert torch.equal(audit.modal_share, audit.counts.max(1).values.double() / draws)
    assert audit.summary()["non_image_share"] == pytest.approx(d, abs=0.03)


def test_fraction_not_unanimous_and_margin_spread():
    """Low noise: P(all 20 draws say class 0) = Φ(x₀/σ)²⁰; the margin of class 0 is 2s exactly,
    so its spread is 2σ and its mean 2x₀."""
    b, draws, sigma = 200, 20, 0.2
    x0 = 1.25 * sigma
    tm = toy(seed=7, sigma=sigma)
    audit = decision_randomness(tm, batch([x0] * b), draws=draws)
    unanimous = norm.cdf(x0 / sigma) ** draws
    se = math.sqrt(unanimous * (1 - unanimous) / b)
    assert abs(audit.fraction_not_unanimous - (1 - unanimous)) <= 4 * se
    assert audit.agreement is None
    assert bool((audit.margin_class == 0).all())
    pooled = audit.summary()["pooled_margin_std"]
    assert abs(pooled / (2 * sigma) - 1) <= 4 / math.sqrt(2 * b * (draws - 1))
    assert abs(audit.margin_mean.mean().item() - 2 * x0) <= 4 * 2 * sigma / math.sqrt(b * draws)


def test_deterministic_model_is_unanimous_with_the_decision(two_gaussian):
    m = two_gaussian
    threshold = m.bits_per_dim(m.point(0.08)).item()
    tm = flows_threat_model(m, LikelihoodDetector(threshold, m.dim), noise_seed=None)
    x = m.on_axis([-0.2, -0.05, 0.01, 0.1, 0.2])
    audit = decision_randomness(tm, x, draws=3)
    assert torch.equal(audit.modal, tm.decision(x))
    assert audit.modal.tolist() == [0, 2, 2, 1, 1]  # 2 = "non-image" near the boundary
    assert bool(audit.unanimous.all()) and audit.mean_flip_rate == 0.0
    assert bool((audit.margin_std == 0).all())
    assert json.loads(json.dumps(audit.records())) == audit.records()


def test_recommended_draws_meet_their_definitions():
    """K: the standard error of the EOT mean margin over K draws, measured by simulation
    (400 EOT means), is at most r · median |margin|; N: draws_for_half_width(h)."""
    b, x0 = 40, 0.3
    tm = toy(seed=11)
    audit = decision_randomness(tm, batch([x0] * b), draws=64)
    advice = recommend_draws(audit, relative_error=0.25, half_width=0.1)
    sigma, typical = advice.pooled_margin_std, advice.median_abs_margin
    assert advice.eot_draws == math.ceil((sigma / (0.25 * typical)) ** 2)
    # truth: σ = 2·0.5, m = 2·0.3 -> K = ⌈(1 / 0.15)²⌉ = 45; the measured K is near it
    assert 36 <= advice.eot_draws <= 56
    assert advice.verification_draws == draws_for_half_width(0.1) == 93
    k = advice.eot_draws
    x = batch([x0] * 400)
    eot_margins = mean_over_draws(2 * tm.observe(x, draws=k).logits[:, 0], k)
    assert eot_margins.std().item() <= 0.25 * 2 * x0 * 1.15  # 4 SE of a 400-sample std: ±14 %


def test_recommendation_edge_cases_and_bad_arguments():
    def audit(mean, std):
        b = len(mean)
        return DecisionRandomness(
            counts=torch.zeros(b, 3, dtype=torch.int64),
            modal=torch.zeros(b, dtype=torch.int64),
            modal_share=torch.ones(b, dtype=torch.float64),
            flip_rate=torch.zeros(b, dtype=torch.float64),
            agreement=None,
            margin_class=torch.zeros(b, dtype=torch.int64),
            margin_mean=torch.tensor(mean, dtype=torch.float64),
            margin_std=torch.tensor(std, dtype=torch.float64),
            draws=8,
            num_classes=2,
        )

    assert recommend_draws(audit([1.0, 2.0], [0.0, 0.0])).eot_draws == 1
    # σ = √((1 + 9)/2) = √5, m = 1.5: K = ⌈5 / (0.5 · 1.5)²⌉ = ⌈8.9⌉ = 9
    assert recommend_draws(audit([1.0, 2.0], [1.0, 3.0]), relative_error=0.5).eot_draws == 9
    with pytest.raises(ValueError, match="median"):
        recommend_draws(audit([0.0, 0.0], [1.0, 1.0]))
    with pytest.raises(ValueError, match="relative_error"):
        recommend_draws(audit([1.0], [1.0]), relative_error=0.0)
    with pytest.raises(ValueError, match="half_width"):
        recommend_draws(audit([1.0], [1.0]), half_width=0.7)
    with pytest.raises(ValueError, match="^draws:"):
        decision_randomness(toy(), batch([0.1]), draws=1)
    with pytest.raises(ValueError, match="^y:"):
        decision_randomness(toy(), batch([0.1]), torch.tensor([5]))


# --- the tiny GLOW ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def glow():
    gen = torch.Generator().manual_seed(0)
    model = flows.build_model("tiny", "reweight", num_classes=10, generator=gen).eval()
    x = torch.rand((6, *model.config.data_shape), generator=gen) - 0.5
    model.initialise(x, torch.Generator().manual_seed(1))
    with torch.no_grad():  # untrained class means are all 0 (every class ties): spread them
        model.prior.means.normal_(0.0, 0.3, generator=gen)
    return model, x


def test_glow_fresh_noise_decision_varies_and_fixed_noise_does_not(glow):
    model, x = glow
    probe = flows_threat_model(model, LikelihoodDetector(1.0, model.num_dims), noise="fresh")
    threshold = probe.bits_per_dim(x).median().item()  # about half the draws are "non-image"
    det = LikelihoodDetector(threshold, model.num_dims)
    fresh = flows_threat_model(model, det, noise="fresh", noise_seed=2, bits_from_class_scores=True)
    fixed = flows_threat_model(model, det, noise_seed=2, bits_from_class_scores=True)
    audit = decision_randomness(fresh, x, draws=16)
    assert bool((audit.counts.sum(1) == 16).all()) and audit.counts.shape == (6, 11)
    assert audit.fraction_not_unanimous > 0 and bool((audit.margin_std > 0).all())
    assert 0 < audit.summary()["non_image_share"] < 1
    still = decision_randomness(fixed, x, draws=4)
    assert bool(still.unanimous.all()) and bool((still.margin_std == 0).all())
    assert torch.equal(still.modal, fixed.decision(x))

    y = audit.margin_class
    checked = verify_over_noise(fresh, x, result_for(x, clean=x), y, draws=24, max_rows=50)
    assert isinstance(checked, NoiseVerification)
    assert bool((checked.fooled_undetected_draws <= checked.fooled_draws).all())
    assert bool((checked.fooled_undetected_draws + checked.detected_draws <= 24).all())
    assert json.loads(json.dumps(checked.records())) == checked.records()
