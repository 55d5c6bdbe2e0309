"""Threat model, fixed-noise wrapper, re-verification and Table 2 statistics."""

import dataclasses
import math

import pytest
import torch

import flows
import flows.attacks
from flows.attacks import (
    AttackResult,
    CarliniWagnerL2,
    LikelihoodDetector,
    Misclassified,
    ThreatModel,
    flows_threat_model,
    table2_statistics,
    verify,
)
from flows.noise import FixedNoise


def test_fixed_noise_has_one_home():
    assert flows.attacks.FixedNoise is FixedNoise  # re-exported for existing imports


def test_fixed_noise_with_generator_argument(model_classes):
    TwoGaussian, _ = model_classes
    m = TwoGaussian(noise=0.05)
    x = m.on_axis([-0.2, 0.1])
    fixed = FixedNoise(m.class_log_likelihoods, seed=3)
    assert fixed.takes_generator
    assert torch.equal(fixed(x), fixed(x))
    assert not torch.equal(fixed(x), fixed.reseeded(4)(x))
    assert not torch.equal(m.class_log_likelihoods(x), m.class_log_likelihoods(x))


def test_fixed_noise_is_batch_invariant_one_realisation_for_all(model_classes):
    TwoGaussian, _ = model_classes
    m = TwoGaussian(noise=0.05)
    x = m.on_axis([-0.2, 0.1, 0.3])
    fixed = FixedNoise(m.class_log_likelihoods, seed=3)
    whole = fixed(x)
    torch.testing.assert_close(torch.cat([fixed(x[2:]), fixed(x[:2])]), whole[[2, 0, 1]])
    same_input = fixed(torch.cat([x[:1], x[:1]]))
    assert torch.equal(same_input[0], same_input[1])
    layout_dependent = FixedNoise(m.class_log_likelihoods, seed=3, batch_invariant=False)
    assert not torch.equal(layout_dependent(torch.cat([x[:1], x[:1]]))[1], whole[0])
    assert torch.equal(layout_dependent(x[:1]), whole[:1])


def test_fixed_noise_uses_one_batched_call_when_the_model_can_share_noise():
    """A model method taking ``shared_noise`` is called once per query, and gives the same values
    as one call per example (the fallback for callables without it)."""

    class SharedNoiseModel:
        calls = 0

        def scores(self, x, generator=None, shared_noise=False):
            self.calls += 1
            rows = 1 if shared_noise else len(x)
            noise = torch.rand(rows, 3, generator=generator, dtype=x.dtype).expand(len(x), 3)
            return x.flatten(1)[:, :3] * 2.0 + noise

    m = SharedNoiseModel()
    x = torch.rand(5, 4, dtype=torch.float64)
    fixed = FixedNoise(m.scores, seed=11)
    assert fixed.takes_shared_noise
    batched = fixed(x)
    assert m.calls == 1
    per_example = torch.cat(
        [m.scores(x[i : i + 1], torch.Generator().manual_seed(11)) for i in range(5)]
    )
    torch.testing.assert_close(batched, per_example)


def test_fixed_noise_with_global_generator_leaves_caller_state_untouched():
    def noisy(x):
        return x + torch.rand(x.shape, dtype=x.dtype)

    fixed = FixedNoise(noisy, seed=5)
    assert not fixed.takes_generator
    x = torch.zeros(2, 3)
    torch.manual_seed(123)
    first = fixed(x)
    after = torch.rand(4)
    torch.manual_seed(123)
    expected_after = torch.rand(4)
    assert torch.equal(first, fixed(x))
    assert torch.equal(after, expected_after)


def test_c_plus_1_decision(two_gaussian):
    det = LikelihoodDetector(threshold=6.2, num_dims=two_gaussian.dim)
    tm = ThreatModel(
        two_gaussian.class_log_likelihoods, two_gaussian.bits_per_dim, det, num_classes=2
    )
    x = two_gaussian.on_axis([-0.25, -0.01, 0.01, 0.25])
    assert tm.classify(x).tolist() == [0, 0, 1, 1]
    assert tm.detected(x).tolist() == [False, True, True, False]
    assert tm.decision(x).tolist() == [0, 2, 2, 1]
    plain = tm.with_detector(None)
    assert plain.decision(x).tolist() == [0, 0, 1, 1]
    with pytest.raises(ValueError, match="no detector"):
        plain.detected(x)
    obs = tm.observe(x)
    assert obs.logits.shape == (4, 2) and obs.bits_per_dim.shape == (4,)
    assert tm.observe(x, with_detector=False).bits_per_dim is None


def test_flows_threat_model_duck_typing(model_classes):
    TwoGaussian, _ = model_classes
    m = TwoGaussian(noise=0.05)
    det = LikelihoodDetector(threshold=6.2, num_dims=m.dim)
    x = m.on_axis([-0.25, 0.25])
    tm = flows_threat_model(m, det, noise_seed=0, eps=1.5)
    assert torch.equal(tm.decision(x), tm.decision(x))
    assert torch.equal(tm.observe(x).bits_per_dim, tm.observe(x).bits_per_dim)
    for i in range(2):
        gen = torch.Generator().manual_seed(0)
        expected = m.class_log_likelihoods(x[i : i + 1], generator=gen)
        torch.testing.assert_close(tm.logits_fn(x)[i : i + 1], expected)
    assert tm.eps == 1.5 and tm.bounds == (-0.5, 0.5) and tm.num_classes == 2
    with pytest.raises(TypeError, match="bits_per_dim"):
        flows_threat_model(type("M", (), {"class_log_likelihoods": m.class_log_likelihoods})(), det)
    with pytest.raises(TypeError, match="integer num_classes"):  # C is read from the model
        flows_threat_model(type("M", (), {"class_log_likelihoods": m.class_log_likelihoods})())
    passthrough = flows_threat_model(m, noise_seed=None)
    assert passthrough.logits_fn == m.class_log_likelihoods


def test_verify_rejects_false_claims_and_counts_table2(two_gaussian):
    """Each example breaks exactly one rule (or none); statistics follow by hand."""
    m = two_gaussian
    det = LikelihoodDetector(threshold=6.2, num_dims=m.dim)
    tm = ThreatModel(m.class_log_likelihoods, m.bits_per_dim, det, eps=1.0, num_classes=2)
    x = m.on_axis([-0.25] * 6)
    adv = m.on_axis([0.25, 0.02, -0.1, 0.25, 0.25, 0.25])
    adv[3, 0, 0, 0] = 0.7  # out of bounds (still class 1)
    adv[4] = m.point(0.9)[0]  # beyond eps: distance 1.15
    claimed = torch.tensor([True, True, True, True, True, False])
    result = AttackResult(adv, claimed, torch.zeros(6), torch.ones(6, dtype=torch.long), ("",) * 6)
    v = verify(tm, x, result, torch.zeros(6, dtype=torch.long))
    assert v.in_bounds.tolist() == [True, True, True, False, True, True]
    assert v.within_eps.tolist() == [True, True, True, True, False, True]
    assert v.fools_classifier.tolist() == [True, True, False, False, False, False]
    assert v.detected[:3].tolist() == [False, True, False]  # raw detector verdicts
    assert v.success_undetected.tolist() == [True, False, False, False, False, False]
    torch.testing.assert_close(v.l2[:3], torch.tensor([0.5, 0.27, 0.15], dtype=torch.float64))
    stats = table2_statistics(v)
    assert stats["n"] == 6
    assert math.isclose(stats["success_undetected_pct"], 100 / 6)
    assert math.isclose(stats["fools_classifier_pct"], 200 / 6)
    assert len(v.records()) == 6 and v.records()[0]["success_undetected"] is True
    targeted_result = dataclasses.replace(result, targets=torch.zeros(6, dtype=torch.long))
    targeted = verify(
        tm,
        x,
        targeted_result,
        torch.ones(6, dtype=torch.long),  # target != y
        eps=None,
    )
    assert targeted.fools_classifier.tolist() == [False, False, True, False, False, False]


def test_verification_under_attack_noise_and_under_fresh_noise(model_classes):
    """Adversarials found under a fixed noise seed all verify under it; fresh noise may differ."""
    TwoGaussian, _ = model_classes
    m = TwoGaussian(noise=0.05)
    x, y = m.on_axis([-0.2, -0.25, -0.3, -0.22, -0.27, -0.18]), torch.zeros(6, dtype=torch.long)
    attack_tm = flows_threat_model(m, noise_seed=0)
    result = CarliniWagnerL2(binary_search_steps=5, steps=200)(attack_tm, x, Misclassified(y))
    assert result.success.all()
    same = verify(attack_tm, x, result, y)
    assert same.fools_classifier.all()
    fresh = [verify(flows_threat_model(m, noise_seed=s), x, result, y) for s in (1, 2, 3)]
    fooled_fresh = torch.stack([v.fools_classifier for v in fresh])
    assert not fooled_fresh.all()  # right at the boundary: fresh noise flips some verdicts


def test_threat_model_needs_detector_and_statistic_together(two_gaussian):
    with pytest.raises(ValueError, match="together"):
        ThreatModel(two_gaussian.class_log_likelihoods, two_gaussian.bits_per_dim, num_classes=2)


def _two_encodings(tm):
    """The same threat model with bits/dim from its own ``bits_per_dim_fn`` (two encodings)."""
    return dataclasses.replace(tm, bits_from_class_scores=False)


def test_one_encoding_decision_equals_two_encodings_and_encodes_once(model_classes):
    """With ``bits_from_class_scores`` the C+1 decision derives bits/dim from the class
    log-likelihoods: same verdicts and bits/dim as the two-encoding decision, half the model calls."""
    TwoGaussian, _ = model_classes

    class Counting(TwoGaussian):
        calls = 0

        def class_log_likelihoods(self, x, generator=None):
            self.calls += 1
            return super().class_log_likelihoods(x, generator)

    m = Counting(noise=0.05)
    m.num_dims = (
        m.dim
    )  # TwoGaussian's bits/dim divides by D = dim, as flows.measures.bits_per_dim does
    det = LikelihoodDetector(threshold=6.2, num_dims=m.dim)
    one = flows_threat_model(m, det, noise_seed=0, bits_from_class_scores=True)
    two = _two_encodings(one)
    assert one.bits_from_class_scores and not two.bits_from_class_scores
    x = m.on_axis(torch.linspace(-0.3, 0.3, 13).tolist())
    m.calls = 0
    expected = two.decision(x)
    # FixedNoise calls a model without ``shared_noise`` once per example
    assert m.calls == 2 * len(x)  # class scores, then bits/dim (another encoding)
    m.calls = 0
    assert torch.equal(one.decision(x), expected)
    assert m.calls == len(x)
    assert set(expected.tolist()) == {0, 1, 2}  # both classes and "non-image" occur
    torch.testing.assert_close(
        one.observe(x).bits_per_dim, two.observe(x).bits_per_dim, rtol=1e-12, atol=1e-12
    )


def test_one_encoding_decision_on_glow_under_fixed_noise():
    """On the real (tiny, untrained) GLOW the one-encoding C+1 decision and bits/dim are exactly the
    two-encoding ones under the same fixed noise seed."""
    import flows

    gen = torch.Generator().manual_seed(0)
    model = flows.build_model("tiny", "reweight", num_classes=10, generator=gen).eval()
    x = torch.rand((12, *model.config.data_shape), generator=gen) - 0.5
    model.initialise(x, torch.Generator().manual_seed(1))
    two_bpd = flows_threat_model(model, LikelihoodDetector(1.0, model.num_dims), noise_seed=3)
    bpd = two_bpd.bits_per_dim_fn(x)
    threshold = bpd.median().item()  # about half the inputs are "non-image"
    det = LikelihoodDetector(threshold, model.num_dims)
    one = flows_threat_model(model, det, noise_seed=3, bits_from_class_scores=True)
    two = _two_encodings(one)
    with torch.no_grad():
        decided = one.decision(x)
        assert torch.equal(decided, two.decision(x))
        assert torch.equal(one.observe(x).bits_per_dim, bpd)
    assert (decided == model.num_classes).sum() == (bpd > threshold).sum() > 0
    fresh = flows_threat_model(model, det, noise_seed=4, bits_from_class_scores=True)
    assert not torch.equal(fresh.observe(x).bits_per_dim, bpd)  # the noise does matter


def test_own_class_scores_without_the_joint_method_never_give_the_bits_per_dim(model_classes):
    """A model whose classifier is its own ``class_scores`` (not its log-likelihoods) but that has
    no ``class_scores_and_log_likelihoods``: bits/dim must come from its ``bits_per_dim``, not from
    the scores, even with ``bits_from_class_scores``; the label from the scores."""
    TwoGaussian, _ = model_classes

    class OwnScores(TwoGaussian):
        def class_scores(self, x, generator=None):  # a discriminative head: swapped classes
            return self.class_log_likelihoods(x, generator).flip(1) * 1e-3

    m = OwnScores()
    m.num_dims = m.dim
    det = LikelihoodDetector(threshold=6.2, num_dims=m.dim)
    tm = flows_threat_model(m, det, bits_from_class_scores=True)
    x = m.on_axis(torch.linspace(-0.3, 0.3, 7).tolist())
    obs = tm.observe(x)
    torch.testing.assert_close(obs.bits_per_dim, m.bits_per_dim(x))
    assert torch.equal(obs.logits.argmax(1), m.class_scores(x).argmax(1))
    assert not torch.equal(obs.logits.argmax(1), m.class_log_likelihoods(x).argmax(1))


def test_one_encoding_needs_num_dims(model_classes):
    TwoGaussian, _ = model_classes
    m = TwoGaussian()
    det = LikelihoodDetector(threshold=6.2, num_dims=m.dim)
    with pytest.raises(TypeError, match="num_dims"):
        flows_threat_model(m, det, bits_from_class_scores=True)
    # no detector: no bits/dim, the switch has no effect
    assert not flows_threat_model(m, bits_from_class_scores=True).bits_from_class_scores
    with pytest.raises(ValueError, match="bits_from_class_scores"):
        ThreatModel(m.class_log_likelihoods, num_classes=2, bits_from_class_scores=True)
    m.num_dims = m.dim + 1  # the detector's D must be the model's
    with pytest.raises(ValueError, match="num_dims"):
        flows_threat_model(m, det, bits_from_class_scores=True)


# --- randomised (deployed) threat models: draws, EOT layout, majority decisions -----------------


def _noisy_logits(x, generator=None):
    """Two-class scores (s, −s) of s = x₀ + N(0, 1) noise drawn per row from ``generator``."""
    s = x.flatten(1)[:, 0] + torch.randn(len(x), generator=generator, dtype=x.dtype)
    return torch.stack([s, -s], dim=1)


def test_repeat_and_mean_over_draws_are_draw_major():
    from flows.attacks import mean_over_draws, repeat_draws

    x = torch.arange(6.0).reshape(3, 2)
    stacked = repeat_draws(x, 4)
    assert stacked.shape == (12, 2)
    assert torch.equal(stacked[3:6], x)  # row k·B + i is example i under draw k
    values = torch.cat([torch.full((3,), float(k)) for k in range(4)])
    assert torch.equal(mean_over_draws(values, 4), torch.full((3,), 1.5))
    with pytest.raises(ValueError, match="draws"):
        repeat_draws(x, 0)
    with pytest.raises(ValueError, match="multiple of draws"):
        mean_over_draws(torch.zeros(5), 2)


def test_majority_over_draws_takes_the_most_frequent_label():
    from flows.attacks import majority_over_draws

    labels = torch.tensor([[1, 0, 2], [1, 2, 2], [0, 2, 1]]).reshape(-1)  # 3 draws × 3 examples
    assert majority_over_draws(labels, 3).tolist() == [1, 2, 2]


def test_fresh_noise_threat_model_draws_per_row_and_call_and_is_reproducible():
    from flows.noise import FreshNoise

    tm = ThreatModel(FreshNoise(_noisy_logits, seed=3), num_classes=2, randomised=True)
    x = torch.zeros(1, 2, dtype=torch.float64)
    obs = tm.observe(x, draws=500)
    assert obs.logits.shape == (500, 2)
    # independent N(0, 1) draws per row: spread ≈ 1, mean ≈ 0
    assert 0.85 < obs.logits[:, 0].std().item() < 1.15
    assert abs(obs.logits[:, 0].mean().item()) < 0.15
    again = ThreatModel(FreshNoise(_noisy_logits, seed=3), num_classes=2, randomised=True)
    assert torch.equal(again.observe(x, draws=500).logits, obs.logits)  # same seed, same draws
    assert not torch.equal(tm.observe(x, draws=500).logits, obs.logits)  # the next call differs


def test_majority_decision_over_draws_is_stable_where_single_draws_flip():
    from flows.noise import FreshNoise

    tm = ThreatModel(FreshNoise(_noisy_logits, seed=0), num_classes=2, randomised=True)
    x = torch.tensor([[0.5, 0.0]], dtype=torch.float64)  # P(class 0) = Φ(0.5) ≈ 0.69 per draw
    single = torch.cat([tm.classify(x) for _ in range(200)])
    assert 0.55 < (single == 0).double().mean().item() < 0.83
    majority = torch.cat([tm.classify(x, draws=101) for _ in range(20)])
    assert bool((majority == 0).all())  # P(majority of 101 wrong) ≈ 5e-5 per call
    assert torch.equal(tm.decision(x, draws=101), torch.tensor([0]))


def test_flows_threat_model_fresh_noise_is_the_deployed_model():
    from tests.attacks.conftest import TwoGaussian

    model = TwoGaussian(noise=0.05)
    x = model.on_axis([0.01, -0.02])
    fixed = flows_threat_model(model, noise_seed=1)
    fresh = flows_threat_model(model, noise="fresh", noise_seed=1)
    assert not fixed.randomised and fresh.randomised
    assert torch.equal(fixed.observe(x).logits, fixed.observe(x).logits)
    assert not torch.equal(fresh.observe(x).logits, fresh.observe(x).logits)
    with pytest.raises(ValueError, match="noise"):
        flows_threat_model(model, noise="frozen")


def test_flows_threat_model_classifies_a_split_model_by_its_z_s_logits_in_one_encoding():
    """The Split model's threat model: classifier = its class_scores (z_s logits), detector = the
    full likelihood's bits/dim, both from one encoding (scores_and_bits_fn)."""
    torch.manual_seed(0)
    model = flows.build_model("tiny", "split", num_classes=4)
    with torch.no_grad():
        model.prior.class_offsets.normal_(0.0, 0.5)
    model.initialise(torch.rand(8, *model.config.data_shape) - 0.5)
    model.eval()
    x = torch.rand(6, *model.config.data_shape) - 0.5
    det = LikelihoodDetector(threshold=8.0, num_dims=model.num_dims)
    tm = flows_threat_model(model, det, noise_seed=2, bits_from_class_scores=True)
    assert tm.scores_and_bits_fn is not None and not tm.bits_from_class_scores
    expected_scores = model.class_scores(x, torch.Generator().manual_seed(2), shared_noise=True)
    expected_bpd = model.bits_per_dim(x, torch.Generator().manual_seed(2), shared_noise=True)
    obs = tm.observe(x)
    assert torch.allclose(obs.logits, expected_scores, rtol=1e-5)
    assert torch.allclose(obs.bits_per_dim, expected_bpd, rtol=1e-5)
    assert torch.equal(tm.classify(x), expected_scores.argmax(1))
    two = flows_threat_model(model, det, noise_seed=2)
    assert torch.equal(tm.decision(x), two.decision(x))
    assert tm.with_detector(None).scores_and_bits_fn is None


def test_model_batch_splits_every_model_call_and_keeps_numbers_and_gradients():
    """``model_batch`` = 5: an observation of 4 inputs under 3 EOT draws (12 rows) is three
    calls of at most 5 rows per function, with the same scores, bits/dim, decisions and input
    gradients as one call (tensor and tuple outputs alike)."""
    weights = torch.randn(6, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    sizes = []

    def logits(x):
        sizes.append(len(x))
        return torch.tanh(x.flatten(1) @ weights)

    def bpd(x):
        sizes.append(len(x))
        return x.flatten(1).pow(2).sum(1)

    def joint(x):
        return logits(x), bpd(x)

    det = LikelihoodDetector(threshold=0.4, num_dims=6)
    x = torch.rand(4, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64) - 0.5
    for kwargs in ({}, {"scores_and_bits_fn": joint}):
        whole = ThreatModel(logits, bpd, det, num_classes=3, **kwargs)
        split = dataclasses.replace(whole, model_batch=5)
        sizes.clear()
        xs = [x.clone().requires_grad_(True) for _ in range(2)]
        observed = [tm.observe(xi, draws=3) for tm, xi in zip((whole, split), xs, strict=True)]
        per_call = 2  # the scores and the bits/dim, or the joint function's two outputs
        assert sizes[:per_call] == [12] * per_call
        assert sorted(sizes[per_call:]) == sorted([5, 5, 2] * per_call)
        for name in ("logits", "bits_per_dim"):
            torch.testing.assert_close(getattr(observed[1], name), getattr(observed[0], name))
        grads = [
            torch.autograd.grad((o.logits[:, 0] + o.bits_per_dim).sum(), xi)[0]
            for o, xi in zip(observed, xs, strict=True)
        ]
        torch.testing.assert_close(grads[1], grads[0])
        expected = whole.decision(x, draws=3), whole.bits_per_dim(x.repeat(3, 1))
        sizes.clear()
        assert torch.equal(split.decision(x, draws=3), expected[0])
        assert torch.equal(split.bits_per_dim(x.repeat(3, 1)), expected[1])
        assert sizes and max(sizes) <= 5


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "64"])
def test_model_batch_must_be_a_positive_integer(bad):
    with pytest.raises(ValueError, match=r"^model_batch must be None or an integer >= 1"):
        ThreatModel(lambda x: x, num_classes=2, model_batch=bad)


def test_flows_threat_model_passes_model_batch_on(model_classes):
    TwoGaussian, _ = model_classes
    tm = flows_threat_model(TwoGaussian(), noise_seed=0, model_batch=7)
    assert tm.model_batch == 7 and tm.with_detector(None).model_batch == 7
