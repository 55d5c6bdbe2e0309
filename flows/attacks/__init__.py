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
   recall from :mod:`flows.paper`), builds the threat model (``--threat-model fixed``: the
   attacker knows the noise draw; ``deployed``: fresh noise per query, attacked with EOT / vote
   draws), picks the first correctly classified images, builds the attack and its criterion from
   the config, runs it batch by batch (a per-batch cache makes a killed run resume), verifies
   every adversarial under fresh noise (``verify_over_noise``), optionally runs the sanity checks
   and the randomness audit, and writes the report.
3. ``flows/attacks/threat_model.py``: :func:`flows_threat_model` fixes the model's noise
   (:class:`flows.noise.FixedNoise`) and gives the :class:`ThreatModel`: class scores, bits/dim
   (from one encoding with ``bits_from_class_scores``), the C+1-way decision.
4. ``flows/attacks/criteria.py``: what counts as adversarial (:class:`Misclassified`,
   :class:`TargetedMisclassified`, :class:`NotDetected`, composed with ``&``) and its hinge loss.
5. ``flows/attacks/carlini_wagner.py`` (:class:`CarliniWagnerL2`) and ``boundary.py``
   (:class:`BoundaryAttack`, :func:`modified_boundary_attack`), on the shared base
   ``base.py`` (validation, batching, :class:`AttackResult`).
6. ``flows/attacks/verification.py``: :func:`verify` re-evaluates every adversarial on a threat
   model (the attack's noise and a fresh one) and :func:`table2_statistics` gives Table 2's cells;
   :func:`verify_over_noise` re-checks each adversarial under N fresh draws of the deployed model
   (per-example probabilities, success when ≥ 1/2) and :func:`noise_statistics` gives the
   percentages with Wilson intervals (``statistics.py``) and medians of verified L2 only.

The adaptive evaluation of the randomised model (issue 19). ``flows_threat_model(model, detector,
noise="fresh")`` is the *deployed* threat model: every query draws fresh noise, and the attacks
average over draws (EOT, ``tm.observe(x, draws=K)``: one batched pass of K·B inputs):
:class:`CarliniWagnerL2` (``eot_draws``, and ``space="box"``, an x-space variant that moves the
pixels at the box boundary), :class:`APGDL2` (``apgd.py``, Auto-PGD at a fixed ε, with the detector
as a (C+1)-th "non-image" logit or as a loss term), :class:`BoundaryAttack` (``decision_draws``:
decisions by majority over M draws), and two attacks made for likelihood detectors:
:class:`SegmentAttack` (``segment.py``: the first undetected misclassified point on the segment
to a real image of another class, an upper bound on the minimal perturbation) and
:class:`LikelihoodMatching` (``likelihood_matching.py``: match the class log-likelihood vector of
such an image). ``ensemble.py`` takes the per-example worst case over verified adversarials,
``sanity.py`` the checklist of Carlini et al. 2019 (unbounded success, monotonicity in ε, budget
convergence, gradient-free not stronger than gradient-based, non-finite gradients), and
``randomness.py`` measures how often the C+1-way decision changes across draws on clean inputs
(and recommends K and N from it).
"""

from flows.attacks.apgd import APGDL2, apgd_checkpoints, c_plus_one_scores, project_to_ball_and_box
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
    fooled_and_undetected,
    log_posterior_margin,
)
from flows.attacks.detector import PAPER_RECALL, PAPER_THRESHOLDS, LikelihoodDetector
from flows.attacks.ensemble import (
    EnsembleResult,
    segment_flags,
    verified_l2,
    verified_success,
    worst_case,
)
from flows.attacks.likelihood_matching import LikelihoodMatching, likelihood_matching_attack
from flows.attacks.randomness import (
    DecisionRandomness,
    DrawRecommendation,
    decision_randomness,
    kappa_from_audit,
    recommend_draws,
)
from flows.attacks.sanity import (
    SanityCheck,
    budget_converged,
    gradient_vs_gradient_free,
    monotone_in_eps,
    newcombe_difference_interval,
    non_finite_gradients,
    run_sanity_checks,
    success_curve,
    unbounded_success,
)
from flows.attacks.segment import (
    SegmentAttack,
    decision_observation,
    segment_bound,
    select_other_class_images,
)
from flows.attacks.statistics import (
    draws_for_half_width,
    format_percentage,
    percentage_with_interval,
    wilson_half_width_at_half,
    wilson_interval,
)
from flows.attacks.threat_model import (
    DecisionModel,
    ThreatModel,
    flows_threat_model,
    majority_over_draws,
    mean_over_draws,
    repeat_draws,
)
from flows.attacks.verification import (
    NoiseVerification,
    Verification,
    noise_statistics,
    observe_draws,
    table2_statistics,
    verified_median_l2,
    verify,
    verify_at_thresholds,
    verify_over_noise,
)
from flows.noise import FixedNoise, FreshNoise

__all__ = [
    "And",
    "apgd_checkpoints",
    "APGDL2",
    "Attack",
    "AttackResult",
    "BoundaryAttack",
    "budget_converged",
    "c_plus_one_scores",
    "CarliniWagnerL2",
    "Criterion",
    "decision_observation",
    "decision_randomness",
    "DecisionModel",
    "DecisionRandomness",
    "DrawRecommendation",
    "draws_for_half_width",
    "EnsembleResult",
    "FixedNoise",
    "flows_threat_model",
    "fooled_and_undetected",
    "format_percentage",
    "FreshNoise",
    "gradient_vs_gradient_free",
    "likelihood_matching_attack",
    "LikelihoodDetector",
    "LikelihoodMatching",
    "log_posterior_margin",
    "majority_over_draws",
    "mean_over_draws",
    "Misclassified",
    "modified_boundary_attack",
    "monotone_in_eps",
    "newcombe_difference_interval",
    "noise_statistics",
    "observe_draws",
    "NoiseVerification",
    "non_finite_gradients",
    "NotDetected",
    "Observation",
    "PAPER_RECALL",
    "PAPER_THRESHOLDS",
    "percentage_with_interval",
    "project_to_ball_and_box",
    "random_targets",
    "kappa_from_audit",
    "recommend_draws",
    "repeat_draws",
    "run_sanity_checks",
    "SanityCheck",
    "segment_bound",
    "segment_flags",
    "SegmentAttack",
    "select_other_class_images",
    "select_starting_points",
    "success_curve",
    "table2_statistics",
    "TargetedMisclassified",
    "ThreatModel",
    "unbounded_success",
    "Verification",
    "verified_l2",
    "verified_median_l2",
    "verified_success",
    "verify",
    "verify_at_thresholds",
    "verify_over_noise",
    "wilson_half_width_at_half",
    "wilson_interval",
    "worst_case",
]
