"""The multi-scale GLOW flow of Appendix A, assembled from :mod:`flows.layers`.

One *step* is actnorm → invertible 1×1 convolution → affine coupling. One *level* is ``steps``
steps at a fixed resolution, then (except at the last level) a :class:`FactorOut` whose
second half of the channels is factored out into the latent, then a squeeze of the kept half.

Differences from openai/glow (Kingma & Dhariwal 2018):

* **Squeeze at the end of each level, not the beginning** (Appendix A: "we do the squeeze operation
  at the end of each level instead of the beginning, which is what allows us to use 4 levels").
  Level 1 runs at full resolution on the noise-padded channels (2 for MNIST, 6 for CIFAR-10; even,
  so the coupling can halve them). For padded MNIST: 2@32² → factor out 1@32² → squeeze 4@16² →
  factor out 2@16² → 8@8² → factor out 4@8² → 16@4², the 4th level's output. openai/glow squeezes
  first, so 4 levels would end at 2×2.
* Factored-out halves are standardised by a learned conditional Gaussian *inside* the flow
  (:class:`flows.layers.FactorOut`) rather than scored by a separate prior, so the flow
  maps an image to one flat latent vector and the class-conditional prior covers all of it.

The flat latent is ordered: the last level's output first, flattened channel-last (so its first
``C`` entries are the channels of the top-left position), then the factored-out pieces from the
deepest level to the first, each flattened channel-first. Its size equals the input's.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flows.bijection import Bijection, Chain, check_image_batch
from flows.layers import ActNorm, AffineCoupling, FactorOut, InvertibleConv1x1, Squeeze


def glow_step(channels: int, hidden_channels: int, generator: torch.Generator | None) -> Chain:
    """Actnorm → invertible 1×1 convolution → affine coupling."""
    return Chain(
        ActNorm(channels),
        InvertibleConv1x1(channels, generator=generator),
        AffineCoupling(channels, hidden_channels),
    )


class Glow(Bijection):
    """Images ``(B, C, S, S)`` → flat latents ``(B, C·S²)`` (see the module docstring)."""

    def __init__(
        self,
        in_channels: int,
        image_size: int,
        levels: int,
        steps: int,
        hidden_channels: int,
        generator: torch.Generator | None = None,
    ) -> None:
        super().__init__()
        if levels < 1 or steps < 1:
            raise ValueError(f"need levels ≥ 1 and steps ≥ 1, got {levels} and {steps}")
        if in_channels % 2:
            raise ValueError(f"Glow needs an even number of input channels, got {in_channels}")
        if image_size % 2 ** (levels - 1):
            raise ValueError(
                f"image size {image_size} is not divisible by 2**(levels-1) = {2 ** (levels - 1)}"
            )
        self.in_channels = in_channels
        self.image_size = image_size
        self.levels = nn.ModuleList()
        self.splits = nn.ModuleList()
        self.squeeze = Squeeze()
        self.factored_shapes: list[tuple[int, int, int]] = []
        channels, size = in_channels, image_size
        for level in range(levels):
            steps_chain = Chain(
                *(glow_step(channels, hidden_channels, generator) for _ in range(steps))
            )
            self.levels.append(steps_chain)
            if level < levels - 1:
                self.splits.append(FactorOut(channels))  # 'splits': the checkpoints' key
                self.factored_shapes.append((channels // 2, size, size))
                channels, size = 2 * channels, size // 2
        self.final_shape = (channels, size, size)
        self.dim = in_channels * image_size**2
        assert math.prod(self.final_shape) + sum(map(math.prod, self.factored_shapes)) == self.dim

    def _forward(self, x: Tensor) -> tuple[Tensor, Tensor]:
        check_image_batch(self, x, self.in_channels)
        total = x.new_zeros(x.shape[0])
        pieces = []
        h = x
        for index, steps_chain in enumerate(self.levels):
            h, logabsdet = steps_chain(h)
            total = total + logabsdet
            if index < len(self.splits):
                h, logabsdet = self.splits[index](h)
                total = total + logabsdet
                half = h.shape[1] // 2
                pieces.append(h[:, half:].flatten(1))
                h, _ = self.squeeze(h[:, :half])
        final = h.permute(0, 2, 3, 1).flatten(1)
        return torch.cat([final, *reversed(pieces)], dim=1), total

    def _inverse(self, z: Tensor) -> tuple[Tensor, Tensor]:
        if z.dim() != 2 or z.shape[1] != self.dim:
            raise ValueError(
                f"Glow.inverse expected latents shaped (B, {self.dim}), got {tuple(z.shape)}"
            )
        batch = z.shape[0]
        total = z.new_zeros(batch)
        channels, size, _ = self.final_shape
        offset = math.prod(self.final_shape)
        h = z[:, :offset].reshape(batch, size, size, channels).permute(0, 3, 1, 2)
        for index in reversed(range(len(self.levels))):
            if index < len(self.splits):
                shape = self.factored_shapes[index]
                piece = z[:, offset : offset + math.prod(shape)].reshape(batch, *shape)
                offset += math.prod(shape)
                h, _ = self.squeeze.inverse(h)
                h, logabsdet = self.splits[index].inverse(torch.cat([h, piece], dim=1))
                total = total + logabsdet
            h, logabsdet = self.levels[index].inverse(h)
            total = total + logabsdet
        return h, total
