"""Training objectives of Sections 4.1, 5.1, 5.3 and Appendix A, all in nats per data dimension.

Each takes the ``(B, C)`` class log-likelihoods ``log p(x | y = c)`` from a single encoding, the
labels, and the data dimension ``D`` (1·32·32 MNIST, 3·32·32 CIFAR-10); each returns a scalar mean
over the batch. The class prior ``p(y)`` is uniform throughout.
"""

from __future__ import annotations

import math

import torch.nn.functional as F
from torch import Tensor

OBJECTIVES = ("nll", "reweighted", "split")


def nll_loss(class_log_likelihoods: Tensor, labels: Tensor, num_dims: int) -> Tensor:
    r"""Eq. (5): :math:`-\log p(x, y) / D = (-\log p(x \mid y) + \log C) / D` (the *Base* model).

    Equal to :math:`(-\log p(x) - \log p(y \mid x)) / D`, the decomposition of eq. (5).
    """
    num_classes = class_log_likelihoods.shape[1]
    chosen = class_log_likelihoods.gather(1, labels[:, None]).squeeze(1)
    return (-chosen + math.log(num_classes)).mean() / num_dims


def reweighted_loss(class_log_likelihoods: Tensor, labels: Tensor, num_dims: int) -> Tensor:
    r"""Eq. (6): :math:`-\log p(x \mid y) / D - \log p(y \mid x)` (the *Reweight* model).

    ``p(y | x)`` is Bayes' rule on the class likelihoods, i.e. their softmax.
    """
    chosen = class_log_likelihoods.gather(1, labels[:, None]).squeeze(1)
    classification = F.cross_entropy(class_log_likelihoods, labels)
    return (-chosen).mean() / num_dims + classification


def split_prior_loss(
    class_log_likelihoods: Tensor,
    logits: Tensor,
    labels: Tensor,
    num_dims: int,
    weight: float = 1.0,
) -> Tensor:
    r"""Section 5.3: :math:`-\log p(x \mid y) / D + w \cdot \mathrm{CE}(\mathrm{softmax}(\ell), y)`.

    ``ℓ`` are the split prior's logits (the ``z_s`` class scores, :meth:`SplitPrior.logits`), treated
    "as standard logits of a discriminative model". The weight ``w`` (default 1) multiplies a
    per-image term while the likelihood term is per dimension, so relative to the joint NLL of
    eq. (5) the classification term is up-weighted by ``w·D`` (1024 for MNIST, 3072 for CIFAR-10).
    """
    chosen = class_log_likelihoods.gather(1, labels[:, None]).squeeze(1)
    return (-chosen).mean() / num_dims + weight * F.cross_entropy(logits, labels)


def objective(
    name: str,
    class_log_likelihoods: Tensor,
    logits: Tensor,
    labels: Tensor,
    num_dims: int,
    split_weight: float = 1.0,
) -> Tensor:
    """Dispatch by objective name (one of :data:`OBJECTIVES`)."""
    if name == "nll":
        return nll_loss(class_log_likelihoods, labels, num_dims)
    if name == "reweighted":
        return reweighted_loss(class_log_likelihoods, labels, num_dims)
    if name == "split":
        return split_prior_loss(class_log_likelihoods, logits, labels, num_dims, split_weight)
    raise ValueError(f"unknown objective {name!r}; expected one of {OBJECTIVES}")
