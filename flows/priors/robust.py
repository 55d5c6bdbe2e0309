"""The robust priors of Appendix B.1: Laplace, Cauchy, and a Gaussian–Laplace mixture.

Appendix B.1 reports no significant difference from the Gaussian prior; these exist so that
negative result can be reproduced. Each has one learned location ``μ_y`` and log-scale per class
and dimension, factorised over dimensions; all start at location 0, scale 1. The class
log-densities are computed by broadcasting to ``(B, C, D)`` (no quadratic-form shortcut exists).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from flows.priors.base import ClassPrior


class _LocationScalePrior(ClassPrior):
    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__(dim, num_classes)
        self.locations = nn.Parameter(torch.zeros(num_classes, dim))
        self.log_scales = nn.Parameter(torch.zeros(num_classes, dim))

    def _standardised(self, z: Tensor) -> Tensor:
        return (z[:, None, :] - self.locations) * torch.exp(-self.log_scales)


class ClassLaplace(_LocationScalePrior):
    r""":math:`p(z \mid y) = \prod_d \frac{1}{2 b_{yd}} e^{-|z_d - \mu_{yd}| / b_{yd}}`."""

    def _class_log_probs(self, z: Tensor) -> Tensor:
        t = self._standardised(z)
        return -(t.abs().sum(-1) + self.log_scales.sum(1) + self.dim * math.log(2.0))

    def _sample(self, y: Tensor, generator: torch.Generator | None, temperature: float) -> Tensor:
        u = (
            torch.rand(
                (y.shape[0], self.dim),
                generator=generator,
                device=y.device,
                dtype=self.locations.dtype,
            )
            - 0.5
        )
        t = -torch.sign(u) * torch.log1p(-2.0 * u.abs())
        return self.locations[y] + temperature * torch.exp(self.log_scales[y]) * t


class ClassCauchy(_LocationScalePrior):
    r""":math:`p(z \mid y) = \prod_d \frac{1}{\pi \gamma_{yd} (1 + ((z_d - \mu_{yd})/\gamma_{yd})^2)}`."""

    def _class_log_probs(self, z: Tensor) -> Tensor:
        t = self._standardised(z)
        return -(torch.log1p(t * t).sum(-1) + self.log_scales.sum(1) + self.dim * math.log(math.pi))

    def _sample(self, y: Tensor, generator: torch.Generator | None, temperature: float) -> Tensor:
        u = torch.rand(
            (y.shape[0], self.dim), generator=generator, device=y.device, dtype=self.locations.dtype
        )
        t = torch.tan(math.pi * (u - 0.5))
        return self.locations[y] + temperature * torch.exp(self.log_scales[y]) * t


class ClassGaussianLaplace(ClassPrior):
    r"""Per dimension, :math:`\pi_y \mathcal N(\mu_{yd}, \sigma_{yd}^2) + (1 - \pi_y)\,
    \mathrm{Laplace}(\mu_{yd}, b_{yd})`, sharing the location (Appendix B.1).

    The mixture is per dimension (a product of 1-d mixtures), so it stays factorised and
    normalised; ``π_y = sigmoid(ρ_y)`` starts at 1/2.
    """

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__(dim, num_classes)
        self.locations = nn.Parameter(torch.zeros(num_classes, dim))
        self.gaussian_log_scales = nn.Parameter(torch.zeros(num_classes, dim))
        self.laplace_log_scales = nn.Parameter(torch.zeros(num_classes, dim))
        self.mixture_logits = nn.Parameter(torch.zeros(num_classes, 1))

    def _class_log_probs(self, z: Tensor) -> Tensor:
        centred = z[:, None, :] - self.locations
        gauss_t = centred * torch.exp(-self.gaussian_log_scales)
        log_gauss = (
            -0.5 * gauss_t * gauss_t - self.gaussian_log_scales - 0.5 * math.log(2 * math.pi)
        )
        laplace_t = centred * torch.exp(-self.laplace_log_scales)
        log_laplace = -laplace_t.abs() - self.laplace_log_scales - math.log(2.0)
        log_weight = F.logsigmoid(self.mixture_logits)
        log_other = F.logsigmoid(-self.mixture_logits)
        mixed = torch.logaddexp(log_weight + log_gauss, log_other + log_laplace)
        return mixed.sum(-1)

    def _sample(self, y: Tensor, generator: torch.Generator | None, temperature: float) -> Tensor:
        shape = (y.shape[0], self.dim)
        dtype, device = self.locations.dtype, self.locations.device
        choose_gauss = torch.rand(shape, generator=generator, device=device, dtype=dtype) < (
            torch.sigmoid(self.mixture_logits[y])
        )
        gauss = torch.randn(shape, generator=generator, device=device, dtype=dtype)
        u = torch.rand(shape, generator=generator, device=device, dtype=dtype) - 0.5
        laplace = -torch.sign(u) * torch.log1p(-2.0 * u.abs())
        t = torch.where(
            choose_gauss,
            torch.exp(self.gaussian_log_scales[y]) * gauss,
            torch.exp(self.laplace_log_scales[y]) * laplace,
        )
        return self.locations[y] + temperature * t
