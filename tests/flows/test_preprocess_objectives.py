"""Preprocessing conventions and the training objectives, checked on hand-computed cases."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from flows.measures import accuracy, bits_per_dim
from flows.objectives import nll_loss, objective, reweighted_loss, split_prior_loss
from flows.preprocess import (
    dequantize,
    noise_log_density,
    pad_image,
    to_model_range,
)


def test_bits_per_dim_of_the_uniform_density_is_eight():
    # Uniform on [-0.5, 0.5]^D: log p = 0, each of 256 bins has probability 1/256 → 8 bits/dim.
    assert bits_per_dim(torch.tensor([0.0]), num_dims=1024).item() == pytest.approx(8.0)


def test_bits_per_dim_hand_computed_case():
    # D = 2, log p = -3 nats: bpd = 3 / (2 ln 2) + 8 = 1.5 · 1.4426950408889634 + 8.
    value = bits_per_dim(torch.tensor([-3.0], dtype=torch.float64), num_dims=2).item()
    assert value == pytest.approx(10.164042561333445, abs=1e-12)
    # With 2 bins per unit (1 bit/dim offset), the density 2^D of the first half-cube → 0 bits.
    assert bits_per_dim(torch.tensor([3 * math.log(2.0)]), 3, num_bins=2).item() == pytest.approx(0)


def test_pixels_map_to_lower_bin_edges_and_dequantisation_stays_in_the_bin():
    pixels = torch.tensor([0, 1, 128, 255], dtype=torch.uint8)
    x = to_model_range(pixels)
    assert x.tolist() == [-0.5, -0.5 + 1 / 256, 0.0, 0.5 - 1 / 256]
    noisy = dequantize(x.expand(1000, 4), torch.Generator().manual_seed(0))
    assert ((noisy - x) >= 0).all() and ((noisy - x) < 1 / 256).all()
    assert torch.equal(x, to_model_range(pixels))  # out of place


def test_padding_keeps_the_image_and_fills_the_border_with_dequantised_black():
    x = torch.rand(2, 1, 28, 28) - 0.5
    padded = pad_image(x, 32, torch.Generator().manual_seed(0))
    assert padded.shape == (2, 1, 32, 32)
    assert torch.equal(padded[..., 2:30, 2:30], x)
    border = torch.ones(32, 32, dtype=torch.bool)
    border[2:30, 2:30] = False
    values = padded[..., border]
    assert (values >= -0.5).all() and (values < -0.5 + 1 / 256).all() and values.std() > 0
    again = pad_image(x, 32, torch.Generator().manual_seed(0))
    assert torch.equal(padded, again)
    with pytest.raises(ValueError, match="cannot pad"):
        pad_image(x, 31)


def test_noise_log_density_is_log_128_per_entry():
    assert noise_log_density(3) == pytest.approx(3 * math.log(128.0))


def _case():
    generator = torch.Generator().manual_seed(0)
    ll = -100.0 + 5.0 * torch.randn(6, 4, generator=generator, dtype=torch.float64)
    labels = torch.tensor([0, 1, 2, 3, 1, 2])
    return ll, labels


def test_nll_is_eq5_decomposition_into_marginal_and_posterior():
    ll, labels = _case()
    log_px = torch.logsumexp(ll, 1) - math.log(4)
    log_post = torch.log_softmax(ll, 1).gather(1, labels[:, None]).squeeze(1)
    expected = (-log_px - log_post).mean() / 10
    assert nll_loss(ll, labels, num_dims=10).item() == pytest.approx(expected.item(), rel=1e-12)


def test_reweighted_is_eq6():
    ll, labels = _case()
    chosen = ll[torch.arange(6), labels]
    posterior = torch.softmax(ll, 1)[torch.arange(6), labels]
    expected = (-chosen / 10 - posterior.log()).mean()
    assert reweighted_loss(ll, labels, num_dims=10).item() == pytest.approx(expected.item())


def test_split_loss_weights_the_logit_cross_entropy():
    ll, labels = _case()
    logits = torch.randn(6, 4, dtype=torch.float64)
    chosen = ll[torch.arange(6), labels]
    expected = (-chosen).mean() / 10 + 3.0 * F.cross_entropy(logits, labels)
    value = split_prior_loss(ll, logits, labels, num_dims=10, weight=3.0)
    assert value.item() == pytest.approx(expected.item())
    assert objective("split", ll, logits, labels, 10, 3.0).item() == pytest.approx(value.item())
    with pytest.raises(ValueError, match="unknown objective"):
        objective("hinge", ll, logits, labels, 10)


def test_accuracy_uses_the_bayes_decision():
    ll = torch.tensor([[0.0, 1.0], [2.0, 1.0], [0.0, -1.0]])
    assert accuracy(ll, torch.tensor([1, 0, 1])).item() == pytest.approx(2 / 3)
