"""One diagonal Gaussian per class on the whole latent (Section 2.1; Base and Reweight of Sec. 6.1)."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from flows.priors.base import ClassPrior, standard_normal


class ClassGaussian(ClassPrior):
    r""":math:`p(z \mid y) = \mathcal N(\mu_y, \mathrm{diag}(e^{2 s_y}))` with learned ``μ_y``, ``s_y``.

    Used by both the *Base* (eq. 5) and the *Reweight* (eq. 6) models; they differ only in the
    objective. All class log-densities come from two ``(B, D) × (D, C)`` products:

    .. math:: \sum_d \frac{(z_d - \mu_{cd})^2}{\sigma_{cd}^2}
              = (z^2) \cdot w_c - 2 z \cdot (\mu_c w_c) + \mu_c^2 \cdot w_c,
              \qquad w_{cd} = \sigma_{cd}^{-2}.

    Means and log-scales start at zero (the standard normal for every class).
    """

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__(dim, num_classes)
        self.means = nn.Parameter(torch.zeros(num_classes, dim))
        self.log_scales = nn.Parameter(torch.zeros(num_classes, dim))

    def _class_log_probs(self, z: Tensor) -> Tensor:
        precision = torch.exp(-2.0 * self.log_scales)
        quadratic = (
            (z * z) @ precision.T
            - 2.0 * z @ (self.means * precision).T
            + (self.means * self.means * precision).sum(1)
        )
        log_norm = -self.log_scales.sum(1) - 0.5 * self.dim * math.log(2.0 * math.pi)
        return log_norm - 0.5 * quadratic

    def _sample(self, y: Tensor, generator: torch.Generator | None, temperature: float) -> Tensor:
        eps = standard_normal((y.shape[0], self.dim), self.means, generator)
        return self.means[y] + temperature * torch.exp(self.log_scales[y]) * eps
