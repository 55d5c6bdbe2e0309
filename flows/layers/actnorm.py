"""Activation normalisation (Kingma & Dhariwal 2018, Sec. 3.1) with data-dependent initialisation."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from flows.bijection import Bijection, check_image_batch


class ActNorm(Bijection):
    r"""Per-channel affine map :math:`z = (x + b) \odot e^{s}`, log-det :math:`HW\sum_c s_c`.

    The first ``forward`` call sets ``b`` and ``s`` so that the batch's output has zero mean and
    unit variance per channel. Whether that happened is stored in the ``initialised`` buffer, so it
    travels with ``state_dict`` and a loaded model is never re-initialised. ``inverse`` never
    initialises (it has no data to look at).

    Difference from openai/glow: the scale is parametrised by its logarithm directly (no
    ``logscale_factor``) and initialisation is triggered by the buffer, not a separate graph.
    """

    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.channels = channels
        self.eps = eps
        self.bias = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.log_scale = nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.register_buffer("initialised", torch.tensor(False))

    @torch.no_grad()
    def initialise(self, x: Tensor) -> None:
        """Set bias and scale from the per-channel statistics of the batch ``x``."""
        mean = x.mean(dim=(0, 2, 3), keepdim=True)
        std = x.std(dim=(0, 2, 3), keepdim=True, unbiased=False)
        self.bias.copy_(-mean)
        self.log_scale.copy_(-torch.log(std + self.eps))
        self.initialised.fill_(True)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        check_image_batch(self, x, self.channels)
        if not bool(self.initialised):
            self.initialise(x)
        z = (x + self.bias) * torch.exp(self.log_scale)
        return z, self._logabsdet(x)

    def _inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        check_image_batch(self, z, self.channels)
        x = z * torch.exp(-self.log_scale) - self.bias
        return x, -self._logabsdet(z)

    def _logabsdet(self, x: Tensor) -> Tensor:
        height, width = x.shape[2:]
        return (self.log_scale.sum() * (height * width)).expand(x.shape[0])
