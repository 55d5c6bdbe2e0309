"""Priors: normalised densities, all classes in one pass equal per-class evaluations, sampling."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.integrate
import scipy.stats
import torch

from flows.priors import (
    ClassCauchy,
    ClassGaussian,
    ClassGaussianLaplace,
    ClassLaplace,
    LabelSmoothed,
    SplitPrior,
)

from .helpers import perturb

FACTORISED = {
    "gaussian": ClassGaussian,
    "laplace": ClassLaplace,
    "cauchy": ClassCauchy,
    "gaussian-laplace": ClassGaussianLaplace,
}


def _prior(name: str, dim: int, classes: int, seed: int = 0):
    if name == "split":
        prior = SplitPrior(dim, classes, sigma=0.7)
    elif name == "smoothed":
        prior = LabelSmoothed(ClassGaussian(dim, classes), epsilon=0.2)
    else:
        prior = FACTORISED[name](dim, classes)
    return perturb(prior.double(), seed=seed, scale=0.4)


@pytest.mark.parametrize("name", [*FACTORISED, "smoothed"])
def test_one_dimensional_density_integrates_to_one_for_every_class(name):
    prior = _prior(name, dim=1, classes=3)

    def density(value: float, label: int) -> float:
        z = torch.tensor([[value]], dtype=torch.float64)
        return math.exp(prior.log_prob(z)[0, label].item())

    for label in range(3):
        if name == "cauchy":  # heavy tails: integrate over the whole line
            total, error = scipy.integrate.quad(density, -np.inf, np.inf, args=(label,), limit=200)
        else:  # light tails: trapezoid rule on a fine grid (error O(h²) ≈ 1e-8)
            grid = torch.linspace(-60.0, 60.0, 1_200_001, dtype=torch.float64)
            with torch.no_grad():
                values = prior.log_prob(grid[:, None])[:, label].exp()
            total, error = torch.trapezoid(values, grid).item(), None
        assert total == pytest.approx(1.0, abs=1e-6), (label, error)


def test_split_prior_factors_are_each_normalised():
    # p(z|y) = p(z_s|y) p(z_n|z_s,y); logits(z) is log p(z_s|y) with its constant, so
    # log_prob − logits is log p(z_n|z_s,y). C = 2 logit dimensions, one noise dimension.
    prior = _prior("split", dim=3, classes=2)

    def log_densities(z_s: tuple[float, float], z_n: float) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.tensor([[*z_s, z_n]], dtype=torch.float64)
        with torch.no_grad():
            return prior.logits(z)[0], prior.log_prob(z)[0] - prior.logits(z)[0]

    for label in range(2):
        grid = torch.linspace(-6.0, 7.0, 2601, dtype=torch.float64)
        z = torch.cartesian_prod(grid, grid, torch.zeros(1, dtype=torch.float64))
        with torch.no_grad():
            values = prior.logits(z)[:, label].exp().reshape(2601, 2601)
        total = torch.trapezoid(torch.trapezoid(values, grid), grid).item()
        assert total == pytest.approx(1.0, abs=1e-6)
        for z_s in [(0.3, -1.2), (2.0, 0.5)]:
            total, _ = scipy.integrate.quad(
                lambda n, s=z_s, lab=label: math.exp(log_densities(s, n)[1][lab].item()),
                -np.inf,
                np.inf,
            )
            assert total == pytest.approx(1.0, abs=1e-7)


def _direct_log_probs(prior, z: torch.Tensor) -> torch.Tensor:
    """An independent per-class computation with torch.distributions."""
    columns = []
    for c in range(prior.num_classes):
        if isinstance(prior, ClassGaussian):
            dist = torch.distributions.Normal(prior.means[c], prior.log_scales[c].exp())
            columns.append(dist.log_prob(z).sum(1))
        elif isinstance(prior, SplitPrior):
            C = prior.num_classes
            z_s, z_n = z[:, :C], z[:, C:]
            e_c = torch.nn.functional.one_hot(torch.tensor(c), C).to(z)
            logit_part = torch.distributions.Normal(e_c, prior.sigma).log_prob(z_s).sum(1)
            mean, log_scale = (prior.from_logits(z_s) + prior.class_offsets[c]).chunk(2, dim=1)
            noise_part = torch.distributions.Normal(mean, log_scale.exp()).log_prob(z_n).sum(1)
            columns.append(logit_part + noise_part)
    return torch.stack(columns, dim=1)


@pytest.mark.parametrize("name", ["gaussian", "split"])
def test_single_pass_equals_separate_per_class_evaluations(name):
    prior = _prior(name, dim=12, classes=4, seed=3)
    z = 1.5 * torch.randn(6, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    all_classes = prior.log_prob(z)
    assert all_classes.shape == (6, 4)
    assert torch.allclose(all_classes, _direct_log_probs(prior, z), rtol=1e-12, atol=1e-10)
    for c in range(4):
        labels = torch.full((6,), c, dtype=torch.int64)
        assert torch.allclose(prior.log_prob(z, labels), all_classes[:, c], rtol=0, atol=1e-12)


def test_label_smoothing_is_the_stated_mixture():
    inner = perturb(ClassGaussian(5, 3).double(), seed=1, scale=0.5)
    smoothed = LabelSmoothed(inner, epsilon=0.3)
    z = torch.randn(4, 5, dtype=torch.float64)
    q = inner.log_prob(z).exp()
    expected = 0.7 * q + 0.15 * (q.sum(1, keepdim=True) - q)
    assert torch.allclose(smoothed.log_prob(z).exp(), expected, rtol=1e-12)
    assert torch.equal(LabelSmoothed(inner, 0.0).log_prob(z), inner.log_prob(z))


def test_split_prior_logits_are_scaled_z_s_up_to_a_constant():
    prior = _prior("split", dim=8, classes=3)
    z = torch.randn(5, 8, dtype=torch.float64)
    logits = prior.logits(z)
    shifted = logits - z[:, :3] / prior.sigma**2
    assert torch.allclose(shifted, shifted[:, :1].expand(-1, 3), atol=1e-12)


@pytest.mark.parametrize(
    "name, reference",
    [
        ("laplace", scipy.stats.laplace),
        ("cauchy", scipy.stats.cauchy),
        ("gaussian", scipy.stats.norm),
    ],
)
def test_samples_follow_the_density_kolmogorov_smirnov(name, reference):
    prior = _prior(name, dim=1, classes=2, seed=2)
    labels = torch.ones(4000, dtype=torch.int64)
    samples = prior.sample(labels, generator=torch.Generator().manual_seed(0)).squeeze(1)
    location = (prior.means if name == "gaussian" else prior.locations)[1, 0].item()
    scale = prior.log_scales[1, 0].exp().item()
    result = scipy.stats.kstest(samples.detach().numpy(), reference(location, scale).cdf)
    assert result.pvalue > 1e-3


@pytest.mark.parametrize("name", ["gaussian-laplace", "split", "smoothed"])
def test_sample_moments_agree_with_log_prob(name):
    # For any density, E_p[∂/∂z log p(z)] = 0 (score identity) — checks sampler and density agree.
    prior = _prior(name, dim=3 if name != "split" else 4, classes=2, seed=4)
    labels = torch.zeros(20000, dtype=torch.int64)
    z = prior.sample(labels, generator=torch.Generator().manual_seed(1)).detach().requires_grad_()
    (score,) = torch.autograd.grad(prior.log_prob(z, labels).sum(), z)
    standard_error = score.std(0) / math.sqrt(len(labels))
    assert (score.mean(0).abs() < 5 * standard_error).all()


def test_priors_validate_their_inputs():
    prior = ClassGaussian(4, 3)
    with pytest.raises(ValueError, match=r"latents shaped \(B, 4\), got \(2, 5\)"):
        prior.log_prob(torch.zeros(2, 5))
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        prior.log_prob(torch.zeros(2, 4), torch.tensor([0, 3]))
    with pytest.raises(ValueError, match="integer labels"):
        prior.log_prob(torch.zeros(2, 4), torch.tensor([0.0, 1.0]))
    with pytest.raises(ValueError, match="dim > num_classes"):
        SplitPrior(3, 3)
