r"""The two terms of the joint NLL (Section 4.1, eq. 5), measured on a trained model.

.. math::
    \mathbb E_{(x,y)}[-\log p(x, y)]
    = \underbrace{\mathbb E_x[-\log p(x)]}_{\text{data term}}
    + \underbrace{\mathbb E_{(x,y)}[-\log p(y \mid x)]}_{\text{class term}}

with :math:`p(x) = \frac1C \sum_c p(x \mid c)` and :math:`p(y \mid x)` by Bayes' rule (uniform
class prior), so per image :math:`-\log p(x, y) = -\log p(x \mid y) + \log C`. A posterior that
ignores the image (uniform) makes the class term exactly :math:`\log C`; the paper's point is that
this is negligible beside the data term, so maximum likelihood barely penalises a model that
ignores the label.

Units. The data term is reported as a **discrete** NLL, the probability of the image's 8-bit bin:
:math:`-\log P(x) = -\log p(x) + D \log 256` nats per image (the continuous density of data in
[−0.5, 0.5] gives negative "NLLs" for a good model); per dimension in bits this is exactly
:func:`flows.measures.bits_per_dim`. The class term is the NLL of a discrete label: nats per
image, or bits per dimension as ``nats / (D ln 2)`` (no offset). The joint term is discretised like
the data term, so the decomposition holds in both units: ``joint = data + class``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from flows.measures import NUM_BINS, accuracy, marginal_log_prob, nats_to_bits_per_dim
from flows.noise import FixedNoise

__all__ = ["LikelihoodTerms", "likelihood_terms", "measure_likelihood_terms", "per_image_terms"]


def per_image_terms(
    class_log_likelihoods: Tensor, labels: Tensor, num_dims: int, num_bins: int = NUM_BINS
) -> tuple[Tensor, Tensor, Tensor]:
    r"""``(joint, data, class_)``: three ``(N,)`` float64 tensors in nats per image.

    .. math::
        \text{joint} &= -\log p(x \mid y) + \log C + D \log B, \\
        \text{data}  &= -\log p(x) + D \log B, \quad
            \log p(x) = \operatorname{logsumexp}_c \log p(x \mid c) - \log C, \\
        \text{class} &= -\log p(y \mid x)
            = \operatorname{logsumexp}_c \log p(x \mid c) - \log p(x \mid y),

    with ``B = num_bins`` (pass 1 for continuous nats) and ``D = num_dims``;
    ``joint = data + class`` exactly. ``class_log_likelihoods``: ``(N, C)`` ``log p(x | c)``.
    """
    if class_log_likelihoods.dim() != 2 or labels.shape != class_log_likelihoods.shape[:1]:
        raise ValueError(
            f"expected (N, C) class log-likelihoods and (N,) labels, got "
            f"{tuple(class_log_likelihoods.shape)} and {tuple(labels.shape)}"
        )
    values = class_log_likelihoods.double()
    log_c = math.log(values.shape[1])
    offset = num_dims * math.log(num_bins)
    chosen = values.gather(1, labels[:, None]).squeeze(1)
    joint = -chosen + log_c + offset
    data = -marginal_log_prob(values) + offset
    class_ = torch.logsumexp(values, dim=1) - chosen  # −log p(y | x)
    return joint, data, class_


@dataclass(frozen=True)
class LikelihoodTerms:
    """Means over ``num_images`` images of the eq. (5) terms, in nats per image.

    Attributes:
        joint_nats: :math:`\\mathbb E[-\\log P(x, y)]` (discrete, see the module docstring).
        data_nats: :math:`\\mathbb E[-\\log P(x)]` (discrete).
        class_nats: :math:`\\mathbb E[-\\log p(y \\mid x)]`.
        class_std_nats: standard deviation of ``−log p(y|x)`` over images.
        accuracy: share of images with ``argmax_c p(c|x) = y``.
        num_images, num_dims, num_classes: ``N``, ``D``, ``C``.
    """

    joint_nats: float
    data_nats: float
    class_nats: float
    class_std_nats: float
    accuracy: float
    num_images: int
    num_dims: int
    num_classes: int

    @property
    def log_num_classes(self) -> float:
        """``log C`` (nats): the class term of a uniform posterior."""
        return math.log(self.num_classes)

    def _per_dim(self, nats: float) -> float:
        return nats_to_bits_per_dim(nats, self.num_dims)

    @property
    def joint_bits_per_dim(self) -> float:
        return self._per_dim(self.joint_nats)

    @property
    def data_bits_per_dim(self) -> float:
        """The data term in bits/dim: the mean of :func:`flows.measures.bits_per_dim`."""
        return self._per_dim(self.data_nats)

    @property
    def class_bits_per_dim(self) -> float:
        return self._per_dim(self.class_nats)

    @property
    def log_num_classes_bits_per_dim(self) -> float:
        return self._per_dim(self.log_num_classes)

    @property
    def class_share(self) -> float:
        """Class term / joint NLL: its share of the objective of eq. (5)."""
        return self.class_nats / self.joint_nats

    @property
    def uniform_share(self) -> float:
        """``log C`` / data term: the most that ignoring the label costs, relative to the data term."""
        return self.log_num_classes / self.data_nats

    def to_dict(self) -> dict:
        """Every attribute and derived value, JSON-serialisable."""
        return {
            "num_images": self.num_images,
            "num_dims": self.num_dims,
            "num_classes": self.num_classes,
            "accuracy": self.accuracy,
            "joint_nats": self.joint_nats,
            "data_nats": self.data_nats,
            "class_nats": self.class_nats,
            "class_std_nats": self.class_std_nats,
            "log_num_classes_nats": self.log_num_classes,
            "joint_bits_per_dim": self.joint_bits_per_dim,
            "data_bits_per_dim": self.data_bits_per_dim,
            "class_bits_per_dim": self.class_bits_per_dim,
            "log_num_classes_bits_per_dim": self.log_num_classes_bits_per_dim,
            "class_share_of_joint": self.class_share,
            "log_num_classes_over_data": self.uniform_share,
        }


def likelihood_terms(
    class_log_likelihoods: Tensor, labels: Tensor, num_dims: int, num_bins: int = NUM_BINS
) -> LikelihoodTerms:
    """Mean eq. (5) terms over images from ``(N, C)`` ``log p(x|c)`` (nats) and ``(N,)`` labels."""
    joint, data, class_ = per_image_terms(class_log_likelihoods, labels, num_dims, num_bins)
    if len(joint) == 0:
        raise ValueError("likelihood_terms needs at least one image")
    return LikelihoodTerms(
        joint_nats=joint.mean().item(),
        data_nats=data.mean().item(),
        class_nats=class_.mean().item(),
        class_std_nats=class_.std().item() if len(class_) > 1 else 0.0,
        accuracy=accuracy(class_log_likelihoods, labels).item(),
        num_images=len(joint),
        num_dims=num_dims,
        num_classes=class_log_likelihoods.shape[1],
    )


def measure_likelihood_terms(
    model,
    x: Tensor,
    y: Tensor,
    noise_seed: int = 0,
    batch_size: int = 250,
    shared_noise: bool = False,
) -> LikelihoodTerms:
    """Encode ``x`` once per image (no grad) and return the mean eq. (5) terms.

    ``model`` has ``class_log_likelihoods(x, generator=..., shared_noise=...)`` and ``num_dims``
    (a :class:`flows.ConditionalGlow`). ``x`` is used as given: pass dequantised images
    (:func:`flows.preprocess.dequantize`) for the standard test-set estimate of Table 1.

    Model noise (padding border, noise channels): by default every image gets its own draw from
    one generator seeded with ``noise_seed`` (batches in order), so the mean is also an average
    over the noise, as in training and :mod:`flows.evaluate`; the values then depend on
    ``batch_size`` through the order of the draws, not in distribution. ``shared_noise=True``
    gives every image the same draw (:class:`flows.noise.FixedNoise`), batch-invariant but a
    single noise realisation for the whole set — which can move the accuracy of a model that
    reads the noise channels by several points (measured on ``cpu-cifar-reweight``).
    """
    if len(x) != len(y) or len(x) == 0:
        raise ValueError(f"expected as many images as labels (>= 1), got {len(x)} and {len(y)}")
    if shared_noise:
        fn = FixedNoise(model.class_log_likelihoods, noise_seed)
    else:
        generator = torch.Generator(device=x.device).manual_seed(noise_seed)

        def fn(batch: Tensor) -> Tensor:
            return model.class_log_likelihoods(batch, generator=generator)

    with torch.no_grad():
        values = torch.cat(
            [fn(x[start : start + batch_size]).double() for start in range(0, len(x), batch_size)]
        )
    return likelihood_terms(values, y, model.num_dims)
