r"""The segment bound: the first adversarial point on the segment to a real image of another class.

For an input ``x`` of class ``y`` and a real image ``e`` of another class (the segment's *end*),
the segment is

.. math::
    x(\alpha) = (1 - \alpha)\,x + \alpha\,e, \qquad \alpha \in [0, 1],

which stays in the box (both ends do, and the box is convex). The attack looks for the first
point on it where the criterion holds, typically ``Misclassified(y) & NotDetected(detector)``:
the C+1-way decision (:meth:`ThreatModel.decision <flows.attacks.ThreatModel.decision>`) is
neither ``y`` nor "non-image".

1. **grid**: the criterion is evaluated at :math:`\alpha_j = j / G`, ``j = 1, 2, …, G``
   (``G = grid``), in order, until it first holds, at :math:`\alpha_{j^*}`;
2. **bisection** between the previous grid point :math:`\alpha_{j^*-1}` (criterion false) and
   :math:`\alpha_{j^*}` (true), ``S = bisection_steps`` times, keeping a false lower and a true
   upper end. The returned point is the upper end :math:`x(\alpha_{hi})`: adversarial when
   evaluated, and within :math:`1/(G\,2^S)` in α, i.e. :math:`\|e - x\|_2 / (G\,2^S)` in L2,
   above a crossing point of that grid interval.

It is an **upper bound** on the minimal adversarial (undetected) perturbation along the
direction :math:`e - x`: the returned point satisfies the criterion, so the minimal perturbation
is at most its distance; an adversarial stretch of the segment shorter than ``1/G`` before
:math:`\alpha_{j^*}` may be missed by the grid, which only makes the bound looser, never wrong.
With the end chosen as a correctly classified image that the detector accepts (the pool helper
:func:`select_other_class_images`), the criterion holds at :math:`\alpha = 1` (the end itself),
so on a deterministic model every example succeeds, at worst at the end image. Section 6.3 of the
paper studies the same segments (Fig. 1, Fig. 3); the modified Boundary attack starts on them.

Several ends per example (``ends`` ``(B, N, ...)``, :func:`segment_bound` with ``n_candidates``)
give ``N`` segments; the closest success is kept. The attack needs no gradients, only decisions.

Randomised (deployed) models: with ``draws = M > 1`` every decision is the majority over ``M``
evaluations (``model.decision(points, draws=M)``, one batched pass), so that the point found
survives fresh noise; the criterion then sees the majority decision (``labels``, and
``rejected`` where it is the "non-image" label ``C``).

Rounding: the bisection ends next to the decision boundary (the margin at the returned point is
at most what the last ``1/(G·2^S)`` of α changes), so in float32 a model whose scores depend on
the batch composition by a few ULPs (a flows model, see
:func:`~flows.attacks.carlini_wagner._score_tolerance`) may decide the returned point otherwise
when it is re-evaluated in another batch; :func:`~flows.attacks.verify` is the judge, and fewer
``bisection_steps`` leave more margin. On a randomised model the majority flips at the returned
point by construction, so a re-verification under fresh noise holds about half the time there.

Query count: ``draws`` model evaluations per point whose decision is queried (the clean input
once, then the grid points up to the first hit and the ``S`` bisection points, per end).

Differences from the paper: Section 6.3 evaluates 100 uniformly spaced α to study the
likelihood along segments; it does not define an attack. The segment bound is a cheap baseline
that makes that observation an upper bound on the robustness of each example.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from flows.attacks.base import (
    Attack,
    AttackResult,
    Model,
    batches,
    check_inputs,
    check_labels,
    example_generator,
    flat_l2,
)
from flows.attacks.criteria import (
    Criterion,
    Observation,
    fooled_and_undetected,
)

__all__ = [
    "SegmentAttack",
    "decision_observation",
    "segment_bound",
    "select_other_class_images",
]


@dataclass(frozen=True)
class SegmentAttack(Attack):
    """Hyperparameters of the segment bound; calling it attacks a batch
    (``attack(model, x, criterion, ends=..., batch_size=None, progress=False)``).

    The attack draws no random numbers (the model may: see ``draws``).

    Attributes:
        grid: ``G``, the number of grid points :math:`\\alpha_j = j/G`, ``j = 1..G``.
        bisection_steps: ``S``, bisection steps on the first grid interval where the criterion
            holds; the result is within ``‖e − x‖ / (G·2^S)`` in L2 above a crossing point.
        draws: ``M``, evaluations per decision; ``M > 1`` takes the majority over ``M`` draws of
            a randomised model's C+1-way decision (the model needs ``decision(x, draws=M)``,
            as :class:`~flows.attacks.ThreatModel`).
    """

    name: ClassVar[str] = "segment"

    grid: int = 64
    bisection_steps: int = 20
    draws: int = 1

    def __post_init__(self):
        _check_int("grid", self.grid, 1)
        _check_int("bisection_steps", self.bisection_steps, 0)
        _check_int("draws", self.draws, 1)

    def __call__(
        self,
        model: Model,
        x: Tensor,
        criterion: Criterion,
        *,
        ends: Tensor,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> AttackResult:
        """Attack the batch ``x`` ``(B, ...)`` of ``model`` for ``criterion`` along the segments
        to ``ends``: ``(B, N, ...)`` ``N`` end images per example, or ``(B, ...)`` one.

        Raises:
            ValueError: as :meth:`Attack.__call__ <flows.attacks.base.Attack.__call__>`; for
                ``ends`` of another shape, non-finite or out of bounds; for ``draws > 1`` on a
                model without ``decision(x, draws=M)``.
        """
        check_inputs(x, model.bounds)
        if not isinstance(ends, Tensor):
            raise ValueError(f"ends: must be a tensor, got {type(ends).__name__}")
        if ends.shape == x.shape:
            ends = ends.unsqueeze(1)
        if ends.dim() != x.dim() + 1 or ends.shape[:1] + ends.shape[2:] != x.shape:
            raise ValueError(
                f"ends: must have shape (B, N, ...) or (B, ...) for x of shape {tuple(x.shape)}, "
                f"got {tuple(ends.shape)}"
            )
        if ends.shape[1] == 0:
            raise ValueError("ends: needs at least one end image per example (N >= 1), got 0")
        check_inputs(ends.flatten(0, 1), model.bounds, name="ends")
        if self.draws > 1 and not callable(getattr(model, "decision", None)):
            raise ValueError(
                f"draws: {self.draws} > 1 needs a model with decision(x, draws=M) (a "
                f"ThreatModel), got {type(model).__name__}"
            )
        return self._batched(model, x, criterion, batch_size, progress, ends=ends)

    def run(
        self,
        model: Model,
        x: Tensor,
        criterion: Criterion,
        indices: Tensor | None = None,
        ends: Tensor | None = None,
    ) -> AttackResult:
        """The hook: attack the validated batch ``x`` ``(B, ...)`` along the segments to ``ends``
        ``(B, N, ...)`` (``indices`` unused: the attack draws no random numbers)."""
        if ends is None:
            raise ValueError("ends: the segment bound needs end images (B, N, ...)")
        x, ends = x.detach(), ends.detach().to(x.dtype)
        b, n = ends.shape[:2]
        lo, hi = model.bounds
        queries = torch.zeros(b, dtype=torch.int64, device=x.device)

        def holds(points: Tensor, examples: Tensor) -> Tensor:
            """The criterion at ``points``, which stand for the examples ``examples``."""
            queries.index_add_(0, examples, torch.full_like(examples, self.draws))
            obs = decision_observation(model, points, self.draws)
            verdict = criterion.select(examples).is_adversarial(obs)
            assert verdict.shape == (len(examples),), f"criterion gave {tuple(verdict.shape)}"
            return verdict

        # pairs p = i·N + k: example i with its end k
        example_of = torch.arange(b, device=x.device).repeat_interleave(n)
        starts, stops = x[example_of], ends.flatten(0, 1)
        view = (-1,) + (1,) * (x.dim() - 1)

        def blend(rows: Tensor, alpha: Tensor) -> Tensor:
            """``(len(rows), ...)`` the points x(α) of the pairs ``rows``."""
            a = alpha.view(view)
            return ((1 - a) * starts[rows] + a * stops[rows]).clamp(lo, hi)

        clean = holds(x, torch.arange(b, device=x.device))
        searching = ~clean[example_of]
        found = torch.zeros_like(searching)
        low = torch.zeros(b * n, dtype=x.dtype, device=x.device)
        high = torch.ones_like(low)
        for j in range(1, self.grid + 1):
            rows = torch.nonzero(searching).flatten()
            if not len(rows):
                break
            alpha = torch.full((len(rows),), j / self.grid, dtype=x.dtype, device=x.device)
            hit = rows[holds(blend(rows, alpha), example_of[rows])]
            found[hit], searching[hit] = True, False
            high[hit], low[hit] = j / self.grid, (j - 1) / self.grid
        rows = torch.nonzero(found).flatten()
        if len(rows):
            for _ in range(self.bisection_steps):
                mid = (low[rows] + high[rows]) / 2
                ok = holds(blend(rows, mid), example_of[rows])
                high[rows] = torch.where(ok, mid, high[rows])
                low[rows] = torch.where(ok, low[rows], mid)

        points = blend(torch.arange(b * n, device=x.device), high)
        assert points.shape == stops.shape
        distance = torch.where(found, flat_l2(points, starts), math.inf).view(b, n)
        best = distance.argmin(dim=1)
        on_segment = found.view(b, n).any(dim=1)
        chosen = points.view(b, n, *x.shape[1:])[torch.arange(b, device=x.device), best]
        adversarial = torch.where(on_segment.view(view), chosen, x)
        success = clean | on_segment
        l2 = torch.where(success, flat_l2(adversarial, x), math.inf)
        status = tuple(
            "success"
            if s
            else f"the criterion holds at none of the {self.grid} grid points of the {n} "
            "segment(s) (end images not adversarial?)"
            for s in success.tolist()
        )
        return AttackResult(adversarial, success, l2, queries, status, criterion.targets)


def decision_observation(model: Model, points: Tensor, draws: int = 1) -> Observation:
    """What a decision-based attack sees at ``points`` ``(P, ...)``: the decided labels, and which
    are "non-image".

    A model with ``decision`` (:class:`~flows.attacks.ThreatModel`): its C+1-way decision
    (``draws = M > 1``: the majority over ``M`` draws), with ``rejected`` = the decision is
    ``C`` when the model has a detector. Otherwise (a labels-only
    :class:`~flows.attacks.DecisionModel`, ``draws = 1`` only): ``model.observe(points)``.
    """
    decide = getattr(model, "decision", None)
    if not callable(decide):
        if draws > 1:
            raise ValueError(f"draws: {draws} > 1 needs a model with decision(x, draws=M)")
        return model.observe(points)
    labels = decide(points, draws=draws) if draws > 1 else decide(points)
    has_detector = getattr(model, "detector", None) is not None
    rejected = labels == model.num_classes if has_detector else None
    return Observation(labels=labels, rejected=rejected)


def select_other_class_images(
    model: Model,
    x: Tensor,
    y: Tensor,
    pool_x: Tensor,
    pool_y: Tensor,
    *,
    n_candidates: int = 1,
    nearest: bool = False,
    targets: Tensor | None = None,
    seed: int = 0,
    draws: int = 1,
    batch_size: int = 256,
) -> tuple[Tensor, Tensor]:
    """For each example, ``n_candidates`` real pool images of another class that the model
    classifies correctly and accepts: the ends of the segment bound, the targets of likelihood
    matching.

    A pool image is *usable* when its decision (:func:`decision_observation`, the C+1-way
    decision of a :class:`~flows.attacks.ThreatModel`, majority over ``draws``) is its label
    ``pool_y``: correctly classified and not "non-image". Example ``i`` (of class ``y[i]``)
    takes usable images of classes ``!= y[i]`` (of class ``targets[i]`` when ``targets`` are
    given): the ``n_candidates`` nearest to ``x[i]`` in L2 (``nearest=True``; ties by pool
    order), or a uniformly random subset drawn from ``example_generator(seed, i)``.

    Returns:
        ``(B, N, ...)`` images and ``(B, N)`` their labels, ``N = n_candidates``.

    Raises:
        ValueError: naming the argument, for invalid ``x``, ``y``, ``targets`` (as
            :func:`~flows.attacks.base.check_inputs`), ``pool_x`` (empty, non-finite, out of
            bounds, or images of another shape than ``x``'s), ``pool_y`` that are not one label
            in ``[0, C)`` per pool image, ``n_candidates < 1``, and when some example has fewer
            than ``n_candidates`` usable pool images of an allowed class.
    """
    _check_int("n_candidates", n_candidates, 1)
    _check_int("draws", draws, 1)
    num_classes = model.num_classes
    check_inputs(x, model.bounds, y, targets, num_classes=num_classes)
    check_inputs(pool_x, model.bounds, name="pool_x")
    if pool_x.shape[1:] != x.shape[1:]:
        raise ValueError(
            f"pool_x: images must have the shape of x's, {tuple(x.shape[1:])}, got "
            f"{tuple(pool_x.shape[1:])}"
        )
    check_labels("pool_y", pool_y, len(pool_x), num_classes)
    pool_y = pool_y.to(pool_x.device)
    with torch.no_grad():
        decided = [
            decision_observation(model, pool_x[part], draws)
            for part in batches(len(pool_x), batch_size)
        ]
    labels = torch.cat([d.predicted() for d in decided]).to(pool_y.device)
    usable = labels == pool_y
    if all(d.rejected is not None for d in decided):
        usable &= ~torch.cat([d.rejected for d in decided]).to(pool_y.device)

    picks = []
    for i, label in enumerate(y.tolist()):
        allowed = usable & (pool_y != label)
        wanted = "another class"
        if targets is not None:
            allowed &= pool_y == int(targets[i])
            wanted = f"class {int(targets[i])}"
        candidates = torch.nonzero(allowed).flatten()
        if len(candidates) < n_candidates:
            raise ValueError(
                f"n_candidates: example {i} (class {label}) has {len(candidates)} usable pool "
                f"images of {wanted} (correctly classified and accepted by the detector), "
                f"needs {n_candidates}"
            )
        if nearest:
            gaps = flat_l2(pool_x[candidates], x[i : i + 1].to(pool_x.dtype))
            order = torch.sort(gaps, stable=True).indices
        else:
            gen = example_generator(seed, i, torch.device("cpu"))
            order = torch.randperm(len(candidates), generator=gen).to(candidates.device)
        picks.append(candidates[order[:n_candidates]])
    picked = torch.stack(picks)
    return pool_x[picked].to(x.device), pool_y[picked].to(x.device)


def segment_bound(
    attack: SegmentAttack,
    model: Model,
    x: Tensor,
    y: Tensor,
    pool_x: Tensor,
    pool_y: Tensor,
    *,
    n_candidates: int = 1,
    nearest: bool = False,
    targets: Tensor | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = False,
) -> AttackResult:
    """The segment bound of ``x`` (labels ``y``) with end images from the pool.

    Ends: :func:`select_other_class_images` (``n_candidates`` per example, nearest or random
    under ``seed``, usable under the attack's ``draws``). Criterion: ``Misclassified(y)`` or,
    with ``targets``, ``TargetedMisclassified(targets, y)`` (ends of the target class; the
    result carries them), ``& NotDetected(model.detector)`` when the model has a detector.

    Raises:
        ValueError: as :func:`select_other_class_images` and :meth:`SegmentAttack.__call__`.
    """
    ends, _ = select_other_class_images(
        model,
        x,
        y,
        pool_x,
        pool_y,
        n_candidates=n_candidates,
        nearest=nearest,
        targets=targets,
        seed=seed,
        draws=attack.draws,
    )
    criterion = fooled_and_undetected(y, targets, getattr(model, "detector", None))
    return attack(model, x, criterion, ends=ends, batch_size=batch_size, progress=progress)


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{name}: must be an integer >= {minimum}, got {value!r}")
