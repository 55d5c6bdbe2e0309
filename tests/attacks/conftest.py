"""Models with known answers for the attack tests.

``TwoGaussian`` imitates the flows model API (``class_log_likelihoods``, ``log_prob``,
``predict_proba``, ``bits_per_dim``, ``num_classes``; inputs in [−0.5, 0.5]) with a
class-conditional model p(x|y=c) = N(x; μ_c, σ² I), μ_0 = −a·u, μ_1 = +a·u, u = 1/√D, uniform
prior; everything is exact:
the classifier's boundary is the hyperplane u·x = 0, so the minimal L2 adversarial of a class-0
point x is at distance −u·x; and for a point on the axis, x = s₀u, the closest point that is
class 1 *and* undetected lies on the axis too (moving orthogonally to the axis lowers both
Gaussian densities), at s* = the smallest s ≥ 0 with bits/dim(s·u) ≤ T.
"""

from __future__ import annotations

import math

import pytest
import torch


class TwoGaussian:
    """Two isotropic Gaussians in ``dim`` dimensions; optional additive uniform input noise."""

    num_classes = 2

    def __init__(self, dim=8, a=0.25, sigma=0.08, shape=(2, 2, 2), noise=0.0):
        self.dim, self.a, self.sigma, self.shape, self.noise = dim, a, sigma, shape, noise
        self.u = torch.ones(dim, dtype=torch.float64) / math.sqrt(dim)
        self.means = torch.stack([-a * self.u, a * self.u])

    def class_log_likelihoods(self, x, generator=None):
        z = x.flatten(1)
        if self.noise:
            z = z + self.noise * torch.rand(z.shape, generator=generator, dtype=z.dtype)
        sq = ((z[:, None, :] - self.means[None].to(z.dtype)) ** 2).sum(-1)
        return -sq / (2 * self.sigma**2) - self.dim / 2 * math.log(2 * math.pi * self.sigma**2)

    def log_prob(self, x, generator=None):
        return torch.logsumexp(self.class_log_likelihoods(x, generator), 1) - math.log(2)

    def predict_proba(self, x, generator=None):
        return torch.softmax(self.class_log_likelihoods(x, generator), 1)

    def bits_per_dim(self, x, generator=None):
        """Discretised to 256 levels: (−log p(x) + D log 256) / (D ln 2)."""
        nll = -self.log_prob(x, generator)
        return (nll + self.dim * math.log(256)) / (self.dim * math.log(2))

    def point(self, s: float) -> torch.Tensor:
        """The input s·u, shaped (1, *shape)."""
        return (s * self.u).reshape(1, *self.shape)

    def on_axis(self, values) -> torch.Tensor:
        return torch.cat([self.point(float(v)) for v in values])

    def first_undetected_s(self, threshold: float) -> float:
        """s* by bisection: bits/dim(s·u) decreases in s on [0, a] (oracle for the detector)."""
        low, high = 0.0, self.a
        assert self.bits_per_dim(self.point(low)).item() > threshold
        assert self.bits_per_dim(self.point(high)).item() <= threshold
        for _ in range(60):
            mid = (low + high) / 2
            if self.bits_per_dim(self.point(mid)).item() <= threshold:
                high = mid
            else:
                low = mid
        return high


class Linear:
    """Affine scores W·x + b + offset on flattened inputs (offset −10³ mimics log-likelihoods)."""

    def __init__(self, weight, bias, offset=0.0):
        self.weight = torch.as_tensor(weight, dtype=torch.float64)
        self.bias = torch.as_tensor(bias, dtype=torch.float64)
        self.offset = offset

    def __call__(self, x):
        return x.flatten(1) @ self.weight.T.to(x.dtype) + self.bias.to(x.dtype) + self.offset

    def min_distance(self, x, source, target):
        """Distance from x to the hyperplane where scores of source and target tie."""
        w = self.weight[target] - self.weight[source]
        gap = (self.bias[source] - self.bias[target]) - x.flatten() @ w
        return (gap / w.norm()).item()


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny tensors: one intra-op thread is fastest, and immune to a busy machine's other load
    (OpenMP workers waiting for a core made single ops take milliseconds). Restored after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture
def two_gaussian() -> TwoGaussian:
    return TwoGaussian()


@pytest.fixture
def class0_points(two_gaussian) -> tuple[torch.Tensor, torch.Tensor]:
    """Six class-0 inputs near μ_0 (float64) with labels; the optimum lies inside the bounds."""
    gen = torch.Generator().manual_seed(0)
    noise = 0.05 * torch.randn(6, two_gaussian.dim, generator=gen, dtype=torch.float64)
    x = (two_gaussian.means[0] + noise).reshape(6, *two_gaussian.shape)
    return x, torch.zeros(6, dtype=torch.long)


@pytest.fixture
def model_classes():
    return TwoGaussian, Linear


def write_run(folder, train=None, preset=None, model=True):
    """A run folder as :func:`flows.train.train` leaves it: ``config.json`` and (``model``) a
    ``checkpoint.pt`` of an untrained, initialised ``tiny`` Split GLOW (8×8 synthetic images)."""
    import json

    import flows
    from flows.checkpoint import save_checkpoint
    from flows.data import synthetic_dataset
    from flows.preprocess import to_model_range

    folder.mkdir(parents=True, exist_ok=True)
    config = {
        "train": {
            "preset": "tiny",
            "dataset": "synthetic",
            "data_root": None,
            "synthetic_size": 64,
            **(train or {}),
        },
        "preset": {"name": "tiny", "dataset": "synthetic", **(preset or {})},
    }
    (folder / "config.json").write_text(json.dumps(config))
    if model:
        glow = flows.build_model(
            "tiny", "split", num_classes=10, generator=torch.Generator().manual_seed(0)
        )
        images = to_model_range(synthetic_dataset(64, (1, 8, 8), 10, seed=0).images)
        glow.initialise(images, torch.Generator().manual_seed(1))
        save_checkpoint(
            folder / "checkpoint.pt",
            {"model": glow.state_dict(), "model_config": glow.config.to_dict()},
        )
    return folder


@pytest.fixture
def tiny_run(tmp_path):
    """A synthetic ``tiny`` run folder (see :func:`write_run`)."""
    return write_run(tmp_path / "run")


@pytest.fixture
def make_run():
    """:func:`write_run`, for tests that need other run configurations."""
    return write_run
