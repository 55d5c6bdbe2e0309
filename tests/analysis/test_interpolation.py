"""Interpolation paths (Section 6.3): the formula, the model along a path, pairs and shares."""

import math

import pytest
import torch

from flows.analysis import (
    alpha_grid,
    eligible_endpoints,
    evaluate_paths,
    fraction_entirely_undetected,
    interpolate,
    select_pairs,
    summarise_paths,
)
from flows.measures import bits_per_dim
from flows.noise import FixedNoise
from tests.analysis.conftest import make_tiny_model

#: The model computes in float32: batched kernels may round differently by batch layout.
FLOAT32 = {"rtol": 1e-5, "atol": 1e-4}


@pytest.fixture(scope="module")
def tiny_model():
    """An untrained tiny split-prior GLOW (see conftest.make_tiny_model)."""
    return make_tiny_model("split")


@pytest.fixture(scope="module")
def images():
    return torch.rand((8, 1, 8, 8), generator=torch.Generator().manual_seed(2)) - 0.5


class GaussianToy:
    """Analytic class-conditional model: ``log p(x|c) = −‖x − μ_c‖²/2 − D/2 log 2π``, with
    optional additive input noise drawn from the generator (to test the noise fixing)."""

    def __init__(self, means: torch.Tensor, noise: float = 0.0):
        self.means = means  # (C, *S)
        self.noise = noise
        self.num_dims = means[0].numel()

    def class_log_likelihoods(self, x, generator=None, shared_noise=False):
        if self.noise:
            shape = (1, *x.shape[1:]) if shared_noise else x.shape
            x = x + self.noise * torch.randn(shape, generator=generator, dtype=x.dtype)
        diff = x.flatten(1)[:, None, :] - self.means.flatten(1)[None]
        return -0.5 * diff.pow(2).sum(-1) - 0.5 * self.num_dims * math.log(2 * math.pi)


def test_interpolate_is_the_linear_path_with_exact_endpoints(images):
    x0, x1 = images[:3], images[3:6]
    alphas = torch.tensor([0.0, 0.25, 0.5, 1.0], dtype=torch.float64)
    path = interpolate(x0, x1, alphas)
    assert path.shape == (3, 4, 1, 8, 8) and path.dtype == x0.dtype
    assert torch.equal(path[:, 0], x0) and torch.equal(path[:, -1], x1)
    torch.testing.assert_close(path[:, 1], 0.25 * x1 + 0.75 * x0)
    torch.testing.assert_close(path[:, 2], (x0 + x1) / 2)


@pytest.mark.parametrize(
    "x0, x1, alphas",
    [
        (torch.zeros(2, 1, 4, 4), torch.zeros(3, 1, 4, 4), torch.zeros(2)),
        (torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4), torch.zeros(2, 2)),
        (torch.zeros(2, 1, 4, 4), torch.zeros(2, 1, 4, 4), torch.tensor([0.0, math.nan])),
    ],
    ids=["pair-shapes-differ", "alphas-not-1d", "alpha-not-finite"],
)
def test_interpolate_rejects_bad_inputs(x0, x1, alphas):
    with pytest.raises(ValueError):
        interpolate(x0, x1, alphas)


def test_alpha_grid_is_evenly_spaced_with_both_endpoints():
    grid = alpha_grid(100)
    assert grid.shape == (100,) and grid[0] == 0.0 and grid[-1] == 1.0
    torch.testing.assert_close(grid.diff(), torch.full((99,), 1 / 99, dtype=torch.float64))
    with pytest.raises(ValueError):
        alpha_grid(1)


def test_path_statistics_match_the_analytic_model_at_every_interpolant(images):
    means = torch.randn((4, 1, 8, 8), generator=torch.Generator().manual_seed(3)) * 0.3
    toy = GaussianToy(means)
    x0, x1 = images[:2], images[2:4]
    y0, y1 = torch.tensor([0, 1]), torch.tensor([2, 3])
    alphas = alpha_grid(5)
    stats = evaluate_paths(toy, x0, x1, y0, y1, alphas, batch_size=3)
    for p in range(2):
        for a, alpha in enumerate(alphas.tolist()):
            x = alpha * x1[p] + (1 - alpha) * x0[p]
            expected = toy.class_log_likelihoods(x[None])[0].double()
            torch.testing.assert_close(stats.class_log_likelihoods[p, a], expected)
            log_px = torch.logsumexp(expected, 0) - math.log(4)
            torch.testing.assert_close(stats.log_prob[p, a], log_px)
            torch.testing.assert_close(stats.bits_per_dim[p, a], bits_per_dim(log_px, 64))
            posterior = torch.softmax(expected, 0)
            torch.testing.assert_close(stats.p_y0[p, a], posterior[y0[p]])
            torch.testing.assert_close(stats.p_y1[p, a], posterior[y1[p]])
    assert torch.all(stats.p_y0 + stats.p_y1 <= 1 + 1e-12)


def test_path_endpoints_equal_the_images_own_statistics(tiny_model, images):
    """Under the same fixed noise, α = 0 / 1 give what one encoding of x0 / x1 gives (the test
    statistics that set the threshold and select the endpoints)."""
    x0, x1 = images[:3], images[3:6]
    y0, y1 = torch.tensor([0, 1, 2]), torch.tensor([3, 4, 5])
    stats = evaluate_paths(tiny_model, x0, x1, y0, y1, alpha_grid(6), noise_seed=7, batch_size=5)
    own = FixedNoise(tiny_model.class_log_likelihoods, 7)
    with torch.no_grad():
        torch.testing.assert_close(stats.class_log_likelihoods[:, 0], own(x0).double(), **FLOAT32)
        torch.testing.assert_close(stats.class_log_likelihoods[:, -1], own(x1).double(), **FLOAT32)
        direct = tiny_model.bits_per_dim(x0, torch.Generator().manual_seed(7), shared_noise=True)
        torch.testing.assert_close(stats.bits_per_dim[:, 0], direct.double(), **FLOAT32)


@pytest.mark.parametrize("batch_size", [1, 4, 1000])
def test_path_statistics_do_not_depend_on_the_batch_size(tiny_model, images, batch_size):
    x0, x1 = images[:2], images[2:4]
    y0, y1 = torch.tensor([0, 1]), torch.tensor([2, 3])
    reference = evaluate_paths(tiny_model, x0, x1, y0, y1, alpha_grid(5), batch_size=7)
    other = evaluate_paths(tiny_model, x0, x1, y0, y1, alpha_grid(5), batch_size=batch_size)
    torch.testing.assert_close(
        other.class_log_likelihoods, reference.class_log_likelihoods, **FLOAT32
    )


def test_fixed_noise_makes_a_noisy_model_deterministic_along_paths(images):
    toy = GaussianToy(torch.zeros(3, 1, 8, 8), noise=0.1)
    args = (images[:2], images[2:4], torch.tensor([0, 1]), torch.tensor([1, 2]), alpha_grid(4))
    first = evaluate_paths(toy, *args, noise_seed=5, batch_size=3)
    again = evaluate_paths(toy, *args, noise_seed=5, batch_size=8)
    other = evaluate_paths(toy, *args, noise_seed=6, batch_size=3)
    torch.testing.assert_close(first.class_log_likelihoods, again.class_log_likelihoods)
    assert not torch.allclose(first.class_log_likelihoods, other.class_log_likelihoods)


def test_evaluate_paths_runs_without_building_a_graph(tiny_model, images):
    stats = evaluate_paths(
        tiny_model, images[:1], images[1:2], torch.tensor([0]), torch.tensor([1]), alpha_grid(3)
    )
    assert not stats.class_log_likelihoods.requires_grad
    assert stats.class_log_likelihoods.dtype == torch.float64
    assert stats.class_log_likelihoods.shape == (1, 3, 10)


def test_eligible_endpoints_are_correct_and_undetected():
    logits = torch.tensor([[3.0, 0.0], [0.0, 3.0], [3.0, 0.0], [3.0, 0.0]])
    labels = torch.tensor([0, 0, 0, 1])
    bpd = torch.tensor([1.0, 1.0, 2.5, 1.0])
    # image 0: correct, below; 1: wrong; 2: correct but detected; 3: wrong
    assert eligible_endpoints(logits, labels, bpd, 2.0).tolist() == [True, False, False, False]
    assert eligible_endpoints(logits, labels, bpd, 2.5).tolist() == [True, False, True, False]


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_select_pairs_returns_distinct_eligible_different_class_pairs(seed):
    gen = torch.Generator().manual_seed(10 + seed)
    labels = torch.randint(0, 4, (60,), generator=gen)
    eligible = torch.rand(60, generator=gen) < 0.5
    i0, i1 = select_pairs(labels, eligible, 40, seed=seed)
    assert i0.shape == i1.shape == (40,) and i0.dtype == torch.int64
    assert eligible[i0].all() and eligible[i1].all()
    assert (labels[i0] != labels[i1]).all()
    unordered = {(min(a, b), max(a, b)) for a, b in zip(i0.tolist(), i1.tolist(), strict=True)}
    assert len(unordered) == 40
    again = select_pairs(labels, eligible, 40, seed=seed)
    assert torch.equal(again[0], i0) and torch.equal(again[1], i1)


def test_select_pairs_uses_every_available_pair_and_no_more():
    labels = torch.tensor([0, 0, 1, 2, 1])
    eligible = torch.tensor([True, True, True, True, False])
    # eligible classes 0, 0, 1, 2: pairs of different classes = 2·1 + 2·1 + 1·1 = 5
    i0, i1 = select_pairs(labels, eligible, 5, seed=3)
    assert {(min(a, b), max(a, b)) for a, b in zip(i0.tolist(), i1.tolist(), strict=True)} == {
        (0, 2),
        (0, 3),
        (1, 2),
        (1, 3),
        (2, 3),
    }
    with pytest.raises(ValueError, match="only 5 distinct pairs"):
        select_pairs(labels, eligible, 6)
    with pytest.raises(ValueError, match="only 0 distinct pairs"):
        select_pairs(labels, labels == 0, 1)


def test_fraction_entirely_undetected_counts_whole_paths():
    bpd = torch.tensor([[1.0, 2.0, 3.0], [1.0, 5.0, 1.0], [0.0, 0.0, 0.0]])
    assert fraction_entirely_undetected(bpd, 3.0) == pytest.approx(2 / 3)
    assert fraction_entirely_undetected(bpd, 0.5) == pytest.approx(1 / 3)
    assert fraction_entirely_undetected(bpd, 10.0) == 1.0
    with pytest.raises(ValueError):
        fraction_entirely_undetected(bpd[0], 1.0)


def test_summarise_paths_is_the_mean_over_paths(tiny_model, images):
    x0, x1 = images[:4], images[4:8]
    y0, y1 = torch.tensor([0, 1, 2, 3]), torch.tensor([4, 5, 6, 7])
    stats = evaluate_paths(tiny_model, x0, x1, y0, y1, alpha_grid(5))
    threshold = stats.bits_per_dim[:, 2].median().item()
    summary = summarise_paths(stats, threshold)
    assert summary["num_paths"] == 4 and len(summary["alphas"]) == 5
    torch.testing.assert_close(
        torch.tensor(summary["mean_bits_per_dim"], dtype=torch.float64), stats.bits_per_dim.mean(0)
    )
    torch.testing.assert_close(
        torch.tensor(summary["mean_p_y1"], dtype=torch.float64), stats.p_y1.mean(0)
    )
    detected = (stats.bits_per_dim > threshold).double().mean(0)
    assert summary["fraction_detected"] == detected.tolist()
    assert summary["fraction_paths_entirely_undetected"] == fraction_entirely_undetected(
        stats.bits_per_dim, threshold
    )
    endpoints = torch.cat([stats.bits_per_dim[:, 0], stats.bits_per_dim[:, -1]]).mean().item()
    assert summary["mean_bits_per_dim_endpoints"] == pytest.approx(endpoints)
    assert summary["mean_bits_per_dim_midpoint"] == pytest.approx(summary["mean_bits_per_dim"][2])


def test_the_analyses_fix_the_noise_with_its_one_home():
    """``FixedNoise`` lives in :mod:`flows.noise`; the analyses do not go through the attacks."""
    import importlib

    for name in ("interpolation", "likelihood_terms"):  # the package shadows likelihood_terms
        module = importlib.import_module(f"flows.analysis.{name}")
        assert module.FixedNoise is FixedNoise, name


def test_posteriors_follow_the_models_classification_rule(tiny_model, images):
    """The tiny Split GLOW classifies by its z_s logits: the path's posteriors are their softmax
    (what ``predict_proba`` gives on the same noise), its bits/dim the class log-likelihoods'."""
    x0, x1 = images[:2], images[2:4]
    y0, y1 = torch.tensor([0, 1]), torch.tensor([1, 0])
    alphas = alpha_grid(3)
    stats = evaluate_paths(tiny_model, x0, x1, y0, y1, alphas, noise_seed=4)
    points = interpolate(x0, x1, alphas).flatten(0, 1)
    expected = FixedNoise(tiny_model.predict_proba, 4)(points).double().reshape(2, 3, -1)
    torch.testing.assert_close(stats.posteriors, expected, **FLOAT32)
    lls = FixedNoise(tiny_model.class_log_likelihoods, 4)(points).double().reshape(2, 3, -1)
    torch.testing.assert_close(stats.class_log_likelihoods, lls, **FLOAT32)
    # (untrained, its z_n density is still class-independent: the rules agree here, so the toy
    # below, whose scores are not its likelihoods, tells them apart)

    class Reversed(GaussianToy):
        """Classifies by the negated class log-likelihoods (a rule that is not Bayes')."""

        def class_scores_and_log_likelihoods(self, x, generator=None, shared_noise=False):
            lls = self.class_log_likelihoods(x, generator, shared_noise)
            return -lls, lls

    means = torch.stack([torch.full((1, 8, 8), -0.1), torch.full((1, 8, 8), 0.1)])
    plain = evaluate_paths(GaussianToy(means), x0, x1, y0, y1, alphas)
    torch.testing.assert_close(plain.posteriors, torch.softmax(plain.class_log_likelihoods, -1))
    reversed_ = evaluate_paths(Reversed(means), x0, x1, y0, y1, alphas)
    torch.testing.assert_close(reversed_.class_log_likelihoods, plain.class_log_likelihoods)
    torch.testing.assert_close(reversed_.bits_per_dim, plain.bits_per_dim)
    torch.testing.assert_close(
        reversed_.posteriors, torch.softmax(-plain.class_log_likelihoods, -1)
    )
