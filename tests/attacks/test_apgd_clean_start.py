"""APGD-det's first start at the clean input, on the paper's counterexample (known optimum).

The smoothed counterexample q (d = 300, τ = 5e-4, :class:`flows.robustness.CounterexampleModel`)
with the detector's threshold just above the outer shell's bits/dim (as a recall-1 threshold on
its test points puts it): a class-0 point of the annulus 1 < ‖x‖ ≤ 1.1 has its optimal
undetected adversarial at the radial move into the unit ball, d* ≈ ‖x‖ − 1 ≈ 0.08–0.09. A random
start on the ε-sphere (AutoAttack's) lands, for ε ≥ 0.2, outside the annulus, where both class
log-likelihoods fall at the same rate and the margin's gradient vanishes; measured before the
change (30 steps, both detector modes): 10, 8, 1 and 0 of 10 points broken at ε = 0.15, 0.2,
0.3 and 0.5. From the clean input the gradient points radially inwards.
"""

import pytest
import torch

from flows.attacks import APGDL2, LikelihoodDetector, Misclassified, NotDetected
from flows.measures import predictions
from flows.robustness import CounterexampleModel, as_threat_model


@pytest.fixture(scope="module")
def annulus():
    """(model, threat model, criterion, x, y, d*, T): 10 annulus points of class 0."""
    model = CounterexampleModel.from_targets(d=300, smoothing=5e-4)
    x, y = model.sample_annulus(10, seed=0)
    shell = model.radial_bits_per_dim(torch.tensor([2.5], dtype=torch.float64)).item()
    threshold = shell + 0.01
    detector = LikelihoodDetector(threshold, model.num_dims)
    tm = as_threat_model(model, detector)  # deterministic: called as it is, in the model's box
    best = model.optimal_distance(x, y, threshold)
    assert (best > 0.07).all() and (best < 0.1).all()
    return model, tm, Misclassified(y) & NotDetected(detector), x, y, best, threshold


def undetected_and_misclassified(model, adversarial, y, threshold) -> torch.Tensor:
    """``(B,)``: re-evaluated on the model itself, not through the attack."""
    with torch.no_grad():
        wrong = predictions(model.class_log_likelihoods(adversarial)) != y
        return wrong & (model.bits_per_dim(adversarial) <= threshold)


@pytest.mark.parametrize("mode", ["sum", "logit"])
@pytest.mark.parametrize("eps", [0.3, 0.5])
def test_clean_start_breaks_every_annulus_point_where_random_starts_fail(annulus, mode, eps):
    model, tm, criterion, x, y, _, threshold = annulus
    random = APGDL2(eps=eps, steps=30, detector_mode=mode, first_start="random")(tm, x, criterion)
    assert random.success.sum() <= 2  # the failure the clean start fixes
    clean = APGDL2(eps=eps, steps=30, detector_mode=mode)(tm, x, criterion)
    assert clean.success.all()
    assert (clean.l2 <= eps).all()
    assert undetected_and_misclassified(model, clean.adversarial, y, threshold).all()


@pytest.mark.parametrize("mode", ["sum", "logit"])
def test_found_over_optimal_distance_is_at_most_1_05(annulus, mode):
    """At ε = 1.05 d* per point every point is broken, so found / optimal ∈ [1, 1.05]; at
    ε = 0.98 d* none is (nothing beats the optimum)."""
    model, tm, criterion, x, y, best, threshold = annulus
    for i in range(len(x)):
        xi, part = x[i : i + 1], criterion.select(torch.tensor([i]))
        found = APGDL2(eps=1.05 * best[i].item(), steps=30, detector_mode=mode)(tm, xi, part)
        assert found.success.all()
        ratio = found.l2.item() / best[i].item()
        assert 1 - 1e-9 <= ratio <= 1.05 + 1e-9
        assert undetected_and_misclassified(model, found.adversarial, y[i : i + 1], threshold)
        short = APGDL2(eps=0.98 * best[i].item(), steps=30, detector_mode=mode)(tm, xi, part)
        assert not short.success.any()
