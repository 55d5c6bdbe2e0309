"""The paper's robustness test for any conditional generative model (issue 20).

Sections 4–6 ask of a class-conditional generative model: is Bayes' rule on it accurate, is its
likelihood a usable detector, do detector-aware attacks fool it, do interpolations and wrong labels
pass as real? This package states what a model must provide for that test and how to check it
(:mod:`~flows.robustness.protocol`), and gives two models with known answers to calibrate the
attacks on (:mod:`~flows.robustness.calibration`)::

    model = wrap(class_log_likelihoods, num_classes=10, num_dims=3 * 32 * 32)  # any callable
    check = check_model(model, x)                    # shapes, finiteness, scale, randomness
    tm = as_threat_model(model, LikelihoodDetector(T, model.num_dims))

    calib = CounterexampleModel.from_targets(d=300, smoothing=5e-4)  # Section 3's q
    x, y = calib.sample_annulus(8)
    calib.optimal_distance(x, y, T)                  # the radial move into the unit ball

:class:`flows.ConditionalGlow` satisfies the protocol as it is. The whole test is one call
(:mod:`~flows.robustness.report`), or ``python -m flows.robustness`` (:mod:`~flows.robustness.cli`)::

    report = evaluate(model, (x, y), eps=0.5, out="report/")   # resumable stages
    report.flags                                     # warnings, AutoAttack-style
    report["leaderboard"]                            # accuracy, bits/dim, robust accuracy at eps

``report.json`` follows a versioned schema (:mod:`~flows.robustness.schema`). A worked example,
from a model written in plain torch to the report: ``notebooks/tutorial_test_your_own_model.ipynb``;
the report's cost: ``benchmarks/robustness_report.md``.
"""

from flows.robustness.calibration import (
    CounterexampleModel,
    Interval,
    TwoGaussianModel,
    log_density_level,
)
from flows.robustness.protocol import (
    DEFAULT_BOUNDS,
    ConditionalGenerativeModel,
    ModelCheck,
    ModelWarning,
    WrappedModel,
    as_threat_model,
    check_model,
    model_bits_per_dim,
    model_bounds,
    wrap,
)
from flows.robustness.report import (
    STAGES,
    ReportConfig,
    RobustnessError,
    RobustnessReport,
    evaluate,
)
from flows.robustness.schema import SCHEMA, SCHEMA_VERSION, SchemaError
from flows.robustness.schema import validate as validate_report

__all__ = [
    "as_threat_model",
    "check_model",
    "ConditionalGenerativeModel",
    "CounterexampleModel",
    "DEFAULT_BOUNDS",
    "evaluate",
    "Interval",
    "log_density_level",
    "model_bits_per_dim",
    "model_bounds",
    "ModelCheck",
    "ModelWarning",
    "ReportConfig",
    "RobustnessError",
    "RobustnessReport",
    "SCHEMA",
    "SCHEMA_VERSION",
    "SchemaError",
    "STAGES",
    "TwoGaussianModel",
    "validate_report",
    "wrap",
    "WrappedModel",
]
