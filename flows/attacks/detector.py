r"""The likelihood detector of Section 6.2: an input is "non-image" when its bits/dim exceed T.

Units. The statistic is bits/dim, ``b(x) = (−log p(x) + D·log 256) / (D·ln 2)`` or any other
convention that is an increasing *affine* map of ``−log p(x)`` with slope ``1 / (D·ln 2)``, where
``D`` is the data dimension that the bits/dim convention divides by (the original, unpadded
dimension: 1×32×32 for padded MNIST, 3×32×32 for CIFAR-10). The paper's detector loss
ℓ_det(x') = max{0, −log p(x') − T} needs T in nats of the same density; for any such convention

.. math::
    \max\{0, -\log p(x') - T_{\text{nats}}\}
    = D \ln 2 \cdot \max\{0, b(x') - T_{\text{bits/dim}}\},

which is what :meth:`LikelihoodDetector.excess_nats` returns, so the loss is in nats, consistent
with the classification margins (log-posterior ratios, also in nats).

Thresholds are either fixed (the paper, Appendix A: 1.4 bits/dim for MNIST with 100% of the test
data below; 4.0 for CIFAR-10 with 78.6% below) or set from a quantile of real test images' bits/dim.
Either way, report the recall on real test images: :meth:`LikelihoodDetector.recall`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from flows.paper import PAPER_RECALL, PAPER_THRESHOLDS

__all__ = ["LikelihoodDetector", "PAPER_RECALL", "PAPER_THRESHOLDS"]


@dataclass(frozen=True)
class LikelihoodDetector:
    """Reject inputs whose bits/dim exceed ``threshold``.

    Attributes:
        threshold: T in bits/dim; ``bits_per_dim > T`` is detected as "non-image".
        num_dims: D, the dimension the bits/dim convention divides by (for the nats conversion).
    """

    threshold: float
    num_dims: int

    def __post_init__(self):
        if not math.isfinite(self.threshold):
            raise ValueError(f"threshold must be finite, got {self.threshold}")
        if self.num_dims < 1:
            raise ValueError(f"num_dims must be >= 1, got {self.num_dims}")

    def detected(self, bits_per_dim: Tensor) -> Tensor:
        """``(B,)`` bool: ``bits_per_dim > threshold`` ("non-image")."""
        return bits_per_dim > self.threshold

    def excess_nats(self, bits_per_dim: Tensor) -> Tensor:
        r"""ℓ_det in nats: :math:`D \ln 2 \cdot \max\{0, b - T\}`, differentiable."""
        scale = self.num_dims * math.log(2.0)
        return scale * torch.clamp(bits_per_dim - self.threshold, min=0)

    def recall(self, bits_per_dim: Tensor) -> float:
        """Fraction of (real test) inputs accepted as images, ``bits_per_dim <= threshold``."""
        if bits_per_dim.numel() == 0:
            raise ValueError("recall needs at least one value")
        return (~self.detected(bits_per_dim)).double().mean().item()

    @classmethod
    def from_quantile(
        cls, bits_per_dim: Tensor, quantile: float, num_dims: int
    ) -> LikelihoodDetector:
        """Threshold at the ``quantile`` of real test images' bits/dim (recall ≈ ``quantile``).

        The threshold is the smallest observed value with at least ``quantile`` of the values at
        or below it (no interpolation), so :meth:`recall` on the same values is ``>= quantile``.
        """
        if not 0.0 < quantile <= 1.0:
            raise ValueError(f"quantile must be in (0, 1], got {quantile}")
        values = torch.sort(bits_per_dim.detach().flatten().double()).values
        if values.numel() == 0:
            raise ValueError("from_quantile needs at least one value")
        index = max(math.ceil(quantile * values.numel()) - 1, 0)
        return cls(threshold=values[index].item(), num_dims=num_dims)
