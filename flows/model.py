"""The class-conditional GLOW: preprocessing → flow → class-conditional prior (Sections 2.1, 5).

Every method takes ``x``, a batch of images in [−0.5, 0.5] of the dataset's shape (``(B, 1, 28,
28)`` for MNIST); padding to 32×32 and the noise channels are done inside. Those draw random
numbers: pass a seeded ``generator`` for a deterministic, differentiable ``log p(x | y)`` (the
attacks do), or none to use torch's global generator. One encoding serves all classes: only the
prior depends on ``y``.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import torch
from torch import Tensor, nn

from flows.checkpoint import MODEL_KEYS, CheckpointError, load_checkpoint
from flows.glow import Glow
from flows.layers import AffineCoupling
from flows.measures import bits_per_dim, log_mean_exp, marginal_log_prob, predictions
from flows.objectives import OBJECTIVES
from flows.preprocess import add_noise_channels, pad_image
from flows.presets import ARCHITECTURE_FIELDS, Preset, get_preset
from flows.priors import (
    ClassCauchy,
    ClassGaussian,
    ClassGaussianLaplace,
    ClassLaplace,
    ClassPrior,
    LabelSmoothed,
    SplitPrior,
)
from flows.variants import get_variant

#: ``coupling_precision`` name → the dtype the coupling networks run in (None: float32).
COUPLING_PRECISIONS: dict[str, torch.dtype | None] = {"float32": None, "bfloat16": torch.bfloat16}


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model; saved as JSON beside every checkpoint."""

    preset: str
    #: the training variant (:data:`flows.variants.VARIANTS`); saved checkpoints call it ``prior``
    prior: str
    data_shape: tuple[int, int, int]
    padded_size: int
    levels: int
    steps: int
    hidden_channels: int
    num_classes: int = 10
    objective: str = "nll"
    split_sigma: float = 0.5
    split_weight: float = 1.0
    label_smoothing: float = 0.0
    coupling_precision: str = "float32"

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> ModelConfig:
        values = dict(values)
        values["data_shape"] = tuple(values["data_shape"])
        return cls(**values)


class FlowOutput(NamedTuple):
    """What one encoding gives: latents, ``log p(x|c)`` for every class, and the prior's logits."""

    z: Tensor
    class_log_likelihoods: Tensor
    logits: Tensor
    #: the classification rule's scores (:meth:`ConditionalGlow.class_scores`): ``logits`` for
    #: the Split prior, ``class_log_likelihoods`` otherwise.
    class_scores: Tensor


class ConditionalGlow(nn.Module):
    """Class-conditional GLOW; build it with :func:`build_model`."""

    def __init__(self, config: ModelConfig, generator: torch.Generator | None = None) -> None:
        super().__init__()
        self.config = config
        channels = config.data_shape[0]
        self.flow = Glow(
            in_channels=2 * channels,
            image_size=config.padded_size,
            levels=config.levels,
            steps=config.steps,
            hidden_channels=config.hidden_channels,
            generator=generator,
        )
        self.prior = _make_prior(config, self.flow.dim)
        self.set_coupling_precision(config.coupling_precision)

    def set_coupling_precision(self, precision: str) -> None:
        """Run every coupling network in ``precision`` ('float32' or 'bfloat16'); see below.

        'bfloat16' is faster on CPUs with AVX512-BF16 or AMX and on GPUs, and slower where
        bfloat16 is emulated (measured speed-ups: ``benchmarks/``). The model stays an exact bijection with an exact
        log-determinant and a normalised density (:class:`~flows.layers.AffineCoupling`); only
        the function the networks compute is rounded. Recorded in ``config``, so a saved model
        reloads with the precision it was trained in; call this to evaluate it in another.
        """
        if precision not in COUPLING_PRECISIONS:
            raise ValueError(
                f"coupling_precision must be one of {sorted(COUPLING_PRECISIONS)}, got {precision!r}"
            )
        for module in self.flow.modules():
            if isinstance(module, AffineCoupling):
                module.network_dtype = COUPLING_PRECISIONS[precision]
        self.config = dataclasses.replace(self.config, coupling_precision=precision)

    @property
    def num_dims(self) -> int:
        """``D``, the data dimension bits/dim divide by: ``C·32·32`` (padded, without noise)."""
        return self.config.data_shape[0] * self.config.padded_size**2

    @property
    def num_classes(self) -> int:
        return self.config.num_classes

    def encode(
        self, x: Tensor, generator: torch.Generator | None = None, shared_noise: bool = False
    ) -> tuple[Tensor, Tensor]:
        """``x → (z, logdet)`` with ``log p(x | y) = prior.log_prob(z, y) + logdet``.

        ``logdet`` is the flow's ``log|det ∂z/∂x̃|`` on the padded input ``x̃ = (pad(x), u)`` minus the
        noise channels' log-density ``log q(u)`` (:mod:`flows.preprocess`). ``shared_noise=True``
        gives every example the same padding and noise-channel draw, so that with a freshly seeded
        ``generator`` each output row depends on its own input only (not on the batch around it).
        """
        self._check_input(x)
        _check_generator(generator)
        padded = pad_image(x, self.config.padded_size, generator, shared=shared_noise)
        padded, log_q = add_noise_channels(padded, generator, shared=shared_noise)
        z, logdet = self.flow(padded)
        return z, logdet - log_q

    def decode(self, z: Tensor) -> Tensor:
        """``z → x`` of the dataset's shape (the exact inverse; noise channels and border dropped)."""
        padded, _ = self.flow.inverse(z)
        channels, height, width = self.config.data_shape
        top = (self.config.padded_size - height) // 2
        left = (self.config.padded_size - width) // 2
        return padded[:, :channels, top : top + height, left : left + width]

    def forward(self, x: Tensor, generator: torch.Generator | None = None) -> FlowOutput:
        """One encoding → :class:`FlowOutput` (what training needs; also what DDP wraps)."""
        z, logdet = self.encode(x, generator)
        class_log_likelihoods = self.prior.log_prob(z) + logdet[:, None]
        logits = self.prior.logits(z)
        scores = logits if self.prior.classifies_by_logits else class_log_likelihoods
        return FlowOutput(z, class_log_likelihoods, logits, scores)

    def class_log_likelihoods(
        self,
        x: Tensor,
        generator: torch.Generator | None = None,
        shared_noise: bool = False,
        draws: int = 1,
    ) -> Tensor:
        r"""``(B, C)``: ``log p(x | y = c)`` in nats, for every class from one encoding.

        The padding border and the noise channels ``u`` are drawn from ``q(u)``
        (:mod:`flows.preprocess`), and one draw gives :math:`\log p(x, u \mid c) - \log q(u)`, an
        estimate of :math:`\log p(x \mid c)` that is exact when the model's :math:`p(u \mid x)`
        equals :math:`q(u)` and otherwise a lower bound in expectation. ``draws = S > 1`` averages
        the likelihood ratio over ``S`` independent draws (the importance-weighted estimate,
        :func:`flows.measures.log_mean_exp`; ``S`` encodings), which is tighter in expectation:
        :math:`\log \frac1S \sum_s p(x, u_s \mid c) / q(u_s)`.
        """
        if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
            raise ValueError(f"draws: must be an integer >= 1, got {draws!r}")
        estimates = []
        for _ in range(draws):
            z, logdet = self.encode(x, generator, shared_noise)
            estimates.append(self.prior.log_prob(z) + logdet[:, None])
        if draws == 1:
            return estimates[0]
        return log_mean_exp(torch.stack(estimates), dim=0)

    def log_prob(
        self,
        x: Tensor,
        generator: torch.Generator | Tensor | None = None,
        shared_noise: bool = False,
        *,
        y: Tensor | None = None,
        draws: int = 1,
    ) -> Tensor:
        """``(B,)``: ``log p(x) = logsumexp_c log p(x | c) − log C`` (uniform class prior), or with
        labels ``y`` ``(B,)``, ``log p(x | y)``.

        normflows' ``model.log_prob(x, y)`` is accepted too: an integer tensor in the
        generator's place is taken as the labels ``y``. ``draws``: the importance-weighted
        estimate over that many noise draws (:meth:`class_log_likelihoods`).
        """
        if isinstance(generator, Tensor):
            if y is not None:
                raise TypeError("log_prob: labels given twice (a tensor as generator, and y)")
            generator, y = None, generator
        class_ll = self.class_log_likelihoods(x, generator, shared_noise, draws)
        if y is None:
            return marginal_log_prob(class_ll)
        self.prior._check_labels(y, x.shape[0])
        return class_ll.gather(1, y.to(class_ll.device, torch.int64)[:, None]).squeeze(1)

    @property
    def classification_rule(self) -> str:
        """``"likelihood"`` (Bayes' rule on ``p(x | y)``) or ``"logits"`` (the Split prior's
        ``z_s`` class scores, :class:`~flows.priors.SplitPrior`): what :meth:`class_scores`,
        :meth:`predict_proba` and :meth:`classify` use."""
        return "logits" if self.prior.classifies_by_logits else "likelihood"

    def class_scores(
        self, x: Tensor, generator: torch.Generator | None = None, shared_noise: bool = False
    ) -> Tensor:
        """``(B, C)``: the scores the model classifies by (softmax: ``p(y | x)``; argmax: the class).

        Under the ``"likelihood"`` rule (Gaussian-family priors) these are the class
        log-likelihoods ``log p(x | y = c)`` (:meth:`class_log_likelihoods`), i.e. Bayes' rule
        with a uniform class prior. Under the ``"logits"`` rule (the Split prior) they are
        ``log p(z_s | y = c)``, the logits its classification term is trained on (Section 5.3;
        the reasons: :class:`~flows.priors.SplitPrior`).
        """
        return self.class_scores_and_log_likelihoods(x, generator, shared_noise)[0]

    def class_scores_and_log_likelihoods(
        self, x: Tensor, generator: torch.Generator | None = None, shared_noise: bool = False
    ) -> tuple[Tensor, Tensor]:
        """``((B, C), (B, C))``: :meth:`class_scores` and :meth:`class_log_likelihoods` from one
        encoding (the classifier and the likelihood detector of one query)."""
        z, logdet = self.encode(x, generator, shared_noise)
        class_ll = self.prior.log_prob(z) + logdet[:, None]
        if self.prior.classifies_by_logits:
            return self.prior.logits(z), class_ll
        return class_ll, class_ll

    def predict_proba(
        self, x: Tensor, generator: torch.Generator | None = None, shared_noise: bool = False
    ) -> Tensor:
        """``(B, C)``: ``p(y | x)``, the softmax of :meth:`class_scores` (for the likelihood rule,
        Bayes' rule with a uniform class prior)."""
        return torch.softmax(self.class_scores(x, generator, shared_noise), dim=1)

    def classify(
        self, x: Tensor, generator: torch.Generator | None = None, shared_noise: bool = False
    ) -> Tensor:
        """``(B,)``: the predicted classes, ``argmax_c`` of :meth:`class_scores`."""
        return predictions(self.class_scores(x, generator, shared_noise))

    def bits_per_dim(
        self,
        x: Tensor,
        generator: torch.Generator | None = None,
        shared_noise: bool = False,
        draws: int = 1,
    ) -> Tensor:
        """``(B,)``: ``−log p(x)`` in bits per data dimension (:func:`flows.measures.bits_per_dim`).

        ``x`` is taken as a point of the continuous space; pass dequantised images for the standard
        estimate on a dataset. ``draws``: the importance-weighted estimate over that many noise
        draws (:meth:`class_log_likelihoods`).
        """
        return bits_per_dim(self.log_prob(x, generator, shared_noise, draws=draws), self.num_dims)

    @torch.no_grad()
    def initialise(self, x: Tensor, generator: torch.Generator | None = None) -> None:
        """Data-dependent actnorm initialisation from one batch (a no-op once initialised)."""
        self.encode(x, generator)

    def sample(
        self, y: Tensor | int, generator: torch.Generator | None = None, temperature: float = 1.0
    ) -> Tensor:
        """Images ``x ~ p(x | y)`` (dataset shape), by decoding prior samples.

        ``y``: ``(B,)`` integer labels, or a number of samples ``n`` (normflows'
        ``sample(n)``), whose labels are then drawn uniformly from ``generator``.
        """
        _check_generator(generator)
        if isinstance(y, int) and not isinstance(y, bool):
            if y < 1:
                raise ValueError(f"y: the number of samples must be >= 1, got {y}")
            device = next(self.parameters()).device if generator is None else generator.device
            y = torch.randint(self.num_classes, (y,), generator=generator, device=device)
        if not isinstance(y, Tensor):
            raise TypeError(
                f"y must be a tensor of labels or a sample count, got {type(y).__name__}"
            )
        if (
            not (isinstance(temperature, int | float) and math.isfinite(temperature))
            or temperature < 0
        ):
            raise ValueError(f"temperature must be a finite number >= 0, got {temperature!r}")
        return self.decode(self.prior.sample(y, generator=generator, temperature=temperature))

    def _check_input(self, x: Tensor) -> None:
        """``x`` must be a non-empty, finite floating batch of the dataset's shape."""
        expected = tuple(self.config.data_shape)
        if not isinstance(x, Tensor):
            raise TypeError(f"x must be a tensor of images, got {type(x).__name__}")
        if x.dim() != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(
                f"x: expected images shaped (B, {', '.join(map(str, expected))}), "
                f"got {tuple(x.shape)}"
            )
        if x.shape[0] == 0:
            raise ValueError("x: empty batch (B = 0)")
        if not x.is_floating_point():
            raise ValueError(f"x: expected floating-point images in [-0.5, 0.5], got {x.dtype}")
        if not bool(torch.isfinite(x).all()):
            bad = int((~torch.isfinite(x)).flatten(1).any(1).sum())
            raise ValueError(f"x: {bad} image(s) hold NaN or infinite pixels")


def _check_generator(generator: object) -> None:
    if generator is not None and not isinstance(generator, torch.Generator):
        raise TypeError(
            f"generator must be a torch.Generator or None, got {type(generator).__name__} (for "
            "log p(x | y) call model.log_prob(x, y=labels) or model.class_log_likelihoods(x))"
        )


def _make_prior(config: ModelConfig, dim: int) -> ClassPrior:
    family = get_variant(config.prior).prior
    classes = config.num_classes
    prior: ClassPrior
    if family == "gaussian":
        prior = ClassGaussian(dim, classes)
    elif family == "split":
        prior = SplitPrior(dim, classes, sigma=config.split_sigma)
    elif family == "laplace":
        prior = ClassLaplace(dim, classes)
    elif family == "cauchy":
        prior = ClassCauchy(dim, classes)
    else:
        prior = ClassGaussianLaplace(dim, classes)
    if config.label_smoothing > 0:
        prior = LabelSmoothed(prior, config.label_smoothing)
    return prior


def model_config(
    preset: str | Preset, variant: str, num_classes: int = 10, **overrides: object
) -> ModelConfig:
    """Resolve a preset, a training variant (:data:`flows.variants.VARIANTS`) and overrides into a
    :class:`ModelConfig`."""
    resolved = get_preset(preset)
    setting = get_variant(variant)
    allowed = set(ARCHITECTURE_FIELDS) | {
        "objective",
        "split_sigma",
        "split_weight",
        "label_smoothing",
        "coupling_precision",
    }
    unknown = set(overrides) - allowed
    if unknown:
        raise TypeError(f"unknown override(s) {sorted(unknown)}; allowed: {sorted(allowed)}")
    values: dict = {field: getattr(resolved, field) for field in ARCHITECTURE_FIELDS}
    values["objective"] = setting.objective
    values.update(overrides)
    if values["objective"] not in OBJECTIVES:
        raise ValueError(f"unknown objective {values['objective']!r}; expected one of {OBJECTIVES}")
    return ModelConfig(
        preset=resolved.name,
        prior=variant,
        data_shape=resolved.data_shape,
        padded_size=resolved.padded_size,
        num_classes=num_classes,
        **values,
    )


def build_model(
    preset: str | Preset,
    variant: str,
    num_classes: int = 10,
    generator: torch.Generator | None = None,
    **overrides: object,
) -> ConditionalGlow:
    """Build an untrained class-conditional GLOW.

    ``preset`` names a :data:`flows.presets.PRESETS` entry (or is a :class:`Preset`); ``variant`` is
    a training setting of :data:`flows.variants.VARIANTS` (its prior family and objective); ``overrides`` change ``levels``, ``steps``, ``hidden_channels``, and the
    prior options ``objective``, ``split_sigma``, ``split_weight``, ``label_smoothing``, and
    ``coupling_precision`` ('float32' or 'bfloat16', see
    :meth:`ConditionalGlow.set_coupling_precision`).
    ``generator`` seeds the random rotations of the 1×1 convolutions.
    """
    return ConditionalGlow(model_config(preset, variant, num_classes, **overrides), generator)


def load(path: str | Path, map_location: str | torch.device = "cpu") -> ConditionalGlow:
    """The trained model from a run folder (its ``checkpoint.pt``) or a checkpoint file, in eval mode.

    The file is read weights-only (:func:`flows.checkpoint.load_checkpoint`): a checkpoint from
    someone else cannot run code. Raises :class:`~flows.checkpoint.CheckpointError` for a file that
    is not a model checkpoint of this package.
    """
    checkpoint = load_checkpoint(path, map_location=map_location, required=MODEL_KEYS)
    return model_from_checkpoint(checkpoint, path).to(map_location).eval()


def model_from_checkpoint(checkpoint: dict, source: str | Path = "checkpoint") -> ConditionalGlow:
    """Rebuild the model of a loaded checkpoint dictionary (``model_config`` + ``model`` weights)."""
    try:
        config = ModelConfig.from_dict(checkpoint["model_config"])
        model = ConditionalGlow(config)
        model.load_state_dict(checkpoint["model"])
    except (TypeError, ValueError, KeyError, RuntimeError) as error:
        raise CheckpointError(
            f"{source} is not a model checkpoint of this package: {type(error).__name__}: "
            f"{str(error).splitlines()[0] if str(error) else ''}"
        ) from None
    return model
