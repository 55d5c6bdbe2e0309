"""Analyses of trained class-conditional models (Sections 4.1, 6.3 and 6.4 of the paper).

- :mod:`~flows.analysis.interpolation`: linear interpolations between test images of different
  classes, evaluated along the path (Figures 1 and 3);
- :mod:`~flows.analysis.outliers`: NLL given the true vs the most likely wrong class, and the logit
  margin bound (Figure 4);
- :mod:`~flows.analysis.likelihood_terms`: the data and class terms of the joint NLL (eq. 5);
- :mod:`~flows.analysis.detection_path`: bits/dim and the class margin along the straight path
  to an adversarial, and whether the detector fires by the time the class flips (Section 6.2's
  "CW-L2 is easily detectable").

Every function takes a model with ``class_log_likelihoods(x, generator=..., shared_noise=...)`` and
``num_dims`` (a :class:`flows.ConditionalGlow`), or the ``(N, C)`` class log-likelihoods it returns.
"""

from flows.analysis.detection_path import DetectionPath, detection_along_paths
from flows.analysis.interpolation import (
    PathStatistics,
    alpha_grid,
    eligible_endpoints,
    evaluate_paths,
    fraction_entirely_undetected,
    interpolate,
    select_pairs,
    summarise_paths,
)
from flows.analysis.likelihood_terms import (
    LikelihoodTerms,
    likelihood_terms,
    measure_likelihood_terms,
    per_image_terms,
)
from flows.analysis.outliers import (
    WrongClassNLL,
    fraction_flagged,
    margin_bounds,
    minimal_margin,
    outlier_summary,
    paper_margin_bound,
    worst_case_probability,
    wrong_class_nll,
)

__all__ = [
    "DetectionPath",
    "detection_along_paths",
    "LikelihoodTerms",
    "PathStatistics",
    "WrongClassNLL",
    "alpha_grid",
    "eligible_endpoints",
    "evaluate_paths",
    "fraction_entirely_undetected",
    "fraction_flagged",
    "interpolate",
    "likelihood_terms",
    "margin_bounds",
    "measure_likelihood_terms",
    "minimal_margin",
    "outlier_summary",
    "paper_margin_bound",
    "per_image_terms",
    "select_pairs",
    "summarise_paths",
    "worst_case_probability",
    "wrong_class_nll",
]
