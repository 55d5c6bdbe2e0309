r"""The measures every part of the package reports, each written once.

A class-conditional model gives, for a batch, the matrix of class log-likelihoods
:math:`\ell_{bc} = \log p(x_b \mid y = c)` in nats, shaped ``(B, C)``. Everything else follows:

* :func:`marginal_log_prob`: :math:`\log p(x) = \operatorname{logsumexp}_c \ell_c - \log C`
  (uniform class prior, Section 2.1);
* :func:`predictions` / :func:`accuracy`: Bayes' rule, :math:`\arg\max_c \ell_c`;
* :func:`bits_per_dim`: :math:`-\log p(x) / (D \log 2) + \log_2 256` (the discretised NLL per data
  dimension; Table 1, the detector's unit in Section 6.2);
* :func:`nats_to_bits_per_dim`: a difference of log-densities, in bits per dimension (no offset);
* :func:`log_mean_exp`: :math:`\log \frac1S \sum_s e^{v_s}`, the importance-weighted estimate of a
  log-density from ``S`` noise draws (:meth:`flows.ConditionalGlow.class_log_likelihoods`).

Example::

    >>> import torch
    >>> scores = torch.tensor([[0.0, -1.0], [-3.0, -1.0]])
    >>> accuracy(scores, torch.tensor([0, 0])).item()
    0.5
    >>> bits_per_dim(torch.zeros(1), num_dims=4).item()   # the uniform density on [-0.5, 0.5]^D
    8.0
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "NUM_BINS",
    "accuracy",
    "bits_per_dim",
    "log_mean_exp",
    "marginal_log_prob",
    "nats_to_bits_per_dim",
    "predictions",
]

#: 8-bit images: 256 intensity bins per dimension.
NUM_BINS = 256


def marginal_log_prob(class_log_likelihoods: Tensor) -> Tensor:
    r"""``(..., C) → (...)``: :math:`\log p(x) = \operatorname{logsumexp}_c \log p(x\mid c) - \log C`."""
    num_classes = class_log_likelihoods.shape[-1]
    return torch.logsumexp(class_log_likelihoods, dim=-1) - math.log(num_classes)


def log_mean_exp(values: Tensor, dim: int = 0) -> Tensor:
    r""":math:`\log \frac1S \sum_{s=1}^S e^{v_s}` along ``dim`` (``S`` its size), computed stably.

    With ``v_s = \log p(x, u_s) - \log q(u_s)``, ``u_s ~ q`` the model's noise draws, this is the
    importance-weighted estimate of :math:`\log p(x)` (Burda et al. 2016): a lower bound in
    expectation that tightens as ``S`` grows (Jensen), equal to the single-draw estimate at ``S = 1``.
    """
    return torch.logsumexp(values, dim=dim) - math.log(values.shape[dim])


def predictions(class_log_likelihoods: Tensor) -> Tensor:
    """``(..., C) → (...)`` int64: the Bayes decision ``argmax_c log p(x | c)`` (uniform prior)."""
    return class_log_likelihoods.argmax(dim=-1)


def accuracy(class_log_likelihoods: Tensor, labels: Tensor) -> Tensor:
    """Fraction (float64 scalar) of the batch whose Bayes prediction is the label."""
    return (predictions(class_log_likelihoods) == labels).to(torch.float64).mean()


def bits_per_dim(log_px: Tensor, num_dims: int, num_bins: int = NUM_BINS) -> Tensor:
    r"""Discretised negative log-likelihood in bits per data dimension.

    .. math:: \mathrm{bpd}(x) = \frac{-\log p(x)}{D \log 2} + \log_2(\text{num\_bins})

    ``log_px`` is the continuous log-density (nats) of data scaled to a unit-width range cut into
    ``num_bins`` bins, so ``p(x)·(1/num_bins)^D`` approximates the probability of ``x``'s bin and the
    formula is its ``−log₂`` per dimension. Example: the uniform density on [−0.5, 0.5]^D has
    ``log p = 0`` and gives exactly 8 bits/dim. ``D`` is the image's dimension (1·32·32 for
    padded MNIST, 3·32·32 for CIFAR-10), never the noise-doubled one.
    """
    return -log_px / (num_dims * math.log(2.0)) + math.log2(num_bins)


def nats_to_bits_per_dim(nats: Tensor | float, num_dims: int) -> Tensor | float:
    r"""A log-density difference in bits per dimension: :math:`\Delta / (D \log 2)`."""
    return nats / (num_dims * math.log(2.0))
