r"""What the robustness test needs of a conditional generative model, and how to check a model.

The paper's test (Sections 4–6) asks four questions of a class-conditional generative model
:math:`p(x \mid y)`: is Bayes' rule on it accurate, is its likelihood :math:`p(x)` a usable
detector, do detector-aware attacks fool it, do interpolations and wrong labels pass as real?
All four need one thing: the class log-likelihoods of a batch,

.. math::
    \ell_{bc} = \log p(x_b \mid y = c) \quad\text{(nats)}, \qquad
    \log p(x) = \operatorname{logsumexp}_c \ell_c - \log C, \qquad
    \mathrm{bpd}(x) = \frac{-\log p(x)}{D \ln 2} + \log_2 256

(uniform class prior, :mod:`flows.measures`; ``D`` is the dimension the bits/dim convention
divides by). :class:`ConditionalGenerativeModel` states that interface;
:class:`flows.ConditionalGlow` satisfies it as it is, :func:`wrap` turns a plain callable into a
conforming object, and :func:`check_model` tests a model on a batch before anything is attacked
(shapes, finiteness, scale: log-likelihoods and not probabilities, randomness).

Wrapping models of other libraries (examples, not dependencies of this package):

- a normflows ``MultiscaleFlow(q0, flows, merges, transform, class_cond=True)`` (its Glow
  example, trained on images in [0, 1]) gives ``log p(x | y)`` for integer labels ``y``; a shift
  by 0.5 has a unit Jacobian, so the log-densities of [−0.5, 0.5] inputs are the same::

      def class_log_likelihoods(x, generator=None):
          labels = [torch.full((len(x),), c, device=x.device) for c in range(10)]
          return torch.stack([flow.log_prob(x + 0.5, y) for y in labels], dim=1)

      model = wrap(class_log_likelihoods, num_classes=10, num_dims=3 * 32 * 32)

- a zuko flow conditioned on a one-hot context, ``flow = zuko.flows.NSF(features=D, context=C)``
  (``flow(c)`` is the distribution given context ``c``)::

      def class_log_likelihoods(x, generator=None):
          z = x.flatten(1)
          one_hot = torch.eye(C, dtype=z.dtype, device=z.device)
          return torch.stack(
              [flow(one_hot[c].expand(len(z), C)).log_prob(z) for c in range(C)], dim=1
          )

      model = wrap(class_log_likelihoods, num_classes=C, num_dims=D, bounds=(-0.5, 0.5))

A model that draws noise itself (dequantisation, a padding border, a VAE's or a diffusion model's
sampling) should draw it from ``generator`` and say ``randomised=True``: the attacks then fix the
noise with a seed (:class:`flows.noise.FixedNoise`) or average over fresh draws
(:class:`flows.noise.FreshNoise`, EOT). :func:`wrap` makes a callable that draws from torch's
global generator reproducible under a seeded ``generator`` too.

Differences from the references: RobustBench models are discriminative ``(B, C)`` logits and
neither randomised nor detecting; AutoAttack's checks (``autoattack/checks.py``) flag softmax
outputs and randomness of a classifier. :func:`check_model` extends the first flag to
log-probabilities (a discriminative ``log_softmax`` has :math:`\operatorname{logsumexp}_c = 0`
for every row, class-conditional densities do not) and measures randomness by comparing seeded
generator draws instead of repeated global-RNG calls.
"""

from __future__ import annotations

import inspect
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch
from torch import Tensor

from flows.attacks.base import check_inputs
from flows.attacks.detector import LikelihoodDetector
from flows.attacks.threat_model import ThreatModel, flows_threat_model
from flows.measures import bits_per_dim, marginal_log_prob

__all__ = [
    "DEFAULT_BOUNDS",
    "ConditionalGenerativeModel",
    "ModelCheck",
    "ModelWarning",
    "WrappedModel",
    "as_threat_model",
    "check_model",
    "model_bits_per_dim",
    "model_bounds",
    "wrap",
]

#: the input range of this package's models (images scaled to [−0.5, 0.5]).
DEFAULT_BOUNDS: tuple[float, float] = (-0.5, 0.5)

#: tolerance of the probability / log-probability flags (per row, absolute).
_NORMALISED_ATOL = 1e-3


@runtime_checkable
class ConditionalGenerativeModel(Protocol):
    r"""A class-conditional generative model, as the robustness test sees it.

    Required:

    - ``class_log_likelihoods(x, generator=None) -> (B, C)``: :math:`\log p(x \mid y = c)` in
      nats for a batch ``x`` ``(B, ...)`` within ``bounds``, differentiable in ``x`` (the
      gradient attacks need it), ``-inf`` allowed where a class density is zero. A model that
      draws noise draws it from ``generator`` (a seeded ``torch.Generator``), so that a seeded
      generator gives a deterministic function.
    - ``num_classes: int``: ``C >= 2``.
    - and one of ``num_dims: int``, the ``D`` of bits/dim (then bits/dim is
      :func:`flows.measures.bits_per_dim` of :math:`\log p(x)`), or its own
      ``bits_per_dim(x, generator=None) -> (B,)`` (its own convention; it should still be an
      increasing affine map of :math:`-\log p(x)` with slope :math:`1/(D \ln 2)` for the
      detector's nats conversion, :class:`~flows.attacks.LikelihoodDetector`).

    Optional (read with ``getattr``):

    - ``randomised: bool``: the output depends on ``generator`` (default: unknown, measured by
      :func:`check_model`);
    - ``bounds: tuple[float, float]``: the input range (default :data:`DEFAULT_BOUNDS`);
    - ``class_scores(x, generator=None) -> (B, C)``: the model's own classification rule
      (default: Bayes' rule, ``argmax_c`` of the class log-likelihoods), as
      :meth:`flows.ConditionalGlow.class_scores` for the Split prior.

    ``isinstance(model, ConditionalGenerativeModel)`` checks the required members' presence
    only (a :class:`typing.Protocol` cannot check the either/or of ``num_dims`` and
    ``bits_per_dim``, nor signatures); :func:`check_model` checks the rest on a batch.
    """

    num_classes: int

    def class_log_likelihoods(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> Tensor: ...


@dataclass(frozen=True)
class WrappedModel:
    """A plain callable as a :class:`ConditionalGenerativeModel` (made by :func:`wrap`).

    Attributes:
        fn: ``fn(x) -> (B, C)`` or ``fn(x, generator=...) -> (B, C)``, log p(x | y = c) in nats.
        num_classes: C.
        num_dims: D of bits/dim.
        randomised: whether ``fn`` draws noise.
        bounds: the input range.
    """

    fn: Callable[..., Tensor]
    num_classes: int
    num_dims: int
    randomised: bool = False
    bounds: tuple[float, float] = DEFAULT_BOUNDS

    def class_log_likelihoods(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``(B, C)``: ``fn(x)``. A ``fn`` that takes no ``generator`` but is ``randomised``
        draws from torch's global generator: it is then run with that generator seeded from
        ``generator`` (inside :func:`torch.random.fork_rng`, the caller's state untouched), so a
        seeded ``generator`` still gives a deterministic function."""
        if _accepts_generator(self.fn):
            return self.fn(x, generator=generator)
        if generator is None or not self.randomised:
            return self.fn(x)
        seed = int(torch.randint(2**62, (1,), generator=generator, device=generator.device))
        devices = [x.device.index or 0] if x.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):
            torch.manual_seed(seed)
            return self.fn(x)

    def bits_per_dim(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """``(B,)``: :func:`flows.measures.bits_per_dim` of log p(x) with ``D = num_dims``."""
        return bits_per_dim(
            marginal_log_prob(self.class_log_likelihoods(x, generator)), self.num_dims
        )


def wrap(
    fn: Callable[..., Tensor],
    num_classes: int,
    num_dims: int,
    *,
    randomised: bool = False,
    bounds: tuple[float, float] = DEFAULT_BOUNDS,
) -> WrappedModel:
    """Turn ``fn(x[, generator]) -> (B, C)`` class log-likelihoods (nats) into a
    :class:`ConditionalGenerativeModel`.

    Args:
        fn: the class log-likelihoods of a batch ``(B, ...)``; it may take ``generator=``.
        num_classes: C, an integer >= 2.
        num_dims: D of bits/dim, an integer >= 1.
        randomised: ``fn`` draws noise (from ``generator``, or from torch's global generator).
        bounds: ``(lo, hi)``, finite, ``lo < hi``.

    Raises:
        TypeError: ``fn`` is not callable.
        ValueError: naming the argument, for values out of range.

    Example::

        >>> import torch
        >>> means = torch.tensor([[-1.0, 0.0], [1.0, 0.0]])
        >>> model = wrap(lambda x: -((x[:, None] - means) ** 2).sum(-1) / 2, 2, 2, bounds=(-3, 3))
        >>> model.class_log_likelihoods(torch.tensor([[0.5, 0.0]])).argmax(1).tolist()
        [1]
    """
    if not callable(fn):
        raise TypeError(
            f"fn: must be callable (x -> (B, C) log-likelihoods), got {type(fn).__name__}"
        )
    _check_int("num_classes", num_classes, 2)
    _check_int("num_dims", num_dims, 1)
    if not isinstance(randomised, bool):
        raise ValueError(f"randomised: must be a bool, got {randomised!r}")
    return WrappedModel(fn, num_classes, num_dims, randomised, _check_bounds(bounds))


def model_bounds(model: Any) -> tuple[float, float]:
    """The model's ``bounds`` (validated), or :data:`DEFAULT_BOUNDS` when it has none."""
    bounds = getattr(model, "bounds", None)
    return DEFAULT_BOUNDS if bounds is None else _check_bounds(bounds)


def model_bits_per_dim(model: Any, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    """``(B,)``: the model's own ``bits_per_dim(x, generator)`` when it has one, else
    :func:`flows.measures.bits_per_dim` of log p(x) with ``D = model.num_dims``."""
    own = getattr(model, "bits_per_dim", None)
    if callable(own):
        return own(x, generator=generator)
    num_dims = getattr(model, "num_dims", None)
    _check_int("model.num_dims", num_dims, 1)
    return bits_per_dim(
        marginal_log_prob(model.class_log_likelihoods(x, generator=generator)), num_dims
    )


def as_threat_model(
    model: Any,
    detector: LikelihoodDetector | None = None,
    *,
    noise: str = "fixed",
    noise_seed: int = 0,
    eps: float | None = None,
) -> ThreatModel:
    """The :class:`~flows.attacks.ThreatModel` of a :class:`ConditionalGenerativeModel`.

    :func:`~flows.attacks.flows_threat_model` with the model's ``bounds``. A model that says
    ``randomised=False`` is called as it is (no noise to fix: one batched call per query); any
    other (``randomised`` True or absent, as for :class:`flows.ConditionalGlow`) gets its noise
    fixed by ``noise_seed`` (``noise="fixed"``) or fresh at every query (``noise="fresh"``, the
    deployed model). With a ``detector``, the model needs ``bits_per_dim`` or ``num_dims``.
    """
    if detector is not None and not callable(getattr(model, "bits_per_dim", None)):
        num_dims = getattr(model, "num_dims", None)
        _check_int("model.num_dims", num_dims, 1)
        model = _WithBitsPerDim(model)
    deterministic = getattr(model, "randomised", None) is False
    return flows_threat_model(
        model,
        detector,
        noise=noise,
        noise_seed=None if deterministic else noise_seed,
        eps=eps,
        bounds=model_bounds(model),
    )


class ModelWarning(UserWarning):
    """A :func:`check_model` flag: the model may not be what the robustness test assumes."""


@dataclass(frozen=True)
class ModelCheck:
    """What :func:`check_model` found on a batch of ``num_examples`` inputs.

    Attributes:
        num_examples: B.
        num_classes: C.
        num_dims: the model's ``num_dims``, or None (it has its own ``bits_per_dim`` only).
        declared_randomised: the model's ``randomised`` attribute, or None when it has none.
        randomised: measured: the outputs differ under two differently seeded generators.
        reproducible: measured: two calls with equally seeded generators give equal outputs.
        zero_density_fraction: share of rows with a ``-inf`` class log-likelihood.
        bits_per_dim_consistent: the model's own ``bits_per_dim`` equals
            :func:`flows.measures.bits_per_dim` of log p(x) with its ``num_dims`` (relative
            1e-6); None unless it has both.
        flags: name → message, for each way the model differs from what the test assumes:
            ``probabilities``, ``log_probabilities``, ``zero_density``,
            ``randomised_undeclared``, ``declared_randomised_but_deterministic``,
            ``not_reproducible``, ``bits_per_dim_inconsistent``.
    """

    num_examples: int
    num_classes: int
    num_dims: int | None
    declared_randomised: bool | None
    randomised: bool
    reproducible: bool
    zero_density_fraction: float
    bits_per_dim_consistent: bool | None
    flags: dict[str, str] = field(default_factory=dict)

    @property
    def passed(self) -> bool:
        """No flag was raised."""
        return not self.flags

    def to_dict(self) -> dict:
        """JSON-ready."""
        return {
            "num_examples": self.num_examples,
            "num_classes": self.num_classes,
            "num_dims": self.num_dims,
            "declared_randomised": self.declared_randomised,
            "randomised": self.randomised,
            "reproducible": self.reproducible,
            "zero_density_fraction": self.zero_density_fraction,
            "bits_per_dim_consistent": self.bits_per_dim_consistent,
            "flags": dict(self.flags),
            "passed": self.passed,
        }


def check_model(model: Any, x: Tensor, *, seed: int = 0, warn: bool = True) -> ModelCheck:
    r"""Check that ``model`` is a usable :class:`ConditionalGenerativeModel` on the batch ``x``.

    Errors (the model cannot be tested) raise; doubts are *flags* in the returned
    :class:`ModelCheck` (and a :class:`ModelWarning` each, with ``warn``). The model is called
    four times under :func:`torch.no_grad`, with generators seeded ``seed``, ``seed`` again and
    ``seed + 1`` (class log-likelihoods) and ``seed`` (bits/dim).

    Flags:

    - ``probabilities``: every output lies in [0, 1] and every row sums to 1 (±1e-3): a softmax,
      not log-likelihoods;
    - ``log_probabilities``: :math:`|\operatorname{logsumexp}_c \ell_{bc}| \le 10^{-3}` for every
      row: a discriminative ``log_softmax`` :math:`\log p(y \mid x)`, not class-conditional
      densities (whose logsumexp is :math:`\log C + \log p(x)`, which varies with ``x``). With
      one row this can happen by chance; check a batch;
    - ``zero_density``: some class log-likelihood is ``-inf`` (a zero density: legitimate, but
      gradient attacks get no signal there, and a row that is ``-inf`` for every class has
      bits/dim ``+inf``);
    - ``randomised_undeclared``: ``randomised=False`` is declared, yet the outputs change with
      the generator's seed;
    - ``declared_randomised_but_deterministic``: ``randomised=True`` is declared, yet two seeds
      give equal outputs (the model ignores ``generator``?);
    - ``not_reproducible``: equal seeds give different outputs: the model draws noise from
      elsewhere (torch's global generator?), so no seed fixes it: take ``generator`` (or
      :func:`wrap` the callable with ``randomised=True``);
    - ``bits_per_dim_inconsistent``: the model's own ``bits_per_dim`` is not
      :func:`flows.measures.bits_per_dim` of its log p(x) with its ``num_dims`` (another
      convention: the detector's nats conversion then needs its slope).

    Args:
        model: the model.
        x: ``(B, ...)`` inputs within the model's bounds (real test inputs are best).
        seed: the first generator seed.
        warn: issue a :class:`ModelWarning` per flag.

    Raises:
        TypeError: a required member is missing or not callable, or an output is not a tensor.
        ValueError: naming what is wrong: ``num_classes`` / ``num_dims`` / ``bounds`` out of
            range, neither ``num_dims`` nor ``bits_per_dim``, ``x`` invalid (as
            :func:`flows.attacks.base.check_inputs`), outputs of the wrong shape or dtype, NaN
            or ``+inf`` outputs.
    """
    fn = getattr(model, "class_log_likelihoods", None)
    if not callable(fn):
        raise TypeError(
            f"model: must have a callable class_log_likelihoods(x, generator=None); got "
            f"{type(model).__name__}"
        )
    if not _accepts_generator(fn):
        raise TypeError(
            "model.class_log_likelihoods: must accept generator= (the noise source; ignore it "
            "if the model draws none), or wrap the callable with flows.robustness.wrap"
        )
    num_classes = getattr(model, "num_classes", None)
    _check_int("model.num_classes", num_classes, 2)
    num_dims = getattr(model, "num_dims", None)
    own_bits = getattr(model, "bits_per_dim", None)
    if num_dims is None and not callable(own_bits):
        raise ValueError(
            "model: needs num_dims (the D of bits/dim) or its own bits_per_dim(x, generator=None)"
        )
    if num_dims is not None:
        _check_int("model.num_dims", num_dims, 1)
    declared = getattr(model, "randomised", None)
    if declared is not None and not isinstance(declared, bool):
        raise ValueError(f"model.randomised: must be a bool, got {declared!r}")
    check_inputs(x, model_bounds(model))

    def generator(s: int) -> torch.Generator:
        return torch.Generator(device=x.device).manual_seed(s)

    b = x.shape[0]
    with torch.no_grad():
        first = _checked_scores(fn(x, generator=generator(seed)), b, num_classes)
        again = _checked_scores(fn(x, generator=generator(seed)), b, num_classes)
        other = _checked_scores(fn(x, generator=generator(seed + 1)), b, num_classes)
        bits = None
        if callable(own_bits):
            bits = own_bits(x, generator=generator(seed))
            _check_bits(bits, b)

    flags: dict[str, str] = {}
    finite = torch.isfinite(first)
    if bool(finite.all()) and bool(((first >= 0) & (first <= 1)).all()):
        sums = first.double().sum(1)
        if bool(((sums - 1).abs() <= _NORMALISED_ATOL).all()):
            flags["probabilities"] = (
                "every output lies in [0, 1] and every row sums to 1: these look like class "
                "probabilities (a softmax), not log p(x | y) in nats"
            )
    lse = torch.logsumexp(first.double(), dim=1)
    if bool((lse.abs() <= _NORMALISED_ATOL).all()):
        flags["log_probabilities"] = (
            "logsumexp over classes is 0 for every row: these look like log p(y | x) of a "
            "discriminative classifier (log_softmax), not class-conditional log-likelihoods"
        )
    zero = ~finite.all(dim=1)
    if bool(zero.any()):
        flags["zero_density"] = (
            f"{int(zero.sum())} of {b} rows have a -inf class log-likelihood (zero density): "
            "gradient attacks get no signal there"
        )
    randomised = not _same(first, other)
    reproducible = _same(first, again)
    if declared is False and randomised:
        flags["randomised_undeclared"] = (
            "randomised=False is declared, but the outputs change with the generator's seed"
        )
    if declared is True and not randomised:
        flags["declared_randomised_but_deterministic"] = (
            "randomised=True is declared, but two generator seeds give equal outputs (is "
            "generator used?)"
        )
    if not reproducible:
        flags["not_reproducible"] = (
            "equally seeded generators give different outputs: the model draws noise elsewhere "
            "(torch's global generator?); draw it from generator, or wrap(fn, randomised=True)"
        )
    consistent = None
    if bits is not None and num_dims is not None:
        expected = bits_per_dim(marginal_log_prob(first.double()), num_dims)
        consistent = bool(torch.allclose(bits.double(), expected, rtol=1e-6, atol=0.0))
        if not consistent:
            flags["bits_per_dim_inconsistent"] = (
                "the model's bits_per_dim is not bits_per_dim(log p(x), num_dims) (another "
                "convention: the detector converts bits/dim to nats with num_dims)"
            )
    if warn:
        for message in flags.values():
            warnings.warn(f"check_model: {message}", ModelWarning, stacklevel=2)
    return ModelCheck(
        num_examples=b,
        num_classes=num_classes,
        num_dims=num_dims,
        declared_randomised=declared,
        randomised=randomised,
        reproducible=reproducible,
        zero_density_fraction=float(zero.double().mean()),
        bits_per_dim_consistent=consistent,
        flags=flags,
    )


class _WithBitsPerDim:
    """A model with ``num_dims`` but no ``bits_per_dim``, given the standard one."""

    def __init__(self, model: Any):
        self.model = model
        self.num_classes = model.num_classes
        self.num_dims = model.num_dims
        self.bounds = model_bounds(model)
        self.randomised = getattr(model, "randomised", None)
        self.class_log_likelihoods = model.class_log_likelihoods
        scores = getattr(model, "class_scores", None)
        if callable(scores):
            self.class_scores = scores

    def bits_per_dim(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return model_bits_per_dim(self.model, x, generator)


def _checked_scores(scores: object, b: int, num_classes: int) -> Tensor:
    if not isinstance(scores, Tensor):
        raise TypeError(
            f"model.class_log_likelihoods: must return a tensor, got {type(scores).__name__}"
        )
    if not scores.is_floating_point():
        raise ValueError(
            f"model.class_log_likelihoods: must return floating-point values, got {scores.dtype}"
        )
    if tuple(scores.shape) != (b, num_classes):
        raise ValueError(
            f"model.class_log_likelihoods: must return (B, C) = ({b}, {num_classes}) (one "
            f"log-likelihood per example and class), got {tuple(scores.shape)}"
        )
    bad = torch.isnan(scores) | (scores == math.inf)
    if bool(bad.any()):
        row = int(torch.nonzero(bad.any(dim=1))[0])
        raise ValueError(
            f"model.class_log_likelihoods: NaN or +inf output (first at example {row}); "
            "log-likelihoods must be finite or -inf (zero density)"
        )
    return scores


def _check_bits(bits: object, b: int) -> None:
    if not isinstance(bits, Tensor):
        raise TypeError(f"model.bits_per_dim: must return a tensor, got {type(bits).__name__}")
    if tuple(bits.shape) != (b,):
        raise ValueError(f"model.bits_per_dim: must return ({b},), got {tuple(bits.shape)}")
    if bool(torch.isnan(bits).any()):
        row = int(torch.nonzero(torch.isnan(bits))[0])
        raise ValueError(f"model.bits_per_dim: NaN output (first at example {row})")


def _same(a: Tensor, b: Tensor) -> bool:
    """Equal, ``-inf`` entries included."""
    return bool(torch.equal(a, b))


def _check_int(name: str, value: object, low: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{name}: must be an integer >= {low}, got {value!r}")


def _check_bounds(bounds: object) -> tuple[float, float]:
    try:
        lo, hi = (float(v) for v in bounds)  # type: ignore[union-attr]
    except (TypeError, ValueError):
        raise ValueError(f"bounds: must be a pair (lo, hi) of numbers, got {bounds!r}") from None
    if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi):
        raise ValueError(f"bounds: must be finite with lo < hi, got {bounds!r}")
    return lo, hi


def _accepts_generator(fn: Callable[..., Any]) -> bool:
    try:
        params = inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False
    return "generator" in params or any(p.kind is p.VAR_KEYWORD for p in params.values())
