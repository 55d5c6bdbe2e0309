"""Label smoothing as a latent cluster variable (Appendix B.2)."""

from __future__ import annotations

import torch
from torch import Tensor

from flows.priors.base import ClassPrior


class LabelSmoothed(ClassPrior):
    r"""Wrap a prior so the Gaussian cluster ``k`` is a latent variable: ``k = y`` with probability
    ``1 − ε``, uniform over the other ``C − 1`` labels with probability ``ε`` (Appendix B.2):

    .. math:: p(z \mid y) = (1 - \varepsilon)\, q(z \mid k = y)
              + \frac{\varepsilon}{C - 1} \sum_{k \ne y} q(z \mid k).

    A mixture of normalised densities, hence normalised. The logits of the wrapped prior are kept.
    """

    def __init__(self, prior: ClassPrior, epsilon: float) -> None:
        super().__init__(prior.dim, prior.num_classes)
        if not 0.0 <= epsilon < 1.0:
            raise ValueError(f"epsilon must lie in [0, 1), got {epsilon}")
        self.prior = prior
        self.epsilon = epsilon

    def _log_mixing(self, like: Tensor) -> Tensor:
        """``log P(k | y)`` as a ``(C, C)`` matrix, rows ``y``."""
        classes = self.num_classes
        off = self.epsilon / (classes - 1)
        matrix = torch.full((classes, classes), off, dtype=like.dtype, device=like.device)
        matrix.fill_diagonal_(1.0 - self.epsilon)
        return torch.log(matrix)

    def logits(self, z: Tensor) -> Tensor:
        return self.prior.logits(z)

    @property
    def classifies_by_logits(self) -> bool:  # type: ignore[override]
        """The wrapped prior's classification rule."""
        return self.prior.classifies_by_logits

    def _class_log_probs(self, z: Tensor) -> Tensor:
        cluster = self.prior.log_prob(z)
        return torch.logsumexp(cluster[:, None, :] + self._log_mixing(z), dim=-1)

    def _sample(self, y: Tensor, generator: torch.Generator | None, temperature: float) -> Tensor:
        probs = torch.exp(self._log_mixing(torch.empty((), dtype=torch.float64, device=y.device)))
        clusters = torch.multinomial(probs[y], 1, generator=generator).squeeze(1)
        return self.prior.sample(clusters, generator=generator, temperature=temperature)
