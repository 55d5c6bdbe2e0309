"""Affine coupling (Dinh et al. 2017; the paper's eq. 1) with a numerically stable scale."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flows.bijection import Bijection, check_image_batch
from flows.layers.zero_conv import ZeroConv2d


class AffineCoupling(Bijection):
    r"""Split channels ``x = (x_a, x_b)``; :math:`z_b = (x_b + t(x_a)) \odot \sigma(h(x_a) + 2)`.

    ``x_a`` (the first ``C // 2`` channels) passes unchanged. The scale
    :math:`\sigma(h + 2) \in (0, 1)` starts near 0.88, can never blow up, and its log is computed
    with ``logsigmoid`` for accuracy; log-det is :math:`\sum \log\sigma(h + 2)`. The network is
    conv3×3 → ReLU → conv1×1 → ReLU → zero-initialised conv3×3, so the layer starts as a fixed
    per-element rescaling.

    Difference from openai/glow: no actnorm inside the coupling network (plain biased
    convolutions), and the shift is added before scaling as in openai/glow's code (not its paper).
    The ReLUs work in place on their convolution's output, which nothing else keeps (a convolution's
    backward needs its input, not its output): one allocation and one pass over memory fewer per
    ReLU (its measured effect is recorded with the training benchmark, ``benchmarks/``).

    **Reduced-precision network** (``network_dtype``, e.g. ``torch.bfloat16``; default ``None`` =
    the input's dtype): for float32 inputs the network runs under autocast and its output is cast
    back, while the affine map, ``logsigmoid`` and the log-determinant stay in float32. The layer
    stays an exact bijection with an exact log-determinant. ``x_a`` passes unchanged, so the
    inverse evaluates the network on the same input and gets the same (rounded) output. The change
    of variables needs no smoothness of ``t`` or ``h``: for each fixed ``x_a`` the map is affine in
    ``x_b``, so by Fubini :math:`\int p_z(f(x))\,\prod\sigma\,dx = \int\!\int p_z(x_a, z_b)
    \,dz_b\,dx_a = 1`. Only the function the network computes changes, and training adapts to it.
    Gradients through the rounded input are taken as through the identity (autocast's rule).
    Float64 inputs (the exactness tests) always run the network in float64.
    """

    network_dtype: torch.dtype | None = None

    def __init__(self, channels: int, hidden_channels: int) -> None:
        super().__init__()
        if channels < 2:
            raise ValueError(f"AffineCoupling needs at least 2 channels, got {channels}")
        self.channels = channels
        self.passive = channels // 2
        self.active = channels - self.passive
        self.net = nn.Sequential(
            nn.Conv2d(self.passive, hidden_channels, kernel_size=3, padding=1),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden_channels, hidden_channels, kernel_size=1),
            nn.ReLU(inplace=True),
            ZeroConv2d(hidden_channels, 2 * self.active),
        )

    def _shift_and_log_scale(self, x_a: Tensor) -> tuple[Tensor, Tensor]:
        if self.network_dtype is not None and x_a.dtype == torch.float32:
            with torch.autocast(x_a.device.type, dtype=self.network_dtype):
                h = self.net(x_a)
            h = h.float()
        else:
            h = self.net(x_a)
        shift, raw_scale = h[:, 0::2], h[:, 1::2]
        return shift, F.logsigmoid(raw_scale + 2.0)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        check_image_batch(self, x, self.channels)
        x_a, x_b = x[:, : self.passive], x[:, self.passive :]
        shift, log_scale = self._shift_and_log_scale(x_a)
        z_b = (x_b + shift) * log_scale.exp()
        return torch.cat([x_a, z_b], dim=1), log_scale.flatten(1).sum(1)

    def _inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        check_image_batch(self, z, self.channels)
        z_a, z_b = z[:, : self.passive], z[:, self.passive :]
        shift, log_scale = self._shift_and_log_scale(z_a)
        x_b = z_b * (-log_scale).exp() - shift
        return torch.cat([z_a, x_b], dim=1), -log_scale.flatten(1).sum(1)
