"""Factor-out with a learned conditional prior, written as a bijection (openai/glow's split2d).

Named "factor-out" so that "split" means only the paper's split prior (Section 5.3,
:class:`flows.priors.SplitPrior`).
"""

from __future__ import annotations

import torch
from torch import Tensor

from flows.bijection import Bijection, check_image_batch
from flows.layers.zero_conv import ZeroConv2d


class FactorOut(Bijection):
    r"""``x = (x_1, x_2)`` ↦ ``(x_1, (x_2 - μ(x_1)) e^{-s(x_1)})``, log-det :math:`-\sum s`.

    The second half of the channels is about to be factored out of the multi-scale flow
    (:class:`flows.glow.Glow` does the slicing). openai/glow gives that half the prior
    :math:`\mathcal N(\mu(x_1), e^{2 s(x_1)})`; here the same conditional Gaussian is written as
    this invertible standardisation, so the class-conditional prior of :mod:`flows.priors` can sit
    on the whole latent and the flow stays one bijection. ``μ`` and ``s`` come from a
    zero-initialised convolution, so the layer starts as the identity.
    """

    def __init__(self, channels: int) -> None:
        super().__init__()
        if channels < 2 or channels % 2:
            raise ValueError(f"FactorOut needs an even channel count ≥ 2, got {channels}")
        self.channels = channels
        self.half = channels // 2
        self.net = ZeroConv2d(self.half, 2 * self.half)

    def _mean_and_log_scale(self, kept: Tensor) -> tuple[Tensor, Tensor]:
        h = self.net(kept)
        return h[:, 0::2], h[:, 1::2]

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        check_image_batch(self, x, self.channels)
        kept, out = x[:, : self.half], x[:, self.half :]
        mean, log_scale = self._mean_and_log_scale(kept)
        z_out = (out - mean) * torch.exp(-log_scale)
        return torch.cat([kept, z_out], dim=1), -log_scale.flatten(1).sum(1)

    def _inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        check_image_batch(self, z, self.channels)
        kept, z_out = z[:, : self.half], z[:, self.half :]
        mean, log_scale = self._mean_and_log_scale(kept)
        out = z_out * torch.exp(log_scale) + mean
        return torch.cat([kept, out], dim=1), log_scale.flatten(1).sum(1)
