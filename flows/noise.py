"""Fixing a randomised model's noise: :class:`FixedNoise` makes it a deterministic function.

A flow classifier's outputs depend on noise it draws itself (the padding border and the noise
channels, :mod:`flows.preprocess`). Attacks need a deterministic function of the input, and the
analyses compare images under one noise realisation; both fix the noise with a seed here
(Section 6.2: adversarials found under a fixed seed are re-verified under a fresh one).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

__all__ = ["FixedNoise", "FreshNoise"]


class FixedNoise:
    """Make a randomised callable a deterministic function of its input, by fixing the noise.

    ``fn`` is either ``fn(x, generator=...)`` (it draws its noise from the generator; preferred),
    or draws from PyTorch's global generator, which is then seeded inside
    :func:`torch.random.fork_rng` so the caller's global random state is left untouched.

    With ``batch_invariant=True`` (default) all inputs see the *same* noise realisation and the
    output for an input does not depend on the batch it is in. A model draws one ``(B, ...)`` noise
    tensor per call, so in a plain batched call the noise of a row depends on its position; when
    ``fn`` accepts ``shared_noise`` (as :class:`flows.model.ConditionalGlow`'s methods do) one
    batched call with ``shared_noise=True`` gives every row the same draw, otherwise every example
    is evaluated on its own with a generator seeded by ``seed`` (one model call per example).
    ``batch_invariant=False`` makes one plain batched call per query: deterministic for a fixed
    batch layout only, which is not enough for attacks that query varying subsets of a batch (the
    Boundary attack) or for re-verification in another layout.
    """

    def __init__(self, fn: Callable[..., Tensor], seed: int, batch_invariant: bool = True):
        self.fn = fn
        self.seed = seed
        self.batch_invariant = batch_invariant
        self.takes_generator = _accepts_generator(fn)
        self.takes_shared_noise = self.takes_generator and _accepts(fn, "shared_noise")

    def __call__(self, x: Tensor) -> Tensor:
        if not self.batch_invariant or len(x) == 1:
            return self._call(x)
        if self.takes_shared_noise:
            return self._call(x, shared_noise=True)
        rows = [self._call(x[i : i + 1]) for i in range(len(x))]
        if isinstance(rows[0], tuple):  # several outputs per call: concatenate each
            return tuple(torch.cat(parts) for parts in zip(*rows, strict=True))
        return torch.cat(rows)

    def _call(self, x: Tensor, **shared: bool) -> Tensor:
        if self.takes_generator:
            gen = torch.Generator(device=x.device).manual_seed(self.seed)
            return self.fn(x, generator=gen, **shared)
        devices = [x.device.index or 0] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(self.seed)
            return self.fn(x)

    def reseeded(self, seed: int) -> FixedNoise:
        """The same callable under another (fresh) noise seed."""
        return FixedNoise(self.fn, seed, self.batch_invariant)


class FreshNoise:
    """A randomised callable as deployed: every call draws fresh noise, independently per row.

    ``fn(x, generator=...)`` receives this object's own generator, seeded once with ``seed`` and
    advanced by every call: the sequence of draws is reproducible, and no two calls (nor two
    rows of one call) share a draw. This is the *deployed* threat model of Section 6.2's
    adaptive evaluation: the attacker cannot fix the noise, and a query repeated ``K`` times in
    one batch (:func:`flows.attacks.threat_model.repeat_draws`) sees ``K`` independent draws.
    A callable that takes no ``generator`` draws from PyTorch's global generator as it is.

    Example::

        >>> import torch
        >>> noisy = FreshNoise(lambda x, generator=None: x + torch.rand(x.shape, generator=generator), 0)
        >>> x = torch.zeros(2, 1)
        >>> bool((noisy(x) != noisy(x)).all())  # a fresh draw per call
        True
    """

    def __init__(self, fn: Callable[..., Tensor], seed: int):
        self.fn = fn
        self.seed = seed
        self.takes_generator = _accepts_generator(fn)
        self._generators: dict[torch.device, torch.Generator] = {}

    def __call__(self, x: Tensor) -> Tensor:
        if not self.takes_generator:
            return self.fn(x)
        generator = self._generators.get(x.device)
        if generator is None:
            generator = torch.Generator(device=x.device).manual_seed(self.seed)
            self._generators[x.device] = generator
        return self.fn(x, generator=generator)


def _accepts_generator(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "generator" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())


def _accepts(fn: Callable[..., Any], name: str) -> bool:
    """Whether ``fn`` has a parameter called ``name`` (``**kwargs`` does not count: unknown use)."""
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
