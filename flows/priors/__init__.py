"""Class-conditional priors ``p(z | y)`` on the flat GLOW latent, one file each.

All follow :class:`flows.priors.base.ClassPrior`: ``log_prob(z) -> (B, C)`` for every class at
once (or ``(B,)`` given labels), ``sample(y)``, ``logits(z)``.
"""

from flows.priors.base import ClassPrior
from flows.priors.gaussian import ClassGaussian
from flows.priors.label_smoothing import LabelSmoothed
from flows.priors.robust import ClassCauchy, ClassGaussianLaplace, ClassLaplace
from flows.priors.split import SplitPrior

__all__ = [
    "ClassCauchy",
    "ClassGaussian",
    "ClassGaussianLaplace",
    "ClassLaplace",
    "ClassPrior",
    "LabelSmoothed",
    "SplitPrior",
]
