"""The attack APIs refuse bad inputs with a ValueError naming the argument, before any work.

Labels outside the classes and targets equal to the true label used to count as successes at
L2 = 0 (the clean input is "misclassified" / "on target"); NaN inputs passed the bounds check.
"""

import math
import re

import pytest
import torch

from flows.attacks import (
    AttackResult,
    BoundaryAttack,
    CarliniWagnerL2,
    DecisionModel,
    LikelihoodDetector,
    Misclassified,
    NotDetected,
    Observation,
    TargetedMisclassified,
    ThreatModel,
    modified_boundary_attack,
    random_targets,
    verify,
)
from flows.attacks.base import check_inputs

_literal = re.escape
FAST_CW = CarliniWagnerL2(binary_search_steps=1, steps=2)
FAST_BOUNDARY = BoundaryAttack(max_queries=20, init_attempts=2)


@pytest.fixture
def setup(two_gaussian):
    """Four class-0 points of the two-Gaussian model (C = 2), labels, and a clean result."""
    x = two_gaussian.on_axis([-0.3, -0.25, -0.2, -0.35])
    y = torch.zeros(4, dtype=torch.long)
    return two_gaussian, x, y


def with_nan(x):
    x = x.clone()
    x[2, 0, 0, 0] = math.nan
    return x


def with_inf(x):
    x = x.clone()
    x[1, 0, 1, 0] = math.inf
    return x


def at(values):
    return torch.tensor(values, dtype=torch.long)


def criterion(y, targets=None):
    """What the attacks take: the true labels, or the targets with the true labels (checked)."""
    return Misclassified(y) if targets is None else TargetedMisclassified(targets, y)


def threat_model(m, eps=None):
    det = LikelihoodDetector(6.2, m.dim)
    return ThreatModel(m.class_log_likelihoods, m.bits_per_dim, det, eps=eps, num_classes=2)


# (id, how to change (x, y, targets), substring of the message)
CASES = [
    ("nan-x", lambda x, y, t: (with_nan(x), y, t), "x: contains NaN or inf (first at example 2)"),
    ("inf-x", lambda x, y, t: (with_inf(x), y, t), "x: contains NaN or inf (first at example 1)"),
    ("empty-x", lambda x, y, t: (x[:0], y[:0], None), "x: empty batch"),
    ("float-y", lambda x, y, t: (x, y.double(), t), "y: labels must have an integer dtype"),
    ("bool-y", lambda x, y, t: (x, y.bool(), t), "y: labels must have an integer dtype"),
    ("short-y", lambda x, y, t: (x, y[:3], t), "y: labels must have shape (4,)"),
    (
        "y-too-large",
        lambda x, y, t: (x, at([0, 0, 0, 12]), t),
        "y: labels must lie in [0, 2), got 12 at index 3",
    ),
    ("negative-y", lambda x, y, t: (x, at([0, -1, 0, 0]), t), "y: labels must"),
    (
        "target-is-y",
        lambda x, y, t: (x, y, at([1, 1, 0, 1])),
        "targets: must differ from the true labels y, got target 0 = y at index 2",
    ),
    (
        "target-too-large",
        lambda x, y, t: (x, y, at([1, 5, 1, 1])),
        "targets: labels must lie in [0, 2), got 5 at index 1",
    ),
    (
        "float-targets",
        lambda x, y, t: (x, y, at([1, 1, 1, 1]).float()),
        "targets: labels must have an integer dtype",
    ),
    (
        "long-targets",
        lambda x, y, t: (x, y, at([1, 1, 1, 1, 1])),
        "targets: labels must have shape",
    ),
]
IDS = [case[0] for case in CASES]


@pytest.mark.parametrize(("name", "change", "message"), CASES, ids=IDS)
def test_carlini_wagner(setup, name, change, message):
    m, x, y = setup
    x, y, targets = change(x, y, None)
    with pytest.raises(ValueError, match=_literal(message)):
        FAST_CW(ThreatModel(m.class_log_likelihoods, num_classes=2), x, criterion(y, targets))


@pytest.mark.parametrize(("name", "change", "message"), CASES, ids=IDS)
def test_boundary_attack_with_num_classes(setup, name, change, message):
    m, x, y = setup
    x, y, targets = change(x, y, None)
    decide = DecisionModel(lambda z: m.class_log_likelihoods(z).argmax(1), num_classes=2)
    with pytest.raises(ValueError, match=_literal(message)):
        FAST_BOUNDARY(decide, x, criterion(y, targets))


@pytest.mark.parametrize(("name", "change", "message"), CASES, ids=IDS)
def test_verify(setup, name, change, message):
    m, x, y = setup
    x, y, targets = change(x, y, None)
    tm = threat_model(m, eps=1.0)
    clean = torch.nan_to_num(x, nan=0.0, posinf=0.0)
    with pytest.raises(ValueError, match=_literal(message)):  # the result carries the targets
        result = AttackResult(
            clean,
            torch.ones(len(x), dtype=torch.bool),
            torch.zeros(len(x)),
            torch.ones(len(x), dtype=torch.long),
            ("",) * len(x),
            targets,
        )
        verify(tm, x, result, y)


@pytest.mark.parametrize(("name", "change", "message"), CASES, ids=IDS)
def test_modified_boundary_attack(setup, name, change, message):
    m, x, y = setup
    x, y, targets = change(x, y, None)
    pool_x, pool_y = m.on_axis([-0.25, 0.25]), at([0, 1])
    with pytest.raises(ValueError, match=_literal(message)):
        modified_boundary_attack(
            FAST_BOUNDARY, threat_model(m), x, y, pool_x, pool_y, targets=targets
        )


def test_decision_model_num_classes_defaults_to_reject_label(setup):
    """A label equal to the reject label (C) is not a class: it used to succeed at L2 = 0."""
    m, x, y = setup
    tm = threat_model(m)
    message = "y: labels must lie in [0, 2), got 2 at index 0"
    c_plus_1 = DecisionModel(tm.decision, reject_label=2)
    assert c_plus_1.num_classes == 2
    with pytest.raises(ValueError, match=_literal(message)):
        FAST_BOUNDARY(c_plus_1, x, Misclassified(at([2, 0, 0, 0])) & NotDetected())
    with pytest.raises(ValueError, match="reject_label: must not be a class label"):
        DecisionModel(tm.decision, reject_label=1, num_classes=2)
    with pytest.raises(ValueError, match="num_classes: must be an integer >= 1"):
        DecisionModel(tm.decision, num_classes=0)
    with pytest.raises(ValueError, match="num_classes must be an integer >= 1"):
        ThreatModel(m.class_log_likelihoods, num_classes=0)


def test_boundary_attack_without_num_classes_checks_what_it_can(setup):
    m, x, y = setup
    decide = DecisionModel(lambda z: m.class_log_likelihoods(z).argmax(1))
    with pytest.raises(ValueError, match=_literal("y: labels must be >= 0, got -3 at index 1")):
        FAST_BOUNDARY(decide, x, Misclassified(at([0, -3, 0, 0])))
    with pytest.raises(ValueError, match="y: labels must have an integer dtype"):
        FAST_BOUNDARY(decide, x, Misclassified(y.float()))
    with pytest.raises(ValueError, match="targets: must differ from the true labels"):
        FAST_BOUNDARY(decide, x, TargetedMisclassified(y.clone(), y))


def test_modified_boundary_attack_pool(setup):
    m, x, y = setup
    tm, attack = threat_model(m), BoundaryAttack()
    pool_x = m.on_axis([-0.25, 0.25])
    with pytest.raises(ValueError, match=_literal("pool_y: labels must lie in [0, 2), got 7")):
        modified_boundary_attack(attack, tm, x, y, pool_x, at([0, 7]))
    with pytest.raises(ValueError, match="pool_x: empty batch"):
        modified_boundary_attack(attack, tm, x, y, pool_x[:0], at([]))
    with pytest.raises(ValueError, match="pool_x: contains NaN"):
        modified_boundary_attack(attack, tm, x, y, with_nan(m.on_axis([0.1] * 3)), at([0, 1, 1]))
    with pytest.raises(ValueError, match="needs a threat model with a detector"):
        modified_boundary_attack(attack, tm.with_detector(None), x, y, pool_x, at([0, 1]))


def test_starting_points_are_checked(setup):
    m, x, y = setup
    decide = DecisionModel(lambda z: m.class_log_likelihoods(z).argmax(1))
    with pytest.raises(ValueError, match="starts: contains NaN"):
        FAST_BOUNDARY(decide, x, Misclassified(y), starts=with_nan(x))


def test_criteria_check_labels_against_the_class_scores():
    scores = torch.zeros(3, 2)
    with pytest.raises(ValueError, match=_literal("labels: labels must lie in [0, 2)")):
        Misclassified(at([0, 2, 1])).is_adversarial(Observation(logits=scores))
    with pytest.raises(ValueError, match=_literal("targets: labels must lie in [0, 2)")):
        TargetedMisclassified(at([0, 1, -1])).loss(Observation(logits=scores))
    # a decision alone (C+1-way labels) cannot be checked and is not
    decided = Observation(labels=at([2, 0, 1]))
    assert Misclassified(at([0, 0, 1])).is_adversarial(decided).tolist() == [True, False, False]


def test_random_targets_checks_labels():
    with pytest.raises(ValueError, match=_literal("y: labels must lie in [0, 3), got 3")):
        random_targets(at([0, 3]), 3, seed=0)


def test_check_inputs_keeps_the_bounds_check():
    x = torch.zeros(2, 3)
    with pytest.raises(ValueError, match="x: must lie in bounds"):
        check_inputs(x + 1, (-0.5, 0.5))
    with pytest.raises(ValueError, match="x: must be floating point"):
        check_inputs(x.long(), (-0.5, 0.5))
    with pytest.raises(ValueError, match="x: must be a batch"):
        check_inputs(x[0], (-0.5, 0.5))
    check_inputs(x, (-0.5, 0.5), at([0, 1]), at([1, 0]), num_classes=2)
    check_inputs(x, (-0.5, 0.5), torch.tensor([0, 1], dtype=torch.int32))


def test_integer_labels_of_any_width_are_accepted(setup):
    m, x, y = setup
    result = FAST_CW(ThreatModel(m.class_log_likelihoods, num_classes=2), x, Misclassified(y.int()))
    assert result.success.shape == (4,)
