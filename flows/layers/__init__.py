"""The GLOW layers, one per file; each is a :class:`flows.bijection.Bijection`."""

from flows.layers.actnorm import ActNorm
from flows.layers.coupling import AffineCoupling
from flows.layers.invconv import InvertibleConv1x1
from flows.layers.split import ConditionalSplit
from flows.layers.squeeze import Squeeze

__all__ = ["ActNorm", "AffineCoupling", "ConditionalSplit", "InvertibleConv1x1", "Squeeze"]
