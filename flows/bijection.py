"""The one contract every invertible layer of the flow follows.

Direction is data → latent. ``forward(x) -> (z, logabsdet)`` and ``inverse(z) -> (x, logabsdet)``,
where ``logabsdet`` has shape ``(batch,)``: ``log|det ∂z/∂x|`` for ``forward`` and
``log|det ∂x/∂z|`` (that is, minus the forward value) for ``inverse``. Two methods, never a
``reverse=True`` flag. Subclasses implement the private hooks ``_forward`` / ``_inverse``; the
public methods check shapes, so that a layer returning a wrongly shaped log-determinant fails at
the layer, not three files away.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn


class Bijection(nn.Module, ABC):
    """An invertible map with a tractable log-determinant (data → latent)."""

    def forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        z, logabsdet = self._forward(x)
        _check_logabsdet(self, logabsdet, x.shape[0])
        return z, logabsdet

    def inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        x, logabsdet = self._inverse(z)
        _check_logabsdet(self, logabsdet, z.shape[0])
        return x, logabsdet

    @abstractmethod
    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        """Map data to latent; return the latent and ``log|det J|`` of shape ``(batch,)``."""

    @abstractmethod
    def _inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        """Map latent to data; return the data and ``-log|det J|`` of shape ``(batch,)``."""


class Chain(Bijection):
    """Composition ``f_n ∘ … ∘ f_1``: ``forward`` applies the layers in order, summing log-dets."""

    def __init__(self, *layers: Bijection) -> None:
        super().__init__()
        self.layers = nn.ModuleList(layers)

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        total = x.new_zeros(x.shape[0])
        for layer in self.layers:
            x, logabsdet = layer(x)
            total = total + logabsdet
        return x, total

    def _inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        total = z.new_zeros(z.shape[0])
        for layer in reversed(self.layers):
            z, logabsdet = layer.inverse(z)
            total = total + logabsdet
        return z, total


def check_image_batch(module: nn.Module, x: Tensor, channels: int | None = None) -> None:
    """Raise ``ValueError`` unless ``x`` is a ``(B, C, H, W)`` batch (with ``C == channels``)."""
    if x.dim() != 4 or (channels is not None and x.shape[1] != channels):
        expected = f"(B, {channels}, H, W)" if channels is not None else "(B, C, H, W)"
        raise ValueError(
            f"{type(module).__name__} expected a batch shaped {expected}, got {tuple(x.shape)}"
        )


def _check_logabsdet(module: nn.Module, logabsdet: Tensor, batch: int) -> None:
    if logabsdet.shape != torch.Size([batch]):
        raise RuntimeError(
            f"{type(module).__name__} returned a log-determinant shaped {tuple(logabsdet.shape)}, "
            f"expected ({batch},)"
        )
