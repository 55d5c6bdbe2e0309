"""The zero-initialised output convolution used by couplings and splits."""

from __future__ import annotations

import torch
from torch import Tensor, nn


class ZeroConv2d(nn.Module):
    r"""3×3 convolution with weight, bias and an output log-scale all zero at initialisation.

    Output is :math:`\mathrm{conv}(x)\, e^{3 s}` (openai/glow's ``conv2d_zeros``), so the layer it
    feeds starts as the identity and can still grow its output quickly.
    """

    def __init__(self, in_channels: int, out_channels: int) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size=3, padding=1)
        nn.init.zeros_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)
        self.log_scale = nn.Parameter(torch.zeros(1, out_channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return self.conv(x) * torch.exp(3.0 * self.log_scale)
