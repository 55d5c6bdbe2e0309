"""The two terms of eq. (5) (Section 4.1): they add up to the joint NLL, in nats and bits/dim."""

import math

import pytest
import torch

from flows.analysis import likelihood_terms, measure_likelihood_terms, per_image_terms
from flows.measures import bits_per_dim
from flows.noise import FixedNoise
from flows.objectives import nll_loss
from tests.analysis.conftest import make_tiny_model


@pytest.fixture(scope="module")
def tiny_model():
    """An untrained tiny base-prior GLOW (see conftest.make_tiny_model)."""
    return make_tiny_model("base")


def _random_log_likelihoods(n=64, classes=10, seed=0):
    gen = torch.Generator().manual_seed(seed)
    logp = -3000.0 + 200.0 * torch.randn((n, 1), generator=gen, dtype=torch.float64)
    logp = logp + 5.0 * torch.randn((n, classes), generator=gen, dtype=torch.float64)
    labels = torch.randint(0, classes, (n,), generator=gen)
    return logp, labels


def test_terms_add_up_to_the_joint_nll_per_image():
    logp, labels = _random_log_likelihoods()
    joint, data, class_ = per_image_terms(logp, labels, num_dims=1024)
    torch.testing.assert_close(joint, data + class_, rtol=0, atol=1e-9)
    chosen = logp.gather(1, labels[:, None]).squeeze(1)
    torch.testing.assert_close(joint, -chosen + math.log(10) + 1024 * math.log(256))
    assert torch.all(class_ >= 0)


def test_terms_match_the_training_objective_and_the_bits_per_dim_convention():
    logp, labels = _random_log_likelihoods(seed=1)
    terms = likelihood_terms(logp, labels, num_dims=1024)
    # eq. (5)'s objective as trained (nats per dimension, continuous density)
    expected_joint = nll_loss(logp, labels, 1024).item() * 1024 + 1024 * math.log(256)
    assert terms.joint_nats == pytest.approx(expected_joint, rel=1e-12)
    log_px = torch.logsumexp(logp, 1) - math.log(10)
    assert terms.data_bits_per_dim == pytest.approx(
        bits_per_dim(log_px, 1024).mean().item(), rel=1e-12
    )
    assert terms.joint_nats == pytest.approx(terms.data_nats + terms.class_nats, rel=1e-12)
    assert terms.joint_bits_per_dim == pytest.approx(
        terms.data_bits_per_dim + terms.class_bits_per_dim, rel=1e-12
    )
    assert terms.class_bits_per_dim == pytest.approx(terms.class_nats / (1024 * math.log(2)))


def test_a_uniform_posterior_costs_exactly_log_c():
    logp = torch.full((5, 10), -123.0, dtype=torch.float64)
    terms = likelihood_terms(logp, torch.arange(5), num_dims=64)
    assert terms.class_nats == pytest.approx(math.log(10), rel=1e-12)
    assert terms.log_num_classes == math.log(10)
    assert terms.class_std_nats == pytest.approx(0.0, abs=1e-12)


def test_a_confident_correct_posterior_costs_almost_nothing():
    labels = torch.tensor([0, 3, 7])
    logp = torch.full((3, 10), -1000.0, dtype=torch.float64)
    logp[torch.arange(3), labels] = -900.0
    terms = likelihood_terms(logp, labels, num_dims=64)
    assert terms.class_nats < 1e-40
    assert terms.accuracy == 1.0


def test_to_dict_reports_the_terms_and_log_c():
    logp, labels = _random_log_likelihoods(seed=2)
    values = likelihood_terms(logp, labels, num_dims=1024).to_dict()
    assert values["log_num_classes_nats"] == math.log(10)
    assert values["log_num_classes_over_data"] == pytest.approx(math.log(10) / values["data_nats"])
    assert values["num_images"] == 64 and values["num_classes"] == 10


def test_shapes_are_checked():
    with pytest.raises(ValueError):
        per_image_terms(torch.zeros(3, 10), torch.zeros(4, dtype=torch.int64), 64)
    with pytest.raises(ValueError):
        likelihood_terms(torch.zeros(0, 10), torch.zeros(0, dtype=torch.int64), 64)


@pytest.fixture(scope="module")
def batch(tiny_model):
    gen = torch.Generator().manual_seed(3)
    x = torch.rand((10, *tiny_model.config.data_shape), generator=gen) - 0.5
    return x, torch.randint(0, 10, (10,), generator=gen)


def _assert_same_terms(measured, expected):
    for name in ("joint_nats", "data_nats", "class_nats", "accuracy"):
        assert getattr(measured, name) == pytest.approx(getattr(expected, name), rel=1e-5, abs=1e-4)


def test_measured_terms_with_shared_noise_are_those_of_one_fixed_noise_encoding(tiny_model, batch):
    x, y = batch
    measured = measure_likelihood_terms(
        tiny_model, x, y, noise_seed=4, batch_size=3, shared_noise=True
    )
    with torch.no_grad():
        logp = FixedNoise(tiny_model.class_log_likelihoods, 4)(x).double()
    _assert_same_terms(measured, likelihood_terms(logp, y, tiny_model.num_dims))
    assert measured.num_dims == tiny_model.num_dims == 64
    assert measured.joint_nats == pytest.approx(measured.data_nats + measured.class_nats)


def test_measured_terms_with_independent_noise_draw_it_from_one_seeded_generator(tiny_model, batch):
    x, y = batch
    measured = measure_likelihood_terms(tiny_model, x, y, noise_seed=4, batch_size=4)
    generator = torch.Generator().manual_seed(4)
    with torch.no_grad():
        logp = torch.cat(
            [tiny_model.class_log_likelihoods(x[s : s + 4], generator) for s in range(0, 10, 4)]
        ).double()
    _assert_same_terms(measured, likelihood_terms(logp, y, tiny_model.num_dims))
    again = measure_likelihood_terms(tiny_model, x, y, noise_seed=4, batch_size=4)
    assert again == measured
