"""The interface every class-conditional prior follows."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn


class ClassPrior(nn.Module, ABC):
    """A density ``p(z | y)`` on flat latents ``z ∈ R^dim`` for ``num_classes`` classes.

    ``log_prob(z)`` returns ``log p(z | y = c)`` for every class at once, shaped ``(B, C)`` — one
    encoding serves all classes; ``log_prob(z, y)`` returns the ``(B,)`` values for given labels.
    ``sample(y)`` draws latents. ``logits(z)`` are the scores the classification term of the
    training objective uses (by default the class log-densities themselves).

    ``classifies_by_logits`` is the model's classification rule: False (default), Bayes' rule on
    the class densities, ``argmax_c log p(z | c)`` (equivalently ``argmax_c log p(x | c)``: the
    flow's log-determinant does not depend on the class); True, ``argmax_c logits(z)_c``
    (:class:`~flows.priors.SplitPrior`, whose logits are a part of the density only).
    """

    #: the classification rule: True, argmax of :meth:`logits`; False, argmax of the densities.
    classifies_by_logits: bool = False

    def __init__(self, dim: int, num_classes: int) -> None:
        super().__init__()
        if num_classes < 2:
            raise ValueError(f"a class-conditional prior needs ≥ 2 classes, got {num_classes}")
        self.dim = dim
        self.num_classes = num_classes

    def log_prob(self, z: Tensor, y: Tensor | None = None) -> Tensor:
        self._check_latent(z)
        log_probs = self._class_log_probs(z)
        if y is None:
            return log_probs
        self._check_labels(y, z.shape[0])
        return log_probs.gather(1, y[:, None]).squeeze(1)

    def logits(self, z: Tensor) -> Tensor:
        """Classification scores ``(B, C)`` used by the objectives (default: ``log p(z|c)``)."""
        self._check_latent(z)
        return self._class_log_probs(z)

    def sample(
        self, y: Tensor, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> Tensor:
        """Latents ``(B, dim)`` for labels ``y`` ``(B,)``; ``temperature`` scales the spread."""
        self._check_labels(y, y.shape[0] if y.dim() == 1 else -1)
        return self._sample(y, generator, temperature)

    @abstractmethod
    def _class_log_probs(self, z: Tensor) -> Tensor:
        """``log p(z | c)`` for every class, ``(B, C)``."""

    @abstractmethod
    def _sample(self, y: Tensor, generator: torch.Generator | None, temperature: float) -> Tensor:
        """Draw ``z ~ p(z | y)``."""

    def _check_latent(self, z: Tensor) -> None:
        if z.dim() != 2 or z.shape[1] != self.dim:
            raise ValueError(
                f"{type(self).__name__} expected latents shaped (B, {self.dim}), got {tuple(z.shape)}"
            )

    def _check_labels(self, y: Tensor, batch: int) -> None:
        if y.dim() != 1 or y.shape[0] != batch or y.dtype not in (torch.int64, torch.int32):
            raise ValueError(
                f"{type(self).__name__} expected integer labels shaped ({batch},), "
                f"got {y.dtype} {tuple(y.shape)}"
            )
        if y.numel() and (int(y.min()) < 0 or int(y.max()) >= self.num_classes):
            raise ValueError(f"labels must lie in [0, {self.num_classes}), got {y.tolist()}")


def standard_normal(
    shape: tuple[int, ...], like: Tensor, generator: torch.Generator | None
) -> Tensor:
    """Standard normal draws on ``like``'s device and dtype."""
    return torch.randn(shape, generator=generator, device=like.device, dtype=like.dtype)
