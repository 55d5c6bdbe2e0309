"""Invertible 1×1 convolution, LU-parametrised (Kingma & Dhariwal 2018, Sec. 3.2)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flows.bijection import Bijection, check_image_batch


class InvertibleConv1x1(Bijection):
    r"""Channel mixing :math:`z = Wx` at every pixel with :math:`W = P L (U + \mathrm{diag}(\sigma
    e^{s}))`.

    ``P`` is a fixed permutation, ``L`` unit lower-triangular, ``U`` strictly upper-triangular and
    ``σ`` the fixed signs of the diagonal, so :math:`\log|\det W| = \sum_c s_c` costs O(C) and the
    log-det of the layer is :math:`HW\sum_c s_c`. The inverse uses two triangular solves, never a
    general matrix inverse. Initialised at a random rotation (drawn with ``generator``).
    """

    def __init__(self, channels: int, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.channels = channels
        rotation, _ = torch.linalg.qr(torch.randn(channels, channels, generator=generator))
        permutation, lower, upper = torch.linalg.lu(rotation)
        diagonal = torch.diagonal(upper)
        self.register_buffer("permutation", permutation)
        self.register_buffer("sign", torch.sign(diagonal))
        self.register_buffer("lower_mask", torch.tril(torch.ones(channels, channels), -1))
        self.register_buffer("identity", torch.eye(channels))
        self.lower = nn.Parameter(lower)
        self.upper = nn.Parameter(torch.triu(upper, 1))
        self.log_diagonal = nn.Parameter(torch.log(torch.abs(diagonal)))

    def _factors(self) -> tuple[Tensor, Tensor]:
        lower = self.lower * self.lower_mask + self.identity
        upper = self.upper * self.lower_mask.T + torch.diag(
            self.sign * torch.exp(self.log_diagonal)
        )
        return lower, upper

    def weight(self) -> Tensor:
        """The ``(C, C)`` matrix ``W`` (data → latent)."""
        lower, upper = self._factors()
        return self.permutation @ lower @ upper

    def inverse_weight(self) -> Tensor:
        """``W⁻¹ = U⁻¹ L⁻¹ Pᵀ`` by triangular solves."""
        lower, upper = self._factors()
        lower_inv_pt = torch.linalg.solve_triangular(
            lower, self.permutation.T, upper=False, unitriangular=True
        )
        return torch.linalg.solve_triangular(upper, lower_inv_pt, upper=True)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        check_image_batch(self, x, self.channels)
        z = F.conv2d(x, self.weight()[:, :, None, None])
        return z, self._logabsdet(x)

    def _inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        check_image_batch(self, z, self.channels)
        x = F.conv2d(z, self.inverse_weight()[:, :, None, None])
        return x, -self._logabsdet(z)

    def _logabsdet(self, x: Tensor) -> Tensor:
        height, width = x.shape[2:]
        return (self.log_diagonal.sum() * (height * width)).expand(x.shape[0])
