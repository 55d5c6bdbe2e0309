"""Attacks on (generative) classifiers and the threat model of Section 6.2.

An attack takes one model object and a composed criterion, as foolbox 3's attacks take a model and
a criterion::

    tm = ThreatModel(logits_fn, bits_per_dim_fn, detector, num_classes=C)  # any classifier
    tm = flows_threat_model(glow, detector, noise_seed=0)                   # a flows model
    cw = CarliniWagnerL2(steps=300)                                         # hyperparameters
    result = cw(tm, x, Misclassified(y) & NotDetected(detector))            # CW-det
    verdicts = verify(tm, x, result, y)                                     # re-evaluation

Each attack is a frozen dataclass of hyperparameters, called as ``attack(model, x, criterion)``
(:class:`~flows.attacks.base.Attack`); every attack returns an :class:`AttackResult`, whose
``targets`` are the criterion's (None when untargeted). The model has ``observe(x) ->``
:class:`Observation`, ``bounds`` and ``num_classes``: a :class:`ThreatModel` (class scores, and
bits/dim when it has a detector) or a labels-only :class:`DecisionModel`.

Design note: the path of an attack, from the command line to the verdicts.

1. ``flows/cli/attack.py``: ``python -m flows.attack`` parses and validates the options into an
   :class:`~flows.attacks.experiment.AttackConfig` (generated from its fields), loads the run
   and its test set, and calls :func:`~flows.attacks.experiment.run_experiment`.
2. ``flows/attacks/experiment.py``: takes the test images in the fixed order, sets the detector
   on the recall images (``detector.py``: :class:`LikelihoodDetector`, the paper's thresholds and
   recall from :mod:`flows.paper`), builds the threat models under the attack's noise and a fresh
   one, picks the first correctly classified images, builds the attack and its criterion from the
   config, and writes the report.
3. ``flows/attacks/threat_model.py``: :func:`flows_threat_model` fixes the model's noise
   (:class:`flows.noise.FixedNoise`) and gives the :class:`ThreatModel`: class scores, bits/dim
   (from one encoding with ``bits_from_class_scores``), the C+1-way decision.
4. ``flows/attacks/criteria.py``: what counts as adversarial (:class:`Misclassified`,
   :class:`TargetedMisclassified`, :class:`NotDetected`, composed with ``&``) and its hinge loss.
5. ``flows/attacks/carlini_wagner.py`` (:class:`CarliniWagnerL2`) and ``boundary.py``
   (:class:`BoundaryAttack`, :func:`modified_boundary_attack`), on the shared base
   ``base.py`` (validation, batching, :class:`AttackResult`).
6. ``flows/attacks/verification.py``: :func:`verify` re-evaluates every adversarial on a threat
   model (the attack's noise and a fresh one) and :func:`table2_statistics` gives Table 2's cells.
"""

from flows.attacks.base import Attack, AttackResult
from flows.attacks.boundary import (
    BoundaryAttack,
    modified_boundary_attack,
    random_targets,
    select_starting_points,
)
from flows.attacks.carlini_wagner import CarliniWagnerL2
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
from flows.attacks.threat_model import (
    DecisionModel,
    ThreatModel,
    flows_threat_model,
    majority_over_draws,
    mean_over_draws,
    repeat_draws,
)
from flows.attacks.verification import Verification, table2_statistics, verify
from flows.noise import FixedNoise, FreshNoise

__all__ = [
    "Attack",
    "AttackResult",
    "And",
    "BoundaryAttack",
    "CarliniWagnerL2",
    "Criterion",
    "DecisionModel",
    "FixedNoise",
    "FreshNoise",
    "LikelihoodDetector",
    "Misclassified",
    "NotDetected",
    "Observation",
    "PAPER_RECALL",
    "PAPER_THRESHOLDS",
    "TargetedMisclassified",
    "ThreatModel",
    "Verification",
    "flows_threat_model",
    "log_posterior_margin",
    "majority_over_draws",
    "mean_over_draws",
    "modified_boundary_attack",
    "random_targets",
    "repeat_draws",
    "select_starting_points",
    "table2_statistics",
    "verify",
]
