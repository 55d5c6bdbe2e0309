"""Input pipeline of Section 5.2 and Appendix A: explicit, out-of-place, seedable steps.

Conventions (one place for each):

* **Pixel values.** An 8-bit pixel ``k ∈ {0, …, 255}`` is the bin ``[k/256 − 0.5, (k+1)/256 − 0.5)``;
  the discrete value is the bin's lower edge ``k/256 − 0.5`` (:func:`to_model_range`), so all data
  lie in [−0.5, 0.5] as in Appendix A. Uniform dequantisation adds ``U(0, 1/256)``
  (:func:`dequantize`).
* **Padding to 32×32** (MNIST 28 → 32) uses zero pixels, i.e. the bottom bin: the border is filled
  with ``−0.5 + U(0, 1/256)``, a dequantised black pixel (a constant border would be a degenerate
  density). The border counts as data: bits/dim divide by ``1·32·32`` for MNIST, as the paper's D.
* **Noise channels** double the channels with ``u = 2/256 · v``, ``v ~ U(0, 1)``. The flow models the
  padded input ``(x, u)``; ``log q(u) = n·log(256/2)`` for ``n`` noise entries, and we report
  ``log p(x) = log p(x, u) − log q(u)`` (a one-sample lower bound in expectation, exact when the
  model's ``p(u | x)`` equals ``q(u)``). This is the "Jacobian of the scaling" of Appendix A.
* **Bits/dim** — :func:`flows.measures.bits_per_dim`.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from flows.measures import NUM_BINS

NOISE_WIDTH = 2.0 / NUM_BINS


def to_model_range(pixels: Tensor) -> Tensor:
    """8-bit pixels (any integer dtype) → floats ``k/256 − 0.5`` in [−0.5, 0.5)."""
    return pixels.to(torch.get_default_dtype()) / NUM_BINS - 0.5


def dequantize(x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """Add ``U(0, 1/256)`` noise to discrete values ``k/256 − 0.5`` (out of place)."""
    return x + _uniform(x.shape, x, generator) / NUM_BINS


def augment(
    x: Tensor, crop_padding: int, hflip: bool, generator: torch.Generator | None = None
) -> Tensor:
    """Random crop after ``crop_padding`` pixels of edge padding (torchvision's ``RandomCrop(…,
    padding_mode='edge')``), then a random horizontal flip when ``hflip``; per image, batch-wise."""
    batch, _, height, width = x.shape
    if crop_padding > 0:
        padded = F.pad(x, (crop_padding,) * 4, mode="replicate")
        offsets = torch.randint(0, 2 * crop_padding + 1, (batch, 2), generator=generator)
        rows = offsets[:, 0, None] + torch.arange(height)
        cols = offsets[:, 1, None] + torch.arange(width)
        index = torch.arange(batch)[:, None, None]
        x = padded.permute(0, 2, 3, 1)[index, rows[:, :, None], cols[:, None, :]].permute(
            0, 3, 1, 2
        )
    if hflip:
        flip = torch.rand(batch, generator=generator) < 0.5
        x = torch.where(flip[:, None, None, None], x.flip(-1), x)
    return x.contiguous()


def model_input(
    pixels: Tensor,
    generator: torch.Generator | None = None,
    crop_padding: int = 0,
    hflip: bool = False,
    dequantise: bool = True,
) -> Tensor:
    """The input pipeline before the model, in one place: 8-bit ``(B, C, H, W)`` pixels →
    :func:`to_model_range` → :func:`augment` (training only) → :func:`dequantize`.

    Padding and noise channels come after, inside :meth:`flows.model.ConditionalGlow.encode`. The
    random draws, in this order, come from ``generator``: crop offsets, flips, dequantisation noise.
    ``dequantise=False`` gives the discrete values ``k/256 − 0.5`` (what attacks start from).
    """
    x = to_model_range(pixels)
    if crop_padding or hflip:
        x = augment(x, crop_padding, hflip, generator)
    return dequantize(x, generator) if dequantise else x


def pad_image(
    x: Tensor, size: int, generator: torch.Generator | None = None, shared: bool = False
) -> Tensor:
    """Pad ``(B, C, H, W)`` centrally to ``size × size`` with dequantised black pixels.

    ``shared=True`` draws one border for the whole batch (see :func:`add_noise_channels`).
    """
    height, width = x.shape[-2:]
    if height == size and width == size:
        return x
    if height > size or width > size or (size - height) % 2 or (size - width) % 2:
        raise ValueError(f"cannot pad {height}×{width} images centrally to {size}×{size}")
    top, left = (size - height) // 2, (size - width) // 2
    shape = (x.shape[0], x.shape[1], size, size)
    padded = -0.5 + _uniform(shape, x, generator, shared) / NUM_BINS
    padded = padded.clone() if shared else padded  # an expanded view cannot be written into
    padded[..., top : top + height, left : left + width] = x
    return padded


def add_noise_channels(
    x: Tensor, generator: torch.Generator | None = None, shared: bool = False
) -> tuple[Tensor, Tensor]:
    """Append as many ``U(0, 2/256)`` channels as ``x`` has; return it and ``log q(u)`` ``(B,)``.

    ``shared=True`` draws one noise image and gives it to every example of the batch, so that an
    example's noise does not depend on its position in the batch: with a freshly seeded generator,
    a batched call then equals one call per example (what the attacks need).
    """
    noise = _uniform(x.shape, x, generator, shared) * NOISE_WIDTH
    log_q = x.new_full((x.shape[0],), noise_log_density(x[0].numel()))
    return torch.cat([x, noise], dim=1), log_q


def noise_log_density(num_entries: int) -> float:
    """``log q(u) = n·log(256/2)``: log-density of ``n`` independent ``U(0, 2/256)`` entries."""
    return num_entries * math.log(1.0 / NOISE_WIDTH)


def _uniform(
    shape: torch.Size | tuple[int, ...],
    like: Tensor,
    generator: torch.Generator | None,
    shared: bool = False,
) -> Tensor:
    if shared:
        one = torch.rand((1, *shape[1:]), generator=generator, device=like.device, dtype=like.dtype)
        return one.expand(shape)
    return torch.rand(shape, generator=generator, device=like.device, dtype=like.dtype)
