"""CW-L2 against the calibration models: found / optimal undetected distance, at d = 300.

The attack runs through :class:`flows.attacks.ThreatModel` (class log-likelihoods as scores,
the model's bits/dim, the likelihood detector) with the criterion
``Misclassified(y) & NotDetected(detector)``; the optimal distance is the model's known answer.
The goal of issue 20 for CW-L2 is a ratio <= 1.05. Adam moves every coordinate by about its step
per iteration, so the step must be well below the optimal perturbation per coordinate, here
d*/√d ≈ 0.08/17 ≈ 5e-3: projected Adam in x space (``space="box"``) with a step of 2e-3 and 600
steps. Measured worst ratios (12 Gaussian points, 4 annulus points × 2 thresholds): step 2e-3:
1.030 and 1.005; step 3e-3: 1.125 and 1.009; the default 1e-2: 1.46 and 1.05 (tanh space, whose
step in x is the step times the half-width: 1.054 on the Gaussians' [−0.5, 0.5], 1.17 on the
counterexample's [−3, 3]).
"""

import pytest
import torch

from flows.attacks import (
    CarliniWagnerL2,
    LikelihoodDetector,
    Misclassified,
    NotDetected,
)
from flows.measures import predictions
from flows.robustness import CounterexampleModel, TwoGaussianModel, as_threat_model

ATTACK = CarliniWagnerL2(binary_search_steps=9, steps=600, stepsize=2e-3, space="box")


def attack_ratio(model, x, y, threshold):
    """CW-L2 on ``model`` at detector threshold T: (found / optimal distances, adversarials)."""
    detector = LikelihoodDetector(threshold, model.num_dims)
    tm = as_threat_model(model, detector)  # deterministic: called as it is, in the model's box
    result = ATTACK(tm, x, Misclassified(y) & NotDetected(detector))
    assert result.success.all()
    with torch.no_grad():  # re-evaluated on the model itself: misclassified and undetected
        assert (predictions(model.class_log_likelihoods(result.adversarial)) != y).all()
        assert (model.bits_per_dim(result.adversarial) <= threshold).all()
    return result.l2 / model.optimal_distance(x, y, threshold)


@pytest.mark.parametrize("level", ["annulus", "between"], ids=["T=annulus", "T=between"])
def test_cw_on_the_counterexample_is_within_5_percent_of_the_radial_move(level):
    """Four annulus points of q (d = 300, τ = 5e-4). T = the annulus' bits/dim (the decision
    boundary binds), or half-way to the ball's (the detector binds)."""
    model = CounterexampleModel.from_targets(d=300, smoothing=5e-4)
    x, y = model.sample_annulus(4, seed=0)
    annulus, ball = (
        float(model.radial_bits_per_dim(torch.tensor([r], dtype=torch.float64))[0])
        for r in (1.05, 0.5)
    )
    threshold = annulus if level == "annulus" else (annulus + ball) / 2
    ratio = attack_ratio(model, x, y, threshold)
    assert (ratio >= 1 - 1e-9).all()  # nothing beats the optimum
    assert (ratio <= 1.05).all(), ratio.tolist()


def test_cw_on_two_gaussians_is_within_5_percent_where_the_detector_binds():
    """d = 300, T = the median bits/dim of test points; five correctly classified points whose
    optimum the detector moves away from the hyperplane (d* > 1.05 × its distance)."""
    model = TwoGaussianModel()
    xs, ys = model.sample(600, seed=0)
    threshold = model.bits_per_dim(xs).median().item()
    best = model.optimal_distance(xs, ys, threshold)
    hyperplane = -(xs @ model.axis) * (1 - 2 * ys)
    rows = torch.nonzero((hyperplane > 0) & (best > 1.05 * hyperplane)).flatten()[:5]
    assert len(rows) == 5
    ratio = attack_ratio(model, xs[rows], ys[rows], threshold)
    assert (ratio >= 1 - 1e-9).all()
    assert (ratio <= 1.05).all(), ratio.tolist()
