r"""The paper's robustness test as one call: :func:`evaluate` → :class:`RobustnessReport`.

For a :class:`~flows.robustness.ConditionalGenerativeModel` and labelled test inputs, the report
answers Sections 4–6's questions in stages, each cached as JSON so that a killed report resumes:

========================  ====================================================================
stage                     what it measures (the code it calls)
========================  ====================================================================
``model_check``           :func:`~flows.robustness.check_model`'s flags, and the share of inputs
                          whose margin gradient is zero or non-finite
                          (:func:`flows.attacks.non_finite_gradients`)
``clean``                 accuracy with its Wilson interval, bits/dim mean ± SE, and the known
                          accuracy of a calibration model beside it
``detector``              ROC of the likelihood detector (real test inputs against uniform noise
                          and the midpoints of test inputs of different classes) and
                          thresholds at chosen recalls
``likelihood_terms``      eq. 5's data and class terms (:func:`flows.analysis.likelihood_terms`)
``attacks``               Table 2's ensemble through :func:`flows.attacks.experiment.run_experiment`
                          (EOT when the model is randomised, and CW / APGD aiming ``kappa_factor``
                          margin spreads past the boundary: ``confidence="audit"``), its sanity
                          checks, the worst case
``interpolation``         Figure 3 (:func:`flows.analysis.evaluate_paths`, ``summarise_paths``)
``outliers``              Figure 4 (:func:`flows.analysis.wrong_class_nll`, ``outlier_summary``)
``calibration``           found / optimal distance of each attack, for a model with
                          ``optimal_distance`` (:mod:`flows.robustness.calibration`)
``leaderboard``           accuracy, bits/dim, undetected robust accuracy at ε
========================  ====================================================================

and collects *warning flags* (AutoAttack's idea, extended to detectors and generative
classifiers) in ``report["flags"]``: outputs that look like probabilities rather than
log-likelihoods (``probabilities``, ``log_probabilities``) and :func:`check_model`'s other flags;
a zero or non-finite margin gradient on more than 1 % of the inputs
(``zero_or_non_finite_gradients``); a randomised model attacked without EOT
(``randomised_without_eot``); a black-box attack significantly stronger than the white-box ones
(``black_box_stronger``); unbounded success below 100 %, some input broken by no member at any
distance (``unbounded_success_below_100``, :func:`broken_inputs`); an
attack more than ``calibration_factor`` × the optimal distance on a calibration model
(``calibration_<attack>``).

The statistics.

- Accuracy :math:`\hat a = k/N` with the Wilson score interval
  (:func:`flows.attacks.wilson_interval`); against a known accuracy :math:`a` the difference in
  standard errors :math:`(\hat a - a) / \sqrt{a(1-a)/N}`.
- Bits/dim: mean :math:`\bar b`, :math:`\mathrm{SE} = s/\sqrt N` (``s`` the sample standard
  deviation), interval :math:`\bar b \pm z\,\mathrm{SE}` (normal approximation, ``z = 1.96``).
- ROC (the detector flags :math:`b(x) > t`): for real inputs :math:`r_i` and non-images
  :math:`o_j`, :math:`\mathrm{FPR}(t) = \#\{r_i > t\}/N`, :math:`\mathrm{TPR}(t) = \#\{o_j > t\}/M`
  at every observed ``t``, and the area
  :math:`\mathrm{AUC} = \frac{1}{NM}\sum_{i,j} \bigl(\mathbb 1[o_j > r_i] + \tfrac12
  \mathbb 1[o_j = r_i]\bigr)` (Mann–Whitney), which equals the trapezoidal area under the
  curve. Thresholds at a recall ``q`` are :meth:`flows.attacks.LikelihoodDetector.from_quantile`.
- Undetected robust accuracy at ε: :math:`\hat a\,(1 - \hat s)`, :math:`\hat s` the worst-case
  success rate (fooled and undetected, verified) on the ``n`` attacked correctly classified
  inputs; its interval takes the Wilson interval of :math:`\hat s` (the accuracy's own sampling
  error is left out).
- Calibration: per attacked input :math:`\rho_i = \|x'_i - x_i\|_2 / d^*_T(x_i, y_i)`, ``inf``
  where no verified undetected adversarial was found; an attack is flagged when its median
  :math:`\rho` exceeds ``calibration_factor``. APGD attacks at a fixed ε, so :math:`\rho` is only
  bounded: a failure at an input with :math:`d^* \le \varepsilon/\text{factor}` means
  :math:`\rho > \text{factor}`; it is flagged when more than half of those inputs fail.

Conventions. Inputs are taken in the fixed order of :func:`flows.attacks.experiment.test_order`
(``order_seed``), the first ``num_test`` of them; the model's noise is fixed by ``noise_seed``
(:class:`flows.noise.FixedNoise`) for every stage but the attacks' deployed threat model.
Bits/dim is always :func:`flows.measures.bits_per_dim` of the class log-likelihoods with
``D = model.num_dims`` (else the input size); a model's own ``bits_per_dim`` is only checked
against it (``bits_per_dim_inconsistent``). The attacks run on a thin adapter of the model
(:class:`_Adapted`): ``run_experiment`` takes a flows-style model (``class_log_likelihoods``,
``num_classes``, ``bits_per_dim``, ``num_dims``) and fixes noise per row unless the model takes
``shared_noise``; the adapter adds ``bits_per_dim``, and lets a deterministic model ignore
``shared_noise`` (one batched call per query instead of one per row).

Resumption. With ``out``, each finished stage is written to ``out/stages/<stage>.json`` and the
attacks' finished batches to ``out/stages/attacks.partial/``; ``out/stages/config.json`` holds
the configuration's hash (configuration but ``model_batch``, a speed setting; model fingerprint,
test-set fingerprint). A rerun with
the same configuration continues from the finished stages, and its ``report.json`` equals an
uninterrupted run's but for ``timings``; another configuration is refused
(:class:`RobustnessError`, naming ``--restart``) unless ``restart=True``.

Differences from the references. Figure 3's share of undetected paths gets a Wilson interval
here (``paper_figures.figure3`` uses Clopper–Pearson); the ROC's midpoints are those of any two
test inputs of different classes (Figure 3's endpoints must also be correct and undetected);
the detector's threshold is always a recall quantile of the model's own test bits/dim (the
paper's fixed 1.4 / 4.0 bits/dim fit only its models). Measured on the calibration models
(d = 300, ``tests/robustness/test_report.py``): CW-det's median ratio 1.005 (two Gaussians, the
counterexample). Boundary-det: on the Gaussians 1.35 at 1000 steps, 1.10 at 2000, 1.04 at 3000
(the default; within the 5000 queries) and 1.007 at 5000. On the counterexample's annulus points
it was 11.4 from the paper's starting points alone: the pool's class-1 images lie on the outer
shell :math:`2 \le \|x\| \le 3` (the ball holds a fraction :math:`\lambda_2 \approx 10^{-5}` of
class 1), the walk converges to that shell's inner edge (distance about :math:`2 - \|x\|`), and
the unit ball, a region of undetected adversarials disconnected from it, is never found. The
contrast-reduced start (the middle of the bounds, the origin here, bisected towards ``x``:
``boundary_starts="pool+midpoint"``) lies on the radial path and gives 1.00001. APGD starts its first run at
the clean point (:class:`flows.attacks.APGDL2`, ``first_start="clean"``): AutoAttack's random
start at distance ε leaves the annulus for the gap, where both class log-likelihoods fall at the
same rate 1/τ and the margin gradient is exactly zero (it broke 10, 8, 1 and 0 of 10 annulus
points at ε = 0.15, 0.2, 0.3, 0.5; the clean start breaks all of them at every ε, at ratio 1.05
when ε = 1.05 d*, ``tests/attacks/test_apgd_clean_start.py``).

Shared with ``paper_figures`` (issue 20, item 5, for a later session): Figure 3's per-α curves
and Figure 4's outlier summary are the same :mod:`flows.analysis` calls as the ``interpolation``
and ``outliers`` stages; Section 4's eq. 5 table is ``likelihood_terms`` on dequantised images;
Table 2 is the ``attacks`` stage's ``run_experiment``. A trained run's figures could call the
stage functions here on its model and test split, given the detector threshold.
"""

from __future__ import annotations

import argparse
import base64
import dataclasses
import hashlib
import html
import inspect
import io
import json
import math
import os
import shutil
import time
import warnings
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from statistics import NormalDist
from typing import Any

import torch
from torch import Tensor
from tqdm.auto import tqdm

from flows.analysis import (
    alpha_grid,
    evaluate_paths,
    fraction_entirely_undetected,
    interpolate,
    likelihood_terms,
    margin_bounds,
    outlier_summary,
    select_pairs,
    summarise_paths,
    wrong_class_nll,
)
from flows.arguments import (
    NONNEGATIVE_INT,
    POSITIVE_FLOAT,
    POSITIVE_INT,
    PROBABILITY,
    Range,
    check_fields,
    option,
)
from flows.attacks.base import batches
from flows.attacks.detector import LikelihoodDetector
from flows.attacks.experiment import (
    GRADIENT_ATTACKS,
    KAPPA,
    PERFORMANCE_ONLY,
    QUORUM,
    SUCCESS_RULE,
    AttackConfig,
    ExperimentError,
    derive_seed,
    run_experiment,
    test_order,
)
from flows.attacks.sanity import gradient_vs_gradient_free, non_finite_gradients
from flows.attacks.statistics import wilson_interval
from flows.measures import bits_per_dim, marginal_log_prob, predictions
from flows.noise import FixedNoise
from flows.paper import MARGIN_DELTA
from flows.robustness.protocol import ModelWarning, as_threat_model, check_model, model_bounds
from flows.robustness.schema import SCHEMA_NAME, SCHEMA_VERSION, STAGE_KEYS, validate

__all__ = [
    "STAGES",
    "ReportConfig",
    "RobustnessError",
    "RobustnessReport",
    "auc",
    "broken_inputs",
    "evaluate",
    "roc_curve",
]

#: The public stages, in the order they run (``report["stages"]``).
STAGES = STAGE_KEYS
#: What each stage needs first (``scores``: the class log-likelihoods, predictions and bits/dim
#: of the test inputs, an internal stage kept out of ``report.json``).
DEPENDS: dict[str, tuple[str, ...]] = {
    "model_check": (),
    "scores": ("model_check",),
    "clean": ("scores",),
    "detector": ("scores",),
    "likelihood_terms": ("scores",),
    "attacks": ("model_check", "detector"),
    "interpolation": ("scores", "detector"),
    "outliers": ("scores", "detector"),
    "calibration": ("attacks",),
    "leaderboard": ("clean", "attacks"),
}
_ORDER = ("model_check", "scores") + STAGE_KEYS[1:]
#: The ensemble's members that minimise the distance (no budget), and the fixed-ε one.
MINIMUM_NORM = ("cw-det", "boundary-det", "match", "segment")
FIXED_EPS = ("apgd-det",)
#: The decision-based members (no gradients).
BLACK_BOX = ("boundary-det", "segment")
#: Members whose found / optimal ratio is flagged (the minimum-norm searches and APGD; likelihood
#: matching and the segment bound aim at a pool image, not at the nearest adversarial).
CALIBRATED = ("cw-det", "apgd-det", "boundary-det")
#: Largest share of inputs with a zero or non-finite margin gradient that raises no flag.
GRADIENT_THRESHOLD = 0.01
#: Confidence of every interval, and its two-sided normal quantile (1.95996…).
CONFIDENCE = 0.95
_Z = NormalDist().inv_cdf(0.5 + CONFIDENCE / 2)


class _Recalls:
    """The range of ``recalls``: a non-empty tuple of numbers in (0, 1]; on the command line
    comma-separated, ``1.0,0.786``."""

    def describe(self) -> str:
        return "comma-separated numbers in (0, 1], e.g. 1.0,0.786"

    def check(self, name: str, value: object) -> None:
        if not isinstance(value, tuple) or not value or not all(map(PROBABILITY.holds, value)):
            raise ValueError(
                f"{name} must be a non-empty tuple of numbers in (0, 1], got {value!r}"
            )

    def parse(self, text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(v) for v in text.split(","))
        except ValueError:
            values = ()
        if not values or not all(map(PROBABILITY.holds, values)):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}")
        return values

    def __call__(self, text: str) -> tuple[float, ...]:
        return self.parse(text)


RECALLS = _Recalls()


@dataclass(frozen=True)
class ReportConfig:
    """Everything that determines a report (saved in it, hashed for resumption). Every field is a
    ``python -m flows.robustness`` option ``--field-name`` with this default and range.

    The attack budgets default to a CPU-sized evaluation (the CLI of ``flows.attack`` defaults to
    the paper-sized 9 × 300 CW steps and 5000 Boundary steps); raise them for a final number and
    check ``report["attacks"]["sanity"]`` (``budget_converged``).
    """

    eps: float | None = option(
        None, "L2 budget ε of the attacks, in input units (needed by attacks)", POSITIVE_FLOAT
    )
    n: int = option(10, "inputs to attack: the first correctly classified ones", POSITIVE_INT)
    num_test: int | None = option(
        1000,
        "test inputs for accuracy, bits/dim, ROC and the analyses (the first of the fixed order)",
        POSITIVE_INT,
    )
    recalls: tuple[float, ...] = option(
        (1.0, 0.786), "recalls on real inputs at which to report detector thresholds", RECALLS
    )
    recall: float = option(
        1.0, "recall of the detector that the attacks and the analyses face", PROBABILITY
    )
    num_noise: int = option(100, "uniform-noise inputs (non-images) for the ROC", POSITIVE_INT)
    num_pairs: int = option(
        50, "pairs of test inputs: ROC midpoints and interpolation paths", POSITIVE_INT
    )
    num_alphas: int = option(21, "α values per interpolation path", Range(int, low=2))
    threat_model: str = option(
        "auto",
        "fixed (the attacker knows the noise draw), deployed (fresh noise, EOT), or auto: "
        "deployed for a randomised model, else fixed",
        choices=("auto", "fixed", "deployed"),
    )
    eot: int | None = option(
        None, "EOT draws per gradient step (deployed; default 8)", POSITIVE_INT
    )
    verify_draws: int | None = option(
        None,
        "fresh draws per verified adversarial (default: 32 randomised, 2 deterministic)",
        Range(int, low=2),
    )
    binary_search_steps: int = option(5, "CW: binary-search steps", POSITIVE_INT)
    cw_steps: int = option(200, "CW: Adam steps per binary-search step", POSITIVE_INT)
    stepsize: float = option(1e-3, "CW and likelihood matching: Adam step", POSITIVE_FLOAT)
    apgd_steps: int = option(50, "APGD: steps", POSITIVE_INT)
    boundary_steps: int = option(3000, "Boundary: steps", POSITIVE_INT)
    max_queries: int = option(5000, "Boundary: queries per input", POSITIVE_INT)
    confidence: float | str = option(
        "audit",
        "CW and APGD: κ, the log-posterior margin past the boundary (nats), or 'audit': "
        "kappa_factor × the median margin spread across fresh draws on the attacked inputs "
        "(deployed threat model; 0 under the fixed one)",
        KAPPA,
    )
    kappa_factor: float = option(
        3.0, "with confidence 'audit': κ in margin spreads", POSITIVE_FLOAT
    )
    decision_quorum: float = option(
        0.8,
        "Boundary, deployed: a point is adversarial when it holds in more than "
        "this fraction of its decision draws (0.5, a majority, leaves the walk where fresh "
        "draws fool about half the time and the verification rejects most of its adversarials; "
        "0.8 as Table 2, benchmarks/table2_budget.md)",
        QUORUM,
    )
    boundary_starts: str = option(
        "pool+midpoint",
        "Boundary: starting points: pool (Section 6.2's) or pool+midpoint (also the "
        "contrast-reduced input)",
        choices=("pool", "pool+midpoint"),
    )
    match_steps: int = option(100, "likelihood matching: steps", POSITIVE_INT)
    segment_grid: int = option(32, "segment bound: grid points", POSITIVE_INT)
    pool_size: int = option(
        200, "test inputs (not attacked) for starting points and targets", POSITIVE_INT
    )
    sanity: bool = option(True, "run the attacks' sanity checks (reruns on --sanity-n inputs)")
    sanity_n: int = option(4, "inputs of the sanity reruns", POSITIVE_INT)
    batch_size: int = option(50, "inputs per model call and per attack batch", POSITIVE_INT)
    model_batch: int = option(
        64,
        "attacks: most input rows per model call (an attack batch times its EOT or decision "
        "draws is split into calls of at most this many rows; speed only, raise it on a GPU)",
        POSITIVE_INT,
    )
    check_n: int = option(64, "inputs for the model check and the gradient check", POSITIVE_INT)
    seed: int = option(0, "seed of the attacks, the pairs and the noise inputs", NONNEGATIVE_INT)
    noise_seed: int = option(0, "seed of the model's fixed noise", NONNEGATIVE_INT)
    order_seed: int = option(0, "seed of the fixed order of the test inputs", NONNEGATIVE_INT)
    delta: float = option(
        MARGIN_DELTA,
        "δ of the wrong-class margin bound (Section 6.4)",
        Range(float, 0, 1, True, True),
    )
    calibration_factor: float = option(
        2.0, "flag an attack whose found / optimal distance exceeds this", Range(float, low=1)
    )

    def __post_init__(self):
        check_fields(self)


class RobustnessError(ValueError):
    """The report cannot be made with these inputs (no ε for the attacks, too few correct inputs,
    a stage cache made with another configuration…); one line, naming the option."""


@dataclass(frozen=True)
class RobustnessReport:
    """The report: ``data`` is the JSON-ready dict of :data:`flows.robustness.schema.SCHEMA`.

    ``report["clean"]`` etc. index ``data``; :meth:`save` writes ``report.json`` (validated),
    ``report.md``, ``report.html`` (figures embedded) and ``figures/*.png``.
    """

    data: dict

    def __getitem__(self, key: str) -> Any:
        return self.data[key]

    @property
    def flags(self) -> dict[str, dict]:
        """Warning flags: name → ``{"stage", "message"}`` (empty: none raised)."""
        return self.data["flags"]

    @property
    def leaderboard(self) -> dict | None:
        """The leaderboard row (None when the stage did not run)."""
        return self.data["leaderboard"]

    def to_json(self) -> str:
        """Strict JSON (validated against the schema first)."""
        validate(self.data)
        return json.dumps(self.data, indent=1, allow_nan=False)

    def figures(self) -> dict[str, bytes]:
        """PNG bytes of the figures whose stages ran: ``roc``, ``bits_per_dim``,
        ``interpolation``, ``attacks``."""
        out = {}
        for name, draw in _FIGURES.items():
            made = draw(self.data)
            if made is not None:
                out[name] = _png(made[0])
        return out

    def to_markdown(self, figure_folder: str | None = None) -> str:
        """The report as Markdown; with ``figure_folder``, links to ``<folder>/<name>.png``
        (the files :meth:`save` writes)."""
        links = None
        if figure_folder is not None:
            links = {
                name: f"{figure_folder}/{name}.png"
                for name, stage in _FIGURE_STAGES.items()
                if self.data[stage] is not None
            }
        return _render_markdown(_blocks(self.data), links)

    def to_html(self) -> str:
        """The report as one HTML page, its figures embedded as base64 PNG."""
        return _render_html(_blocks(self.data), self.figures(), _title(self.data))

    def save(self, out: str | Path) -> dict[str, Path]:
        """Write ``report.json``, ``report.md``, ``report.html`` and ``figures/*.png`` into
        ``out`` (created); returns their paths."""
        out = Path(out)
        (out / "figures").mkdir(parents=True, exist_ok=True)
        text = self.to_json()
        figures = self.figures()
        paths = {}
        for name, png in figures.items():
            paths[f"figures/{name}.png"] = _write(out / "figures" / f"{name}.png", png)
        paths["report.json"] = _write(out / "report.json", text.encode())
        paths["report.md"] = _write(out / "report.md", self.to_markdown("figures").encode())
        page = _render_html(_blocks(self.data), figures, _title(self.data))
        paths["report.html"] = _write(out / "report.html", page.encode())
        return paths


def evaluate(
    model: Any,
    test_set: Any,
    config: ReportConfig | None = None,
    *,
    out: str | Path | None = None,
    stages: Sequence[str] | None = None,
    restart: bool = False,
    progress: bool = True,
    **options: Any,
) -> RobustnessReport:
    """The robustness report of ``model`` on ``test_set`` (module docstring).

    Args:
        model: a :class:`~flows.robustness.ConditionalGenerativeModel` (checked by
            :func:`~flows.robustness.check_model`; a plain callable: :func:`~flows.robustness.wrap`
            it first).
        test_set: ``(x, y)`` or ``{"x": x, "y": y}``: inputs ``(N, ...)`` within the model's
            bounds, integer labels ``(N,)``.
        config: the settings (default :class:`ReportConfig`); ``options`` override its fields,
            ``evaluate(model, data, eps=0.5, n=20)``.
        out: a folder: the stages are cached in ``out/stages`` (resumable) and ``report.json``,
            ``report.md``, ``report.html`` written there. None: nothing is written.
        stages: the stages to run (:data:`STAGES`; their dependencies run too); default all.
        restart: discard ``out/stages`` first.
        progress: a tqdm bar over the stages (and the attacks' own bars).

    Raises:
        RobustnessError: one line naming the option: no ε for the attacks, too few correctly
            classified inputs, unusable thresholds, a cache made with another configuration.
        TypeError, ValueError: an invalid model (as :func:`check_model`), test set or option.
    """
    config = config if config is not None else ReportConfig()
    if options:
        unknown = sorted(set(options) - {f.name for f in dataclasses.fields(ReportConfig)})
        if unknown:
            raise TypeError(f"evaluate: unknown option(s) {unknown}; see ReportConfig's fields")
        config = dataclasses.replace(config, **options)
    wanted = _resolve_stages(stages)
    if config.eps is None and "attacks" in wanted:
        raise RobustnessError(
            "eps: the attacks stage needs an L2 budget (--eps E, or evaluate(..., eps=E))"
        )
    run = _Run.create(model, test_set, config, progress)
    store = None
    if out is not None:
        store = _StageStore(Path(out) / "stages", run.meta)
        store.open(restart)
    results: dict[str, dict] = {}
    timings: dict[str, float] = {}
    with tqdm(wanted, desc="robustness report", unit="stage", disable=not progress) as bar:
        for name in bar:
            bar.set_postfix(stage=name)
            cached = None if store is None else store.load(name)
            if cached is None:
                started = time.perf_counter()
                result = _round_trip(_STAGE_FUNCTIONS[name](run, results, store))
                seconds = time.perf_counter() - started
                if store is not None:
                    store.save(name, result, seconds)
            else:
                result, seconds = cached
            results[name], timings[name] = result, seconds
    report = RobustnessReport(_assemble(run, results, timings))
    validate(report.data)
    if out is not None:
        report.save(out)
    return report


# ----------------------------------------------------------------------------------------------
# The run: the model, the test inputs, the adapter
# ----------------------------------------------------------------------------------------------


@dataclass
class _Run:
    """What every stage shares: the model, the ``num_test`` inputs ``x`` ``(N, ...)`` and labels
    ``y`` ``(N,)`` of the fixed order (``indices`` into the stored test set), the configuration and
    ``meta`` (what the report says about the model and the test set, and the hash)."""

    model: Any
    x_all: Tensor
    y_all: Tensor
    x: Tensor
    y: Tensor
    indices: Tensor
    config: ReportConfig
    num_dims: int
    meta: dict
    progress: bool

    @classmethod
    def create(cls, model: Any, test_set: Any, config: ReportConfig, progress: bool) -> _Run:
        x_all, y_all = _test_tensors(test_set)
        num_classes = getattr(model, "num_classes", None)
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"model.num_classes: must be an integer >= 2, got {num_classes!r}")
        if not callable(getattr(model, "class_log_likelihoods", None)):
            raise TypeError(
                "model: must have a callable class_log_likelihoods(x, generator=None); got "
                f"{type(model).__name__}"
            )
        if int(y_all.max()) >= num_classes:
            raise ValueError(
                f"test_set: labels must lie in [0, {num_classes}) (model.num_classes), got "
                f"{int(y_all.max())}"
            )
        own = getattr(model, "num_dims", None)
        declared_dims = isinstance(own, int) and not isinstance(own, bool) and own >= 1
        num_dims = own if declared_dims else x_all[0].numel()
        order = test_order(len(x_all), config.order_seed)
        used = order[: config.num_test] if config.num_test is not None else order
        declared = getattr(model, "randomised", None)
        model_info = {
            "class": f"{type(model).__module__}.{type(model).__qualname__}",
            "num_classes": num_classes,
            "num_dims": num_dims,
            "num_dims_source": "model.num_dims" if declared_dims else "input size",
            "bounds": list(model_bounds(model)),
            "declared_randomised": declared if isinstance(declared, bool) else None,
            "fingerprint": _model_fingerprint(model, x_all),
        }
        test_info = {
            "size": len(x_all),
            "used": len(used),
            "shape": list(x_all.shape[1:]),
            "dtype": str(x_all.dtype).replace("torch.", ""),
            "order": f"torch.randperm(N, generator=torch.Generator().manual_seed({config.order_seed}))"
            f", the first {len(used)}",
            "fingerprint": _tensor_fingerprint(x_all, y_all),
        }
        config_json = _round_trip(dataclasses.asdict(config))
        hashed = {k: v for k, v in config_json.items() if k not in PERFORMANCE_ONLY}
        digest = hashlib.sha256(
            json.dumps(
                {"config": hashed, "model": model_info, "test_set": test_info},
                sort_keys=True,
            ).encode()
        ).hexdigest()
        meta = {"config": config_json, "model": model_info, "test_set": test_info, "hash": digest}
        return cls(
            model,
            x_all,
            y_all,
            x_all[used],
            y_all[used],
            used,
            config,
            num_dims,
            meta,
            progress,
        )

    def adapter(self, done: Mapping[str, dict]) -> _Adapted:
        """The model as ``run_experiment`` and :mod:`flows.analysis` take it."""
        return _Adapted(self.model, self.num_dims, done["model_check"]["randomised"])

    def scores(self, done: Mapping[str, dict]) -> tuple[Tensor, Tensor, Tensor]:
        """``(class log-likelihoods (N, C), predictions (N,), bits/dim (N,))`` float64 / int64,
        from the ``scores`` stage."""
        saved = done["scores"]
        ll = _tensor(saved["class_log_likelihoods"])
        predicted = torch.tensor(saved["predicted"], dtype=torch.long)
        return ll, predicted, _tensor(saved["bits_per_dim"])

    def bits(self, adapter: _Adapted, x: Tensor) -> Tensor:
        """``(B,)`` float64 bits/dim of ``x`` under the fixed noise, batch by batch."""
        fn = FixedNoise(adapter.bits_per_dim, self.config.noise_seed)
        with torch.no_grad():
            parts = [fn(x[s]).double() for s in batches(len(x), self.config.batch_size)]
        return torch.cat(parts) if parts else torch.zeros(0, dtype=torch.float64)


class _Adapted:
    """A :class:`~flows.robustness.ConditionalGenerativeModel` as a flows-style model.

    ``run_experiment``, :func:`flows.attacks.flows_threat_model` and :mod:`flows.analysis` call
    ``class_log_likelihoods`` / ``bits_per_dim`` / ``class_scores`` with ``generator=`` and, when
    the method takes it, ``shared_noise=True`` (one batched call with one noise draw for every
    row; otherwise :class:`~flows.noise.FixedNoise` calls the model once per row). The adapter
    gives ``bits_per_dim`` (the standard one, from the class log-likelihoods with ``num_dims``),
    and ``shared_noise`` where it is safe: the model is deterministic (``randomised`` False: it
    is ignored) or takes it itself. ``state_dict`` is forwarded (the attacks' cache fingerprint).

    A model with its own ``class_scores`` also gets ``class_scores_and_log_likelihoods(x,
    generator, shared_noise) -> ((B, C), (B, C))``, the model's own when it has one, else the two
    methods under one noise draw (:func:`_one_draw`): ``run_experiment`` computes the detector's
    bits/dim from the threat model's class scores unless the model has this method
    (:func:`flows.attacks.flows_threat_model`, ``bits_from_class_scores``), and a model's own
    scores (the Split prior's logits) are not log-likelihoods.
    """

    def __init__(self, model: Any, num_dims: int, randomised: bool):
        self.model = model
        self.num_classes = model.num_classes
        self.num_dims = num_dims
        self.bounds = model_bounds(model)
        self.randomised = randomised
        self.class_log_likelihoods = _noise_method(model.class_log_likelihoods, randomised)
        scores = getattr(model, "class_scores", None)
        if callable(scores):
            self.class_scores = _noise_method(scores, randomised)
            joint = getattr(model, "class_scores_and_log_likelihoods", None)
            if callable(joint):
                joint = _noise_method(joint, randomised)
            else:
                joint = _one_draw(self.class_scores, self.class_log_likelihoods)
            if not _accepts(joint, "shared_noise"):
                joint = _rows_share_noise(joint)
            self.class_scores_and_log_likelihoods = joint
        state = getattr(model, "state_dict", None)
        if callable(state):
            self.state_dict = state
        ll = self.class_log_likelihoods

        if _accepts(ll, "shared_noise"):

            def bits(x: Tensor, generator=None, shared_noise: bool = False) -> Tensor:
                scores = ll(x, generator=generator, shared_noise=shared_noise)
                return bits_per_dim(marginal_log_prob(scores), num_dims)
        else:

            def bits(x: Tensor, generator=None) -> Tensor:
                return bits_per_dim(marginal_log_prob(ll(x, generator=generator)), num_dims)

        self.bits_per_dim = bits


def _one_draw(scores: Callable[..., Tensor], ll: Callable[..., Tensor]) -> Callable[..., Any]:
    """``(scores(x, generator), ll(x, generator))`` under one noise draw: the generator's state
    is restored between the two calls, so a model that draws its noise from ``generator`` draws
    the same noise for both. Takes ``shared_noise`` when both methods take it."""

    def pair(x: Tensor, generator: torch.Generator | None, **shared: bool) -> tuple[Tensor, Tensor]:
        state = None if generator is None else generator.get_state()
        first = scores(x, generator=generator, **shared)
        if state is not None:
            generator.set_state(state)
        return first, ll(x, generator=generator, **shared)

    if _accepts(scores, "shared_noise") and _accepts(ll, "shared_noise"):

        def shared(
            x: Tensor, generator: torch.Generator | None = None, shared_noise: bool = False
        ) -> tuple[Tensor, Tensor]:
            return pair(x, generator, shared_noise=shared_noise)

        return shared

    def own(x: Tensor, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        return pair(x, generator)

    return own


def _rows_share_noise(fn: Callable[..., Any]) -> Callable[..., Any]:
    """``fn(x, generator) -> (a, b)`` with a ``shared_noise`` parameter (what
    :func:`flows.attacks.flows_threat_model` passes to a joint method): with ``shared_noise``,
    every row is evaluated alone from the same generator state, i.e. under the same draw (as
    :class:`flows.noise.FixedNoise` does row by row); without, one batched call."""

    def rows(
        x: Tensor, generator: torch.Generator | None = None, shared_noise: bool = False
    ) -> tuple[Tensor, Tensor]:
        if not shared_noise or generator is None or len(x) == 1:
            return fn(x, generator=generator)
        state = generator.get_state()
        parts = []
        for i in range(len(x)):
            generator.set_state(state)
            parts.append(fn(x[i : i + 1], generator=generator))
        return tuple(torch.cat(p) for p in zip(*parts, strict=True))

    return rows


def _noise_method(fn: Callable[..., Tensor], randomised: bool) -> Callable[..., Tensor]:
    """``fn(x, generator)`` with a ``shared_noise`` parameter where it is safe (see
    :class:`_Adapted`)."""
    if not randomised:

        def deterministic(x: Tensor, generator=None, shared_noise: bool = False) -> Tensor:
            return fn(x, generator=generator)

        return deterministic
    if _accepts(fn, "shared_noise"):

        def shared(x: Tensor, generator=None, shared_noise: bool = False) -> Tensor:
            return fn(x, generator=generator, shared_noise=shared_noise)

        return shared

    def per_row(x: Tensor, generator=None) -> Tensor:
        return fn(x, generator=generator)

    return per_row


# ----------------------------------------------------------------------------------------------
# The stages
# ----------------------------------------------------------------------------------------------


def _stage_model_check(run: _Run, done: dict, store: _StageStore | None) -> dict:
    """:func:`check_model` on the first ``check_n`` inputs, and the margin-gradient check."""
    n = min(run.config.check_n, len(run.x))
    x, y = run.x[:n], run.y[:n]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ModelWarning)  # the flags go into the report
        check = check_model(run.model, x, seed=run.config.noise_seed, warn=False)
    randomised = check.randomised or check.declared_randomised is True
    adapter = _Adapted(run.model, run.num_dims, randomised)
    tm = as_threat_model(adapter, noise_seed=run.config.noise_seed)
    gradients = non_finite_gradients(
        tm, x, y, threshold=GRADIENT_THRESHOLD, batch_size=run.config.batch_size
    )
    return {"check": check.to_dict(), "gradients": gradients.to_dict(), "randomised": randomised}


def _stage_scores(run: _Run, done: dict, store: _StageStore | None) -> dict:
    """Class log-likelihoods, the model's predictions (its ``class_scores`` rule, else Bayes'
    rule) and bits/dim of the test inputs under the fixed noise."""
    adapter = run.adapter(done)
    fn = FixedNoise(adapter.class_log_likelihoods, run.config.noise_seed)
    rule = getattr(adapter, "class_scores", None)
    rule = None if rule is None else FixedNoise(rule, run.config.noise_seed)
    lls, labels = [], []
    with torch.no_grad():
        for part in batches(len(run.x), run.config.batch_size):
            ll = fn(run.x[part]).double()
            lls.append(ll)
            labels.append(predictions(ll if rule is None else rule(run.x[part])))
    ll = torch.cat(lls)
    return {
        "class_log_likelihoods": ll.tolist(),
        "predicted": torch.cat(labels).tolist(),
        "bits_per_dim": bits_per_dim(marginal_log_prob(ll), run.num_dims).tolist(),
        "rule": "the model's class_scores" if rule is not None else "Bayes' rule",
    }


def _stage_clean(run: _Run, done: dict, store: _StageStore | None) -> dict:
    """Accuracy (Wilson interval), bits/dim (mean ± SE), and a calibration model's known
    accuracy."""
    _, predicted, bpd = run.scores(done)
    n = len(run.y)
    correct = int((predicted == run.y.cpu()).sum())
    accuracy = correct / n
    reference = _reference_accuracy(run.model)
    if reference is not None:
        value, source = reference
        se = math.sqrt(value * (1 - value) / n)
        gap = accuracy - value
        reference = {
            "value": value,
            "source": source,
            "difference_in_se": gap / se
            if se > 0
            else (0.0 if gap == 0 else math.copysign(math.inf, gap)),
        }
    return {
        "n": n,
        "correct": correct,
        "accuracy": accuracy,
        "accuracy_interval": list(wilson_interval(correct, n, CONFIDENCE)),
        "confidence": CONFIDENCE,
        "rule": (
            "the model's class_scores (argmax)"
            if done["scores"]["rule"] != "Bayes' rule"
            else "Bayes' rule: argmax_c log p(x | c), uniform prior"
        ),
        "noise_seed": run.config.noise_seed,
        "bits_per_dim": _summary(bpd),
        "reference_accuracy": reference,
    }


def _stage_detector(run: _Run, done: dict, store: _StageStore | None) -> dict:
    """ROC of the detector: real test inputs against uniform noise and the midpoints of pairs of
    test inputs of different classes; thresholds at the configured recalls."""
    config = run.config
    adapter = run.adapter(done)
    _, _, real = run.scores(done)
    lo, hi = adapter.bounds
    generator = torch.Generator().manual_seed(derive_seed(config.seed, "uniform noise"))
    noise = lo + (hi - lo) * torch.rand(
        (config.num_noise, *run.x.shape[1:]), generator=generator, dtype=run.x.dtype
    )
    noise_bpd = run.bits(adapter, noise.to(run.x.device))
    everything = torch.ones(len(run.y), dtype=torch.bool)
    i0, i1 = _pairs(run.y.cpu(), everything, config.num_pairs, config.seed, "midpoints")
    half = torch.tensor([0.5], dtype=torch.float64)
    device = run.x.device
    midpoints = interpolate(run.x[i0.to(device)], run.x[i1.to(device)], half)[:, 0]
    mid_bpd = run.bits(adapter, midpoints)
    ood = {"uniform_noise": noise_bpd, "midpoints": mid_bpd}
    ood["all"] = torch.cat([noise_bpd, mid_bpd])
    roc = {}
    for name, values in ood.items():
        fpr, tpr = roc_curve(real, values)
        roc[name] = {
            "auc": auc(real, values),
            "n": len(values),
            "mean_bits_per_dim": values.mean().item(),
            "false_positive_rate": fpr.tolist(),
            "true_positive_rate": tpr.tolist(),
        }

    def at(recall: float) -> dict:
        detector = _detector_at(real, recall, run.num_dims)
        return {
            "recall_target": recall,
            "threshold_bits_per_dim": detector.threshold,
            "recall": detector.recall(real),
            "detected": {
                name: detector.detected(values).double().mean().item()
                for name, values in ood.items()
                if name != "all"
            },
        }

    sets = {"real": real, "uniform_noise": noise_bpd, "midpoints": mid_bpd}
    finite = torch.cat([v[torch.isfinite(v)] for v in sets.values()])
    low, high = finite.min().item(), finite.max().item()
    if not high > low:  # one value: a unit bin around it
        low, high = low - 0.5, high + 0.5
    edges = torch.linspace(low, high, 41, dtype=torch.float64)
    return {
        "num_real": len(real),
        "inputs": {
            "real": f"the first {len(real)} test inputs of the fixed order",
            "uniform_noise": f"{config.num_noise} inputs uniform in the bounds [{lo:g}, {hi:g}]^D",
            "midpoints": f"x_0.5 = (x0 + x1) / 2 of {len(i0)} pairs of test inputs of different "
            "classes",
        },
        "roc": roc,
        "thresholds": [at(q) for q in config.recalls],
        "attack_threshold": at(config.recall),
        "histogram": {
            "edges": edges.tolist(),
            "counts": {
                name: torch.histogram(v[torch.isfinite(v)].double(), edges).hist.long().tolist()
                for name, v in sets.items()
            },
            "non_finite": {name: int((~torch.isfinite(v)).sum()) for name, v in sets.items()},
        },
    }


def _stage_likelihood_terms(run: _Run, done: dict, store: _StageStore | None) -> dict:
    """Eq. 5: :func:`flows.analysis.likelihood_terms` of the class log-likelihoods."""
    ll, _, _ = run.scores(done)
    return likelihood_terms(ll, run.y.cpu(), run.num_dims).to_dict()


def _stage_attacks(run: _Run, done: dict, store: _StageStore | None) -> dict:
    """Table 2's ensemble (``run_experiment(attack="ensemble")``) at ε against the detector at
    ``recall``, under the fixed or the deployed threat model."""
    config = run.config
    randomised = done["model_check"]["randomised"]
    threat = config.threat_model
    if threat == "auto":
        threat = "deployed" if randomised else "fixed"
    if config.eot is not None and threat == "fixed":
        raise RobustnessError(
            f"--eot {config.eot}: EOT needs the deployed threat model (fresh noise per query); "
            f"this model is {'randomised' if randomised else 'deterministic'} and the threat "
            "model resolves to fixed: pass --threat-model deployed, or no --eot"
        )
    threshold = done["detector"]["attack_threshold"]["threshold_bits_per_dim"]
    attack_config = AttackConfig(
        attack="ensemble",
        threat_model=threat,
        n=config.n,
        eps=config.eps,
        threshold=threshold,
        recall_n=min(config.n, len(run.x)),
        seed=config.seed,
        noise_seed=config.noise_seed,
        fresh_noise_seed=config.noise_seed + 1,
        batch_size=config.batch_size,
        model_batch=config.model_batch,
        eot=config.eot,
        verify_draws=config.verify_draws or (32 if randomised else 2),
        binary_search_steps=config.binary_search_steps,
        cw_steps=config.cw_steps,
        stepsize=config.stepsize,
        apgd_steps=config.apgd_steps,
        boundary_steps=config.boundary_steps,
        max_queries=config.max_queries,
        boundary_starts=config.boundary_starts,
        decision_quorum=config.decision_quorum,
        confidence=config.confidence,
        kappa_factor=config.kappa_factor,
        match_steps=config.match_steps,
        segment_grid=config.segment_grid,
        pool_size=config.pool_size,
        sanity=config.sanity,
        sanity_n=min(config.sanity_n, config.n),
        audit=randomised,
        example_images=0,
        order_seed=None,
    )
    cache = None if store is None else store.folder / "attacks.partial"
    try:
        report, _, _ = run_experiment(
            run.adapter(done),
            run.x,
            run.y,
            attack_config,
            progress=run.progress,
            cache=cache,
        )
    except ExperimentError as error:
        raise RobustnessError(" ".join(f"attacks: {error}".split())) from None
    if cache is not None:
        shutil.rmtree(cache, ignore_errors=True)
    return _attack_summary(run, report, attack_config)


def _attack_summary(run: _Run, report: dict, attack_config: AttackConfig) -> dict:
    """The attack table, per-example distances, the unbounded success of the ensemble and the
    white- vs black-box comparison, from ``run_experiment``'s report."""
    primary = report["threat_model"]["primary"]
    ensemble = report["ensemble"]
    labels = report["attacked_labels"]
    n = len(labels)
    sanity = report["sanity"]
    per_example, table = {}, []
    for name, row in ensemble["rows"].items():
        records = row[primary]["records"]
        found = [_found(r, label, primary) for r, label in zip(records, labels, strict=True)]
        per_example[name] = {"l2": [r["l2"] for r in records], "found": found}
        stats = row[primary]["table2"]
        checks = None
        if sanity is not None and name in sanity["attacks"]:
            checks = sanity["attacks"][name]["flags"]
        table.append(
            {
                "attack": name,
                "kind": "black-box" if name in BLACK_BOX else "white-box",
                "budget": "fixed eps" if name in FIXED_EPS else "minimum norm",
                "claimed_success_rate": row["attack"]["success_rate"],
                "success_undetected": stats["success_undetected"],
                "fools_classifier": stats["fools_classifier"],
                "median_l2_success_undetected": stats["median_l2_success_undetected"],
                "success_at_infinity": None if name in FIXED_EPS else sum(found) / n,
                "sanity": checks,
            }
        )
    broken = broken_inputs(per_example, n)
    worst = report[primary]["table2"]
    table.append(
        {
            "attack": "worst case",
            "kind": "ensemble",
            "budget": "worst case",
            "claimed_success_rate": None,
            "success_undetected": worst["success_undetected"],
            "fools_classifier": worst["fools_classifier"],
            "median_l2_success_undetected": worst["median_l2_success_undetected"],
            "success_at_infinity": sum(broken) / n,
            "sanity": None,
        }
    )

    def successes(name: str) -> int:
        return ensemble["rows"][name][primary]["table2"]["success_undetected"]["successes"]

    white = [m for m in ensemble["rows"] if m in GRADIENT_ATTACKS]
    black = [m for m in ensemble["rows"] if m in BLACK_BOX]
    best_white, best_black = max(white, key=successes), max(black, key=successes)
    comparison = gradient_vs_gradient_free(
        successes(best_white) / n, successes(best_black) / n, n, confidence=CONFIDENCE
    ).to_dict()
    comparison["values"].update(white_box=best_white, black_box=best_black)
    audit = report["audit"]
    return {
        "eps": report["config"]["eps"],
        "threshold_bits_per_dim": report["detector"]["threshold_bits_per_dim"],
        "recall": run.config.recall,
        "threat_model": attack_config.threat_model,
        "eot": attack_config.eot_draws,
        "verify_draws": attack_config.verify_draws,
        "confidence": report["config"]["confidence"],
        "confidence_rule": report.get("confidence_rule"),
        "verification": primary,
        "n": n,
        "attacked_indices": [int(run.indices[i]) for i in report["attacked_indices"]],
        "attacked_labels": labels,
        "table": table,
        "unbounded_success": {
            "rate": sum(broken) / n,
            "n": n,
            "unbroken": [i for i, b in enumerate(broken) if not b],
            "note": "an input counts as broken when any member ("
            + ", ".join(per_example)
            + ") found a verified undetected adversarial: the minimum-norm members at any "
            "distance, the fixed-eps ones within eps",
        },
        "white_vs_black_box": comparison,
        "per_example": per_example,
        "sanity": sanity,
        "audit": None if audit is None else {k: audit[k] for k in audit if k != "records"},
        "experiment": {
            "config": report["config"],
            "threat_model": report["threat_model"],
            "ensemble_note": ensemble["note"],
            "statistics_rules": report["statistics_rules"],
        },
    }


def broken_inputs(per_example: Mapping[str, Mapping[str, list]], n: int) -> list[bool]:
    """Per attacked input, whether *any* member found a verified undetected adversarial
    (``per_example[name]["found"]``, ``n`` entries each): the success of the ensemble at
    ε = ∞. A fixed-ε member's success within ε counts too (an adversarial within ε is one at
    any distance), so a minimum-norm search that fails where APGD succeeds does not make the
    input "unbroken"."""
    return [any(example["found"][i] for example in per_example.values()) for i in range(n)]


def _found(record: dict, label: int, primary: str) -> bool:
    """Whether a verified record holds an undetected misclassified input at *any* distance (the
    records' ``success_undetected`` is restricted to ε; the raw verdicts are not)."""
    if not (record["claimed"] and record["in_bounds"]):
        return False
    if primary == "deployed":
        return record["p_fool_undetected"] >= SUCCESS_RULE
    return not record["detected"] and record["predicted"] != label


def _stage_interpolation(run: _Run, done: dict, store: _StageStore | None) -> dict:
    """Figure 3: paths between correctly classified, undetected test inputs of different classes
    (:func:`flows.analysis.evaluate_paths`), summarised at the attack threshold and at each
    recall's."""
    config = run.config
    _, predicted, bpd = run.scores(done)
    detector = done["detector"]
    threshold = detector["attack_threshold"]["threshold_bits_per_dim"]
    y = run.y.cpu()
    eligible = (predicted == y) & (bpd <= threshold)
    i0, i1 = _pairs(y, eligible, config.num_pairs, config.seed, "interpolation")
    paths = evaluate_paths(
        run.adapter(done),
        run.x[i0],
        run.x[i1],
        run.y[i0],
        run.y[i1],
        alpha_grid(config.num_alphas),
        noise_seed=config.noise_seed,
        batch_size=config.batch_size,
    )
    by_recall = []
    for row in detector["thresholds"]:
        t = row["threshold_bits_per_dim"]
        share = fraction_entirely_undetected(paths.bits_per_dim, t)
        k = round(share * len(i0))
        by_recall.append(
            {
                "recall_target": row["recall_target"],
                "threshold_bits_per_dim": t,
                "fraction_paths_entirely_undetected": share,
                "interval": list(wilson_interval(k, len(i0), CONFIDENCE)),
            }
        )
    return {
        "num_pairs": len(i0),
        "num_alphas": config.num_alphas,
        "eligible_endpoints": int(eligible.sum()),
        "noise_seed": config.noise_seed,
        "pairs": {"i0": run.indices[i0].tolist(), "i1": run.indices[i1].tolist()},
        "summary": summarise_paths(paths, threshold),
        "by_recall": by_recall,
    }


def _stage_outliers(run: _Run, done: dict, store: _StageStore | None) -> dict:
    """Figure 4: NLL given the true and the most likely wrong class, at each recall's threshold
    (:func:`flows.analysis.outlier_summary`)."""
    ll, _, _ = run.scores(done)
    result = wrong_class_nll(ll, run.y.cpu(), run.num_dims)
    by_recall = []
    for row in done["detector"]["thresholds"]:
        summary = outlier_summary(result, row["threshold_bits_per_dim"], run.config.delta)
        del summary["margin_bounds"]
        by_recall.append({"recall_target": row["recall_target"], **summary})
    return {
        "num_dims": run.num_dims,
        "delta": run.config.delta,
        "margin_bounds": margin_bounds(result.num_classes, run.config.delta),
        "by_recall": by_recall,
    }


def _stage_calibration(run: _Run, done: dict, store: _StageStore | None) -> dict:
    """Found / optimal undetected distance of every member, for a model with
    ``optimal_distance(x, y, threshold)`` (module docstring)."""
    optimal = getattr(run.model, "optimal_distance", None)
    if not callable(optimal):
        return {
            "available": False,
            "note": "the model has no optimal_distance(x, y, threshold): not a calibration model",
        }
    attacks = done["attacks"]
    factor = run.config.calibration_factor
    eps, threshold = attacks["eps"], attacks["threshold_bits_per_dim"]
    index = torch.tensor(attacks["attacked_indices"], dtype=torch.long)
    labels = torch.tensor(attacks["attacked_labels"], dtype=torch.long)
    best = optimal(run.x_all[index.to(run.x_all.device)], labels.to(run.x_all.device), threshold)
    best = best.detach().double().cpu()
    entries = {}
    closest = torch.full_like(best, math.inf)
    for name, example in attacks["per_example"].items():
        l2 = _tensor(example["l2"])
        found = torch.tensor(example["found"], dtype=torch.bool)
        distance = torch.where(found, l2, math.inf)
        if name in FIXED_EPS:
            entries[name] = _fixed_eps_calibration(name, found, best, eps, factor)
            continue
        closest = torch.minimum(closest, distance)
        entries[name] = _ratio_entry("minimum norm", distance, best, factor, name in CALIBRATED)
    entries["worst case"] = _ratio_entry("worst case", closest, best, factor, False)
    return {
        "available": True,
        "note": "ratio = verified distance / optimal distance d*_T (model.optimal_distance at the "
        "attack threshold); inf where no verified undetected adversarial was found; flagged "
        f"(cw-det, boundary-det) when the median ratio exceeds {factor:g}; apgd-det attacks at "
        f"a fixed eps: flagged when it fails on more than half of the inputs with d* <= eps / "
        f"{factor:g}",
        "threshold_bits_per_dim": threshold,
        "eps": eps,
        "factor": factor,
        "optimal_distance": best.tolist(),
        "attacks": entries,
    }


def _ratio_entry(budget: str, distance: Tensor, best: Tensor, factor: float, flag: bool) -> dict:
    """Ratios ``distance / best`` where ``best`` is finite and positive (None elsewhere), their
    median, maximum and the shares within 1.05 and 1.2."""
    usable = torch.isfinite(best) & (best > 0)
    ratio = distance[usable] / best[usable]
    ratios: list[float | None] = [None] * len(best)
    for position, value in zip(
        torch.nonzero(usable).flatten().tolist(), ratio.tolist(), strict=True
    ):
        ratios[position] = value
    median = torch.quantile(ratio, 0.5).item() if len(ratio) else None
    return {
        "budget": budget,
        "n": int(usable.sum()),
        "ratios": ratios,
        "median_ratio": median,
        "max_ratio": ratio.max().item() if len(ratio) else None,
        "found": int(torch.isfinite(ratio).sum()),
        "within_1.05": (ratio <= 1.05).double().mean().item() if len(ratio) else None,
        "within_1.2": (ratio <= 1.2).double().mean().item() if len(ratio) else None,
        "flagged": bool(flag and median is not None and median > factor),
    }


def _fixed_eps_calibration(
    name: str, found: Tensor, best: Tensor, eps: float, factor: float
) -> dict:
    """A fixed-ε attack: success where ``d* <= ε`` and where ``d* <= ε / factor``."""
    within = best <= eps
    decidable = best <= eps / factor
    missed = int((decidable & ~found).sum())
    return {
        "budget": "fixed eps",
        "n": len(best),
        "ratios": [None] * len(best),
        "median_ratio": None,
        "optimal_within_eps": int(within.sum()),
        "success_where_optimal_within_eps": (
            found[within].double().mean().item() if bool(within.any()) else None
        ),
        "decidable": int(decidable.sum()),
        "missed": missed,
        "flagged": bool(name in CALIBRATED and 2 * missed > int(decidable.sum())),
    }


def _stage_leaderboard(run: _Run, done: dict, store: _StageStore | None) -> dict:
    """Accuracy, bits/dim and the undetected robust accuracy at ε (module docstring)."""
    clean, attacks = done["clean"], done["attacks"]
    worst = next(row for row in attacks["table"] if row["attack"] == "worst case")
    accuracy = clean["accuracy"]
    success = worst["success_undetected"]
    fools = worst["fools_classifier"]
    robust = accuracy * (1 - success["pct"] / 100)
    interval = [
        accuracy * (1 - success["high_pct"] / 100),
        accuracy * (1 - success["low_pct"] / 100),
    ]
    bpd = clean["bits_per_dim"]
    row = (
        f"| {run.meta['model']['class']} | {100 * accuracy:.2f} | {_fmt(bpd['mean'], 4)} | "
        f"{100 * robust:.1f} [{100 * interval[0]:.1f}, {100 * interval[1]:.1f}] | "
        f"{attacks['eps']:g} | {attacks['threat_model']} |"
    )
    return {
        "accuracy": accuracy,
        "accuracy_interval": clean["accuracy_interval"],
        "bits_per_dim": bpd["mean"],
        "bits_per_dim_se": bpd["se"],
        "eps": attacks["eps"],
        "threshold_bits_per_dim": attacks["threshold_bits_per_dim"],
        "recall": attacks["recall"],
        "threat_model": attacks["threat_model"],
        "attack": "worst case of " + ", ".join(r["attack"] for r in attacks["table"][:-1]),
        "n_attacked": attacks["n"],
        "robust_accuracy_undetected": robust,
        "robust_accuracy_undetected_interval": interval,
        "robust_accuracy_classifier": accuracy * (1 - fools["pct"] / 100),
        "row": row,
        "columns": "| model | accuracy (%) | bits/dim | undetected robust accuracy (%) [95% CI] | "
        "eps (L2) | threat model |",
    }


_STAGE_FUNCTIONS: dict[str, Callable[[_Run, dict, Any], dict]] = {
    "model_check": _stage_model_check,
    "scores": _stage_scores,
    "clean": _stage_clean,
    "detector": _stage_detector,
    "likelihood_terms": _stage_likelihood_terms,
    "attacks": _stage_attacks,
    "interpolation": _stage_interpolation,
    "outliers": _stage_outliers,
    "calibration": _stage_calibration,
    "leaderboard": _stage_leaderboard,
}


# ----------------------------------------------------------------------------------------------
# Flags and the report
# ----------------------------------------------------------------------------------------------


def _flags(results: Mapping[str, dict]) -> dict[str, dict]:
    """The warning flags (module docstring) from the stages' results."""
    flags: dict[str, dict] = {}

    def raise_flag(name: str, stage: str, message: str) -> None:
        flags[name] = {"stage": stage, "message": " ".join(message.split())}

    check = results.get("model_check")
    if check is not None:
        for name, message in check["check"]["flags"].items():
            raise_flag(name, "model_check", message)
        if check["gradients"]["passed"] is False:
            raise_flag("zero_or_non_finite_gradients", "model_check", check["gradients"]["detail"])
    attacks = results.get("attacks")
    if attacks is not None:
        if check["randomised"] and (attacks["threat_model"] == "fixed" or attacks["eot"] == 1):
            raise_flag(
                "randomised_without_eot",
                "attacks",
                f"the model is randomised, but it was attacked under the {attacks['threat_model']} "
                f"threat model with {attacks['eot']} EOT draw(s): its adversarials may not survive "
                "fresh noise and its robustness is not measured; use --threat-model deployed "
                "with --eot > 1",
            )
        comparison = attacks["white_vs_black_box"]
        masked = [
            name
            for name, entry in (attacks["sanity"] or {}).get("attacks", {}).items()
            if entry["flags"].get("gradient_vs_gradient_free") is False
        ]
        if comparison["passed"] is False or masked:
            detail = comparison["detail"] if comparison["passed"] is False else ""
            if masked:
                detail += f" sanity checks: {', '.join(masked)} weaker than the Boundary attack"
            raise_flag("black_box_stronger", "attacks", detail)
        unbounded = attacks["unbounded_success"]
        if unbounded["rate"] < 1:
            raise_flag(
                "unbounded_success_below_100",
                "attacks",
                f"{len(unbounded['unbroken'])} of {unbounded['n']} inputs have no verified "
                "undetected adversarial at any distance (eps = inf): the attacks fail to "
                "optimise there; raise their budgets",
            )
    calibration = results.get("calibration")
    if calibration is not None and calibration["available"]:
        for name, entry in calibration["attacks"].items():
            if entry["flagged"]:
                what = (
                    f"median found / optimal distance {entry['median_ratio']:.3g}"
                    if entry["budget"] == "minimum norm"
                    else f"fails on {entry['missed']} of {entry['decidable']} inputs whose optimal "
                    f"adversarial lies within eps / {calibration['factor']:g}"
                )
                raise_flag(
                    f"calibration_{name}",
                    "calibration",
                    f"{name}: {what}, worse than {calibration['factor']:g}x the known optimum",
                )
    return dict(sorted(flags.items()))


def _assemble(run: _Run, results: Mapping[str, dict], timings: Mapping[str, float]) -> dict:
    """The report dict in :data:`~flows.robustness.schema.SCHEMA`'s order."""
    report: dict[str, Any] = {
        "schema": SCHEMA_NAME,
        "schema_version": SCHEMA_VERSION,
        "model": run.meta["model"],
        "test_set": run.meta["test_set"],
        "config": run.meta["config"],
        "config_hash": run.meta["hash"],
        "stages": {key: "done" if key in results else "not run" for key in STAGES},
    }
    for key in STAGES:
        report[key] = results.get(key)
    report["flags"] = _flags(results)
    report["timings"] = {key: timings[key] for key in _ORDER if key in timings}
    return report


def _resolve_stages(stages: Sequence[str] | None) -> list[str]:
    """``stages`` (default all) and their dependencies, in running order."""
    if stages is None:
        stages = STAGES
    if isinstance(stages, str):
        stages = [stages]
    unknown = [s for s in stages if s not in STAGES]
    if unknown or not stages:
        raise ValueError(
            f"stages: must be a non-empty subset of {list(STAGES)}, got {list(stages)}"
        )
    wanted: set[str] = set()

    def add(name: str) -> None:
        if name not in wanted:
            wanted.add(name)
            for dependency in DEPENDS[name]:
                add(dependency)

    for name in stages:
        add(name)
    return [name for name in _ORDER if name in wanted]


class _StageStore:
    """The stage cache ``folder``: ``config.json`` (the run's meta and hash) and one
    ``<stage>.json`` per finished stage, each written atomically."""

    def __init__(self, folder: Path, meta: dict):
        self.folder, self.meta = folder, meta

    def open(self, restart: bool) -> None:
        """Create the cache, or check that the one there was made with the same configuration."""
        if restart and self.folder.exists():
            shutil.rmtree(self.folder)
        path = self.folder / "config.json"
        if not path.is_file():
            self.folder.mkdir(parents=True, exist_ok=True)
            _write(path, json.dumps(self.meta, indent=1).encode())
            return
        try:
            saved = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise RobustnessError(
                f"cannot read the stage cache {path}: {error}; pass --restart to discard it"
            ) from None
        if saved.get("hash") == self.meta["hash"]:
            return
        advice = "rerun with the same options to resume it, or pass --restart to discard it"
        old, new = saved.get("config", {}), self.meta["config"]
        for name in new:
            if old.get(name) != new[name]:
                flag = "--" + name.replace("_", "-")
                raise RobustnessError(
                    f"{flag}: the stage cache {self.folder} was made with "
                    f"{old.get(name, '(not recorded)')!r}, this report has {new[name]!r}: {advice}"
                )
        what = "another model" if saved.get("model") != self.meta["model"] else "another test set"
        raise RobustnessError(f"the stage cache {self.folder} was made for {what}: {advice}")

    def load(self, name: str) -> tuple[dict, float] | None:
        path = self.folder / f"{name}.json"
        if not path.is_file():
            return None
        saved = json.loads(path.read_text())
        if saved.get("hash") != self.meta["hash"] or saved.get("stage") != name:
            raise RobustnessError(
                f"the stage file {path} is not one of this report: pass --restart to discard the "
                "stage cache"
            )
        return saved["result"], saved["seconds"]

    def save(self, name: str, result: dict, seconds: float) -> None:
        record = {"stage": name, "hash": self.meta["hash"], "seconds": seconds, "result": result}
        _write(self.folder / f"{name}.json", json.dumps(record, allow_nan=False).encode())


# ----------------------------------------------------------------------------------------------
# Pure helpers
# ----------------------------------------------------------------------------------------------


def roc_curve(real: Tensor, ood: Tensor) -> tuple[Tensor, Tensor]:
    r"""The detector's ROC: ``(fpr, tpr)``, each ``(K,)`` float64, at every observed threshold.

    The detector flags :math:`b > t`; at each threshold ``t`` among the observed values (and
    :math:`-\infty`), from the largest down, :math:`\mathrm{FPR}(t) = \#\{r_i > t\}/N` (real
    inputs ``real`` ``(N,)`` flagged) and :math:`\mathrm{TPR}(t) = \#\{o_j > t\}/M` (non-images
    ``ood`` ``(M,)`` flagged). Starts at ``(0, 0)``, ends at ``(1, 1)``, non-decreasing; ``±inf``
    values allowed, NaN refused.
    """
    real, ood = _statistic("real", real), _statistic("ood", ood)
    thresholds = torch.unique(torch.cat([real, ood]), sorted=True).flip(0)
    thresholds = torch.cat([thresholds, torch.tensor([-math.inf], dtype=torch.float64)])
    sorted_real, sorted_ood = torch.sort(real).values, torch.sort(ood).values

    def above(values: Tensor) -> Tensor:
        return len(values) - torch.searchsorted(values, thresholds, right=True)

    return above(sorted_real).double() / len(real), above(sorted_ood).double() / len(ood)


def auc(real: Tensor, ood: Tensor) -> float:
    r"""The area under :func:`roc_curve`, exactly:
    :math:`\frac{1}{NM}\sum_{i,j}\bigl(\mathbb 1[o_j > r_i] + \tfrac12 \mathbb 1[o_j = r_i]\bigr)`
    (Mann–Whitney), the probability that a non-image has the higher bits/dim (ties count half)."""
    real, ood = _statistic("real", real), _statistic("ood", ood)
    ordered = torch.sort(real).values
    below = torch.searchsorted(ordered, ood, right=False).double()
    ties = torch.searchsorted(ordered, ood, right=True).double() - below
    return ((below + ties / 2).sum() / (len(real) * len(ood))).item()


def _statistic(name: str, values: Tensor) -> Tensor:
    if not isinstance(values, Tensor) or values.dim() != 1 or len(values) == 0:
        raise ValueError(f"{name}: must be a non-empty 1-D tensor of bits/dim")
    if bool(torch.isnan(values).any()):
        raise ValueError(f"{name}: contains NaN")
    return values.detach().double().cpu()


def _summary(values: Tensor) -> dict:
    """Mean, SE = s/√N, the normal 95 % interval, median, min, max of ``values`` ``(N,)``."""
    n = len(values)
    mean = values.mean().item()
    std = values.std().item() if n > 1 else 0.0
    se = std / math.sqrt(n)
    return {
        "n": n,
        "mean": mean,
        "se": se,
        "std": std,
        "interval": [mean - _Z * se, mean + _Z * se],
        "median": torch.quantile(values, 0.5).item(),
        "min": values.min().item(),
        "max": values.max().item(),
    }


def _detector_at(real: Tensor, recall: float, num_dims: int) -> LikelihoodDetector:
    """The threshold at ``recall`` of the real inputs' bits/dim."""
    try:
        return LikelihoodDetector.from_quantile(real, recall, num_dims)
    except ValueError:
        raise RobustnessError(
            f"--recall / --recalls: the bits/dim of the real inputs at recall {recall:g} is not "
            "finite (inputs of zero density): choose a lower recall"
        ) from None


def _pairs(
    labels: Tensor, eligible: Tensor, wanted: int, seed: int, purpose: str
) -> tuple[Tensor, Tensor]:
    """Up to ``wanted`` pairs of eligible inputs of different classes
    (:func:`flows.analysis.select_pairs`)."""
    counts = torch.bincount(labels[eligible]).double()
    available = int((counts.sum() ** 2 - (counts**2).sum()).item() // 2)
    if available < 1:
        raise RobustnessError(
            f"{purpose}: no two eligible test inputs of different classes (for interpolation: "
            "correctly classified and undetected): more test inputs (--num-test) or a higher "
            "--recall"
        )
    return select_pairs(labels, eligible, min(wanted, available), derive_seed(seed, purpose))


def _reference_accuracy(model: Any) -> tuple[float, str] | None:
    """A calibration model's known accuracy: ``bayes_accuracy()`` or ``accuracy()`` taking no
    arguments."""
    for name in ("bayes_accuracy", "accuracy"):
        fn = getattr(model, name, None)
        if callable(fn) and _takes_no_arguments(fn):
            value = float(fn())
            if 0 <= value <= 1:
                return value, f"{type(model).__name__}.{name}()"
    return None


def _takes_no_arguments(fn: Callable) -> bool:
    try:
        params = inspect.signature(fn).parameters.values()
    except (TypeError, ValueError):
        return False
    return all(
        p.default is not p.empty or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD) for p in params
    )


def _accepts(fn: Callable, name: str) -> bool:
    try:
        return name in inspect.signature(fn).parameters
    except (TypeError, ValueError):
        return False


def _test_tensors(test_set: Any) -> tuple[Tensor, Tensor]:
    """``(x, y)`` from ``(x, y)`` or ``{"x": x, "y": y}``, checked."""
    if isinstance(test_set, Mapping):
        if not {"x", "y"} <= set(test_set):
            raise ValueError(f"test_set: a mapping needs keys 'x' and 'y', got {sorted(test_set)}")
        test_set = (test_set["x"], test_set["y"])
    if not isinstance(test_set, tuple | list) or len(test_set) != 2:
        raise ValueError(
            f"test_set: must be (x, y) or {{'x': x, 'y': y}}, got {type(test_set).__name__}"
        )
    x, y = test_set
    if not isinstance(x, Tensor) or not x.is_floating_point() or x.dim() < 2:
        raise ValueError(
            f"test_set: x must be a floating-point tensor (N, ...), got {getattr(x, 'shape', x)!r}"
        )
    if (
        not isinstance(y, Tensor)
        or y.is_floating_point()
        or y.dtype == torch.bool
        or y.shape != (len(x),)
    ):
        raise ValueError(
            f"test_set: y must be an integer tensor ({len(x)},) of labels, got "
            f"{getattr(y, 'dtype', type(y).__name__)} {tuple(getattr(y, 'shape', ()))}"
        )
    if len(x) < 2 or bool((y < 0).any()):
        raise ValueError("test_set: needs at least 2 inputs and labels >= 0")
    return x, y.long()


def _tensor_fingerprint(*tensors: Tensor) -> str:
    digest = hashlib.sha256()
    for t in tensors:
        digest.update(str(tuple(t.shape)).encode() + str(t.dtype).encode())
        digest.update(t.detach().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _model_fingerprint(model: Any, x: Tensor) -> str:
    """SHA-256 of the model's class, its ``state_dict`` (if any) and its class log-likelihoods
    of 4 probe inputs uniform in its bounds (shaped and typed as ``x``'s rows; seeded), under a
    seeded generator and global RNG: the same for any test set."""
    digest = hashlib.sha256(f"{type(model).__module__}.{type(model).__qualname__}".encode())
    state = getattr(model, "state_dict", None)
    if callable(state):
        for key, value in sorted(state().items()):
            digest.update(key.encode())
            digest.update(value.detach().cpu().contiguous().numpy().tobytes())
    lo, hi = model_bounds(model)
    uniform = torch.rand((4, *x.shape[1:]), generator=torch.Generator().manual_seed(0))
    probe = (lo + (hi - lo) * uniform.double()).to(dtype=x.dtype, device=x.device)
    devices = [probe.device.index or 0] if probe.device.type == "cuda" else []
    with torch.no_grad(), torch.random.fork_rng(devices=devices):
        torch.manual_seed(0)
        generator = torch.Generator(device=probe.device).manual_seed(0)
        try:
            out = model.class_log_likelihoods(probe, generator=generator)
        except TypeError:
            out = model.class_log_likelihoods(probe)
    if isinstance(out, Tensor):
        digest.update(out.detach().double().cpu().contiguous().numpy().tobytes())
    return digest.hexdigest()


def _json_safe(value: Any) -> Any:
    """Non-finite floats as ``"inf"``/``"-inf"``/``"nan"``, tuples as lists, recursively."""
    if isinstance(value, float) and not math.isfinite(value):
        return "nan" if math.isnan(value) else ("inf" if value > 0 else "-inf")
    if isinstance(value, dict):
        return {str(k): _json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_json_safe(v) for v in value]
    return value


def _round_trip(value: Any) -> Any:
    """``value`` as JSON would give it back (what a resumed run reads)."""
    return json.loads(json.dumps(_json_safe(value), allow_nan=False))


def _float(value: Any) -> float:
    """A JSON number, or one of the strings of a non-finite one, as a float."""
    return float(value) if isinstance(value, str) else value


def _tensor(values: list) -> Tensor:
    """A (nested) list of JSON numbers as a float64 tensor."""

    def convert(v: Any) -> Any:
        return [convert(u) for u in v] if isinstance(v, list) else _float(v)

    return torch.tensor(convert(values), dtype=torch.float64)


def _write(path: Path, data: bytes) -> Path:
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_bytes(data)
    os.replace(temporary, path)
    return path


# ----------------------------------------------------------------------------------------------
# Text and figures
# ----------------------------------------------------------------------------------------------


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "–"
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    return f"{value:.{digits}g}"


def _pct(cell: Mapping) -> str:
    return f"{cell['pct']:.1f} [{cell['low_pct']:.1f}, {cell['high_pct']:.1f}]"


def _title(data: Mapping) -> str:
    return f"Robustness report: {data['model']['class'].rsplit('.', 1)[-1]}"


def _blocks(data: Mapping) -> list[tuple]:
    """The report as blocks (``("h1"|"h2"|"p", text)``, ``("table", header, rows)``,
    ``("figure", name, caption)``), rendered to Markdown and HTML alike."""
    model, test = data["model"], data["test_set"]
    blocks: list[tuple] = [
        ("h1", _title(data)),
        (
            "p",
            f"Model {model['class']}: C = {model['num_classes']}, D = {model['num_dims']} "
            f"({model['num_dims_source']}), bounds {model['bounds']}. Test set: {test['used']} of "
            f"{test['size']} inputs of shape {test['shape']} ({test['order']}). Schema "
            f"{data['schema']} v{data['schema_version']}, configuration {data['config_hash'][:12]}.",
        ),
        ("h2", "Warning flags"),
    ]
    if data["flags"]:
        rows = [[name, flag["stage"], flag["message"]] for name, flag in data["flags"].items()]
        blocks.append(("table", ["flag", "stage", "message"], rows))
    else:
        blocks.append(("p", "None raised."))
    board = data["leaderboard"]
    if board is not None:
        blocks += [
            ("h2", "Leaderboard row"),
            (
                "table",
                [
                    "accuracy (%)",
                    "bits/dim",
                    "undetected robust accuracy (%)",
                    "ε (L2)",
                    "threshold (bits/dim)",
                    "threat model",
                    "attacked",
                ],
                [
                    [
                        f"{100 * board['accuracy']:.2f}",
                        f"{_fmt(board['bits_per_dim'], 5)} ± {_fmt(board['bits_per_dim_se'], 2)}",
                        f"{100 * board['robust_accuracy_undetected']:.1f} "
                        f"[{100 * board['robust_accuracy_undetected_interval'][0]:.1f}, "
                        f"{100 * board['robust_accuracy_undetected_interval'][1]:.1f}]",
                        _fmt(board["eps"]),
                        f"{_fmt(board['threshold_bits_per_dim'], 5)} (recall {board['recall']:g})",
                        board["threat_model"],
                        str(board["n_attacked"]),
                    ]
                ],
            ),
        ]
    check = data["model_check"]
    if check is not None:
        c = check["check"]
        blocks += [
            ("h2", "Model check"),
            (
                "p",
                f"{c['num_examples']} inputs: randomised {_fmt(c['randomised'])} (declared "
                f"{_fmt(c.get('declared_randomised'))}), reproducible {_fmt(c['reproducible'])}, "
                f"flags: {', '.join(c['flags']) or 'none'}. Gradients: "
                f"{check['gradients']['detail']}.",
            ),
        ]
    clean = data["clean"]
    if clean is not None:
        b = clean["bits_per_dim"]
        low, high = clean["accuracy_interval"]
        text = (
            f"Accuracy {100 * clean['accuracy']:.2f}% [{100 * low:.2f}, {100 * high:.2f}] "
            f"({clean['correct']} of {clean['n']}, Wilson 95%; {clean['rule']}). Bits/dim "
            f"{_fmt(b['mean'], 5)} ± {_fmt(b['se'], 2)} (SE; median {_fmt(b['median'], 5)}, "
            f"range {_fmt(b['min'], 4)} to {_fmt(b['max'], 4)})."
        )
        reference = clean["reference_accuracy"]
        if reference is not None:
            text += (
                f" Known accuracy {100 * reference['value']:.3f}% ({reference['source']}): "
                f"{_fmt(reference['difference_in_se'], 2)} standard errors away."
            )
        blocks += [("h2", "Clean accuracy and bits/dim"), ("p", text)]
    detector = data["detector"]
    if detector is not None:
        rows = [
            [
                f"{row['recall_target']:g}",
                _fmt(row["threshold_bits_per_dim"], 5),
                f"{100 * row['recall']:.1f}",
                *(f"{100 * row['detected'][k]:.1f}" for k in ("uniform_noise", "midpoints")),
            ]
            for row in detector["thresholds"]
        ]
        roc = detector["roc"]
        blocks += [
            ("h2", "Likelihood detector"),
            (
                "p",
                f"AUC (non-image has higher bits/dim): uniform noise {roc['uniform_noise']['auc']:.3f}, "
                f"interpolation midpoints {roc['midpoints']['auc']:.3f}, both "
                f"{roc['all']['auc']:.3f}. Inputs: {'; '.join(detector['inputs'].values())}.",
            ),
            (
                "table",
                [
                    "recall target",
                    "threshold (bits/dim)",
                    "recall (%)",
                    "noise detected (%)",
                    "midpoints detected (%)",
                ],
                rows,
            ),
            ("figure", "roc", "ROC of the likelihood detector"),
            ("figure", "bits_per_dim", "Bits/dim of real inputs and non-images"),
        ]
    terms = data["likelihood_terms"]
    if terms is not None:
        blocks += [
            ("h2", "Eq. 5: data and class terms"),
            (
                "p",
                f"E[-log P(x)] = {_fmt(terms['data_nats'], 5)} nats ({_fmt(terms['data_bits_per_dim'], 4)} "
                f"bits/dim); E[-log p(y|x)] = {_fmt(terms['class_nats'], 4)} nats "
                f"({_fmt(terms['class_bits_per_dim'], 3)} bits/dim); log C = "
                f"{terms['log_num_classes_nats']:.3f} nats.",
            ),
        ]
    attacks = data["attacks"]
    if attacks is not None:
        rows = []
        for row in attacks["table"]:
            sanity = row["sanity"]
            failed = [k for k, v in (sanity or {}).items() if v is False]
            rows.append(
                [
                    row["attack"],
                    row["kind"],
                    row["budget"],
                    _pct(row["success_undetected"]),
                    _pct(row["fools_classifier"]),
                    _fmt(row["median_l2_success_undetected"]),
                    _fmt(row["success_at_infinity"]),
                    "–"
                    if sanity is None
                    else ("passed" if not failed else "failed: " + ", ".join(failed)),
                ]
            )
        comparison = attacks["white_vs_black_box"]
        blocks += [
            ("h2", "Attacks"),
            (
                "p",
                f"{attacks['n']} correctly classified inputs, ε = {_fmt(attacks['eps'])} (L2), detector "
                f"threshold {_fmt(attacks['threshold_bits_per_dim'], 5)} bits/dim (recall "
                f"{attacks['recall']:g}), {attacks['threat_model']} threat model, EOT "
                f"{attacks['eot']}, CW and APGD margin κ = {_fmt(attacks.get('confidence', 0.0))} "
                f"nats, verification '{attacks['verification']}' "
                f"({attacks['verify_draws']} draws). Percentages: verified, with Wilson 95% "
                f"intervals. White vs black box: {comparison['detail']}.",
            ),
            (
                "table",
                [
                    "attack",
                    "kind",
                    "budget",
                    "success & undetected (%)",
                    "fools classifier (%)",
                    "median L2",
                    "success at ε = ∞",
                    "sanity",
                ],
                rows,
            ),
            ("figure", "attacks", "Success and undetected within ε, per attack"),
        ]
    interpolation = data["interpolation"]
    if interpolation is not None:
        rows = [
            [
                f"{row['recall_target']:g}",
                _fmt(row["threshold_bits_per_dim"], 5),
                f"{100 * row['fraction_paths_entirely_undetected']:.1f} "
                f"[{100 * row['interval'][0]:.1f}, {100 * row['interval'][1]:.1f}]",
            ]
            for row in interpolation["by_recall"]
        ]
        summary = interpolation["summary"]
        blocks += [
            ("h2", "Interpolations (Figure 3)"),
            (
                "p",
                f"{interpolation['num_pairs']} paths between correctly classified, undetected test "
                f"inputs of different classes, {interpolation['num_alphas']} α each; mean bits/dim "
                f"{_fmt(summary['mean_bits_per_dim_endpoints'], 4)} at the endpoints, "
                f"{_fmt(summary['mean_bits_per_dim_midpoint'], 4)} at α = 1/2.",
            ),
            ("table", ["recall target", "threshold", "paths entirely undetected (%)"], rows),
            ("figure", "interpolation", "Bits/dim and class probabilities along α"),
        ]
    outliers = data["outliers"]
    if outliers is not None:
        rows = [
            [
                f"{row['recall_target']:g}",
                _fmt(row["threshold_bits_per_dim"], 5),
                f"{100 * row['fraction_true_flagged']:.1f}",
                f"{100 * row['fraction_wrong_flagged']:.1f}",
                _fmt(row.get("median_gap_nats_correct")),
                _fmt(row.get("std_nll_true_nats")),
            ]
            for row in outliers["by_recall"]
        ]
        blocks += [
            ("h2", "Wrong-class outliers (Figure 4)"),
            (
                "p",
                "The pair (x, most likely wrong class) against (x, true class): the share a "
                "likelihood threshold flags, and the gap log p(x|y) − log p(x|y_w) against the "
                f"spread of the NLL; the paper's margin bound is "
                f"{outliers['margin_bounds']['paper_bound_nats']:.1f} nats (δ = {outliers['delta']:g}).",
            ),
            (
                "table",
                [
                    "recall target",
                    "threshold",
                    "true pairs flagged (%)",
                    "wrong pairs flagged (%)",
                    "median gap (nats)",
                    "std of NLL (nats)",
                ],
                rows,
            ),
        ]
    calibration = data["calibration"]
    if calibration is not None:
        blocks.append(("h2", "Calibration"))
        if not calibration["available"]:
            blocks.append(("p", calibration["note"]))
        else:
            rows = []
            for name, entry in calibration["attacks"].items():
                if entry["budget"] == "fixed eps":
                    detail = (
                        f"misses {entry['missed']} of {entry['decidable']} with d* ≤ ε/"
                        f"{calibration['factor']:g}"
                    )
                    rows.append([name, entry["budget"], "–", "–", detail, _fmt(entry["flagged"])])
                else:
                    rows.append(
                        [
                            name,
                            entry["budget"],
                            _fmt(entry["median_ratio"], 4),
                            _fmt(entry["max_ratio"], 4),
                            f"{entry['found']} of {entry['n']} found",
                            _fmt(entry["flagged"]),
                        ]
                    )
            blocks += [
                ("p", calibration["note"]),
                (
                    "table",
                    ["attack", "budget", "median ratio", "max ratio", "detail", "flagged"],
                    rows,
                ),
            ]
    timings = data["timings"]
    blocks += [
        ("h2", "Timings"),
        ("table", ["stage", "seconds"], [[k, f"{v:.1f}"] for k, v in timings.items()]),
    ]
    return blocks


def _render_markdown(blocks: list[tuple], links: Mapping[str, str] | None) -> str:
    lines: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind == "h1":
            lines += [f"# {block[1]}", ""]
        elif kind == "h2":
            lines += [f"## {block[1]}", ""]
        elif kind == "p":
            lines += [block[1], ""]
        elif kind == "table":
            header, rows = block[1], block[2]
            lines.append("| " + " | ".join(header) + " |")
            lines.append("|" + "---|" * len(header))
            lines += ["| " + " | ".join(c.replace("|", "/") for c in row) + " |" for row in rows]
            lines.append("")
        elif kind == "figure" and links and block[1] in links:
            lines += [f"![{block[2]}]({links[block[1]]})", ""]
    return "\n".join(lines)


def _render_html(blocks: list[tuple], figures: Mapping[str, bytes], title: str) -> str:
    body: list[str] = []
    for block in blocks:
        kind = block[0]
        if kind in ("h1", "h2"):
            body.append(f"<{kind}>{html.escape(block[1])}</{kind}>")
        elif kind == "p":
            body.append(f"<p>{html.escape(block[1])}</p>")
        elif kind == "table":
            head = "".join(f"<th>{html.escape(h)}</th>" for h in block[1])
            rows = "".join(
                "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>"
                for row in block[2]
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif kind == "figure" and block[1] in figures:
            data = base64.b64encode(figures[block[1]]).decode()
            body.append(
                f'<figure><img alt="{html.escape(block[2])}" src="data:image/png;base64,{data}">'
                f"<figcaption>{html.escape(block[2])}</figcaption></figure>"
            )
    style = (
        "body{font-family:sans-serif;max-width:60em;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #bbb;"
        "padding:.2em .5em;text-align:left}th{background:#eee}img{max-width:100%}"
    )
    return (
        f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>'
        f"{html.escape(title)}</title><style>{style}</style></head><body>\n"
        + "\n".join(body)
        + "\n</body></html>\n"
    )


def _png(fig) -> bytes:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=90)
    return buffer.getvalue()


def roc_figure(data: Mapping):
    """``(fig, axes)``: the detector's ROC against each kind of non-image; None without the
    detector stage."""
    detector = data["detector"]
    if detector is None:
        return None
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.8, 4.2), layout="constrained")
    ax = fig.subplots()
    for name, label in (
        ("uniform_noise", "uniform noise"),
        ("midpoints", "interpolation midpoints"),
    ):
        roc = detector["roc"][name]
        ax.plot(
            roc["false_positive_rate"],
            roc["true_positive_rate"],
            drawstyle="steps-post",
            label=f"{label} (AUC {roc['auc']:.3f})",
        )
    for row in detector["thresholds"]:
        ax.axvline(1 - row["recall"], color="0.6", ls=":", lw=1)
    ax.plot([0, 1], [0, 1], color="0.8", lw=1)
    ax.set_xlabel("real inputs detected (1 − recall)")
    ax.set_ylabel("non-images detected")
    ax.set_title("ROC of the likelihood detector", fontsize=9)
    ax.legend(fontsize=7)
    return fig, ax


def histogram_figure(data: Mapping):
    """``(fig, axes)``: bits/dim of real inputs, uniform noise and midpoints, with the
    thresholds; None without the detector stage."""
    detector = data["detector"]
    if detector is None:
        return None
    from matplotlib.figure import Figure

    hist = detector["histogram"]
    fig = Figure(figsize=(6.0, 3.6), layout="constrained")
    ax = fig.subplots()
    for name in ("real", "uniform_noise", "midpoints"):
        counts = hist["counts"][name]
        total = max(sum(counts) + hist["non_finite"][name], 1)
        extra = f", {hist['non_finite'][name]} non-finite" if hist["non_finite"][name] else ""
        ax.stairs([c / total for c in counts], hist["edges"], label=f"{name}{extra}")
    for row in detector["thresholds"]:
        ax.axvline(
            row["threshold_bits_per_dim"],
            color="#d7191c",
            ls="--",
            lw=1,
            label=f"T at recall {row['recall_target']:g}",
        )
    ax.set_xlabel("bits/dim")
    ax.set_ylabel("share of inputs")
    ax.legend(fontsize=7)
    return fig, ax


def interpolation_figure(data: Mapping):
    """``(fig, axes)``: Figure 3's mean bits/dim (10–90 % band) and class probabilities along α;
    None without the interpolation stage."""
    interpolation = data["interpolation"]
    if interpolation is None:
        return None
    from matplotlib.figure import Figure

    s = interpolation["summary"]
    alphas = s["alphas"]

    def floats(values: list) -> list[float]:
        return [_float(v) for v in values]

    fig = Figure(figsize=(5.0, 5.2), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    top.fill_between(
        alphas,
        floats(s["q10_bits_per_dim"]),
        floats(s["q90_bits_per_dim"]),
        color="0.85",
        lw=0,
        label="10–90% of paths",
    )
    top.plot(alphas, floats(s["mean_bits_per_dim"]), color="black", label="mean")
    top.axhline(s["threshold"], color="#d7191c", ls="--", lw=1, label="attack threshold")
    top.set_ylabel("bits/dim of x_α")
    top.legend(fontsize=7)
    bottom.plot(alphas, floats(s["mean_p_y0"]), label="p(y0 | x_α)")
    bottom.plot(alphas, floats(s["mean_p_y1"]), label="p(y1 | x_α)")
    bottom.set_ylim(-0.03, 1.03)
    bottom.set_xlabel("α  (x_α = α x1 + (1 − α) x0)")
    bottom.set_ylabel("mean class probability")
    bottom.legend(fontsize=7)
    return fig, (top, bottom)


def attack_figure(data: Mapping):
    """``(fig, axes)``: success and undetected within ε per attack, with Wilson intervals; None
    without the attacks stage."""
    attacks = data["attacks"]
    if attacks is None:
        return None
    from matplotlib.figure import Figure

    rows = attacks["table"]
    fig = Figure(figsize=(5.6, 0.5 + 0.4 * len(rows)), layout="constrained")
    ax = fig.subplots()
    names = [row["attack"] for row in rows]
    cells = [row["success_undetected"] for row in rows]
    values = [c["pct"] for c in cells]
    errors = [[c["pct"] - c["low_pct"] for c in cells], [c["high_pct"] - c["pct"] for c in cells]]
    ax.barh(names, values, xerr=errors, color=["#1f5fa8"] * (len(rows) - 1) + ["#d7191c"])
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel(f"% fooled and undetected within ε = {attacks['eps']:g}")
    return fig, ax


#: The stage each figure draws.
_FIGURE_STAGES = {
    "roc": "detector",
    "bits_per_dim": "detector",
    "interpolation": "interpolation",
    "attacks": "attacks",
}
_FIGURES: dict[str, Callable[[Mapping], Any]] = {
    "roc": roc_figure,
    "bits_per_dim": histogram_figure,
    "interpolation": interpolation_figure,
    "attacks": attack_figure,
}
