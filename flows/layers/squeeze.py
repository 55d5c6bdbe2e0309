"""Space-to-depth squeeze (Dinh et al. 2017): ``(C, H, W) → (4C, H/2, W/2)``."""

from __future__ import annotations

from torch import Tensor

from flows.bijection import Bijection, check_image_batch


class Squeeze(Bijection):
    """Move each 2×2 spatial block into channels; a permutation, so the log-det is zero.

    Output channel ``4c + 2i + j`` holds input channel ``c`` at offset ``(i, j)`` in the block.
    """

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        check_image_batch(self, x)
        batch, channels, height, width = x.shape
        if height % 2 or width % 2:
            raise ValueError(f"Squeeze needs even height and width, got {height}×{width}")
        z = x.reshape(batch, channels, height // 2, 2, width // 2, 2)
        z = z.permute(0, 1, 3, 5, 2, 4).reshape(batch, 4 * channels, height // 2, width // 2)
        return z, x.new_zeros(batch)

    def _inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        check_image_batch(self, z)
        batch, channels, height, width = z.shape
        if channels % 4:
            raise ValueError(f"Squeeze.inverse needs a multiple of 4 channels, got {channels}")
        x = z.reshape(batch, channels // 4, 2, 2, height, width)
        x = x.permute(0, 1, 4, 2, 5, 3).reshape(batch, channels // 4, 2 * height, 2 * width)
        return x, z.new_zeros(batch)
