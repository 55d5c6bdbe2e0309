"""The assembled model: exact inverse, correct density, Bayes' rule, one pass for all classes."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

import flows
from flows.preprocess import NOISE_WIDTH, add_noise_channels, pad_image
from flows.variants import VARIANTS

from .helpers import brute_force_logabsdet, perturb, relative_error

PRIOR_NAMES = sorted(VARIANTS)


def _model(prior: str = "split", dtype=torch.float64, **overrides) -> flows.ConditionalGlow:
    """A tiny model (1×6×6 data padded to 8×8) at initialised then perturbed parameters."""
    preset = flows.get_preset("tiny").replace(data_shape=(1, 6, 6))
    torch.manual_seed(0)
    model = flows.build_model(preset, prior, num_classes=3, hidden_channels=4, **overrides)
    model = model.to(dtype)
    model.initialise(_images(8, dtype, seed=9))
    return perturb(model, seed=1, scale=0.05)


def _images(batch: int, dtype=torch.float64, seed: int = 0) -> torch.Tensor:
    return (
        torch.rand(batch, 1, 6, 6, generator=torch.Generator().manual_seed(seed), dtype=dtype) - 0.5
    )


def _gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("prior", PRIOR_NAMES)
def test_decode_inverts_encode_to_1e_10(prior):
    model = _model(prior)
    x = _images(4)
    z, _ = model.encode(x, _gen())
    assert z.shape == (4, 2 * 8 * 8)
    assert relative_error(model.decode(z), x) < 1e-10


def test_model_log_likelihood_matches_brute_force_change_of_variables():
    # log p(x|y) = log p(z|y) + log|det ∂z/∂x̃| − log q(u), with the Jacobian taken by autograd on
    # the padded input x̃ (the density lives on the padded space).
    model = _model("reweight")
    x = _images(1)
    # encode draws the border, then the noise channels, from one generator; rebuild that input:
    generator = _gen(5)
    x_tilde, log_q = add_noise_channels(pad_image(x, 8, generator), generator)
    assert log_q[0].item() == pytest.approx(64 * math.log(128.0))  # 64 noise entries
    z, _ = model.flow(x_tilde)
    logabsdet = brute_force_logabsdet(lambda v: model.flow(v)[0], x_tilde)
    expected = model.prior.log_prob(z)[0] + logabsdet - log_q[0]
    actual = model.class_log_likelihoods(x, _gen(5))[0]
    assert torch.allclose(actual, expected, rtol=1e-10, atol=1e-8)


@pytest.mark.parametrize("prior", PRIOR_NAMES)
def test_single_encoding_equals_one_evaluation_per_class(prior):
    model = _model(prior)
    x = _images(5)
    all_classes = model.class_log_likelihoods(x, _gen(2))
    for c in range(3):
        z, logdet = model.encode(x, _gen(2))
        labels = torch.full((5,), c, dtype=torch.int64)
        assert torch.allclose(
            model.prior.log_prob(z, labels) + logdet, all_classes[:, c], rtol=1e-12, atol=1e-9
        )


@pytest.mark.parametrize("prior", ["base", "cauchy"])
def test_posterior_and_marginal_follow_bayes_rule(prior):
    model = _model(prior)
    x = _images(5)
    ll = model.class_log_likelihoods(x, _gen(6))
    shift = ll.max(1, keepdim=True).values  # p(x, y) / e^shift, uniform p(y), no underflow
    joint = (ll - shift).exp() / 3.0
    assert torch.allclose(
        model.predict_proba(x, _gen(6)), joint / joint.sum(1, keepdim=True), rtol=1e-10
    )
    assert torch.allclose(model.log_prob(x, _gen(6)), shift[:, 0] + joint.sum(1).log(), rtol=1e-10)
    expected_bpd = -model.log_prob(x, _gen(6)) / (64 * math.log(2.0)) + 8.0
    assert torch.allclose(model.bits_per_dim(x, _gen(6)), expected_bpd, rtol=1e-12)


def test_split_prior_classifies_by_its_z_s_logits_and_keeps_the_full_likelihood():
    """The Split model's classifier is softmax/argmax of log p(z_s | c) (Section 5.3), while
    log p(x), bits/dim and log p(x | y) stay the full density's."""
    model = _model("split")
    x = _images(5)
    assert model.classification_rule == "logits"
    assert _model("base").classification_rule == "likelihood"
    z, _ = model.encode(x, _gen(7))
    z_s_scores = model.prior.logits(z)
    assert torch.allclose(model.class_scores(x, _gen(7)), z_s_scores, rtol=1e-12)
    assert torch.allclose(model.predict_proba(x, _gen(7)), torch.softmax(z_s_scores, 1))
    assert torch.equal(model.classify(x, _gen(7)), z_s_scores.argmax(1))
    scores, class_ll = model.class_scores_and_log_likelihoods(x, _gen(7))
    assert torch.allclose(scores, z_s_scores, rtol=1e-12)
    assert torch.allclose(class_ll, model.class_log_likelihoods(x, _gen(7)), rtol=1e-12)
    # the full density is unchanged: log p(x) is the logsumexp of log p(x | c), not of the logits
    expected = torch.logsumexp(class_ll, 1) - math.log(3)
    assert torch.allclose(model.log_prob(x, _gen(7)), expected, rtol=1e-12)
    output = model(x, _gen(7))
    assert torch.equal(output.class_scores, output.logits)


def test_importance_weighted_likelihood_is_the_log_mean_exp_of_single_draws():
    """draws = S: log (1/S) Σ_s exp(single-draw estimate s), the draws taken in sequence from the
    generator; never below the mean of the single-draw estimates (Jensen)."""
    model = _model("base")
    x = _images(4)
    generator = _gen(8)
    singles = torch.stack([model.class_log_likelihoods(x, generator) for _ in range(3)])
    weighted = model.class_log_likelihoods(x, _gen(8), draws=3)
    expected = torch.logsumexp(singles, 0) - math.log(3)
    assert torch.allclose(weighted, expected, rtol=1e-12)
    assert bool((weighted >= singles.mean(0) - 1e-9).all())
    assert not torch.allclose(singles[0], singles[1])  # the draws differ
    marginal = model.log_prob(x, _gen(8), draws=3)
    assert torch.allclose(marginal, torch.logsumexp(weighted, 1) - math.log(3), rtol=1e-12)
    assert torch.allclose(
        model.bits_per_dim(x, _gen(8), draws=3),
        -marginal / (64 * math.log(2.0)) + 8.0,
        rtol=1e-12,
    )
    with pytest.raises(ValueError, match="draws"):
        model.class_log_likelihoods(x, draws=0)


def test_noise_generator_makes_likelihoods_deterministic_and_differentiable():
    model = _model("split")
    x = _images(3).requires_grad_()
    first = model.class_log_likelihoods(x, _gen(7))
    assert torch.equal(first, model.class_log_likelihoods(x, _gen(7)))
    assert not torch.equal(first, model.class_log_likelihoods(x, _gen(8)))
    (gradient,) = torch.autograd.grad(first[:, 0].sum(), x)
    assert torch.isfinite(gradient).all() and gradient.abs().sum() > 0


def test_shared_noise_makes_a_batched_call_equal_per_example_calls():
    """With shared_noise=True every row gets the same padding/noise draw, whatever the batch."""
    model = _model("split")
    x = _images(4)
    batched = model.class_log_likelihoods(x, _gen(5), shared_noise=True)
    single = torch.cat([model.class_log_likelihoods(x[i : i + 1], _gen(5)) for i in range(4)])
    torch.testing.assert_close(batched, single, rtol=1e-12, atol=1e-12)
    reordered = model.class_log_likelihoods(x[[3, 1, 0, 2]], _gen(5), shared_noise=True)
    torch.testing.assert_close(reordered, batched[[3, 1, 0, 2]], rtol=1e-12, atol=1e-12)
    # without it, a row's noise depends on its position in the batch
    plain = model.class_log_likelihoods(x, _gen(5))
    assert not torch.allclose(plain[1:], single[1:])
    bpd = model.bits_per_dim(x, _gen(5), shared_noise=True)
    torch.testing.assert_close(bpd[2:3], model.bits_per_dim(x[2:3], _gen(5)), rtol=1e-12, atol=0)


@pytest.mark.parametrize("prior", PRIOR_NAMES)
def test_gradient_reaches_every_parameter(prior):
    model = _model(prior, dtype=torch.float32)
    output = model(_images(4, torch.float32), _gen())
    labels = torch.tensor([0, 1, 2, 0])
    loss = flows.objectives.objective(
        model.config.objective, output.class_log_likelihoods, output.logits, labels, model.num_dims
    )
    loss.backward()
    missing = [
        name for name, p in model.named_parameters() if p.grad is None or not p.grad.abs().sum() > 0
    ]
    assert missing == []


def test_eval_mode_equals_train_mode_after_initialisation():
    model = _model("base")
    x = _images(3)
    train_values = model.train().class_log_likelihoods(x, _gen())
    assert torch.equal(model.eval().class_log_likelihoods(x, _gen()), train_values)


def test_sampling_decodes_prior_samples_into_the_data_shape():
    model = _model("base")
    labels = torch.tensor([0, 2])
    x = model.sample(labels, generator=_gen(1), temperature=0.5)
    z = model.prior.sample(labels, generator=_gen(1), temperature=0.5)
    assert x.shape == (2, 1, 6, 6) and torch.equal(x, model.decode(z))


def test_normflows_call_forms_log_prob_x_y_and_sample_n():
    model = _model("split")
    x, labels = _images(3), torch.tensor([2, 0, 1])
    class_ll = model.class_log_likelihoods(x, _gen(4))
    expected = class_ll[torch.arange(3), labels]
    assert torch.equal(model.log_prob(x, y=labels, generator=_gen(4)), expected)
    with torch.random.fork_rng():
        torch.manual_seed(9)
        positional = model.log_prob(x, labels)  # normflows: log_prob(x, y)
        torch.manual_seed(9)
        reference = model.class_log_likelihoods(x)[torch.arange(3), labels]
    assert torch.equal(positional, reference)
    samples = model.sample(4, generator=_gen(2))  # normflows: sample(n), classes uniform
    generator = _gen(2)
    drawn = torch.randint(model.num_classes, (4,), generator=generator)
    assert samples.shape == (4, 1, 6, 6)
    assert torch.equal(samples, model.sample(drawn, generator=generator))


def test_model_rejects_inputs_of_the_wrong_shape():
    model = _model("base")
    with pytest.raises(
        ValueError, match=r"expected images shaped \(B, 1, 6, 6\), got \(2, 1, 8, 8\)"
    ):
        model.encode(torch.zeros(2, 1, 8, 8))


def test_build_model_applies_overrides_and_rejects_unknown_ones():
    model = flows.build_model("paper-mnist", "split", levels=2, steps=1, hidden_channels=4)
    assert (model.config.levels, model.config.steps, model.config.hidden_channels) == (2, 1, 4)
    assert model.config.objective == "split" and model.num_dims == 1024
    assert model.flow.final_shape == (4, 16, 16)
    with pytest.raises(TypeError, match="unknown override"):
        flows.build_model("tiny", "base", width=3)
    with pytest.raises(ValueError, match="variant must be one of"):
        flows.build_model("tiny", "gmm")
    with pytest.raises(ValueError, match="unknown preset"):
        flows.build_model("huge", "base")


@pytest.mark.parametrize(
    "name, levels, steps, hidden, data_shape",
    [
        ("paper-mnist", 4, 12, 128, (1, 28, 28)),
        ("paper-cifar", 4, 16, 256, (3, 32, 32)),
    ],
)
def test_paper_presets_follow_appendix_a(name, levels, steps, hidden, data_shape):
    preset = flows.get_preset(name)
    assert (preset.levels, preset.steps, preset.hidden_channels) == (levels, steps, hidden)
    assert preset.data_shape == data_shape and preset.padded_size == 32
    assert (preset.epochs, preset.lr, preset.lr_decay_epochs, preset.lr_decay_factor) == (
        150,
        1e-3,
        60,
        0.1,
    )
    assert preset.crop_padding == 4 and preset.hflip == (name == "paper-cifar")
    with pytest.raises(dataclasses.FrozenInstanceError):
        preset.levels = 3  # type: ignore[misc]


def test_noise_channels_span_their_stated_range():
    x = torch.zeros(2, 3, 4, 4)
    padded, log_q = add_noise_channels(x, _gen())
    noise = padded[:, 3:]
    assert noise.min() >= 0 and noise.max() < NOISE_WIDTH
    assert torch.allclose(log_q, torch.full((2,), 48 * math.log(128.0)))
