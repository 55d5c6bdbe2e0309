"""The worst case over an attack ensemble and the segment flags, on the two-Gaussian model.

Hand-placed adversarials lie on the model's axis, ``x' = s·u``: the classifier says class 1 iff
``s > 0``, the detector (threshold = bits/dim at ``s = 0.1``) accepts iff ``s >= 0.1`` on
``[0, a]``, and a clean input at ``s₀`` is at L2 ``s − s₀`` from ``s·u``. So which adversarials
verify, and which is the closest, is known in advance.
"""

import json
import math

import pytest
import torch

from flows.attacks import (
    AttackResult,
    BoundaryAttack,
    CarliniWagnerL2,
    FreshNoise,
    LikelihoodDetector,
    Misclassified,
    ThreatModel,
    verify,
)
from flows.attacks.ensemble import (
    EnsembleResult,
    segment_flags,
    verified_l2,
    verified_success,
    worst_case,
)
from flows.attacks.segment import SegmentAttack
from flows.attacks.statistics import percentage_with_interval
from flows.attacks.verification import verify_over_noise

CLEAN = -0.2  # the clean inputs' position on the axis


def detecting(model):
    """The classifier with a detector accepting the axis from s = 0.1 on."""
    threshold = model.bits_per_dim(model.point(0.1)).item()
    return ThreatModel(
        model.class_log_likelihoods,
        model.bits_per_dim,
        LikelihoodDetector(threshold, model.dim),
        num_classes=2,
    )


def on_axis_result(model, positions, claimed):
    """An AttackResult with adversarials at ``s·u`` for the clean inputs at ``CLEAN·u``."""
    x = model.on_axis([CLEAN] * len(positions))
    adv = model.on_axis(positions)
    success = torch.tensor(claimed)
    l2 = torch.where(success, (adv - x).flatten(1).norm(dim=1), math.inf)
    status = tuple("success" if c else "failed" for c in claimed)
    return AttackResult(adv, success, l2, torch.full((len(positions),), 10), status)


@pytest.fixture
def hand_placed(two_gaussian):
    """Three examples, two attacks (see the module):

    ======= ========================== ========================== =====================
    example A                          B                          best (undetected / any)
    ======= ========================== ========================== =====================
    0       s=0.05: fools, detected    s=0.2: undetected          B 0.4 / A 0.25
    1       s=0.15: undetected         s=0.2: undetected          A 0.35 / A 0.35
    2       s=−0.1: claimed, no fool   s=0.12: not claimed        none / none
    ======= ========================== ========================== =====================
    """
    tm = detecting(two_gaussian)
    x = two_gaussian.on_axis([CLEAN] * 3)
    y = torch.zeros(3, dtype=torch.long)
    results = {
        "A": on_axis_result(two_gaussian, [0.05, 0.15, -0.1], [True, True, True]),
        "B": on_axis_result(two_gaussian, [0.2, 0.2, 0.12], [True, True, False]),
    }
    verifications = {name: verify(tm, x, r, y) for name, r in results.items()}
    return tm, x, y, results, verifications


def test_worst_case_picks_the_closest_verified_adversarial(hand_placed):
    tm, x, y, results, verifications = hand_placed
    strict = worst_case(x, results, verifications, require_undetected=True)
    assert strict.source == ("B", "A", None)
    assert strict.success.tolist() == [True, True, False]
    torch.testing.assert_close(strict.l2, torch.tensor([0.4, 0.35, math.inf], dtype=x.dtype))
    torch.testing.assert_close(strict.adversarial[0], results["B"].adversarial[0])
    torch.testing.assert_close(strict.adversarial[1], results["A"].adversarial[1])
    torch.testing.assert_close(strict.adversarial[2], x[2])  # no verified adversarial: clean
    assert strict.fools_classifier.tolist() == [True, True, False]
    assert strict.queries.tolist() == [20, 20, 20]

    loose = worst_case(x, results, verifications, require_undetected=False)
    assert loose.source == ("A", "A", None)
    torch.testing.assert_close(loose.l2, torch.tensor([0.25, 0.35, math.inf], dtype=x.dtype))
    assert loose.success.tolist() == loose.fools_classifier.tolist() == [True, True, False]


def test_worst_case_equals_the_brute_force_minimum(hand_placed):
    """Independent oracle: per example, a Python loop over the attacks' verdicts."""
    tm, x, y, results, verifications = hand_placed
    for strict in (True, False):
        ensemble = worst_case(x, results, verifications, require_undetected=strict)
        key = "success_undetected" if strict else "fools_classifier"
        for i in range(len(x)):
            distances = {
                name: float(v.l2[i]) for name, v in verifications.items() if getattr(v, key)[i]
            }
            expected = min(distances.values(), default=math.inf)
            assert float(ensemble.l2[i]) == expected
            if distances:
                assert distances[ensemble.source[i]] == expected


def test_ensemble_re_verifies_as_one_attack_and_reports_a_table2_row(hand_placed):
    tm, x, y, results, verifications = hand_placed
    ensemble = worst_case(x, results, verifications, require_undetected=True)
    again = verify(tm, x, ensemble.to_attack_result(), y)
    assert again.success_undetected.tolist() == ensemble.success.tolist()
    torch.testing.assert_close(again.l2[ensemble.success], ensemble.l2[ensemble.success])

    stats = ensemble.statistics()
    assert stats["success"] == percentage_with_interval(2, 3)
    assert stats["fools_classifier"] == percentage_with_interval(2, 3)
    assert stats["median_l2"] == pytest.approx((0.4 + 0.35) / 2)
    assert stats["by_source"] == {"A": 1, "B": 1}
    assert stats["criterion"] == "success_undetected"
    records = ensemble.records()
    assert records[2] == {
        "success": False,
        "l2": None,
        "source": None,
        "fools_classifier": False,
        "queries": 20,
    }
    json.dumps({"stats": stats, "records": records}, allow_nan=False)


def test_a_closer_claim_that_does_not_verify_never_wins(two_gaussian):
    """Attack C claims a much closer point that is not adversarial; it must lose to B."""
    tm = detecting(two_gaussian)
    x = two_gaussian.on_axis([CLEAN] * 2)
    y = torch.zeros(2, dtype=torch.long)
    results = {
        "C": on_axis_result(two_gaussian, [-0.19, -0.19], [True, True]),
        "B": on_axis_result(two_gaussian, [0.2, 0.2], [True, True]),
    }
    verifications = {name: verify(tm, x, r, y) for name, r in results.items()}
    assert results["C"].l2.max() < results["B"].l2.min()
    ensemble = worst_case(x, results, verifications, require_undetected=False)
    assert ensemble.source == ("B", "B")


def test_ties_go_to_the_first_attack(two_gaussian):
    tm = detecting(two_gaussian)
    x = two_gaussian.on_axis([CLEAN])
    y = torch.zeros(1, dtype=torch.long)
    same = on_axis_result(two_gaussian, [0.2], [True])
    for order in (("P", "Q"), ("Q", "P")):
        results = {name: same for name in order}
        verifications = {name: verify(tm, x, same, y) for name in order}
        ensemble = worst_case(x, results, verifications, require_undetected=True)
        assert ensemble.source == (order[0],)


def test_targets_kept_only_when_every_attack_shares_them(two_gaussian):
    tm = detecting(two_gaussian)
    x = two_gaussian.on_axis([CLEAN])
    y = torch.zeros(1, dtype=torch.long)
    plain = on_axis_result(two_gaussian, [0.2], [True])
    targeted = AttackResult(
        plain.adversarial, plain.success, plain.l2, plain.queries, plain.status, torch.tensor([1])
    )
    both = {"T1": targeted, "T2": targeted}
    v = {name: verify(tm, x, r, y) for name, r in both.items()}
    assert worst_case(x, both, v, require_undetected=True).targets.tolist() == [1]
    mixed = {"T1": targeted, "U": plain}
    v = {name: verify(tm, x, r, y) for name, r in mixed.items()}
    assert worst_case(x, mixed, v, require_undetected=True).targets is None


def test_worst_case_of_real_attacks_is_their_minimum_and_not_below_the_optimum(
    two_gaussian, class0_points
):
    """CW and Boundary on the plain classifier: the ensemble's L2 is the elementwise minimum of
    theirs, and never below the analytic minimal distance −u·x."""
    x, y = class0_points
    tm = ThreatModel(two_gaussian.class_log_likelihoods, num_classes=2)
    results = {
        "cw": CarliniWagnerL2(binary_search_steps=3, steps=50)(tm, x, Misclassified(y)),
        "boundary": BoundaryAttack(max_queries=300, seed=0)(tm, x, Misclassified(y)),
    }
    verifications = {name: verify(tm, x, r, y) for name, r in results.items()}
    ensemble = worst_case(x, results, verifications, require_undetected=True)
    per_attack = torch.stack(
        [verified_l2(v, require_undetected=True) for v in verifications.values()]
    )
    torch.testing.assert_close(ensemble.l2, per_attack.min(0).values)
    analytic = -(x.flatten(1) @ two_gaussian.u)
    assert ensemble.success.all() and (ensemble.l2 >= analytic * (1 - 1e-9)).all()
    assert verify(tm, x, ensemble.to_attack_result(), y).fools_classifier.all()


def test_worst_case_accepts_noise_verifications(two_gaussian):
    """A randomised model with tiny input noise (its verdicts on the hand-placed points are
    certain): the noise verification selects as the deterministic one."""
    noisy = type(two_gaussian)(noise=1e-4)
    threshold = noisy.bits_per_dim(noisy.point(0.1)).item()
    tm = ThreatModel(
        FreshNoise(noisy.class_log_likelihoods, 0),
        FreshNoise(noisy.bits_per_dim, 1),
        LikelihoodDetector(threshold, noisy.dim),
        num_classes=2,
        randomised=True,
    )
    x = noisy.on_axis([CLEAN] * 3)
    y = torch.zeros(3, dtype=torch.long)
    results = {
        "A": on_axis_result(noisy, [0.05, 0.15, -0.1], [True, True, True]),
        "B": on_axis_result(noisy, [0.2, 0.2, 0.12], [True, True, False]),
    }
    verifications = {name: verify_over_noise(tm, x, r, y, draws=16) for name, r in results.items()}
    ensemble = worst_case(x, results, verifications, require_undetected=True)
    assert ensemble.source == ("B", "A", None)


@pytest.mark.parametrize(
    "mutate, match",
    [
        (lambda x, r, v: (x, {}, {}), "at least one attack"),
        (lambda x, r, v: (x, r, {"A": v["A"]}), r"missing \['B'\]"),
        (lambda x, r, v: (x, r, {**v, "Z": v["A"]}), r"unknown \['Z'\]"),
        (lambda x, r, v: (x[:2], r, v), "adversarials have shape"),
        (lambda x, r, v: (x, r, {"A": v["B"], "B": v["B"]}), "is not the verification"),
    ],
    ids=["empty", "missing", "unknown", "shape", "swapped"],
)
def test_worst_case_validates(hand_placed, mutate, match):
    _, x, _, results, verifications = hand_placed
    x, results, verifications = mutate(x, results, verifications)
    with pytest.raises(ValueError, match=match):
        worst_case(x, results, verifications, require_undetected=True)


def test_require_undetected_must_be_explicit(hand_placed):
    _, x, _, results, verifications = hand_placed
    with pytest.raises(TypeError):
        worst_case(x, results, verifications)
    with pytest.raises(ValueError, match="require_undetected"):
        verified_success(verifications["A"], require_undetected=1)


def test_segment_flags_on_hand_placed_verdicts(hand_placed):
    """Bound 0.36 on example 0, 0.36 on 1, none on 2: A fails the undetected criterion on 0
    (flag) and beats the bound on 1; B is farther than the bound on 0 and 1 (flags); no flag
    without a bound."""
    _, _, _, _, verifications = hand_placed
    bound = torch.tensor([0.36, 0.36, math.inf], dtype=torch.float64)
    flags = segment_flags(bound, verifications, require_undetected=True)
    assert flags["A"].tolist() == [True, False, False]
    assert flags["B"].tolist() == [True, True, False]
    loose = segment_flags(bound, verifications, require_undetected=False)
    assert loose["A"].tolist() == [False, False, False]  # 0.25 fools (detected) below 0.36
    slack = segment_flags(bound, verifications, require_undetected=True, rtol=0.2)
    assert slack["B"].tolist() == [False, False, False]  # 0.4 <= 1.2 · 0.36
    with pytest.raises(ValueError, match="segment_l2"):
        segment_flags(bound[:2], verifications, require_undetected=True)
    with pytest.raises(ValueError, match="segment_l2"):
        segment_flags(torch.tensor([0.1, math.nan, 0.1]), verifications, require_undetected=True)
    with pytest.raises(ValueError, match="rtol"):
        segment_flags(bound, verifications, require_undetected=True, rtol=-0.1)


def test_segment_flags_every_example_of_a_gradient_attack_on_a_masking_model(two_gaussian):
    """On the rounding model (zero gradients) CW fails everywhere while the segment bound to
    class-1 images verifies everywhere: every example is flagged. On the honest model CW comes
    within 2 % of the optimum, which the segment bound cannot beat: no flag with rtol = 0.02."""
    gen = torch.Generator().manual_seed(3)
    x = (two_gaussian.means[0] + 0.03 * torch.randn(6, 8, generator=gen).double()).reshape(
        6, 2, 2, 2
    )
    ends = (two_gaussian.means[1] + 0.03 * torch.randn(6, 8, generator=gen).double()).reshape(
        6, 2, 2, 2
    )
    y = torch.zeros(6, dtype=torch.long)
    models = {
        "masked": lambda z: two_gaussian.class_log_likelihoods(torch.round(z * 255) / 255),
        "honest": two_gaussian.class_log_likelihoods,
    }
    for name, logits in models.items():
        tm = ThreatModel(logits, num_classes=2)
        segment = SegmentAttack(grid=16, bisection_steps=10)(tm, x, Misclassified(y), ends=ends)
        bound = verified_l2(verify(tm, x, segment, y), require_undetected=True)
        assert torch.isfinite(bound).all()
        attack = CarliniWagnerL2(binary_search_steps=5, steps=100)(tm, x, Misclassified(y))
        flags = segment_flags(
            bound, {"cw": verify(tm, x, attack, y)}, require_undetected=True, rtol=0.02
        )
        assert flags["cw"].all() if name == "masked" else not flags["cw"].any()


def test_ensemble_result_checks_shapes(hand_placed):
    _, x, _, results, verifications = hand_placed
    ensemble = worst_case(x, results, verifications, require_undetected=True)
    with pytest.raises(ValueError, match="source"):
        EnsembleResult(
            ensemble.adversarial,
            ensemble.success,
            ensemble.l2,
            ensemble.source[:2],
            ensemble.fools_classifier,
            ensemble.queries,
            ensemble.attacks,
            True,
        )
