"""Argument checks shared by the public functions: errors name the argument, its value and the range."""

from __future__ import annotations

import math
import numbers

__all__ = ["check_real", "check_dimension"]


def check_real(
    name: str,
    value: object,
    *,
    low: float | None = None,
    high: float | None = None,
    low_inclusive: bool = False,
    high_inclusive: bool = False,
) -> float:
    """Return ``value`` as a finite float inside the stated interval, or raise.

    ``bool`` is rejected even though it is an ``int`` subclass: ``find_dimension(True, ...)`` is a bug.
    Raises ``TypeError`` for non-real types and ``ValueError`` for NaN, infinities and values out of
    range; the message names the argument, the value received and the valid range.
    """
    lo_br = "[" if low_inclusive else "("
    hi_br = "]" if high_inclusive else ")"
    valid = f"{lo_br}{'-inf' if low is None else low}, {'inf' if high is None else high}{hi_br}"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"{name} must be a real number in {valid}, got {value!r} of type {type(value).__name__}"
        )
    x = float(value)
    if not math.isfinite(x):
        raise ValueError(f"{name} must be a finite real number in {valid}, got {value!r}")
    too_low = low is not None and (x < low or (x == low and not low_inclusive))
    too_high = high is not None and (x > high or (x == high and not high_inclusive))
    if too_low or too_high:
        raise ValueError(f"{name} must lie in {valid}, got {value!r}")
    return x


def check_dimension(name: str, value: object) -> int:
    """Return ``value`` as a positive Python ``int`` (the dimension d >= 1), or raise.

    Integral floats such as ``1e9`` are accepted; ``bool`` and fractional values are not.
    """
    if isinstance(value, bool):
        raise TypeError(f"{name} must be a positive integer (>= 1), got {value!r}")
    if not isinstance(value, numbers.Integral):
        if isinstance(value, numbers.Real) and float(value).is_integer() and math.isfinite(value):
            value = int(value)
        else:
            raise TypeError(f"{name} must be a positive integer (>= 1), got {value!r}")
    if value < 1:
        raise ValueError(f"{name} must be a positive integer (>= 1), got {value!r}")
    return int(value)
