r"""Boundary attack (Brendel, Rauber & Bethge 2018): decision-based, labels only.

Start from an adversarial point and walk along the decision boundary towards the clean input
``x``. At each step, for each example with current adversarial ``a`` at distance ``d = ‖x − a‖``:

1. **orthogonal (spherical) step**: draw ``η ~ N(0, I)``, remove its component along ``x − a``,
   scale it to ``‖η‖ = s_orth · d``, and project ``a + η`` back onto the sphere of radius ``d``
   around ``x``: ``p = x + (η − (x − a)) / sqrt(1 + s_orth²)``; clip to the bounds;
2. **source step**: move ``p`` towards ``x`` so that its distance becomes ``(1 − s_src) · d``;
   clip to the bounds.

The spherical candidate is queried first; only if it is adversarial is the final candidate
queried, and it replaces ``a`` if adversarial. If the spherical candidate is adversarial but the
final one is not, the walk can move to the spherical candidate (``spherical_moves``): it is no
farther from ``x`` than ``a`` (at distance ``d`` before clipping, and clipping onto the box, which
contains ``x``, cannot increase the distance; it is taken only if its computed distance is
``≤ d``). Conditioned on being adversarial, a random spherical step tends to land deeper inside
the adversarial region than ``a``, which its last source step left just behind the boundary, so
the next source step succeeds more often; the move costs no query. That argument fails when part
of the boundary is a likelihood detector's (the C+1-way decision): a random direction lowers an
image model's likelihood, so sideways moves pile up noise that the detector rejects. Measured on
the median L2 (``benchmarks/attacks.md``), the moves bring untargeted adversarials from noise
closer on the benchmark MNIST CNN and on the ``cpu-mnist`` Split GLOW, change little for targeted
ones started from target-class images, and take them much farther on a C+1-way decision. Hence
the default: moves on unless the criterion involves the detector
(:class:`~flows.attacks.criteria.NotDetected`, as in :func:`modified_boundary_attack`). Brendel et
al. (and foolbox) always stay at ``a``: ``spherical_moves=False``.

Step sizes adapt to each example's recent success rates (every ``adapt_every`` steps): spherical
rate > 0.5 multiplies both steps by ``step_adaptation``, < 0.2 divides both; source rate (among
spherical successes) > 0.5 multiplies ``s_src``, < 0.2 divides it. An example stops (and stops
spending queries) once ``s_src`` falls below ``source_step_convergence`` or its query budget is
spent.

Proposals: i.i.d. Gaussian by default, or (``proposal_scale`` s > 1) drawn on a grid s times
coarser and upsampled bilinearly, which concentrates the search on low spatial frequencies (a
"biased sampling" prior in the sense of Brunner et al. 2019, *Guessing Smart*).

Initialisation: from given starting points, or from uniform noise in the bounds (up to
``init_attempts`` draws per example; if none is adversarial the example is reported as failed
with the reason). Either way, a binary search on the segment from ``x`` to the starting point
moves the start onto the boundary first.

Randomised models (``decision_draws = M > 1``). On the deployed threat model every query draws
fresh noise, and a walk that accepts a candidate whenever one draw calls it adversarial keeps the
lucky draws: it ends where most draws are not adversarial. With ``M`` draws per decision, every
query evaluates the points ``M`` times in one batched pass (draw-major, the layout of
:meth:`ThreatModel.observe(x, draws=M) <flows.attacks.ThreatModel.observe>`) and a point counts as
adversarial when the criterion holds for more than half of its ``M`` draws: the walk follows the
boundary of the majority decision, the contour where a fresh draw fools the classifier with
probability 1/2 (as ``M`` grows). (This is the majority of the criterion's verdicts, not of the labels: for two
classes, or a target, the same as the adversarial verdict on :meth:`ThreatModel.decision(x,
draws=M) <flows.attacks.ThreatModel.decision>`'s majority label, except for ties, which do not
count; with more classes an untargeted point counts only when a fresh draw fools with probability
above 1/2 — the plurality label may leave it at less.) The walk keeps the candidates whose
majority held by luck, so its adversarials end *inside* the 1/2 contour: on the tests' linear
model with Gaussian noise a fresh draw fools at about 0.2 with ``M = 1`` and 0.4 with ``M = 15``.
A stricter vote, ``decision_quorum`` q > 1/2 (the criterion must hold for more than ``q·M`` of the
draws), moves the walk to where fresh draws fool more often (about 0.8 with q = 0.9, ``M = 31``).

Usage: ``BoundaryAttack(...)(model, x, criterion, starts=None)``; only the criterion's verdicts on
``model.observe`` (evaluated without gradients) are used, so the model may be a
:class:`~flows.attacks.ThreatModel` or a labels-only :class:`~flows.attacks.DecisionModel` (whose
``decision_fn`` may be randomised, for ``decision_draws``). The modified Boundary attack of
Section 6.2 is :func:`modified_boundary_attack`.

Differences from foolbox 3 ``BoundaryAttack`` (which queries the final candidate of every image at
every step, converged or not, and the spherical candidate every 10th step, adapting only once
per-image queues of 100 spherical and 30 step outcomes are full, i.e. after 1000 steps): the walk
also moves on spherical successes (above; not on a C+1-way decision), statistics are kept per
example over short windows (``adapt_every`` = 10 steps), the spherical candidate is queried at
every step and the final one only when the spherical one was adversarial (the statistics are the
conditional rates of Brendel et al.), converged examples and examples out of budget stop querying,
an example for which no starting point is found is reported as failed instead of failing the whole
batch, given starting points are also bisected towards ``x``, and randomness is drawn per example
(results do not depend on batching).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

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
from flows.attacks.criteria import And, Criterion, NotDetected, TargetedMisclassified
from flows.attacks.threat_model import repeat_draws

if TYPE_CHECKING:
    from flows.attacks.threat_model import ThreatModel

__all__ = [
    "BoundaryAttack",
    "modified_boundary_attack",
    "random_targets",
    "select_starting_points",
]


@dataclass(frozen=True)
class BoundaryAttack(Attack):
    """Hyperparameters of the Boundary attack; calling it attacks a batch
    (``attack(model, x, criterion, starts=None, batch_size=None, progress=False)``).

    Attributes:
        steps: maximum number of steps per example.
        max_queries: per-example budget of model queries, initialisation included (None: only
            ``steps`` limits). The walk never exceeds it; the initialisation is never cut short.
            A decision costs at most ``decision_draws`` queries.
        spherical_step: initial relative size of the orthogonal step.
        source_step: initial relative size of the step towards the clean input.
        step_adaptation: factor by which the step sizes are adapted.
        adapt_every: steps between two adaptations (the statistics window).
        source_step_convergence: an example stops once its source step is below this.
        init_attempts: uniform-noise draws per example when no starting point is given.
        init_binary_steps: bisection steps on the segment from ``x`` to the starting point.
        seed: seed of the per-example random generators: example ``i`` of the input uses
            ``(seed, i)``, so the results do not depend on the batching.
        proposal_scale: ``s``; with ``s > 1`` (image batches ``(B, C, H, W)`` only) the
            orthogonal step's Gaussian is drawn at ``(C, ⌈H/s⌉, ⌈W/s⌉)`` and upsampled
            bilinearly to ``(C, H, W)``: a low-frequency proposal (the biased sampling of
            Brunner et al. 2019), which helps on some models and hurts on others
            (``benchmarks/attacks.md``). The source step still moves in all ``C·H·W``
            dimensions. ``1``: i.i.d. N(0, I), as Brendel et al.
        spherical_moves: move to the spherical candidate when it is adversarial and the final
            one is not (never farther from ``x``); ``False``: Brendel et al.'s rule, which moves
            only to adversarial final candidates. ``None`` (default): on, unless the criterion
            involves :class:`NotDetected` (a C+1-way decision; module docstring).
        decision_draws: ``M``, model evaluations per decision, for randomised models: a point is
            adversarial when the criterion holds for more than ``M/2`` of its ``M`` draws
            (batched passes; module docstring). A decision costs at most ``M`` queries: the vote
            stops drawing once its outcome is certain (:meth:`_vote`). ``1`` (default): one evaluation per decision; on a deterministic model
            ``M > 1`` only repeats it. An odd ``M`` avoids ties.
        decision_quorum: ``q`` in ``[0.5, 1)``: with ``decision_draws = M > 1`` a point is
            adversarial when the criterion holds for more than ``q·M`` of its draws; 0.5
            (default) is the majority, a larger q demands adversarials that survive fresh draws
            more often (module docstring). Unused with ``M = 1``.
    """

    name: ClassVar[str] = "boundary"

    steps: int = 5000
    max_queries: int | None = None
    spherical_step: float = 1e-2
    source_step: float = 1e-2
    step_adaptation: float = 1.5
    adapt_every: int = 10
    source_step_convergence: float = 1e-7
    init_attempts: int = 100
    init_binary_steps: int = 20
    seed: int = 0
    proposal_scale: int = 1
    spherical_moves: bool | None = None
    decision_draws: int = 1
    decision_quorum: float = 0.5

    def __post_init__(self):
        if self.proposal_scale < 1:
            raise ValueError(f"proposal_scale must be >= 1, got {self.proposal_scale}")
        if (
            self.steps < 0
            or self.init_attempts < 1
            or self.init_binary_steps < 0
            or self.adapt_every < 1
        ):
            raise ValueError("steps, init_binary_steps >= 0; init_attempts, adapt_every >= 1")
        if self.spherical_step <= 0 or self.source_step <= 0 or self.step_adaptation <= 1:
            raise ValueError("step sizes must be > 0 and step_adaptation > 1")
        draws = self.decision_draws
        if isinstance(draws, bool) or not isinstance(draws, int) or draws < 1:
            raise ValueError(f"decision_draws: must be an integer >= 1, got {draws!r}")
        if not 0.5 <= self.decision_quorum < 1:
            raise ValueError(f"decision_quorum: must lie in [0.5, 1), got {self.decision_quorum!r}")

    def __call__(
        self,
        model: Model,
        x: Tensor,
        criterion: Criterion,
        *,
        starts: Tensor | None = None,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> AttackResult:
        """Attack the batch ``x`` ``(B, ...)`` of ``model`` for ``criterion``, from ``starts``
        ``(B, ...)`` (adversarial starting points within the bounds; default: uniform noise) or
        ``(B, S, ...)`` (``S`` candidates per example: each adversarial one is bisected towards
        ``x`` and the closest result starts the walk).

        Raises:
            ValueError: as :meth:`Attack.__call__ <flows.attacks.base.Attack.__call__>`, for
                ``starts`` of another shape, non-finite or out of bounds, and for
                ``proposal_scale > 1`` on inputs that are not image batches ``(B, C, H, W)``.
        """
        if starts is not None:
            check_inputs(starts, model.bounds, name="starts")
            if starts.shape != x.shape and not (
                starts.dim() == x.dim() + 1
                and starts.shape[0] == x.shape[0]
                and starts.shape[2:] == x.shape[1:]
                and starts.shape[1] >= 1
            ):
                raise ValueError(
                    f"starts must have shape {tuple(x.shape)} or (B, S, ...) = "
                    f"({x.shape[0]}, S, {', '.join(map(str, x.shape[1:]))}), got "
                    f"{tuple(starts.shape)}"
                )
        if self.proposal_scale > 1 and x.dim() != 4:
            raise ValueError(
                f"proposal_scale > 1 needs image batches (B, C, H, W), got shape {tuple(x.shape)}"
            )
        return self._batched(model, x, criterion, batch_size, progress, starts=starts)

    def run(
        self,
        model: Model,
        x: Tensor,
        criterion: Criterion,
        indices: Tensor | None = None,
        starts: Tensor | None = None,
    ) -> AttackResult:
        """The hook: attack the validated batch ``x`` for ``criterion``.

        Args:
            model: queried through ``model.observe``, without gradients.
            x: ``(B, ...)`` clean inputs within bounds.
            criterion: what counts as adversarial.
            indices: ``(B,)`` global example indices seeding the per-example generators
                (default ``0..B-1``); the same index and seed give the same run in any batch.
            starts: ``(B, ...)`` adversarial starting points within bounds, or ``(B, S, ...)``
                candidates of which the closest after bisection is kept (default: noise).
        """
        x = x.detach()
        b = x.shape[0]
        lo, hi = model.bounds
        moves = self.spherical_moves
        if moves is None:
            moves = not _involves_detection(criterion)
        if indices is None:
            indices = torch.arange(b)
        gens = [example_generator(self.seed, int(i), x.device) for i in indices.tolist()]
        queries = torch.zeros(b, dtype=torch.int64, device=x.device)
        draws = self.decision_draws

        def is_adv_rows(points: Tensor, rows: Tensor) -> Tensor:
            """Query the model at ``points``, which stand for examples ``rows``; with
            ``decision_draws = M > 1``, whether the criterion holds for more than
            ``decision_quorum · M`` of ``M`` draws (:meth:`_vote`)."""
            with torch.no_grad():
                if draws == 1:
                    queries[rows] += 1
                    verdict = criterion.select(rows).is_adversarial(model.observe(points))
                else:
                    verdict = self._vote(model, criterion, points, rows, queries)
            assert verdict.shape == (len(rows),), f"criterion gave {tuple(verdict.shape)}"
            return verdict

        status = ["success"] * b
        all_rows = torch.arange(b, device=x.device)
        clean_adv = is_adv_rows(x, all_rows)
        best = x.clone()
        ok = clean_adv.clone()
        todo = ~clean_adv
        if starts is not None:
            candidates = starts.detach()
            if candidates.dim() == x.dim():
                candidates = candidates.unsqueeze(1)
        else:
            init = x.clone()
            pending = todo.clone()
            for _ in range(self.init_attempts):
                rows = all_rows[pending]
                if not len(rows):
                    break
                noise = torch.stack(
                    [
                        torch.rand(x.shape[1:], generator=gens[r], dtype=x.dtype, device=x.device)
                        for r in rows.tolist()
                    ]
                )
                noise = lo + (hi - lo) * noise
                good = is_adv_rows(noise, rows)
                init[rows[good]] = noise[good]
                pending[rows[good]] = False
            for r in all_rows[pending].tolist():
                status[r] = (
                    f"initialisation failed: none of {self.init_attempts} uniform-noise samples "
                    "is adversarial (give starting points)"
                )
            candidates = init.unsqueeze(1)
        # each adversarial candidate is bisected on the segment x -> candidate (keeping the
        # adversarial end); the closest bisected point starts the walk
        distance = torch.full((b,), math.inf, dtype=x.dtype, device=x.device)
        for k in range(candidates.shape[1]):
            rows = all_rows[todo]
            if not len(rows):
                break
            far = candidates[rows, k]
            # the noise search's draws were queried already; given candidates are queried here
            good = is_adv_rows(far, rows) if starts is not None else ~pending[rows]
            rows, far = rows[good], far[good]
            if not len(rows):
                continue
            near = self._bisect(x[rows], far, rows, is_adv_rows)
            d = flat_l2(near, x[rows])
            closer = d < distance[rows]
            best[rows[closer]] = near[closer]
            distance[rows[closer]] = d[closer]
            ok[rows] = True
        if starts is not None:
            for r in all_rows[todo & ~ok].tolist():
                status[r] = "starting point is not adversarial"
        running = todo & ok
        self._walk(x, best, running, queries, gens, is_adv_rows, moves, (lo, hi))
        success = ok
        inf = torch.full((b,), math.inf, dtype=x.dtype, device=x.device)
        l2 = torch.where(success, flat_l2(best, x), inf)
        return AttackResult(best, success, l2, queries, tuple(status), criterion.targets)

    def _vote(
        self, model: Model, criterion: Criterion, points: Tensor, rows: Tensor, queries: Tensor
    ) -> Tensor:
        r"""``(n,)``: whether the criterion holds for more than ``q·M`` of ``M`` fresh draws at
        each of ``points`` ``(n, ...)`` (examples ``rows``), counting the draws spent in
        ``queries``.

        A sequential vote: the draws are taken in rounds of :math:`M - v + 1` (the fewest misses
        that decide a rejection), :math:`v = \min\{k : k > qM\}` being the votes needed, and a
        point leaves the vote as soon as its outcome is certain (:math:`v` votes, or more than
        :math:`M - v` misses). The verdict is the one the full vote of the same draws would give;
        only the draws that cannot change it are not taken. A point far from the boundary costs
        one round (3 of 15 draws at q = 0.8), one near it about half of ``M``; an accepted point
        costs at least ``v``.
        """
        draws = self.decision_draws
        need = next(k for k in range(draws + 1) if k > self.decision_quorum * draws)
        round_size = draws - need + 1
        votes = torch.zeros(len(rows), dtype=torch.int64, device=points.device)
        open_ = torch.ones(len(rows), dtype=torch.bool, device=points.device)
        seen = 0
        while seen < draws and bool(open_.any()):
            k = min(round_size, draws - seen)
            idx = torch.nonzero(open_).flatten()
            obs = model.observe(repeat_draws(points[idx], k))
            held = criterion.select(rows[idx].repeat(k)).is_adversarial(obs)
            assert held.shape == (k * len(idx),), f"criterion gave {tuple(held.shape)}"
            votes[idx] += held.reshape(k, len(idx)).sum(0)
            queries[rows[idx]] += k
            seen += k
            open_ &= (votes < need) & (seen - votes <= draws - need)
        return votes >= need

    def _bisect(
        self,
        x: Tensor,
        far: Tensor,
        rows: Tensor,
        is_adv_rows: Callable[[Tensor, Tensor], Tensor],
    ) -> Tensor:
        """``init_binary_steps`` of bisection on the segments ``x`` -> ``far`` (both ``(n,
        ...)``, ``far`` adversarial for examples ``rows``): the adversarial end
        ``(1 - h) x + h far`` of the final bracket."""
        view = (len(rows),) + (1,) * (x.dim() - 1)
        low = torch.zeros(len(rows), dtype=x.dtype, device=x.device)
        high = torch.ones_like(low)
        for _ in range(self.init_binary_steps):
            mid = (low + high) / 2
            blend = (1 - mid.view(view)) * x + mid.view(view) * far
            good = is_adv_rows(blend, rows)
            high = torch.where(good, mid, high)
            low = torch.where(good, low, mid)
        return (1 - high.view(view)) * x + high.view(view) * far

    def _walk(
        self,
        x: Tensor,
        best: Tensor,
        running: Tensor,
        queries: Tensor,
        gens: list[torch.Generator],
        is_adv_rows: Callable[[Tensor, Tensor], Tensor],
        spherical_moves: bool,
        bounds: tuple[float, float],
    ) -> None:
        """The boundary walk, in place on ``best``; ``running`` marks examples still walking."""
        b = x.shape[0]
        lo, hi = bounds
        f = self.step_adaptation
        sph = torch.full((b,), self.spherical_step, dtype=x.dtype, device=x.device)
        src = torch.full((b,), self.source_step, dtype=x.dtype, device=x.device)
        sph_trials = torch.zeros(b, dtype=torch.int64, device=x.device)
        sph_hits = torch.zeros_like(sph_trials)
        src_trials = torch.zeros_like(sph_trials)
        src_hits = torch.zeros_like(sph_trials)
        all_rows = torch.arange(b, device=x.device)
        noise = _NoiseBank(gens, x.shape[1:], x.dtype, x.device, scale=self.proposal_scale)
        for step in range(self.steps):
            active = running & (src >= self.source_step_convergence)
            if self.max_queries is not None:  # room for one more decision
                active &= queries + self.decision_draws <= self.max_queries
            rows = all_rows[active]
            if not len(rows):
                break
            n = len(rows)
            view = (n,) + (1,) * (x.dim() - 1)
            xs, adv = x[rows], best[rows]
            to_source = xs - adv
            d = to_source.flatten(1).norm(dim=1)
            direction = to_source / d.view(view)
            eta = noise.draw(rows)
            eta = eta - (eta * direction).flatten(1).sum(1).view(view) * direction
            eta = eta * (sph[rows] * d / eta.flatten(1).norm(dim=1)).view(view)
            shrink = 1 / torch.sqrt(sph[rows] ** 2 + 1)
            spherical = (xs + shrink.view(view) * (eta - to_source)).clamp(lo, hi)
            new_to_source = xs - spherical
            new_d = new_to_source.flatten(1).norm(dim=1)
            length = (src[rows] * d + (new_d - d)).clamp(min=0) / new_d
            candidate = (spherical + length.view(view) * new_to_source).clamp(lo, hi)
            assert candidate.shape == adv.shape

            sph_ok = is_adv_rows(spherical, rows)
            sph_trials[rows] += 1
            sph_hits[rows] += sph_ok.long()
            if self.max_queries is not None:
                sph_ok &= queries[rows] + self.decision_draws <= self.max_queries
            rows2 = rows[sph_ok]
            if len(rows2):
                cand2 = candidate[sph_ok]
                cand_ok = is_adv_rows(cand2, rows2)
                src_trials[rows2] += 1
                src_hits[rows2] += cand_ok.long()
                closer = flat_l2(cand2, x[rows2]) < d[sph_ok]
                accept = cand_ok & closer
                best[rows2[accept]] = cand2[accept]
                if spherical_moves:
                    sideways = ~cand_ok & (new_d[sph_ok] <= d[sph_ok])
                    best[rows2[sideways]] = spherical[sph_ok][sideways]

            if (step + 1) % self.adapt_every == 0:
                rate = sph_hits[rows].double() / sph_trials[rows].clamp(min=1).double()
                up, down = rate > 0.5, rate < 0.2
                scale = torch.where(up, f, torch.where(down, 1 / f, 1.0)).to(x.dtype)
                sph[rows] *= scale
                src[rows] *= scale
                has = src_trials[rows] > 0
                rate2 = src_hits[rows].double() / src_trials[rows].clamp(min=1).double()
                up2, down2 = has & (rate2 > 0.5), has & (rate2 < 0.2)
                src[rows] *= torch.where(up2, f, torch.where(down2, 1 / f, 1.0)).to(x.dtype)
                sph_trials[rows] = 0
                sph_hits[rows] = 0
                src_trials[rows] = 0
                src_hits[rows] = 0


def _involves_detection(criterion: Criterion) -> bool:
    """Whether ``criterion`` is, or is a conjunction containing, :class:`NotDetected`."""
    if isinstance(criterion, NotDetected):
        return True
    return isinstance(criterion, And) and any(map(_involves_detection, criterion.criteria))


class _NoiseBank:
    """Per-example N(0, I) draws, made in blocks of ``block`` from each example's generator.

    Example ``i`` always receives the same sequence (its generator's), whatever the batch; block
    draws only save per-step Python calls. With ``scale`` s > 1 (images ``(C, H, W)`` only), each
    draw is made at ``(C, ⌈H/s⌉, ⌈W/s⌉)`` and upsampled bilinearly to ``(C, H, W)``.
    """

    def __init__(
        self,
        gens: list[torch.Generator],
        shape: torch.Size,
        dtype: torch.dtype,
        device: torch.device,
        block: int = 32,
        scale: int = 1,
    ):
        self.gens, self.shape, self.dtype, self.device = gens, shape, dtype, device
        self.block, self.scale = block, scale
        self.draw_shape = (
            shape if scale == 1 else (shape[0], -(-shape[1] // scale), -(-shape[2] // scale))
        )
        self.bank = torch.empty((len(gens), block, *shape), dtype=dtype, device=device)
        self.position = torch.full((len(gens),), block, dtype=torch.int64, device=device)

    def draw(self, rows: Tensor) -> Tensor:
        """One draw for each example in ``rows``: ``(len(rows), *shape)``."""
        for r in rows[self.position[rows] == self.block].tolist():
            draws = torch.randn(
                (self.block, *self.draw_shape),
                generator=self.gens[r],
                dtype=self.dtype,
                device=self.device,
            )
            if self.scale > 1:
                draws = torch.nn.functional.interpolate(
                    draws, size=tuple(self.shape[1:]), mode="bilinear", align_corners=False
                )
            self.bank[r] = draws
            self.position[r] = 0
        eta = self.bank[rows, self.position[rows]]
        self.position[rows] += 1
        return eta


def random_targets(y: Tensor, num_classes: int, seed: int) -> Tensor:
    """A uniformly random target class ``!= y`` per example, from ``torch.Generator(seed)``."""
    if num_classes < 2:
        raise ValueError(f"num_classes must be >= 2, got {num_classes}")
    check_labels("y", y, len(y), num_classes)
    gen = torch.Generator().manual_seed(seed)
    shift = torch.randint(1, num_classes, y.shape, generator=gen).to(y.device)
    return (y + shift) % num_classes


def select_starting_points(
    model: ThreatModel,
    pool_x: Tensor,
    pool_y: Tensor,
    targets: Tensor,
    seed: int,
    batch_size: int = 256,
    draws: int = 1,
) -> Tensor:
    """For each target, a random pool image of that class whose C+1-way decision
    (:meth:`ThreatModel.decision <flows.attacks.ThreatModel.decision>`, the majority over
    ``draws`` evaluations on a randomised model) is that class.

    That is "a randomly chosen image from the target class, ensuring the original image is
    detected as a real image from the desired class" (Section 6.2). Example ``i`` draws from
    ``example_generator(seed, i)``.

    Raises:
        ValueError: when no pool image of some target class is correctly classified and accepted.
    """
    with torch.no_grad():
        decided = torch.cat(
            [model.decision(pool_x[s], draws=draws) for s in batches(len(pool_x), batch_size)]
        )
    usable = decided == pool_y
    starts = []
    for i, t in enumerate(targets.tolist()):
        candidates = torch.nonzero(usable & (pool_y == t)).flatten()
        if not len(candidates):
            raise ValueError(
                f"no pool image of class {t} is correctly classified and accepted by the detector"
            )
        gen = example_generator(seed, i, torch.device("cpu"))
        pick = candidates[torch.randint(len(candidates), (1,), generator=gen).item()]
        starts.append(pool_x[pick])
    return torch.stack(starts)


def modified_boundary_attack(
    attack: BoundaryAttack,
    model: ThreatModel,
    x: Tensor,
    y: Tensor,
    pool_x: Tensor,
    pool_y: Tensor,
    *,
    targets: Tensor | None = None,
    batch_size: int | None = None,
    progress: bool = False,
) -> AttackResult:
    """The modified Boundary attack of Section 6.2: ``attack`` on the C+1-way decision of
    ``model`` (a :class:`~flows.attacks.ThreatModel` with a detector).

    Targeted (a random target ``!= y`` per example, :func:`random_targets` with ``attack.seed``,
    unless ``targets`` are given), started from a random correctly classified and undetected pool
    image of the target class (:func:`select_starting_points`, ``attack.seed``), with the
    criterion ``TargetedMisclassified(targets, y) & NotDetected(model.detector)``. The result
    carries the targets used (``result.targets``). On a randomised model, the attack's
    ``decision_draws`` also make the starting points' decisions majorities over that many draws.

    Raises:
        ValueError: for a model without a detector; as :meth:`BoundaryAttack.__call__` for ``x``;
            for ``y`` / ``targets`` that are not one integer label in ``[0, C)`` per example or a
            target equal to its true label; for an empty pool or ``pool_y`` that are not one
            integer label in ``[0, C)`` per pool image; and when no usable starting point of
            some target class is in the pool.
    """
    if model.detector is None:
        raise ValueError("model: the modified Boundary attack needs a threat model with a detector")
    num_classes = model.num_classes
    check_inputs(x, model.bounds, y, targets, num_classes=num_classes)
    check_inputs(pool_x, model.bounds, name="pool_x")
    check_labels("pool_y", pool_y, len(pool_x), num_classes)
    y = y.long()
    if targets is None:
        targets = random_targets(y, num_classes, attack.seed)
    draws = attack.decision_draws
    starts = select_starting_points(model, pool_x, pool_y, targets, attack.seed, draws=draws)
    criterion = TargetedMisclassified(targets, y) & NotDetected(model.detector)
    return attack(model, x, criterion, starts=starts, batch_size=batch_size, progress=progress)
