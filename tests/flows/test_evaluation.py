"""``flows.evaluation.evaluate_model``: both classification rules and both bits/dim estimates."""

from __future__ import annotations

import math

import pytest
import torch

import flows
from flows.data import synthetic_dataset
from flows.evaluation import evaluate_model
from flows.measures import bits_per_dim, log_mean_exp, marginal_log_prob
from flows.preprocess import model_input


def _split_model() -> flows.ConditionalGlow:
    torch.manual_seed(0)
    model = flows.build_model("tiny", "split", num_classes=4)
    # perturb the prior so that z_n's class-dependent density disagrees with the z_s logits
    with torch.no_grad():
        model.prior.class_offsets.normal_(0.0, 0.5)
    model.initialise(torch.rand(16, *model.config.data_shape) - 0.5)
    return model.eval()


def test_split_accuracy_is_reported_under_both_rules_and_matches_each_rule():
    model = _split_model()
    data = synthetic_dataset(40, model.config.data_shape, 4, seed=3)
    results = evaluate_model(model, data, batch_size=16, seed=5)
    assert results["classification_rule"] == "logits"
    # recompute both rules with the evaluation's generators (same batches, same draws)
    dequantise = torch.Generator().manual_seed(5)
    noise = torch.Generator().manual_seed(6)
    by_logits, by_likelihood = [], []
    for start in range(0, 40, 16):
        x = model_input(data.images[start : start + 16], dequantise)
        labels = data.labels[start : start + 16]
        out = model(x, noise)
        by_logits.append(out.logits.argmax(1) == labels)
        by_likelihood.append(out.class_log_likelihoods.argmax(1) == labels)
    assert results["accuracy"] == pytest.approx(torch.cat(by_logits).double().mean().item())
    assert results["accuracy_likelihood_rule"] == pytest.approx(
        torch.cat(by_likelihood).double().mean().item()
    )
    assert not torch.equal(torch.cat(by_logits), torch.cat(by_likelihood))  # the rules differ here


def test_gaussian_prior_rules_agree():
    torch.manual_seed(1)
    model = flows.build_model("tiny", "reweight", num_classes=4).eval()
    data = synthetic_dataset(24, model.config.data_shape, 4, seed=4)
    results = evaluate_model(model, data, batch_size=8)
    assert results["classification_rule"] == "likelihood"
    assert results["accuracy"] == results["accuracy_likelihood_rule"]


def test_importance_weighted_bits_per_dim_is_the_log_mean_exp_over_draws():
    model = _split_model()
    data = synthetic_dataset(12, model.config.data_shape, 4, seed=2)
    results = evaluate_model(model, data, batch_size=12, seed=0, likelihood_draws=4)
    assert results["likelihood_draws"] == 4
    x = model_input(data.images, torch.Generator().manual_seed(0))
    noise = torch.Generator().manual_seed(1)
    draws = torch.stack([model.class_log_likelihoods(x, noise) for _ in range(4)])
    single = bits_per_dim(marginal_log_prob(draws[0]), model.num_dims).double().mean()
    weighted = bits_per_dim(marginal_log_prob(log_mean_exp(draws, 0)), model.num_dims)
    assert results["bits_per_dim"] == pytest.approx(single.item(), rel=1e-6)
    assert results["bits_per_dim_importance_weighted"] == pytest.approx(
        weighted.double().mean().item(), rel=1e-6
    )
    # Jensen, per image: never above the mean of the single-draw estimates over the same draws
    per_draw = bits_per_dim(marginal_log_prob(draws), model.num_dims)
    assert bool((weighted <= per_draw.mean(0) + 1e-6).all())
    assert math.isfinite(results["bits_per_dim_importance_weighted"])
    with pytest.raises(ValueError, match="likelihood_draws"):
        evaluate_model(model, data, likelihood_draws=0)
