"""The threat model of Section 6.2, and adapters from randomised models to deterministic ones.

A :class:`ThreatModel` bundles what the attacker faces: a classifier (argmax of class scores), an
optional likelihood detector ("non-image" when bits/dim > T), the input bounds [−0.5, 0.5] and an
L2 budget ε. It offers the C+1-way decision used by the modified Boundary attack (classes
``0..C-1``, and ``C`` for "non-image") and :class:`Observation` s for gradient attacks.

Randomised models. A flow classifier's scores depend on dequantisation / padding noise. During an
attack the noise is fixed by a seed (:class:`FixedNoise`), so the attacker sees a deterministic
function; the final verification is repeated under fresh noise (a :class:`ThreatModel` built with
another seed) and both verdicts are reported. By default every input sees the same noise
realisation, whatever batch it is evaluated in (:class:`FixedNoise`).

One encoding per query. For a flows model the class scores are the class log-likelihoods
``log p(x|y=c)`` and its bits/dim is a function of them (``log p(x) = logsumexp_c − log C`` under the
uniform class prior, then :func:`flows.preprocess.bits_per_dim`). A :class:`ThreatModel` with
``bits_dims`` set derives bits/dim from the class scores in :meth:`ThreatModel.decision` and
:meth:`ThreatModel.observe`, so the C+1-way decision of the modified Boundary attack costs one
encoding per query instead of two (the same numbers under the same fixed noise).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from flows.attacks.criteria import Observation
from flows.attacks.detector import LikelihoodDetector
from flows.preprocess import bits_per_dim

__all__ = ["FixedNoise", "ThreatModel", "flows_threat_model"]


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
        return torch.cat([self._call(x[i : i + 1]) for i in range(len(x))])

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


@dataclass(frozen=True)
class ThreatModel:
    """Classifier + optional likelihood detector + bounds + L2 budget.

    Attributes:
        logits_fn: ``(B, ...) -> (B, C)`` differentiable class scores; deterministic.
        bits_per_dim_fn: ``(B, ...) -> (B,)`` differentiable bits/dim, or None (no detector).
        detector: the threshold rule on bits/dim, or None.
        bounds: input bounds.
        eps: L2 budget ε for the statistics, or None.
        bits_dims: None, or ``D`` when ``logits_fn`` returns class log-likelihoods
            ``log p(x|y=c)`` (nats) and ``bits_per_dim_fn(x)`` equals
            ``bits_per_dim(logsumexp_c logits − log C, D)`` (:func:`flows.preprocess.bits_per_dim`),
            as for flows models under the same fixed noise: :meth:`decision` and :meth:`observe`
            then compute bits/dim from the class scores (one encoding per query).
    """

    logits_fn: Callable[[Tensor], Tensor]
    bits_per_dim_fn: Callable[[Tensor], Tensor] | None = None
    detector: LikelihoodDetector | None = None
    bounds: tuple[float, float] = (-0.5, 0.5)
    eps: float | None = None
    bits_dims: int | None = None

    def __post_init__(self):
        if (self.bits_per_dim_fn is None) != (self.detector is None):
            raise ValueError("bits_per_dim_fn and detector must be given together")
        if self.bits_dims is not None and self.bits_dims < 1:
            raise ValueError(f"bits_dims must be None or >= 1, got {self.bits_dims}")

    @property
    def has_detector(self) -> bool:
        return self.detector is not None

    def observe(self, x: Tensor, with_detector: bool = True) -> Observation:
        """Differentiable class scores (and bits/dim when there is a detector)."""
        logits = self.logits_fn(x)
        bpd = None
        if with_detector and self.bits_per_dim_fn is not None:
            bpd = self._bits_per_dim(x, logits)
        return Observation(logits=logits, bits_per_dim=bpd)

    def _bits_per_dim(self, x: Tensor, logits: Tensor) -> Tensor:
        """Bits/dim of ``x`` whose class scores are ``logits``: from them when ``bits_dims``."""
        if self.bits_dims is None:
            return self.bits_per_dim_fn(x)
        log_px = torch.logsumexp(logits, dim=1) - math.log(logits.shape[1])
        return bits_per_dim(log_px, self.bits_dims)

    def classify(self, x: Tensor) -> Tensor:
        """``(B,)`` argmax of the class scores."""
        with torch.no_grad():
            return self.logits_fn(x).argmax(dim=1)

    def detected(self, x: Tensor) -> Tensor:
        """``(B,)`` bool, "non-image" verdicts of the detector."""
        if self.detector is None or self.bits_per_dim_fn is None:
            raise ValueError("this threat model has no detector")
        with torch.no_grad():
            return self.detector.detected(self.bits_per_dim_fn(x))

    def decision(self, x: Tensor) -> Tensor:
        """The C+1-way decision: the class, or ``C`` ("non-image") when detected.

        One model call per query when ``bits_dims`` is set, two otherwise.
        """
        with torch.no_grad():
            logits = self.logits_fn(x)
            labels = logits.argmax(dim=1)
            if self.detector is None:
                return labels
            detected = self.detector.detected(self._bits_per_dim(x, logits))
            return torch.where(detected, logits.shape[1], labels)

    def with_detector(
        self, detector: LikelihoodDetector | None, bits_per_dim_fn: Callable | None = None
    ) -> ThreatModel:
        """A copy with another (or no) detector."""
        fn = self.bits_per_dim_fn if bits_per_dim_fn is None else bits_per_dim_fn
        return replace(self, detector=detector, bits_per_dim_fn=None if detector is None else fn)


def flows_threat_model(
    model: Any,
    detector: LikelihoodDetector | None = None,
    *,
    noise_seed: int | None = 0,
    eps: float | None = None,
    bounds: tuple[float, float] = (-0.5, 0.5),
    batch_invariant: bool = True,
    bits_from_class_scores: bool = False,
) -> ThreatModel:
    """Threat model of a flows-style class-conditional model (duck-typed).

    ``model`` needs ``class_log_likelihoods(x) -> (B, C)`` (log p(x|y=c), nats) and, when a
    ``detector`` is given, ``bits_per_dim(x) -> (B,)``; methods that take ``generator=`` receive
    one seeded with ``noise_seed``, others are seeded through the global generator
    (:class:`FixedNoise`, with ``batch_invariant``). ``noise_seed=None`` calls the methods as
    they are (deterministic models). The classifier is argmax_c log p(x|y=c), i.e. argmax p(y|x)
    under a uniform prior.

    ``bits_from_class_scores=True`` (for models whose ``bits_per_dim`` is
    :func:`flows.preprocess.bits_per_dim` of ``log p(x) = logsumexp_c log p(x|c) − log C`` with
    ``D = model.num_dims``, as :class:`flows.ConditionalGlow`'s) sets ``bits_dims``, so the C+1-way
    decision encodes each query once; ``bits_per_dim_fn`` is kept for :meth:`ThreatModel.detected`
    and for gradient attacks.
    """
    for name in ("class_log_likelihoods",) + (("bits_per_dim",) if detector else ()):
        if not callable(getattr(model, name, None)):
            raise TypeError(f"model must have a callable {name}(x); got {type(model).__name__}")
    bits_dims = None
    if bits_from_class_scores and detector is not None:
        bits_dims = getattr(model, "num_dims", None)
        if not isinstance(bits_dims, int):
            raise TypeError(
                "bits_from_class_scores needs an integer model.num_dims (the D of bits/dim); "
                f"got {bits_dims!r}"
            )

    def fixed(fn: Callable[..., Tensor]) -> Callable[[Tensor], Tensor]:
        return fn if noise_seed is None else FixedNoise(fn, noise_seed, batch_invariant)

    return ThreatModel(
        logits_fn=fixed(model.class_log_likelihoods),
        bits_per_dim_fn=fixed(model.bits_per_dim) if detector is not None else None,
        detector=detector,
        bounds=bounds,
        eps=eps,
        bits_dims=bits_dims,
    )
