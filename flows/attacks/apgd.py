r"""Auto-PGD in L2 (Croce & Hein 2020), with expectation over transformation and the detector.

A fixed-ε attack: for each example, minimise the criterion's hinge loss ℓ (zero once the
criterion holds with the margin κ) over the feasible set
:math:`S = \{x' : \|x' - x\|_2 \le \varepsilon\} \cap [lo, hi]^D` by projected, L2-normalised
gradient steps with momentum and a step size that adapts itself (Croce & Hein 2020, "Reliable
evaluation of adversarial robustness with an ensemble of diverse parameter-free attacks",
Algorithm 1; the L2 step of their AutoAttack code). With :math:`g^{(k)} = -\nabla \ell(x^{(k)})`:

.. math::
    z^{(k+1)} = P_S\big(x^{(k)} + \eta^{(k)} g^{(k)} / \|g^{(k)}\|_2\big), \\
    x^{(k+1)} = P_S\big(x^{(k)} + \alpha (z^{(k+1)} - x^{(k)})
        + (1 - \alpha)(x^{(k)} - x^{(k-1)})\big),

with α = 1 at the first step (no previous iterate), :math:`\eta^{(0)} = 2\varepsilon`, and
checkpoints :math:`w_j = \lceil p_j N \rceil` (:func:`apgd_checkpoints`; N = ``steps``),
:math:`p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + \max(p_j - p_{j-1} - 0.03, 0.06)`. At checkpoint
:math:`w_j` the step size of an example is halved, and its iterate reset to :math:`x_{\min}`, the
lowest-loss point of the run so far, when

1. the loss decreased in fewer than :math:`\rho\,(w_j - w_{j-1})` of the steps since
   :math:`w_{j-1}`: :math:`\sum_{i=w_{j-1}}^{w_j-1} 1[\ell(x^{(i+1)}) < \ell(x^{(i)})] <
   \rho\,(w_j - w_{j-1})` (the iterates oscillate), or
2. the step size was not halved at :math:`w_{j-1}` and the lowest loss did not decrease since
   :math:`w_{j-1}` (the run stalls).

The loss. ``criterion.loss(obs, κ)`` (:mod:`flows.attacks.criteria`): for ``Misclassified(y)``
the hinge of the log-posterior margin ``max(0, log p(y|x') − max_{j≠y} log p(j|x') + κ)``, a margin
loss, not the cross-entropy of APGD-CE: a generative classifier's class log-likelihoods are of
order −10³, its posteriors saturate to 0/1, and the cross-entropy's gradient vanishes. With the
detector (``Misclassified(y) & NotDetected(detector)``) two ways to fold it in
(``detector_mode``):

- ``"sum"`` (default): the criterion's own loss, the classification hinge plus the detector's
  excess :math:`D \ln 2 \cdot \max(0, b(x') - T)` in nats (Section 6.2, as in CW-det);
- ``"logit"``: Tramèr et al. 2020 ("On adaptive attacks to adversarial example defenses",
  Section 4): the detector becomes a (C+1)-th "non-image" class of one classifier
  (:func:`c_plus_one_scores`), whose argmax is exactly the C+1-way decision, and the attack
  minimises the margin of the *good* classes (those the criterion accepts) over the *bad* ones
  (the others and "non-image"): ``max(0, max_bad s − max_good s + κ)``; κ then also applies to the
  detector (its loss is zero only when bits/dim is at least κ / (D ln 2) below T).

Randomised models (EOT, ``eot_draws = K > 1``). Each step observes the batch ``K`` times in one
pass (``model.observe(x', draws=K)``, draw-major), averages the per-draw losses of the repeated
criterion (``criterion.select(arange(B).repeat(K))``) with
:func:`~flows.attacks.threat_model.mean_over_draws`, and steps along the gradient of that mean,
an estimate of :math:`\nabla\, \mathbb{E}_{\text{noise}}\,\ell` (Athalye et al. 2018).

Success. At every evaluated point, a draw *holds* when the criterion holds there with the margin
κ and a numerical tolerance: ``criterion.is_adversarial`` and ``criterion.loss(obs, κ + tol) == 0``
(tol = 16 float ULPs of the largest class score, as in
:class:`~flows.attacks.carlini_wagner.CarliniWagnerL2`, so that no success is a rounding tie);
this is the criterion's own loss in both detector modes, so κ applies to the classification
terms only and the detector must accept (bits/dim ≤ T).
The point is a *success* when a strict majority of its ``K`` draws hold (``K = 1``: the draw
holds). An example stops at its first success (no further queries), and that point is returned;
κ therefore sets how far past the boundary a success must be: under EOT, choose κ so that a
majority of draws clearing it means the point survives fresh noise. Without a success within
the restarts the clean input is returned (the :class:`~flows.attacks.base.AttackResult`
contract) with ``success`` False, ``l2`` inf and the lowest loss in ``status``. Every returned
point lies in ``S``.

Differences from the reference (Croce & Hein's Algorithm 1 and AutoAttack's ``APGDAttack``,
``norm='L2'``):

- the loss is the criterion's margin hinge on log-posteriors (above), not the cross-entropy or
  the DLR loss; an example stops once it succeeds, as AutoAttack's examples stop once
  misclassified;
- projection: :func:`project_to_ball_and_box`, the ball first, then the box (as AutoAttack);
  this is feasible (clipping moves every coordinate towards ``x``, which is in the box, so it
  never leaves the ball) but not the exact Euclidean projection onto the intersection;
- after a step-size halving resets an iterate to :math:`x_{\min}`, its momentum term restarts
  at zero (:math:`x^{(k-1)} := x_{\min}`), and the gradient used is the one stored at
  :math:`x_{\min}`;
- the starting points (``first_start``): by default the *first* run starts at the clean
  input :math:`x^{(0)} = x`, and only the later restarts start at random, as AutoAttack's, on
  the sphere :math:`x + \varepsilon\, t/\|t\|_2`, :math:`t \sim N(0, I)`, then clipped to
  the box. AutoAttack starts every restart at random; ``first_start="random"`` does so here. We
  differ because of the likelihood detector: in high dimension nearly every point of the
  ε-sphere is off the data manifold (a random direction is noise), and a flow's log-likelihood
  falls steeply off the manifold, so the random start's bits/dim lies far above the threshold
  (on MNIST, ε = 1.5: a detector excess of order 10³ nats), the detector term swamps the
  classification margin, and the run never returns below T within its budget (measured on the
  cpu-mnist-split run: 0/3 images broken at 50–200 steps, lowest loss 470–1790 nats;
  ``benchmarks/table2_budget.md``). The same happens on the calibration counterexample
  (:class:`flows.robustness.calibration.CounterexampleModel`): a random start at distance
  ε ≥ 0.2 leaves the thin annulus for the gap, where the margin's gradient vanishes. The clean
  input is undetected and on the manifold, and its gradient points towards the nearest decision
  boundary; the later random restarts keep the diversity of AutoAttack's. Measured from the
  clean start (100 steps, fixed noise, ε = 1.5): cpu-mnist-split 5/5 images, median L2 0.048,
  in both detector modes (0/3 from the random start); cpu-cifar-split (ε = 33/255) 5/5, median
  L2 0.115; counterexample annulus points at ε = 0.2, 0.3, 0.5: 10/10 each (random start: 8, 1,
  0). Random starts are
  drawn from a generator per example (:func:`~flows.attacks.base.example_generator`), so
  results do not depend on batching (on a randomised model the noise of each query still
  depends on the batch); each restart attacks the examples without a success yet;
- ``eps = inf`` (unbounded): only the box constrains, and ε in the step size and the random
  start is replaced by the box diameter :math:`(hi - lo)\sqrt{D}`. The step size can only be
  halved at a checkpoint (8 times at N = 100, whatever N), so it never falls below
  :math:`2 (hi - lo)\sqrt{D} / 2^8` (0.25 on MNIST): against the detector, whose accepted
  region around an image is far narrower, the unbounded run fails where ε = 1.5 succeeds
  (cpu-mnist-split: 0/3 at ε = ∞, 3/3 at ε = 0.375 … 3; the sanity check "unbounded_success");
- the checkpoints are computed in exact arithmetic on the hundredths of the :math:`p_j` (the
  reference's ``int(0.22 N)`` rounds down; we follow the paper's :math:`\lceil p_j N\rceil`).

Usage: ``APGDL2(eps=2.0)(model, x, criterion)`` with a :class:`~flows.attacks.ThreatModel` (or
any model with ``observe``, ``bounds``, ``num_classes``, and ``observe(x, draws=K)`` for EOT) and
``Misclassified(y)``, ``TargetedMisclassified(t, y)``, or either ``& NotDetected(detector)``.
Queries: one forward and backward pass of ``K`` rows per evaluated point counts ``K`` model
evaluations for the example.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from flows.attacks.base import Attack, AttackResult, Model, example_generator, flat_l2
from flows.attacks.carlini_wagner import _detached, _score_tolerance
from flows.attacks.criteria import (
    And,
    Criterion,
    Misclassified,
    NotDetected,
    Observation,
    TargetedMisclassified,
)
from flows.attacks.detector import LikelihoodDetector
from flows.attacks.threat_model import mean_over_draws

__all__ = ["APGDL2", "apgd_checkpoints", "c_plus_one_scores", "project_to_ball_and_box"]

DETECTOR_MODES = ("sum", "logit")
FIRST_STARTS = ("clean", "random")


@dataclass(frozen=True)
class APGDL2(Attack):
    """Hyperparameters of L2 Auto-PGD; calling it attacks a batch
    (:class:`~flows.attacks.base.Attack`: ``attack(model, x, criterion, batch_size=None,
    progress=False)``). The algorithm, the loss and what counts as success: the module docstring.

    Attributes:
        eps: ε, the L2 budget (> 0; ``math.inf``: unbounded, only the box constrains).
        steps: N, gradient steps per restart (N + 1 evaluated points).
        restarts: runs from independent random starts; each attacks the examples without a
            success yet.
        eot_draws: K, noise draws per evaluated point (expectation over transformation, for a
            randomised model; 1 on a deterministic one).
        rho: ρ ∈ (0, 1], the fraction of loss-decreasing steps below which the step size is
            halved at a checkpoint (condition 1).
        momentum: α ∈ (0, 1], the weight of the new projected step against the previous
            displacement (1: no momentum).
        confidence: κ ≥ 0, nats: a draw holds when the criterion holds with its
            classification margin at least κ (module docstring); with
            ``detector_mode="logit"`` the attack's loss also aims κ nats below the detector's
            threshold.
        detector_mode: ``"sum"`` (the criterion's loss) or ``"logit"`` (the detector as a
            (C+1)-th class, Tramèr et al. 2020; needs a ``NotDetected(detector)`` in the
            criterion).
        first_start: where the first run starts: ``"clean"`` (default; the input itself) or
            ``"random"`` (AutoAttack's random point of the ε-sphere); later restarts always
            start at random (module docstring, "Differences from the reference").
        seed: seeds the per-example generators of the random starts (an integer ≥ 0).
        stop_at_success: True (default): an example stops at its first successful point (on a
            randomised model, the first that holds in a strict majority of its ``K`` draws).
            False: every example runs all ``steps``, and the successful point with the lowest
            loss (the EOT mean) is returned. On a randomised model the first success lies on
            the boundary of the *expected* decision and fools a fresh draw about half of the
            time; running on drives the loss of every draw to κ, deeper into the adversarial
            region, at the cost of the early stop (measured against torchattacks' APGD in
            ``benchmarks/apgd_vs_torchattacks.md``).
    """

    name: ClassVar[str] = "apgd-l2"

    eps: float
    steps: int = 100
    restarts: int = 1
    eot_draws: int = 1
    rho: float = 0.75
    momentum: float = 0.75
    confidence: float = 0.0
    detector_mode: str = "sum"
    first_start: str = "clean"
    seed: int = 0
    stop_at_success: bool = True

    def __post_init__(self):
        eps = self.eps
        if isinstance(eps, bool) or not isinstance(eps, int | float) or not eps > 0:
            raise ValueError(f"eps: must be a number > 0 (math.inf: unbounded), got {eps!r}")
        for name in ("steps", "restarts", "eot_draws"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")
        for name in ("rho", "momentum"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= 1:
                raise ValueError(f"{name}: must lie in (0, 1], got {value!r}")
        kappa = self.confidence
        if (
            isinstance(kappa, bool)
            or not isinstance(kappa, int | float)
            or not 0 <= kappa < math.inf
        ):
            raise ValueError(f"confidence: must be a finite number >= 0 (nats), got {kappa!r}")
        if self.detector_mode not in DETECTOR_MODES:
            raise ValueError(
                f"detector_mode: must be one of {DETECTOR_MODES}, got {self.detector_mode!r}"
            )
        if self.first_start not in FIRST_STARTS:
            raise ValueError(
                f"first_start: must be one of {FIRST_STARTS}, got {self.first_start!r}"
            )
        seed = self.seed
        if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed: must be an integer >= 0, got {seed!r}")
        if not isinstance(self.stop_at_success, bool):
            raise ValueError(
                f"stop_at_success: must be True or False, got {self.stop_at_success!r}"
            )

    def run(
        self, model: Model, x: Tensor, criterion: Criterion, indices: Tensor | None = None
    ) -> AttackResult:
        """The hook: attack the validated batch ``x`` ``(B, ...)`` for ``criterion``; ``indices``
        ``(B,)`` (positions in the whole input) seed the per-example random starts."""
        if self.detector_mode == "logit":
            _logit_mode_parts(criterion)  # refuses an unsuitable criterion before any query
        x = x.detach()
        b = x.shape[0]
        if indices is None:
            indices = torch.arange(b)
        lo, hi = model.bounds
        scale = self.eps if math.isfinite(self.eps) else (hi - lo) * math.sqrt(x[0].numel())
        generators = [example_generator(self.seed, int(i), x.device) for i in indices.tolist()]

        best = _Best(
            x=x.clone(),
            loss=torch.full((b,), math.inf, dtype=x.dtype, device=x.device),
            success=torch.zeros(b, dtype=torch.bool, device=x.device),
        )
        queries = torch.zeros(b, dtype=torch.int64, device=x.device)
        for restart in range(self.restarts):
            rows = torch.nonzero(~best.success).flatten()
            if not len(rows):
                break
            if restart == 0 and self.first_start == "clean":
                start = x[rows].clone()
            else:
                start = self._random_start(
                    x[rows], [generators[i] for i in rows.tolist()], scale, lo, hi
                )
            self._run_once(model, x, criterion, rows, start, scale, best, queries)

        success = best.success
        adversarial = torch.where(_rows(success, x), best.x, x)
        l2 = torch.where(success, flat_l2(adversarial, x), torch.full_like(best.loss, math.inf))
        status = tuple(
            "success" if s else f"no adversarial within eps={self.eps} (lowest loss {v:.4g} nats)"
            for s, v in zip(success.tolist(), best.loss.tolist(), strict=True)
        )
        return AttackResult(adversarial, success, l2, queries, status, criterion.targets)

    def _random_start(
        self, x: Tensor, generators: Sequence[torch.Generator], radius: float, lo: float, hi: float
    ) -> Tensor:
        """``(n, ...)``: ``x + radius · t/‖t‖``, ``t ~ N(0, I)`` from each example's generator,
        projected onto the ball and the box."""
        t = torch.stack(
            [
                torch.randn(x.shape[1:], generator=g, dtype=x.dtype, device=x.device)
                for g in generators
            ]
        )
        direction = t / t.flatten(1).norm(dim=1).clamp_min(_TINY).view(_view(x))
        return project_to_ball_and_box(x + radius * direction, x, self.eps, (lo, hi))

    def _run_once(
        self,
        model: Model,
        x: Tensor,
        criterion: Criterion,
        rows: Tensor,
        start: Tensor,
        scale: float,
        best: _Best,
        queries: Tensor,
    ) -> None:
        """One APGD run of ``steps`` steps on the examples ``rows`` from ``start`` ``(n, ...)``;
        updates ``best`` and ``queries`` (indexed by example) in place."""
        n = len(rows)
        bounds = model.bounds
        clean = x[rows]
        part = criterion.select(rows)
        k_draws = self.eot_draws

        x_k = start
        loss_k, grad_k, success = self._evaluate(model, x_k, part)
        queries[rows] += k_draws
        best.update(rows, x_k, loss_k, success)
        live = ~success if self.stop_at_success else torch.ones_like(success)
        x_prev = x_k.clone()
        eta = torch.full((n,), 2 * scale, dtype=x.dtype, device=x.device)
        x_min, loss_min, grad_min = x_k.clone(), loss_k.clone(), grad_k.clone()
        decreases = torch.zeros(n, dtype=torch.int64, device=x.device)
        halved_last = torch.zeros(n, dtype=torch.bool, device=x.device)
        loss_min_last = loss_min.clone()
        checkpoints = set(apgd_checkpoints(self.steps))
        last_checkpoint = 0

        for k in range(self.steps):
            if not live.any():
                break
            i = torch.nonzero(live).flatten()
            alpha = 1.0 if k == 0 else self.momentum
            unit = grad_k[i] / grad_k[i].flatten(1).norm(dim=1).clamp_min(_TINY).view(_view(x))
            # grad_k is the gradient of the loss: the ascent direction of f = −ℓ is −unit
            z = project_to_ball_and_box(
                x_k[i] - eta[i].view(_view(x)) * unit, clean[i], self.eps, bounds
            )
            x_new = project_to_ball_and_box(
                x_k[i] + alpha * (z - x_k[i]) + (1 - alpha) * (x_k[i] - x_prev[i]),
                clean[i],
                self.eps,
                bounds,
            )
            loss_new, grad_new, success = self._evaluate(model, x_new, part.select(i))
            queries[rows[i]] += k_draws
            best.update(rows[i], x_new, loss_new, success)

            decreases[i] += (loss_new < loss_k[i]).long()
            improved = loss_new < loss_min[i]
            x_min[i[improved]] = x_new[improved]
            loss_min[i[improved]] = loss_new[improved]
            grad_min[i[improved]] = grad_new[improved]
            x_prev[i] = x_k[i]
            x_k[i], loss_k[i], grad_k[i] = x_new, loss_new, grad_new
            if self.stop_at_success:
                live[i] = ~success

            if k + 1 in checkpoints:
                oscillating = decreases < self.rho * (k + 1 - last_checkpoint)
                stalled = ~halved_last & (loss_min >= loss_min_last)
                halve = oscillating | stalled
                eta = torch.where(halve, eta / 2, eta)
                reset = _rows(halve, x_k)
                x_k = torch.where(reset, x_min, x_k)
                x_prev = torch.where(reset, x_min, x_prev)
                grad_k = torch.where(reset, grad_min, grad_k)
                loss_k = torch.where(halve, loss_min, loss_k)
                halved_last, loss_min_last = halve, loss_min.clone()
                decreases.zero_()
                last_checkpoint = k + 1

    def _evaluate(
        self, model: Model, x_adv: Tensor, part: Criterion
    ) -> tuple[Tensor, Tensor, Tensor]:
        """The attack's loss ``(n,)`` (mean over the ``K`` draws), its gradient ``(n, ...)``
        and the success ``(n,)`` (the criterion with κ holds on a strict majority of draws) at
        ``x_adv`` ``(n, ...)``, from one pass of ``K·n`` rows."""
        n, k_draws = len(x_adv), self.eot_draws
        repeated = part
        if k_draws > 1:
            repeated = part.select(torch.arange(n, device=x_adv.device).repeat(k_draws))
        z = x_adv.detach().requires_grad_(True)
        obs = model.observe(z) if k_draws == 1 else model.observe(z, draws=k_draws)
        margin = self.confidence + _score_tolerance(obs)
        if self.detector_mode == "logit":
            row_loss = _logit_mode_loss(obs, repeated, margin)
        else:
            row_loss = repeated.loss(obs, margin)
        assert row_loss.shape == (k_draws * n,), (
            f"loss must be ({k_draws * n},), got {row_loss.shape}"
        )
        loss = mean_over_draws(row_loss, k_draws)
        (grad,) = torch.autograd.grad(loss.sum(), z)
        with torch.no_grad():
            plain = _detached(obs)
            holds = repeated.is_adversarial(plain) & (repeated.loss(plain, margin) <= 0)
            success = mean_over_draws(holds.to(loss.dtype), k_draws) > 0.5
        assert grad.shape == x_adv.shape and success.shape == (n,)
        return loss.detach(), grad, success


def apgd_checkpoints(steps: int) -> tuple[int, ...]:
    r"""The checkpoints :math:`w_j = \lceil p_j N \rceil` of APGD (Croce & Hein 2020, Section 3.2),
    ``N = steps``, increasing, without repeats, in ``[1, N]``:

    .. math::
        p_0 = 0,\quad p_1 = 0.22,\quad p_{j+1} = p_j + \max(p_j - p_{j-1} - 0.03,\ 0.06),

    for every :math:`p_j \le 1`, ``j ≥ 1``. Computed on integer hundredths (exact). For
    ``N = 100``: ``(22, 41, 57, 70, 80, 87, 93, 99)``.
    """
    if isinstance(steps, bool) or not isinstance(steps, int) or steps < 1:
        raise ValueError(f"steps: must be an integer >= 1, got {steps!r}")
    previous, current = 0, 22  # hundredths
    points: list[int] = []
    while current <= 100:
        w = -(-current * steps // 100)  # ceil
        if w >= 1 and (not points or w > points[-1]):
            points.append(w)
        previous, current = current, current + max(current - previous - 3, 6)
    return tuple(points)


def c_plus_one_scores(logits: Tensor, bits_per_dim: Tensor, detector: LikelihoodDetector) -> Tensor:
    r"""``(B, C+1)``: the classifier and the detector as one classifier (Tramèr et al. 2020).

    .. math::
        s_c(x) = \log p(c|x) \ (c < C), \qquad
        s_C(x) = \max_{c < C} \log p(c|x) + D \ln 2\,(b(x) - T),

    with :math:`\log p(\cdot|x) = \operatorname{log\_softmax}` of the class scores ``logits``
    ``(B, C)``, :math:`b(x)` = ``bits_per_dim`` ``(B,)`` and T, D the detector's threshold and
    dimension. The "non-image" score :math:`s_C` beats every class exactly when :math:`b(x) > T`
    (the detector fires), and ties the best class at :math:`b(x) = T`, where ``argmax`` (first
    maximum) picks the class, as the detector accepts; so the ``argmax`` of these scores is the
    C+1-way decision of :meth:`~flows.attacks.ThreatModel.decision`. Margins against
    :math:`s_C` are in nats: the detector's excess :math:`D \ln 2\,(b - T)` (as
    :meth:`~flows.attacks.LikelihoodDetector.excess_nats`, but signed).
    """
    if logits.dim() != 2 or bits_per_dim.shape != logits.shape[:1]:
        raise ValueError(
            f"logits must be (B, C) and bits_per_dim (B,), got {tuple(logits.shape)} and "
            f"{tuple(bits_per_dim.shape)}"
        )
    log_post = torch.log_softmax(logits, dim=1)
    excess = detector.num_dims * math.log(2.0) * (bits_per_dim - detector.threshold)
    non_image = log_post.amax(dim=1) + excess.to(log_post.dtype)
    return torch.cat([log_post, non_image[:, None]], dim=1)


def project_to_ball_and_box(
    x_adv: Tensor, x: Tensor, eps: float, bounds: tuple[float, float]
) -> Tensor:
    r"""``(B, ...)``: a point of :math:`\{\|x' - x\|_2 \le \varepsilon\} \cap [lo, hi]^D` near
    ``x_adv``, for ``x`` ``(B, ...)`` in the box.

    The displacement is scaled onto the ball, :math:`\delta \min(1, \varepsilon / \|\delta\|_2)`,
    then clipped to the box. Clipping only moves coordinates towards ``x``'s (which lie in the
    box), so the result stays in the ball: feasible, though not the exact Euclidean projection
    onto the intersection. Where rounding leaves the computed distance above ε, the radius is
    reduced by twice the excess plus the rounding bound ``ulp · ‖x'‖`` (doubled at each try)
    and the projection repeated; a row still above ε after a few tries becomes ``x`` itself
    (always feasible). ``eps = inf``: the box alone.
    """
    lo, hi = bounds
    if math.isinf(eps):
        return x_adv.clamp(lo, hi)
    delta = x_adv - x
    norm = delta.flatten(1).norm(dim=1)
    radius = torch.full_like(norm, eps)
    ulp = torch.finfo(x.dtype).eps
    for attempt in range(_PROJECTION_TRIES):
        factor = (radius / norm.clamp_min(_TINY)).clamp(max=1)
        out = (x + delta * factor.view(_view(x))).clamp(lo, hi)
        distance = flat_l2(out, x)
        over = distance > eps
        if not over.any():
            return out
        # the rounding of x + δ is at most ulp·‖x + δ‖ in norm: step past it, doubling each try
        rounding = ulp * out.flatten(1).norm(dim=1) * 2**attempt
        radius = torch.where(over, radius - 2 * (distance - eps) - rounding, radius)
    return torch.where(_rows(over, x), x, out)


@dataclass
class _Best:
    """Per-example record of the point to return: the first success, else the lowest loss."""

    x: Tensor
    loss: Tensor
    success: Tensor

    def update(self, rows: Tensor, x: Tensor, loss: Tensor, success: Tensor) -> None:
        """Take the evaluated points ``x`` of examples ``rows`` where they are better."""
        old_success = self.success[rows]
        better = (success & ~old_success) | ((success == old_success) & (loss < self.loss[rows]))
        self.x[rows[better]] = x[better]
        self.loss[rows[better]] = loss[better]
        self.success[rows[better]] = success[better]


def _logit_mode_parts(criterion: Criterion) -> tuple[list[Criterion], LikelihoodDetector]:
    """The classification parts and the detector of a criterion for ``detector_mode="logit"``.

    Raises:
        ValueError: without a ``NotDetected(detector)`` part, or with a part other than
            :class:`Misclassified`, :class:`TargetedMisclassified` and :class:`NotDetected`.
    """
    parts = criterion.criteria if isinstance(criterion, And) else (criterion,)
    detectors = [p.detector for p in parts if isinstance(p, NotDetected) and p.detector]
    if not detectors:
        raise ValueError(
            "detector_mode='logit' needs a criterion with a NotDetected(detector) part, e.g. "
            f"Misclassified(y) & NotDetected(detector); got {criterion!r}"
        )
    classification = [p for p in parts if not isinstance(p, NotDetected)]
    for p in classification:
        if not isinstance(p, Misclassified | TargetedMisclassified):
            raise ValueError(
                "detector_mode='logit' knows Misclassified, TargetedMisclassified and "
                f"NotDetected parts, got {type(p).__name__}"
            )
    return classification, detectors[0]


def _logit_mode_loss(obs: Observation, criterion: Criterion, margin: Tensor | float) -> Tensor:
    r"""``(B,)``: :math:`\max(0, \max_{j \in \text{bad}} s_j - \max_{j \in \text{good}} s_j + m)`
    on :func:`c_plus_one_scores`; good classes: those every classification part accepts (all but
    ``y`` for ``Misclassified(y)``, ``t`` for ``TargetedMisclassified(t)``); bad: the others and
    "non-image" (class C)."""
    classification, detector = _logit_mode_parts(criterion)
    if obs.logits is None or obs.bits_per_dim is None:
        raise ValueError(
            "detector_mode='logit' needs class scores and bits/dim: a threat model with a detector"
        )
    scores = c_plus_one_scores(obs.logits, obs.bits_per_dim, detector)
    b, c = obs.logits.shape
    good = torch.ones(b, c + 1, dtype=torch.bool, device=scores.device)
    good[:, c] = False
    for p in classification:
        if isinstance(p, Misclassified):
            good[torch.arange(b, device=scores.device), p.labels.to(scores.device)] = False
        else:
            accepted = torch.zeros_like(good)
            accepted[torch.arange(b, device=scores.device), p.targets.to(scores.device)] = True
            good &= accepted
    best_good = scores.masked_fill(~good, -math.inf).amax(dim=1)
    best_bad = scores.masked_fill(good, -math.inf).amax(dim=1)
    return torch.clamp(best_bad - best_good + margin, min=0)


def _view(x: Tensor) -> tuple[int, ...]:
    """The shape ``(-1, 1, ..., 1)`` that broadcasts a ``(B,)`` vector over ``x`` ``(B, ...)``."""
    return (-1,) + (1,) * (x.dim() - 1)


def _rows(mask: Tensor, x: Tensor) -> Tensor:
    """A ``(B,)`` mask shaped to select whole rows of ``x`` in ``torch.where``."""
    return mask.view(_view(x))


# smallest norm divided by (a zero gradient or displacement stays zero)
_TINY = 1e-30
# projection retries when rounding leaves a point above ε (then the row falls back to x)
_PROJECTION_TRIES = 4
