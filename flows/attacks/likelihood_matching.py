r"""Likelihood matching: make ``x`` look, to the classifier *and* the detector, like a real image of
another class (after the logit matching of Tramèr, Carlini, Brendel & Madry, "On Adaptive Attacks
to Adversarial Example Defenses", NeurIPS 2020).

The attacker sees two statistics that decide the verdicts: the classifier's class scores
:math:`s(x)` (the class log-likelihoods :math:`v_c(x) = \log p(x \mid c)` of a generative
classifier; the ``z_s`` logits of the Split prior, :meth:`flows.ConditionalGlow.class_scores`), and
bits/dim :math:`b(x)`, the detector's statistic, an affine function of :math:`\log p(x)`. The
label is :math:`\arg\max_c s_c(x)`, a function of the log-posteriors
:math:`\ell(x) = \operatorname{log\_softmax}(s(x))`; the detector thresholds :math:`b(x)`. An
input :math:`x'` with :math:`\ell(x') = \ell(x_t)` and :math:`b(x') = b(x_t)`, for a real image
:math:`x_t` of class :math:`t \ne y` that is correctly classified and accepted, gets exactly
:math:`x_t`'s verdicts: class :math:`t`, "image". For a generative classifier under a uniform
prior, :math:`v_c = \ell_c + \log p(x) + \log C`, so the pair :math:`(\ell, b)` is the vector of
class log-likelihoods in other coordinates and matching it matches :math:`v`.

For each example, starting from :math:`x' = x`, minimise over the box

.. math::
    L(x') = \bigl\| \ell(x') - \ell(x_t) \bigr\|_2^2
        + \Bigl( \frac{\log p(x') - \log p(x_t)}{\sqrt D} \Bigr)^2
        + \lambda \|x' - x\|_2^2,
    \qquad \log p(x') - \log p(x_t) = -D \ln 2\,\bigl(b(x') - b(x_t)\bigr),

with Adam in x-space, each step projected onto the bounds (clamping), all examples at once
(Adam acts elementwise, so the examples do not interact). ``D`` is the detector's dimension
(``model.detector.num_dims``; else ``x[0].numel()``). Units: the log-posteriors in nats, the
log-likelihood in units of :math:`\sqrt D` nats, the scale of its spread over real images (a sum
of ``D`` per-dimension terms); ``λ`` (``distance_weight``) weighs a squared L2 distance against
these squared nats (``λ = 0``: pure matching). Without bits/dim (a model without a detector)
the second term is left out.

Why not the raw vector (this attack's first form, :math:`\|(s(x') - s(x_t))/D\|^2`; measured on
``cpu-mnist-split`` and ``cpu-cifar-split``, 3 images each, 100 and 300 steps: 0/3 successes,
"the criterion held at none of the 301 iterates"):

- on the Split prior the class scores are the ``z_s`` logits, which say nothing of
  :math:`\log p(x)`: matching them left the detector out of the loss, and the path ended at
  bits/dim 9.7–10.8 against the threshold 2.72 (MNIST) while the logits matched;
- on a generative classifier :math:`v = \ell + \log p\,\mathbf 1 + \text{const}` couples the
  classes through :math:`\log p(x)`, thousands of nats that move with every pixel, against
  log-posterior gaps of a few nats: the classes are matched last. The log-posteriors are
  shift-free, and the :math:`1/\sqrt D` scale keeps the likelihood from drowning them (with
  the likelihood in plain nats, MNIST: 2/3 at step size 1e-3 and 3e-3, L2 0.06–0.16; with
  :math:`1/\sqrt D`: 3/3, L2 0.045–0.066).

The step size matters on images: Adam moves every coordinate by about ``stepsize`` per step, an
L2 step of ``stepsize`` · √(number of coordinates), 0.32 on MNIST and 0.55 on CIFAR-10 at the
default 1e-2, more than CIFAR-10's ε = 0.129. Measured with this loss (3 images, fixed noise,
successes within the paper's ε, median L2): MNIST Split, 100 steps: 1e-2: 1/3; 3e-3: 3/3 (0.059);
1e-3: 3/3 (0.047); CIFAR-10 Split, 300 steps: 1e-2: 0/3; 1e-3: 1/3 (0.093). On CIFAR-10 the targets
are much more likely than the attacked images (bits/dim 3.0–3.4 against 4.0–4.4; one of the
three attacked images is itself above the threshold), so the matched point lies at L2 ≈ 1
and the path crosses into the adversarial region far from ``x``: likelihood matching is not a
minimum-norm attack.

The returned adversarial is the point of the optimisation path (every iterate, the start
included) that is closest to ``x`` in L2 among those where the criterion held (typically
``Misclassified(y) & NotDetected(detector)``): the path usually crosses into the adversarial
region well before it matches the target. :meth:`LikelihoodMatching.match` gives the last
iterate, the matched point itself.

Randomised (deployed) models, ``draws = K > 1`` (expectation over transformation): each step
evaluates :math:`x'` ``K`` times in one batched pass (``model.observe(x', draws=K)``), and the
matching term is the mean over draws of the per-row squared distance
(:func:`~flows.attacks.mean_over_draws`); the targets :math:`\ell(x_t)` and :math:`b(x_t)` are
the means of ``K`` draws at :math:`x_t`. An iterate counts as adversarial when the criterion holds for more than half of
its ``K`` draws (re-verify with :func:`~flows.attacks.verify` or the majority decision
``model.decision(x, draws=M)``).

Query count: ``draws`` model evaluations (forward, and backward except after the last step)
per iterate, ``steps + 1`` iterates, and ``draws`` for the target scores.

Differences from Tramèr et al. (2020): they match a robust classifier's logits (or a detector's
features) in an L∞ ball with PGD; here the matched statistics are the classifier's
log-posteriors and the likelihood detector's statistic (above), there is no ε inside the attack
(the budget is applied by :func:`~flows.attacks.verify`) and the optimiser is Adam with box
projection.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import Tensor

from flows.attacks.base import Attack, AttackResult, Model, check_inputs, flat_l2
from flows.attacks.criteria import (
    Criterion,
    Observation,
    fooled_and_undetected,
)
from flows.attacks.segment import select_other_class_images
from flows.attacks.threat_model import mean_over_draws

__all__ = ["LikelihoodMatching", "likelihood_matching_attack"]


@dataclass(frozen=True)
class LikelihoodMatching(Attack):
    """Hyperparameters of likelihood matching; calling it attacks a batch
    (``attack(model, x, criterion, target_images=..., batch_size=None, progress=False)``).

    The model must observe class scores (a :class:`~flows.attacks.ThreatModel`; with a detector
    for ``NotDetected``). The attack draws no random numbers (the model may: see ``draws``).

    Attributes:
        steps: Adam steps (``steps + 1`` iterates are evaluated, the start included).
        stepsize: Adam learning rate, in input units per coordinate (inputs span 1 in
            [−0.5, 0.5]). The default 1e-2 suits small models; on images use 1e-3 (the
            measurements in the module docstring).
        distance_weight: ``λ >= 0``, weight of ``‖x' − x‖²`` against the squared mismatch
            (nats², module docstring).
        draws: ``K``, evaluations per iterate (EOT over a randomised model's noise).
    """

    name: ClassVar[str] = "likelihood-matching"

    steps: int = 300
    stepsize: float = 1e-2
    distance_weight: float = 0.0
    draws: int = 1

    def __post_init__(self):
        for name, minimum in (("steps", 1), ("draws", 1)):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
                raise ValueError(f"{name}: must be an integer >= {minimum}, got {value!r}")
        if not (isinstance(self.stepsize, int | float) and 0 < self.stepsize < math.inf):
            raise ValueError(f"stepsize: must be a finite number > 0, got {self.stepsize!r}")
        weight = self.distance_weight
        if not (isinstance(weight, int | float) and 0 <= weight < math.inf):
            raise ValueError(f"distance_weight: must be a finite number >= 0, got {weight!r}")

    def __call__(
        self,
        model: Model,
        x: Tensor,
        criterion: Criterion,
        *,
        target_images: Tensor,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> AttackResult:
        """Attack the batch ``x`` ``(B, ...)`` of ``model`` for ``criterion`` by matching the
        class scores of ``target_images`` ``(B, ...)`` (real images of other classes).

        Raises:
            ValueError: as :meth:`Attack.__call__ <flows.attacks.base.Attack.__call__>`; for
                ``target_images`` of another shape than ``x``, non-finite or out of bounds; for
                a model that observes no class scores.
        """
        check_inputs(x, model.bounds)
        self._check_targets(model, x, target_images)
        return self._batched(model, x, criterion, batch_size, progress, target_images=target_images)

    def run(
        self,
        model: Model,
        x: Tensor,
        criterion: Criterion,
        indices: Tensor | None = None,
        target_images: Tensor | None = None,
    ) -> AttackResult:
        """The hook: attack the validated batch ``x`` ``(B, ...)`` towards the class scores of
        ``target_images`` ``(B, ...)`` (``indices`` unused: the attack draws no random numbers)."""
        if target_images is None:
            raise ValueError("target_images: likelihood matching needs one target image per input")
        path = self._descend(model, x.detach(), target_images.detach(), criterion)
        success = path.best_l2 < math.inf
        l2 = torch.where(success, flat_l2(path.best, x), math.inf)
        status = tuple(
            "success" if s else f"the criterion held at none of the {self.steps + 1} iterates"
            for s in success.tolist()
        )
        return AttackResult(path.best, success, l2, path.queries, status, criterion.targets)

    def match(self, model: Model, x: Tensor, target_images: Tensor) -> Tensor:
        """``(B, ...)`` the last iterate of the descent from ``x`` towards the class scores of
        ``target_images``: the matched point, whatever the verdicts along the way.

        Raises:
            ValueError: as :meth:`__call__` for ``x`` and ``target_images``.
        """
        check_inputs(x, model.bounds)
        self._check_targets(model, x, target_images)
        return self._descend(model, x.detach(), target_images.detach(), None).last

    def _check_targets(self, model: Model, x: Tensor, target_images: Tensor) -> None:
        check_inputs(target_images, model.bounds, name="target_images")
        if target_images.shape != x.shape:
            raise ValueError(
                f"target_images: must have the shape of x, {tuple(x.shape)}, got "
                f"{tuple(target_images.shape)}"
            )

    def _observe(self, model: Model, x: Tensor) -> Observation:
        obs = model.observe(x, draws=self.draws) if self.draws > 1 else model.observe(x)
        if obs.logits is None:
            raise ValueError(
                f"model: likelihood matching needs class scores (a ThreatModel), but "
                f"{type(model).__name__}.observe gave none"
            )
        return obs

    def _descend(
        self, model: Model, x: Tensor, target_images: Tensor, criterion: Criterion | None
    ) -> _Path:
        """Adam on ``L`` from ``x``; the closest iterate where ``criterion`` held (if given)."""
        b, k = x.shape[0], self.draws
        lo, hi = model.bounds
        root_dims = math.sqrt(_num_dims(model, x))
        with torch.no_grad():
            target_obs = self._observe(model, target_images)
            target_post = mean_over_draws(torch.log_softmax(target_obs.logits, dim=1), k)
            target_bpd = None
            if target_obs.bits_per_dim is not None:
                target_bpd = mean_over_draws(target_obs.bits_per_dim, k)
        queries = torch.full((b,), k, dtype=torch.int64, device=x.device)
        per_draw = None if criterion is None else criterion.select(torch.arange(b).repeat(k))

        best = x.clone()
        best_l2 = torch.full((b,), math.inf, dtype=x.dtype, device=x.device)
        current = x.clone()
        m, v = torch.zeros_like(x), torch.zeros_like(x)
        beta1, beta2, adam_eps = 0.9, 0.999, 1e-8
        for step in range(self.steps + 1):
            last = step == self.steps
            point = current.detach().requires_grad_(not last)
            obs = self._observe(model, point)
            assert obs.logits.shape == (k * b, target_post.shape[1]), tuple(obs.logits.shape)
            post = torch.log_softmax(obs.logits, dim=1)
            mismatch = (post - target_post.repeat(k, 1)).pow(2).sum(dim=1)
            if target_bpd is not None:
                # (log p(x') − log p(x_t)) / √D in nats: D ln 2 · Δb / √D = √D ln 2 · Δb
                gap = root_dims * math.log(2.0) * (obs.bits_per_dim - target_bpd.repeat(k))
                mismatch = mismatch + gap.to(mismatch.dtype).pow(2)
            assert mismatch.shape == (k * b,), tuple(mismatch.shape)
            loss = mean_over_draws(mismatch, k)
            l2sq = (point - x).flatten(1).pow(2).sum(dim=1)
            if self.distance_weight:
                loss = loss + self.distance_weight * l2sq
            queries += k
            with torch.no_grad():
                if per_draw is not None:
                    verdicts = per_draw.is_adversarial(_detached(obs)).view(k, b)
                    adversarial = verdicts.double().mean(dim=0) > 0.5
                    better = adversarial & (l2sq.detach() < best_l2)
                    best_l2[better] = l2sq.detach()[better]
                    best[better] = point.detach()[better]
            if last:
                break
            (grad,) = torch.autograd.grad(loss.sum(), point)
            with torch.no_grad():
                m.mul_(beta1).add_((1 - beta1) * grad)
                v.mul_(beta2).add_((1 - beta2) * grad * grad)
                m_hat = m / (1 - beta1 ** (step + 1))
                v_hat = v / (1 - beta2 ** (step + 1))
                current = (point - self.stepsize * m_hat / (v_hat.sqrt() + adam_eps)).clamp(lo, hi)
        return _Path(last=current.detach(), best=best, best_l2=best_l2, queries=queries)


@dataclass(frozen=True)
class _Path:
    """The outcome of one descent: the last iterate ``(B, ...)``, the closest adversarial iterate
    ``(B, ...)`` (the start where none) and its squared L2 ``(B,)`` (inf where none), queries."""

    last: Tensor
    best: Tensor
    best_l2: Tensor
    queries: Tensor


def _num_dims(model: Model, x: Tensor) -> int:
    """D of bits/dim: the detector's ``num_dims`` when the model has a detector, else the
    input's size ``x[0].numel()``."""
    detector = getattr(model, "detector", None)
    return int(getattr(detector, "num_dims", None) or x[0].numel())


def _detached(obs: Observation) -> Observation:
    def d(t: Tensor | None) -> Tensor | None:
        return None if t is None else t.detach()

    return Observation(d(obs.logits), d(obs.labels), d(obs.bits_per_dim), d(obs.rejected))


def likelihood_matching_attack(
    attack: LikelihoodMatching,
    model: Model,
    x: Tensor,
    y: Tensor,
    pool_x: Tensor,
    pool_y: Tensor,
    *,
    nearest: bool = False,
    targets: Tensor | None = None,
    seed: int = 0,
    batch_size: int | None = None,
    progress: bool = False,
) -> AttackResult:
    """Likelihood matching of ``x`` (labels ``y``) towards one pool image per example.

    Target images: :func:`~flows.attacks.segment.select_other_class_images` (one per example,
    correctly classified and accepted, of another class or of ``targets``; nearest or random
    under ``seed``; decisions by majority over the attack's ``draws``). Criterion:
    ``Misclassified(y)`` or, with ``targets``, ``TargetedMisclassified(targets, y)`` (the result
    carries them), ``& NotDetected(model.detector)`` when the model has a detector.

    Raises:
        ValueError: as :func:`~flows.attacks.segment.select_other_class_images` and
            :meth:`LikelihoodMatching.__call__`.
    """
    images, _ = select_other_class_images(
        model,
        x,
        y,
        pool_x,
        pool_y,
        nearest=nearest,
        targets=targets,
        seed=seed,
        draws=attack.draws,
    )
    criterion = fooled_and_undetected(y, targets, getattr(model, "detector", None))
    return attack(
        model, x, criterion, target_images=images[:, 0], batch_size=batch_size, progress=progress
    )
