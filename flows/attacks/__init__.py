"""Attacks on (generative) classifiers and the threat model of Section 6.2.

Functional API on plain callables, so it works on any PyTorch classifier:

- :func:`carlini_wagner_l2` (``logits_fn, x, y``): CW-L2, optionally against a likelihood
  detector (``bits_per_dim_fn`` + ``detector``);
- :func:`boundary_attack` (``decision_fn, x, y``): the Boundary attack, optionally on a C+1-way
  decision (``reject_label``); :func:`modified_boundary_attack` is the Section 6.2 variant.

Building blocks: criteria composable with ``&`` (:mod:`~flows.attacks.criteria`), the detector
(:mod:`~flows.attacks.detector`), the threat model and noise fixing
(:mod:`~flows.attacks.threat_model`), re-verification and Table 2 statistics
(:mod:`~flows.attacks.verification`).
"""

from flows.attacks.base import AttackResult
from flows.attacks.boundary import (
    BoundaryAttack,
    boundary_attack,
    modified_boundary_attack,
    random_targets,
    select_starting_points,
)
from flows.attacks.carlini_wagner import CarliniWagnerL2, carlini_wagner_l2
from flows.attacks.criteria import (
    And,
    Criterion,
    Misclassified,
    NotDetected,
    Observation,
    TargetedMisclassified,
    log_posterior_margin,
)
from flows.attacks.detector import PAPER_RECALL, PAPER_THRESHOLDS, LikelihoodDetector
from flows.attacks.threat_model import FixedNoise, ThreatModel, flows_threat_model
from flows.attacks.verification import Verification, table2_statistics, verify

__all__ = [
    "AttackResult",
    "And",
    "BoundaryAttack",
    "CarliniWagnerL2",
    "Criterion",
    "FixedNoise",
    "LikelihoodDetector",
    "Misclassified",
    "NotDetected",
    "Observation",
    "PAPER_RECALL",
    "PAPER_THRESHOLDS",
    "TargetedMisclassified",
    "ThreatModel",
    "Verification",
    "boundary_attack",
    "carlini_wagner_l2",
    "flows_threat_model",
    "log_posterior_margin",
    "modified_boundary_attack",
    "random_targets",
    "select_starting_points",
    "table2_statistics",
    "verify",
]
