"""The threat model of Section 6.2: the one model object every attack and the verification take.

A :class:`ThreatModel` bundles what the attacker faces: a classifier (argmax of class scores), an
optional likelihood detector ("non-image" when bits/dim > T), the number of classes C, the input
bounds [−0.5, 0.5] and an L2 budget ε. Attacks see it through :meth:`ThreatModel.observe`
(differentiable class scores, and bits/dim when there is a detector); it also offers the C+1-way
decision used by the modified Boundary attack (classes ``0..C-1``, and ``C`` for "non-image").

Building one:

- from plain functions, for any PyTorch classifier: ``ThreatModel(logits_fn, num_classes=C)``,
  with ``bits_per_dim_fn`` and ``detector`` for the detection-aware attacks;
- from a flows-style class-conditional model (duck-typed: ``class_log_likelihoods``,
  ``num_classes``, ``bits_per_dim``, ``num_dims``): :func:`flows_threat_model`, which fixes the
  model's noise (:class:`flows.noise.FixedNoise`);
- a labels-only model (a decision function, for the decision-based Boundary attack):
  :class:`DecisionModel`.

Randomised models. A flow classifier's scores depend on dequantisation / padding noise. During an
attack the noise is fixed by a seed (:class:`~flows.noise.FixedNoise`), so the attacker sees a
deterministic function; the final verification is repeated under fresh noise (a
:class:`ThreatModel` built with another seed) and both verdicts are reported. Every input sees the
same noise realisation, whatever batch it is evaluated in.

One encoding per query (``bits_from_class_scores``). For a flows model the class scores are the
class log-likelihoods ``log p(x|y=c)`` and its bits/dim is a function of them
(:func:`flows.measures.marginal_log_prob` under the uniform class prior, then
:func:`flows.measures.bits_per_dim`). A :class:`ThreatModel` with ``bits_from_class_scores=True``
derives bits/dim from the class scores in :meth:`~ThreatModel.observe` and
:meth:`~ThreatModel.decision`, so a query costs one encoding instead of two (the same numbers under
the same fixed noise).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, replace
from typing import Any

import torch
from torch import Tensor

from flows.attacks.criteria import Observation
from flows.attacks.detector import LikelihoodDetector
from flows.measures import bits_per_dim, marginal_log_prob, predictions
from flows.noise import FixedNoise, FreshNoise

__all__ = ["DecisionModel", "ThreatModel", "flows_threat_model"]


@dataclass(frozen=True)
class ThreatModel:
    """Classifier + optional likelihood detector + number of classes + bounds + L2 budget.

    Attributes:
        logits_fn: ``(B, ...) -> (B, C)`` differentiable class scores; deterministic.
        bits_per_dim_fn: ``(B, ...) -> (B,)`` differentiable bits/dim, or None (no detector).
        detector: the threshold rule on bits/dim, or None.
        bounds: input bounds.
        eps: L2 budget ε for the statistics, or None.
        num_classes: C, the number of class scores ``logits_fn`` returns (keyword only).
        bits_from_class_scores: ``logits_fn`` returns class log-likelihoods ``log p(x|y=c)``
            (nats) and ``bits_per_dim_fn(x)`` equals
            ``bits_per_dim(logsumexp_c logits − log C, D)`` with ``D = detector.num_dims``
            (:func:`flows.measures.bits_per_dim`), as for flows models under the same fixed
            noise: :meth:`observe` and :meth:`decision` then compute bits/dim from the class
            scores (one encoding per query). Needs a detector. Keyword only.
        scores_and_bits_fn: ``(B, ...) -> ((B, C), (B,))``: the class scores and bits/dim of one
            model evaluation, for a model whose classifier is not Bayes' rule on its likelihood
            (the Split prior's ``z_s`` logits, :meth:`flows.ConditionalGlow.class_scores`):
            :meth:`observe` and :meth:`decision` then use it (one encoding per query). Needs a
            detector. Keyword only.
        randomised: the *deployed* threat model: every call of ``logits_fn`` /
            ``bits_per_dim_fn`` draws fresh noise, independently for every row of the batch
            (:func:`flows_threat_model` with ``noise="fresh"``). An attack on it averages over
            draws (EOT, ``observe(x, draws=K)``), and a decision is a majority over draws
            (``decision(x, draws=M)``). False: the functions are deterministic (the *fixed
            noise* threat model, where the attacker knows the draw). Keyword only.
        model_batch: the most input rows per call of the model functions, or None (one call).
            An attack batch of ``B`` inputs under ``K`` EOT or decision draws is ``K·B`` rows;
            larger inputs are evaluated in consecutive chunks of at most ``model_batch`` rows
            and the outputs concatenated (gradients flow through every chunk). The numbers are
            the same up to floating-point rounding (and, on a randomised model, which fresh
            draw each row gets). Calls of 64–200 rows are the fastest on a CPU for the GLOW
            models here, up to 1.5× faster per row than 400 (``benchmarks/model_batch.md``);
            raise it on a GPU. Keyword only.

    Example (a plain classifier, any callable)::

        >>> import torch
        >>> tm = ThreatModel(lambda x: x.flatten(1) @ torch.eye(4, 2), num_classes=2)
        >>> tm.classify(torch.tensor([[0.1, 0.3, 0.0, 0.0]])).tolist()
        [1]
    """

    logits_fn: Callable[[Tensor], Tensor]
    bits_per_dim_fn: Callable[[Tensor], Tensor] | None = None
    detector: LikelihoodDetector | None = None
    bounds: tuple[float, float] = (-0.5, 0.5)
    eps: float | None = None
    _: KW_ONLY
    num_classes: int
    bits_from_class_scores: bool = False
    randomised: bool = False
    scores_and_bits_fn: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None
    model_batch: int | None = None

    def __post_init__(self):
        _check_model_batch(self.model_batch)
        if (self.bits_per_dim_fn is None) != (self.detector is None):
            raise ValueError("bits_per_dim_fn and detector must be given together")
        _check_num_classes(self.num_classes)
        if self.scores_and_bits_fn is not None and self.detector is None:
            raise ValueError(
                "scores_and_bits_fn needs a detector (it gives the detector's bits/dim)"
            )
        if self.bits_from_class_scores and self.detector is None:
            raise ValueError(
                "bits_from_class_scores needs a detector (its num_dims is the D of bits/dim)"
            )

    @property
    def has_detector(self) -> bool:
        return self.detector is not None

    def observe(self, x: Tensor, with_detector: bool = True, draws: int = 1) -> Observation:
        """Differentiable class scores (and bits/dim when there is a detector).

        ``draws = K > 1`` (expectation over transformation): ``x`` ``(B, ...)`` is evaluated
        ``K`` times in *one* batched pass of ``K·B`` inputs, draw-major (row ``k·B + i`` is
        example ``i`` under draw ``k``), and the observation has ``K·B`` rows. On a randomised
        model each row sees its own noise; average per-example losses with
        :func:`mean_over_draws`. On a deterministic model the K rows are equal.
        """
        _check_draws(draws)
        if draws > 1:
            x = repeat_draws(x, draws)
        if with_detector and self.scores_and_bits_fn is not None:
            logits, bpd = self._scores_and_bits(x)
            return Observation(logits=logits, bits_per_dim=bpd)
        logits = self._scores(x)
        bpd = None
        if with_detector and self.bits_per_dim_fn is not None:
            bpd = self._bits_per_dim(x, logits)
        return Observation(logits=logits, bits_per_dim=bpd)

    def classify(self, x: Tensor, draws: int = 1) -> Tensor:
        """``(B,)`` argmax of the class scores; with ``draws = M > 1`` the majority label over
        ``M`` evaluations (:func:`majority_over_draws`; one batched pass of ``M·B`` inputs)."""
        _check_draws(draws)
        with torch.no_grad():
            labels = predictions(self._scores(repeat_draws(x, draws) if draws > 1 else x))
        return majority_over_draws(labels, draws) if draws > 1 else labels

    def bits_per_dim(self, x: Tensor) -> Tensor:
        """``(B,)`` the detector's statistic, from ``bits_per_dim_fn`` (no gradient)."""
        if self.bits_per_dim_fn is None:
            raise ValueError("this threat model has no detector")
        with torch.no_grad():
            return self._chunked(self.bits_per_dim_fn, x)

    def detected(self, x: Tensor) -> Tensor:
        """``(B,)`` bool, "non-image" verdicts of the detector."""
        bpd = self.bits_per_dim(x)  # raises without a detector
        return self.detector.detected(bpd)

    def decision(self, x: Tensor, draws: int = 1) -> Tensor:
        """The C+1-way decision: the class, or ``C`` ("non-image") when detected.

        One model call per query with ``bits_from_class_scores``, two otherwise. ``draws = M >
        1``: the majority decision over ``M`` evaluations in one batched pass
        (:func:`majority_over_draws`), what a decision-based attack on a randomised model
        queries so that its adversarials survive fresh noise.
        """
        _check_draws(draws)
        with torch.no_grad():
            inputs = repeat_draws(x, draws) if draws > 1 else x
            if self.scores_and_bits_fn is not None:
                logits, bpd = self._scores_and_bits(inputs)
            else:
                logits = self._scores(inputs)
                bpd = None if self.detector is None else self._bits_per_dim(inputs, logits)
            labels = predictions(logits)
            if bpd is not None:
                detected = self.detector.detected(bpd)
                labels = torch.where(detected, self.num_classes, labels)
        return majority_over_draws(labels, draws) if draws > 1 else labels

    def with_detector(
        self, detector: LikelihoodDetector | None, bits_per_dim_fn: Callable | None = None
    ) -> ThreatModel:
        """A copy with another (or no) detector; ``with_detector(None)`` is the classifier alone,
        the model the plain (not detection-aware) attacks face."""
        if detector is None:
            return replace(
                self,
                detector=None,
                bits_per_dim_fn=None,
                bits_from_class_scores=False,
                scores_and_bits_fn=None,
            )
        fn = self.bits_per_dim_fn if bits_per_dim_fn is None else bits_per_dim_fn
        joint = self.scores_and_bits_fn if bits_per_dim_fn is None else None
        if self.detector is None:
            joint = None
        return replace(self, detector=detector, bits_per_dim_fn=fn, scores_and_bits_fn=joint)

    def _chunked(self, fn: Callable[[Tensor], Any], x: Tensor) -> Any:
        """``fn(x)``, in consecutive chunks of at most ``model_batch`` rows whose outputs (a
        tensor, or a tuple of tensors) are concatenated along the rows."""
        size = self.model_batch
        if size is None or len(x) <= size:
            return fn(x)
        parts = [fn(chunk) for chunk in x.split(size)]
        if isinstance(parts[0], tuple):
            return tuple(torch.cat(outputs) for outputs in zip(*parts, strict=True))
        return torch.cat(parts)

    def _scores(self, x: Tensor) -> Tensor:
        logits = self._chunked(self.logits_fn, x)
        if logits.dim() != 2 or logits.shape != (len(x), self.num_classes):
            raise ValueError(
                f"logits_fn: must return class scores ({len(x)}, {self.num_classes}) (B, C with "
                f"num_classes = {self.num_classes}), got {tuple(logits.shape)}"
            )
        return logits

    def _scores_and_bits(self, x: Tensor) -> tuple[Tensor, Tensor]:
        logits, bpd = self._chunked(self.scores_and_bits_fn, x)
        if logits.dim() != 2 or logits.shape != (len(x), self.num_classes):
            raise ValueError(
                f"scores_and_bits_fn: must return class scores ({len(x)}, {self.num_classes}), "
                f"got {tuple(logits.shape)}"
            )
        if bpd.shape != (len(x),):
            raise ValueError(
                f"scores_and_bits_fn: must return bits/dim ({len(x)},), got {tuple(bpd.shape)}"
            )
        return logits, bpd

    def _bits_per_dim(self, x: Tensor, logits: Tensor) -> Tensor:
        """Bits/dim of ``x`` whose class scores are ``logits``: from them with
        ``bits_from_class_scores``, else from ``bits_per_dim_fn``."""
        if not self.bits_from_class_scores:
            return self._chunked(self.bits_per_dim_fn, x)
        return bits_per_dim(marginal_log_prob(logits), self.detector.num_dims)


@dataclass(frozen=True)
class DecisionModel:
    """A labels-only model: what the decision-based Boundary attack needs of a classifier.

    Attributes:
        decision_fn: ``(B, ...) -> (B,)`` integer labels. A C+1-way decision returns
            ``reject_label`` for inputs its detector rejects (:meth:`ThreatModel.decision`).
        num_classes: C (default: ``reject_label``, the C+1-way convention; None without it:
            unknown, so labels can only be checked to be ``>= 0``). A label outside ``[0, C)``
            would count as adversarial at the clean input.
        reject_label: the "non-image" label of a C+1-way decision, or None. Such inputs are
            ``rejected`` in the observation, which :class:`~flows.attacks.NotDetected` (without a
            detector) refuses: compose ``Misclassified(y) & NotDetected()``.
        bounds: input bounds.
    """

    decision_fn: Callable[[Tensor], Tensor]
    num_classes: int | None = None
    reject_label: int | None = None
    bounds: tuple[float, float] = (-0.5, 0.5)

    def __post_init__(self):
        if self.num_classes is not None and (
            isinstance(self.num_classes, bool) or self.num_classes < 1
        ):
            raise ValueError(f"num_classes: must be an integer >= 1, got {self.num_classes!r}")
        reject = self.reject_label
        if reject is not None and (isinstance(reject, bool) or reject < 0):
            raise ValueError(f"reject_label: must be an integer >= 0, got {reject!r}")
        if self.num_classes is None:
            object.__setattr__(self, "num_classes", reject)
        elif reject is not None and reject < self.num_classes:
            raise ValueError(
                f"reject_label: must not be a class label in [0, {self.num_classes}), got {reject}"
            )

    def observe(self, x: Tensor) -> Observation:
        """The decided labels (and which inputs are rejected, with a ``reject_label``)."""
        labels = self.decision_fn(x)
        rejected = None if self.reject_label is None else labels == self.reject_label
        return Observation(labels=labels, rejected=rejected)


def repeat_draws(x: Tensor, draws: int) -> Tensor:
    """``(K·B, ...)``: ``x`` ``(B, ...)`` stacked ``K = draws`` times, draw-major (row ``k·B + i``
    is example ``i`` under draw ``k``), the layout of :meth:`ThreatModel.observe` with draws."""
    _check_draws(draws)
    return x.repeat(draws, *([1] * (x.dim() - 1)))


def mean_over_draws(values: Tensor, draws: int) -> Tensor:
    r"""``(B, ...)``: the mean over draws of per-row ``values`` ``(K·B, ...)`` laid out draw-major
    (:func:`repeat_draws`), e.g. an attack's per-example loss under EOT:
    :math:`\frac1K \sum_k \ell(x; \text{noise}_k)`."""
    _check_draws(draws)
    if values.shape[0] % draws:
        raise ValueError(f"values: {values.shape[0]} rows are not a multiple of draws={draws}")
    return values.reshape(draws, -1, *values.shape[1:]).mean(0)


def majority_over_draws(labels: Tensor, draws: int) -> Tensor:
    """``(B,)``: the most frequent of the ``K = draws`` labels of each example, from ``labels``
    ``(K·B,)`` laid out draw-major; a tie goes to the smallest label (``torch.mode``)."""
    _check_draws(draws)
    if labels.shape[0] % draws:
        raise ValueError(f"labels: {labels.shape[0]} rows are not a multiple of draws={draws}")
    return labels.reshape(draws, -1).mode(dim=0).values


def _check_draws(draws: object) -> None:
    if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
        raise ValueError(f"draws: must be an integer >= 1, got {draws!r}")


def _check_model_batch(model_batch: object) -> None:
    if model_batch is None:
        return
    if isinstance(model_batch, bool) or not isinstance(model_batch, int) or model_batch < 1:
        raise ValueError(f"model_batch must be None or an integer >= 1, got {model_batch!r}")


def _check_num_classes(num_classes: object) -> None:
    if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 1:
        raise ValueError(f"num_classes must be an integer >= 1, got {num_classes!r}")


def flows_threat_model(
    model: Any,
    detector: LikelihoodDetector | None = None,
    *,
    noise: str = "fixed",
    noise_seed: int | None = 0,
    eps: float | None = None,
    bounds: tuple[float, float] | None = None,
    batch_invariant: bool = True,
    bits_from_class_scores: bool = False,
    model_batch: int | None = None,
) -> ThreatModel:
    """Threat model of a flows-style class-conditional model (duck-typed).

    ``model`` needs ``class_log_likelihoods(x) -> (B, C)`` (log p(x|y=c), nats), an integer
    ``num_classes`` (C) and, when a ``detector`` is given, ``bits_per_dim(x) -> (B,)``; methods
    that take ``generator=`` receive one seeded with ``noise_seed``, others are seeded through the
    global generator (:class:`~flows.noise.FixedNoise`, with ``batch_invariant``).
    ``noise_seed=None`` calls the methods as they are (deterministic models). ``model_batch``: the most
    rows per model call (:class:`ThreatModel`). ``bounds``: the
    input bounds, by default the model's ``bounds`` attribute when it has one, else [−0.5, 0.5].

    ``noise`` chooses the threat model: ``"fixed"`` (default; the attacker knows the noise draw,
    which :class:`~flows.noise.FixedNoise` fixes by ``noise_seed``) or ``"fresh"`` (deployed:
    every query draws fresh noise per row, :class:`~flows.noise.FreshNoise` seeded once by
    ``noise_seed``; the result has ``randomised=True``, and attacks average over draws).

    The classifier is the model's own rule: its ``class_scores(x)`` when it has one
    (:meth:`flows.ConditionalGlow.class_scores`: the ``z_s`` logits for the Split prior), else
    argmax_c log p(x|y=c), i.e. argmax p(y|x) under a uniform prior. The detector always uses
    the full likelihood.

    ``bits_from_class_scores=True`` (for models whose ``bits_per_dim`` is
    :func:`flows.measures.bits_per_dim` of :func:`flows.measures.marginal_log_prob` of the class
    log-likelihoods with ``D = model.num_dims``, as :class:`flows.ConditionalGlow`'s) makes each
    query encode the input once (:class:`ThreatModel`); it needs the detector's ``num_dims`` to be
    ``model.num_dims``. ``bits_per_dim_fn`` is kept for :meth:`ThreatModel.bits_per_dim`. Without
    a detector there are no bits/dim and the switch has no effect. A model with
    ``class_scores_and_log_likelihoods(x)`` gets the one encoding through
    ``scores_and_bits_fn`` (its class scores need not be the log-likelihoods); a model with
    ``class_scores`` but without that method gets two calls per query (its scores, and
    ``bits_per_dim``), never bits/dim computed from its scores.
    """
    for name in ("class_log_likelihoods",) + (("bits_per_dim",) if detector else ()):
        if not callable(getattr(model, name, None)):
            raise TypeError(f"model must have a callable {name}(x); got {type(model).__name__}")
    num_classes = getattr(model, "num_classes", None)
    if isinstance(num_classes, bool) or not isinstance(num_classes, int):
        raise TypeError(
            f"model must have an integer num_classes (C); got {num_classes!r} from "
            f"{type(model).__name__}"
        )
    one_encoding = bits_from_class_scores and detector is not None
    if one_encoding:
        num_dims = getattr(model, "num_dims", None)
        if not isinstance(num_dims, int):
            raise TypeError(
                "bits_from_class_scores needs an integer model.num_dims (the D of bits/dim); "
                f"got {num_dims!r}"
            )
        if num_dims != detector.num_dims:
            raise ValueError(
                f"bits_from_class_scores: the detector's num_dims {detector.num_dims} is not the "
                f"model's num_dims {num_dims} (the D its bits/dim divides by)"
            )

    if bounds is None:
        bounds = tuple(getattr(model, "bounds", (-0.5, 0.5)))
    if noise not in ("fixed", "fresh"):
        raise ValueError(f"noise: must be 'fixed' or 'fresh', got {noise!r}")
    randomised = noise == "fresh" and noise_seed is not None

    def fixed(fn: Callable[..., Tensor]) -> Callable[[Tensor], Tensor]:
        if noise_seed is None:
            return fn
        if randomised:
            return FreshNoise(fn, noise_seed)
        return FixedNoise(fn, noise_seed, batch_invariant)

    scores_fn = getattr(model, "class_scores", None)
    joint = getattr(model, "class_scores_and_log_likelihoods", None)
    scores_and_bits_fn = None
    if one_encoding and callable(joint):
        num_dims = model.num_dims

        def scores_and_bits(
            x: Tensor, generator: torch.Generator | None = None, shared_noise: bool = False
        ) -> tuple[Tensor, Tensor]:
            scores, class_ll = joint(x, generator, shared_noise)
            return scores, bits_per_dim(marginal_log_prob(class_ll), num_dims)

        scores_and_bits_fn = fixed(scores_and_bits)
        one_encoding = False
    elif one_encoding and callable(scores_fn):
        # the model's own class scores need not be its log-likelihoods (the Split prior's
        # logits): without the joint method, bits/dim come from bits_per_dim, a second call
        one_encoding = False
    return ThreatModel(
        logits_fn=fixed(scores_fn if callable(scores_fn) else model.class_log_likelihoods),
        bits_per_dim_fn=fixed(model.bits_per_dim) if detector is not None else None,
        detector=detector,
        bounds=bounds,
        eps=eps,
        num_classes=num_classes,
        bits_from_class_scores=one_encoding,
        randomised=randomised,
        scores_and_bits_fn=scores_and_bits_fn,
        model_batch=model_batch,
    )
