"""The protocol of a conditional generative model: conformance, wrapping, and check_model's flags."""

import math

import pytest
import torch

import flows
from flows.attacks import LikelihoodDetector
from flows.measures import bits_per_dim, marginal_log_prob
from flows.robustness import (
    ConditionalGenerativeModel,
    CounterexampleModel,
    ModelWarning,
    TwoGaussianModel,
    as_threat_model,
    check_model,
    model_bits_per_dim,
    wrap,
)

GAUSS = TwoGaussianModel(dim=4, a=0.2, sigma=0.1)


def densities(x):
    """Class log-likelihoods of two Gaussians in 4 dimensions (a genuine class-conditional model)."""
    return GAUSS.class_log_likelihoods(x)


def batch(n=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    return 0.2 * torch.randn(n, 4, generator=gen, dtype=torch.float64)


class Bare:
    """A conforming model written by hand: num_classes, num_dims, class_log_likelihoods."""

    num_classes, num_dims = 2, 4

    def class_log_likelihoods(self, x, generator=None):
        return densities(x)


def test_conforming_objects_are_instances_and_others_are_not():
    assert isinstance(Bare(), ConditionalGenerativeModel)
    assert isinstance(wrap(densities, 2, 4), ConditionalGenerativeModel)
    assert isinstance(GAUSS, ConditionalGenerativeModel)
    assert isinstance(CounterexampleModel.from_targets(d=200), ConditionalGenerativeModel)
    assert not isinstance(densities, ConditionalGenerativeModel)  # a plain callable: wrap it

    class NoClasses:
        def class_log_likelihoods(self, x, generator=None):
            return densities(x)

    assert not isinstance(NoClasses(), ConditionalGenerativeModel)


def test_conditional_glow_satisfies_the_protocol_as_it_is():
    """The one GLOW test: a tiny untrained model passes check_model with no flag; its randomness
    (padding and noise channels) is measured, and it is reproducible under a seeded generator;
    its threat model fixes the noise with one shared draw."""
    gen = torch.Generator().manual_seed(0)
    glow = flows.build_model("tiny", "reweight", num_classes=10, generator=gen).eval()
    x = torch.rand((6, *glow.config.data_shape), generator=gen) - 0.5
    glow.initialise(x, torch.Generator().manual_seed(1))
    assert isinstance(glow, ConditionalGenerativeModel)
    check = check_model(glow, x)
    assert check.passed, check.flags
    assert check.randomised and check.reproducible
    assert check.declared_randomised is None and check.num_dims == glow.num_dims == 64
    assert check.bits_per_dim_consistent is True
    tm = as_threat_model(glow, LikelihoodDetector(12.0, glow.num_dims), noise_seed=3)
    with torch.no_grad():
        expected = glow.class_log_likelihoods(
            x, torch.Generator().manual_seed(3), shared_noise=True
        )
        obs = tm.observe(x)
    torch.testing.assert_close(obs.logits, expected, rtol=0, atol=0)
    assert obs.bits_per_dim.shape == (6,) and not tm.randomised


def test_wrap_gives_bits_per_dim_of_the_marginal_and_passes_the_check():
    model = wrap(densities, num_classes=2, num_dims=4, bounds=(-1.0, 1.0))
    x = batch()
    expected = bits_per_dim(marginal_log_prob(densities(x)), 4)
    torch.testing.assert_close(model.bits_per_dim(x), expected, rtol=0, atol=0)
    torch.testing.assert_close(model_bits_per_dim(Bare(), x), expected, rtol=0, atol=0)
    check = check_model(model, x)
    assert check.passed and not check.randomised and check.reproducible
    assert check.to_dict()["passed"] is True and check.to_dict()["num_dims"] == 4


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"num_classes": 1}, "num_classes: must be an integer >= 2"),
        ({"num_classes": True}, "num_classes: must be an integer >= 2"),
        ({"num_dims": 0}, "num_dims: must be an integer >= 1"),
        ({"bounds": (1.0, -1.0)}, "bounds: must be finite with lo < hi"),
        ({"bounds": (0.0, math.inf)}, "bounds: must be finite with lo < hi"),
        ({"bounds": "ab"}, "bounds: must be a pair"),
        ({"randomised": 1}, "randomised: must be a bool"),
    ],
    ids=[
        "one-class",
        "bool-classes",
        "zero-dims",
        "reversed-bounds",
        "infinite-bound",
        "text",
        "int-flag",
    ],
)
def test_wrap_refuses_values_out_of_range(kwargs, match):
    args = {"num_classes": 2, "num_dims": 4} | kwargs
    with pytest.raises(ValueError, match=match):
        wrap(densities, **args)


def test_wrap_refuses_a_non_callable():
    with pytest.raises(TypeError, match="fn: must be callable"):
        wrap(torch.zeros(2), 2, 4)


def test_wrapped_global_rng_model_is_reproducible_from_the_generator_and_leaves_global_state():
    """A callable that draws from torch's global generator, wrapped with randomised=True: a seeded
    generator fixes its noise, another seed changes it, and the caller's global state is kept."""

    def noisy(x):
        return densities(x) + torch.randn(len(x), 2, dtype=x.dtype)

    model = wrap(noisy, 2, 4, randomised=True, bounds=(-1.0, 1.0))
    x = batch()
    state = torch.get_rng_state()
    first = model.class_log_likelihoods(x, torch.Generator().manual_seed(5))
    again = model.class_log_likelihoods(x, torch.Generator().manual_seed(5))
    other = model.class_log_likelihoods(x, torch.Generator().manual_seed(6))
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.equal(first, again) and not torch.equal(first, other)
    check = check_model(model, x)
    assert check.passed and check.randomised and check.reproducible


def test_softmax_outputs_are_flagged_as_probabilities():
    model = wrap(lambda x: torch.softmax(densities(x), 1), 2, 4, bounds=(-1.0, 1.0))
    with pytest.warns(ModelWarning, match="class probabilities"):
        check = check_model(model, batch())
    assert set(check.flags) == {"probabilities"} and not check.passed


def test_log_softmax_outputs_are_flagged_as_log_probabilities():
    model = wrap(lambda x: torch.log_softmax(densities(x), 1), 2, 4, bounds=(-1.0, 1.0))
    with pytest.warns(ModelWarning, match="discriminative classifier"):
        check = check_model(model, batch())
    assert set(check.flags) == {"log_probabilities"}


def test_genuine_densities_near_normalised_rows_are_not_flagged():
    """Log-likelihoods whose logsumexp is small but not 0 for every row (log p(x) varies) pass:
    shift the Gaussian model so that one row's logsumexp is exactly 0, the others are not."""
    x = batch()
    shift = torch.logsumexp(densities(x[:1]), 1)
    model = wrap(lambda z: densities(z) - shift, 2, 4, bounds=(-1.0, 1.0))
    assert torch.logsumexp(model.class_log_likelihoods(x[:1]), 1).abs().item() < 1e-12
    assert check_model(model, x, warn=False).passed


def test_undeclared_and_unreproducible_randomness_are_flagged():
    x = batch()

    class GlobalNoise:  # ignores generator and draws from the global RNG; says it is deterministic
        num_classes, num_dims, randomised = 2, 4, False
        bounds = (-1.0, 1.0)

        def class_log_likelihoods(self, z, generator=None):
            return densities(z) + torch.randn(len(z), 2, dtype=z.dtype)

    check = check_model(GlobalNoise(), x, warn=False)
    assert check.randomised and not check.reproducible
    assert set(check.flags) == {"randomised_undeclared", "not_reproducible"}

    class SaysRandom(GlobalNoise):
        randomised = True

        def class_log_likelihoods(self, z, generator=None):
            return densities(z)

    check = check_model(SaysRandom(), x, warn=False)
    assert set(check.flags) == {"declared_randomised_but_deterministic"}

    class Seeded(GlobalNoise):  # draws from the generator, as the protocol asks
        randomised = True

        def class_log_likelihoods(self, z, generator=None):
            noise = torch.randn(len(z), 2, generator=generator, dtype=z.dtype)
            return densities(z) + noise

    check = check_model(Seeded(), x, warn=False)
    assert check.passed and check.randomised and check.reproducible


def test_zero_density_and_other_bits_per_dim_conventions_are_flagged():
    exact = CounterexampleModel.from_targets(d=200)  # q(x|1) = 0 on the annulus: -inf
    x, y = exact.sample_annulus(5, seed=0)
    check = check_model(exact, x, warn=False)
    assert set(check.flags) == {"zero_density"} and check.zero_density_fraction == 1.0

    class OtherConvention(Bare):
        def bits_per_dim(self, z, generator=None):
            return bits_per_dim(marginal_log_prob(densities(z)), 8)  # divides by 8, not 4

    check = check_model(OtherConvention(), batch(), warn=False)
    assert set(check.flags) == {"bits_per_dim_inconsistent"}
    assert check.bits_per_dim_consistent is False


def bad_model(output=None, **members):
    """A Bare model with some members replaced."""
    model = Bare()
    if output is not None:
        model.class_log_likelihoods = lambda x, generator=None: output(x)
    for name, value in members.items():
        setattr(model, name, value)
    return model


@pytest.mark.parametrize(
    "model, error, match",
    [
        (bad_model(lambda x: densities(x)[:, :1]), ValueError, r"must return \(B, C\) = \(8, 2\)"),
        (bad_model(lambda x: densities(x).T), ValueError, r"must return \(B, C\)"),
        (bad_model(lambda x: densities(x).long()), ValueError, "floating-point"),
        (bad_model(lambda x: densities(x).numpy()), TypeError, "must return a tensor"),
        (
            bad_model(lambda x: densities(x).index_fill(0, torch.tensor([3]), math.nan)),
            ValueError,
            "NaN or \\+inf output \\(first at example 3\\)",
        ),
        (
            bad_model(lambda x: densities(x).index_fill(0, torch.tensor([5]), math.inf)),
            ValueError,
            "first at example 5",
        ),
        (bad_model(num_classes=1), ValueError, "model.num_classes: must be an integer >= 2"),
        (bad_model(num_dims=None), ValueError, "needs num_dims .* or its own bits_per_dim"),
        (bad_model(num_dims=2.5), ValueError, "model.num_dims: must be an integer >= 1"),
        (bad_model(randomised="no"), ValueError, "model.randomised: must be a bool"),
        (bad_model(bounds=(0.1, 0.0)), ValueError, "bounds: must be finite with lo < hi"),
        (bad_model(class_log_likelihoods=None), TypeError, "callable class_log_likelihoods"),
        (bad_model(class_log_likelihoods=lambda x: x), TypeError, "must accept generator="),
        (
            bad_model(bits_per_dim=lambda x, generator=None: torch.zeros(3)),
            ValueError,
            r"bits_per_dim: must return \(8,\)",
        ),
    ],
    ids=[
        "one-column",
        "transposed",
        "integer",
        "numpy",
        "nan",
        "plus-inf",
        "one-class",
        "no-dims",
        "float-dims",
        "text-flag",
        "bounds",
        "no-method",
        "no-generator",
        "bits-shape",
    ],
)
def test_check_model_errors_name_what_is_wrong(model, error, match):
    with pytest.raises(error, match=match):
        check_model(model, batch())


def test_check_model_validates_the_batch_against_the_model_bounds():
    with pytest.raises(ValueError, match=r"x: must lie in bounds \(-0.5, 0.5\)"):
        check_model(Bare(), batch() + 1.0)
    with pytest.raises(ValueError, match="x: must be a batch"):
        check_model(Bare(), torch.zeros(4))


def test_as_threat_model_calls_a_deterministic_model_directly_and_adds_bits_per_dim():
    """randomised=False: one batched call per query (no noise to fix); a model with num_dims
    only gets the standard bits/dim for its detector."""
    calls = []

    class Counting(Bare):
        randomised = False

        def class_log_likelihoods(self, x, generator=None):
            calls.append(len(x))
            return densities(x)

    x = batch()
    tm = as_threat_model(Counting(), LikelihoodDetector(6.0, 4))
    obs = tm.observe(x)
    assert calls == [8, 8]  # the scores and bits/dim: one batched call each, not one per row
    torch.testing.assert_close(obs.bits_per_dim, bits_per_dim(marginal_log_prob(densities(x)), 4))
    assert tm.bounds == (-0.5, 0.5) and not tm.randomised
    assert as_threat_model(GAUSS).bounds == GAUSS.bounds
    with pytest.raises(ValueError, match="model.num_dims: must be an integer >= 1"):
        as_threat_model(bad_model(num_dims=None), LikelihoodDetector(6.0, 4))


def test_as_threat_model_of_a_randomised_model_fixes_or_refreshes_its_noise():
    """The toy randomised classifier: linear scores plus zero-mean noise from the generator."""
    weight = torch.tensor([[1.0, 0.0, 0.0, 0.0], [-1.0, 0.0, 0.0, 0.0]], dtype=torch.float64)

    def scores(x, generator=None):
        noise = torch.randn(len(x), 2, generator=generator, dtype=x.dtype)
        return x @ weight.T - 100.0 + noise

    model = wrap(scores, 2, 4, randomised=True)
    x = batch()
    fixed = as_threat_model(model, noise="fixed", noise_seed=1)
    assert not fixed.randomised and torch.equal(fixed.observe(x).logits, fixed.observe(x).logits)
    fresh = as_threat_model(model, noise="fresh", noise_seed=1)
    assert fresh.randomised
    assert not torch.equal(fresh.observe(x).logits, fresh.observe(x).logits)
