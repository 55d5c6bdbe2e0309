"""The GLOW layers, one per file; each is a :class:`flows.bijection.Bijection`."""

from flows.layers.actnorm import ActNorm
from flows.layers.coupling import AffineCoupling
from flows.layers.factor_out import FactorOut
from flows.layers.invconv import InvertibleConv1x1
from flows.layers.squeeze import Squeeze

__all__ = ["ActNorm", "AffineCoupling", "FactorOut", "InvertibleConv1x1", "Squeeze"]
