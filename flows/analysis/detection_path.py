r"""Does the detector see an adversarial coming? Bits/dim and the class margin along its path.

Section 6.2 reports that CW-L2 "is easily detectable" while the Boundary attack is not. Whether an
adversarial is detected depends on how fast the likelihood falls along the way to it, against
how fast the classification flips. For clean inputs ``x`` ``(B, ...)`` and adversarials ``x'``,
this module evaluates the straight path

.. math:: x(\alpha) = x + \alpha\,(x' - x), \qquad \alpha \in [0, \alpha_{\max}],

at the distances :math:`d(\alpha) = \alpha \lVert x' - x \rVert_2` and reports, per example:

* ``l2_to_flip``: the first distance on the grid where the log-posterior margin of the true class
  is no longer positive (the classifier is fooled), linearly interpolated between grid points;
* ``l2_to_detect``: the first distance where bits/dim exceed the detector threshold ``T``;
* ``slope``: the least-squares slope of bits/dim against distance over the grid points up to
  the flip (at least the first two), in bits/dim per unit of L2: how much the likelihood moves
  per unit of perturbation;
* ``detected_at_flip``: whether bits/dim exceed ``T`` at the flip, i.e. the adversarial that just
  crosses the class boundary along this direction is detected.

Inputs are taken as given (clamped to the model's bounds when ``bounds`` is given, so that
``α > 1`` stays a valid image). The model is any :class:`~flows.attacks.ThreatModel` with a
detector: ``tm.observe(points)`` gives the class scores and bits/dim of a batch, evaluated in one
pass of ``B·A`` points. For a randomised model fix its noise first
(:func:`flows.attacks.flows_threat_model` with ``noise="fixed"``), or the curves are noisy.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from flows.attacks.criteria import log_posterior_margin

__all__ = ["DetectionPath", "detection_along_paths"]


@dataclass(frozen=True)
class DetectionPath:
    """Per-example curves and crossings along the paths (``B`` examples, ``A`` grid points).

    Attributes:
        distance: ``(B, A)`` L2 distance from the clean input of each grid point.
        bits_per_dim: ``(B, A)`` the detector's statistic along the path.
        margin: ``(B, A)`` log-posterior margin of the true class (nats; > 0: correct).
        threshold: ``T``, bits/dim.
        l2_to_flip: ``(B,)`` distance of the first margin crossing (inf: never on the grid).
        l2_to_detect: ``(B,)`` distance of the first bits/dim crossing of ``T`` (0: detected
            from the start; inf: never on the grid).
        slope: ``(B,)`` bits/dim per unit L2 before the flip (least squares).
        detected_at_flip: ``(B,)`` bits/dim at the flip exceed ``T`` (False where no flip).
    """

    distance: Tensor
    bits_per_dim: Tensor
    margin: Tensor
    threshold: float
    l2_to_flip: Tensor
    l2_to_detect: Tensor
    slope: Tensor
    detected_at_flip: Tensor

    def summary(self) -> dict:
        """JSON-ready medians and shares over the examples whose path flips the class."""
        flips = torch.isfinite(self.l2_to_flip)
        n = int(flips.sum())

        def median(values: Tensor) -> float | None:
            finite = values[flips]
            return float(finite.median()) if n else None

        return {
            "n": len(self.l2_to_flip),
            "n_flipped": n,
            "threshold_bits_per_dim": self.threshold,
            "median_l2_to_flip": median(self.l2_to_flip),
            "median_slope_bits_per_dim_per_l2": median(self.slope),
            "share_detected_at_flip": float(self.detected_at_flip[flips].double().mean())
            if n
            else None,
            "median_clean_margin_to_threshold": float(
                (self.threshold - self.bits_per_dim[:, 0]).median()
            ),
        }


def _first_crossing(distance: Tensor, values: Tensor, level: float, rising: bool) -> Tensor:
    """``(B,)``: the first distance where ``values`` cross ``level`` (upwards when ``rising``),
    linearly interpolated between grid points; 0 when already across at the start, inf never."""
    across = values > level if rising else values <= level
    first = torch.where(across.any(1), across.float().argmax(1), -1)
    out = torch.full((len(values),), math.inf, dtype=distance.dtype)
    for i, j in enumerate(first.tolist()):
        if j < 0:
            continue
        if j == 0:
            out[i] = 0.0
            continue
        v0, v1 = float(values[i, j - 1]), float(values[i, j])
        d0, d1 = float(distance[i, j - 1]), float(distance[i, j])
        t = (level - v0) / (v1 - v0) if v1 != v0 else 1.0
        out[i] = d0 + min(max(t, 0.0), 1.0) * (d1 - d0)
    return out


def detection_along_paths(
    threat_model,
    x: Tensor,
    adversarial: Tensor,
    y: Tensor,
    *,
    alpha_max: float = 2.0,
    points: int = 41,
    bounds: tuple[float, float] | None = (-0.5, 0.5),
) -> DetectionPath:
    """Evaluate the straight paths from ``x`` ``(B, ...)`` through ``adversarial`` to
    ``alpha_max`` times as far, on ``points`` evenly spaced values of α (see the module).

    ``threat_model`` needs a detector (``threat_model.detector``) and ``observe``; ``y`` ``(B,)``
    are the true labels.

    Raises:
        ValueError: no detector, shapes that do not match, ``alpha_max <= 0`` or ``points < 2``.
    """
    detector = getattr(threat_model, "detector", None)
    if detector is None:
        raise ValueError("threat_model: needs a detector (bits/dim and a threshold)")
    if adversarial.shape != x.shape:
        raise ValueError(
            f"adversarial: shape {tuple(adversarial.shape)} is not x's {tuple(x.shape)}"
        )
    if y.shape != x.shape[:1]:
        raise ValueError(f"y: expected ({len(x)},) labels, got {tuple(y.shape)}")
    if not alpha_max > 0:
        raise ValueError(f"alpha_max: must be > 0, got {alpha_max}")
    if points < 2:
        raise ValueError(f"points: must be >= 2, got {points}")
    b = len(x)
    alphas = torch.linspace(0.0, alpha_max, points, dtype=x.dtype, device=x.device)
    direction = (adversarial - x).detach()
    grid = x[:, None] + alphas.view(1, -1, *([1] * (x.dim() - 1))) * direction[:, None]
    if bounds is not None:
        grid = grid.clamp(*bounds)
    flat = grid.reshape(b * points, *x.shape[1:])
    with torch.no_grad():
        obs = threat_model.observe(flat)
    labels = y.repeat_interleave(points).to(obs.logits.device)
    margin = log_posterior_margin(obs.logits, labels).reshape(b, points).double().cpu()
    bpd = obs.bits_per_dim.reshape(b, points).double().cpu()
    distance = (grid - x[:, None]).flatten(2).norm(dim=2).double().cpu()
    l2_to_flip = _first_crossing(distance, margin, 0.0, rising=False)
    l2_to_detect = _first_crossing(distance, bpd, detector.threshold, rising=True)
    slope = torch.full((b,), math.nan, dtype=torch.float64)
    detected_at_flip = torch.zeros(b, dtype=torch.bool)
    for i in range(b):
        upto = distance[i] <= (l2_to_flip[i] if math.isfinite(l2_to_flip[i]) else math.inf)
        upto[:2] = True
        d, v = distance[i][upto], bpd[i][upto]
        centred = d - d.mean()
        denominator = float((centred * centred).sum())
        if denominator > 0:
            slope[i] = float((centred * (v - v.mean())).sum()) / denominator
        if math.isfinite(l2_to_flip[i]):
            at_flip = np.interp(float(l2_to_flip[i]), distance[i].numpy(), bpd[i].numpy())
            detected_at_flip[i] = bool(at_flip > detector.threshold)
    return DetectionPath(
        distance=distance,
        bits_per_dim=bpd,
        margin=margin,
        threshold=detector.threshold,
        l2_to_flip=l2_to_flip,
        l2_to_detect=l2_to_detect,
        slope=slope,
        detected_at_flip=detected_at_flip,
    )
