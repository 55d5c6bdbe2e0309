"""``flows.analysis.detection_path`` on the two-Gaussian model, whose curves are known in closed form."""

from __future__ import annotations

import math

import pytest
import torch

from flows.analysis.detection_path import detection_along_paths
from flows.attacks import LikelihoodDetector, ThreatModel
from tests.attacks.conftest import TwoGaussian


def _threat_model(model: TwoGaussian, threshold: float) -> ThreatModel:
    detector = LikelihoodDetector(threshold, model.dim)
    return ThreatModel(
        model.class_log_likelihoods, model.bits_per_dim, detector, num_classes=2, bounds=(-1, 1)
    )


def test_flip_and_detection_distances_match_the_two_gaussian_geometry():
    """On the axis from s₀·u (class 0) towards +u, the class flips at s = 0 (distance s₀) and
    bits/dim follow the closed form; the crossings and the slope agree with it."""
    model = TwoGaussian()
    s0 = -0.2
    x = model.point(s0)
    adversarial = model.point(0.05)  # one step past the boundary along the axis
    y = torch.tensor([0])
    threshold = float(model.bits_per_dim(model.point(-0.1)))  # detected beyond s = -0.1
    path = detection_along_paths(
        _threat_model(model, threshold), x, adversarial, y, alpha_max=1.0, points=401, bounds=None
    )
    assert path.l2_to_flip[0].item() == pytest.approx(abs(s0), abs=1e-3)
    assert path.l2_to_detect[0].item() == pytest.approx(0.1, abs=1e-3)
    assert bool(path.detected_at_flip[0])  # bits/dim at s = 0 (the valley between) exceed T
    # least-squares slope of the exact curve over [0, 0.2]
    d = torch.linspace(0, abs(s0), 201, dtype=torch.float64)
    values = model.bits_per_dim(torch.cat([model.point(s0 + float(v)) for v in d]))
    centred = d - d.mean()
    expected = float((centred * (values - values.mean())).sum() / (centred * centred).sum())
    assert path.slope[0].item() == pytest.approx(expected, rel=0.02)
    summary = path.summary()
    assert summary["n_flipped"] == 1 and summary["share_detected_at_flip"] == 1.0


def test_a_path_that_never_flips_or_is_never_detected_reports_infinity():
    model = TwoGaussian()
    x = model.point(-0.25)
    away = model.point(-0.3)  # deeper into class 0
    path = detection_along_paths(
        _threat_model(model, threshold=50.0), x, away, torch.tensor([0]), bounds=None
    )
    assert math.isinf(path.l2_to_flip[0].item()) and math.isinf(path.l2_to_detect[0].item())
    assert not bool(path.detected_at_flip[0])
    assert path.summary()["median_l2_to_flip"] is None


def test_bad_inputs_are_named():
    model = TwoGaussian()
    x = model.point(-0.2)
    tm = _threat_model(model, 6.0)
    with pytest.raises(ValueError, match="adversarial"):
        detection_along_paths(tm, x, torch.zeros(2, 8), torch.tensor([0]))
    with pytest.raises(ValueError, match="points"):
        detection_along_paths(tm, x, x, torch.tensor([0]), points=1)
    no_detector = ThreatModel(model.class_log_likelihoods, num_classes=2)
    with pytest.raises(ValueError, match="detector"):
        detection_along_paths(no_detector, x, x, torch.tensor([0]))
