"""What every attack shares: the model interface, the base class, the result record, input checks.

An attack is a frozen dataclass of hyperparameters (:class:`Attack`); calling it on a model, a
batch and a criterion validates the inputs, runs the attack batch by batch (:meth:`Attack.run`,
the private hook) and returns one :class:`AttackResult`, as foolbox 3's ``__call__`` → ``run``.

Attacks here are *minimum-norm* attacks: they return the closest adversarial they found, and the L2
budget ε is applied afterwards by :func:`flows.attacks.verification.verify` (foolbox 3 applies ε
inside ``__call__`` and returns ``(raw, clipped, success)``; we return the raw adversarial plus
per-example records, and ε-clipping is a verification question, not an attack one).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, ClassVar, Protocol

import numpy as np
import torch
from torch import Tensor

if TYPE_CHECKING:
    from flows.attacks.criteria import Criterion, Observation

__all__ = [
    "Attack",
    "AttackResult",
    "Model",
    "flat_l2",
    "check_inputs",
    "check_labels",
    "check_targets_differ",
    "example_generator",
]


class Model(Protocol):
    """A model as the attacks see it (:class:`~flows.attacks.ThreatModel`,
    :class:`~flows.attacks.DecisionModel`, or any object with these three members)."""

    #: input bounds ``(lo, hi)``.
    bounds: tuple[float, float]
    #: C, the number of classes (None: unknown, a labels-only model).
    num_classes: int | None

    def observe(self, x: Tensor) -> Observation:
        """What the attacker sees at the batch ``x`` ``(B, ...)``."""
        ...


@dataclass(frozen=True)
class AttackResult:
    """Per-example outcome of an attack on ``B`` inputs.

    Attributes:
        adversarial: ``(B, ...)`` the closest adversarial found; the clean input where none was.
        success: ``(B,)`` bool, the criterion held at ``adversarial`` when the attack evaluated it.
        l2: ``(B,)`` L2 distance to the clean input; ``inf`` where ``success`` is False.
        queries: ``(B,)`` int64 model evaluations spent on each example (forward or
            forward+backward passes).
        status: one message per example: ``"success"`` or why it failed.
        targets: ``(B,)`` the target classes of a targeted attack, None for an untargeted one
            (:func:`~flows.attacks.verification.verify` judges the adversarials against them).
        members: for a combination of attacks (the ensemble's per-example worst case,
            :func:`~flows.attacks.experiment.run_experiment`), each member attack's own result
            on the same ``B`` inputs, by name; None for a single attack.
    """

    adversarial: Tensor
    success: Tensor
    l2: Tensor
    queries: Tensor
    status: tuple[str, ...]
    targets: Tensor | None = None
    members: Mapping[str, AttackResult] | None = field(default=None, repr=False, compare=False)

    def __post_init__(self):
        b = self.adversarial.shape[0]
        for name in ("success", "l2", "queries"):
            if getattr(self, name).shape != (b,):
                raise ValueError(f"{name} must have shape ({b},)")
        if len(self.status) != b:
            raise ValueError(f"status must have {b} entries, got {len(self.status)}")
        check_labels("targets", self.targets, b)
        for name, member in (self.members or {}).items():
            if member.adversarial.shape != self.adversarial.shape:
                raise ValueError(
                    f"members[{name!r}] attacked inputs of shape {tuple(member.adversarial.shape)}, "
                    f"not {tuple(self.adversarial.shape)}"
                )

    @staticmethod
    def concatenate(parts: Sequence[AttackResult]) -> AttackResult:
        """Join results of consecutive batches (targets too, when every part has them)."""
        targets = [p.targets for p in parts]
        return AttackResult(
            adversarial=torch.cat([p.adversarial for p in parts]),
            success=torch.cat([p.success for p in parts]),
            l2=torch.cat([p.l2 for p in parts]),
            queries=torch.cat([p.queries for p in parts]),
            status=tuple(s for p in parts for s in p.status),
            targets=None if any(t is None for t in targets) else torch.cat(targets),
        )

    def records(self) -> list[dict]:
        """JSON-ready per-example records ``{success, l2, queries, status}``."""
        return [
            {
                "success": bool(s),
                "l2": float(d) if bool(s) else None,
                "queries": int(q),
                "status": st,
            }
            for s, d, q, st in zip(
                self.success.tolist(),
                self.l2.tolist(),
                self.queries.tolist(),
                self.status,
                strict=True,
            )
        ]


class Attack:
    """Base of the attacks: subclasses are frozen dataclasses holding hyperparameters only.

    ``attack(model, x, criterion, batch_size=None, progress=False)`` validates ``x`` (finite,
    within ``model.bounds``) and the criterion's labels (against ``model.num_classes``), runs
    :meth:`run` on consecutive batches of ``batch_size`` (all at once if None; the results do
    not depend on it) and joins their results. The result's ``targets`` are the criterion's.
    """

    #: the name of the progress bar.
    name: ClassVar[str] = "attack"

    def __call__(
        self,
        model: Model,
        x: Tensor,
        criterion: Criterion,
        *,
        batch_size: int | None = None,
        progress: bool = False,
    ) -> AttackResult:
        """Attack the batch ``x`` ``(B, ...)`` of ``model`` for ``criterion``.

        Raises:
            ValueError: naming the argument, for an empty batch, NaN/inf or out-of-bounds ``x``,
                or labels of the criterion that are not integers, not one per example or
                outside ``[0, C)`` (or a target equal to its true label, when it knows them).
        """
        return self._batched(model, x, criterion, batch_size, progress)

    def run(
        self, model: Model, x: Tensor, criterion: Criterion, indices: Tensor | None = None
    ) -> AttackResult:
        """The hook: attack one batch of validated inputs; ``indices`` are their positions in
        the whole input (for per-example random generators)."""
        raise NotImplementedError

    def _batched(
        self,
        model: Model,
        x: Tensor,
        criterion: Criterion,
        batch_size: int | None,
        progress: bool,
        **per_example: Tensor | None,
    ) -> AttackResult:
        """Validate, then :meth:`run` batch by batch; ``per_example`` tensors are sliced along."""
        check_inputs(x, model.bounds)
        criterion.check(len(x), model.num_classes)
        index = torch.arange(len(x))
        parts = []
        for part in progress_bar(batches(len(x), batch_size), progress, self.name):
            extra = {k: None if v is None else v[part] for k, v in per_example.items()}
            parts.append(self.run(model, x[part], criterion.select(part), index[part], **extra))
        return AttackResult.concatenate(parts)


def flat_l2(a: Tensor, b: Tensor) -> Tensor:
    """``(B,)`` Euclidean distance between two ``(B, ...)`` batches."""
    return (a - b).flatten(1).norm(dim=1)


def check_inputs(
    x: Tensor,
    bounds: tuple[float, float],
    y: Tensor | None = None,
    targets: Tensor | None = None,
    *,
    num_classes: int | None = None,
    name: str = "x",
) -> None:
    """Validate a batch and its labels; errors name the argument, what was expected and what came.

    ``x`` (called ``name`` in messages) must be a non-empty floating-point batch ``(B, ...)`` of
    finite values within ``bounds``. ``y`` and ``targets`` (when given) must be integer vectors
    ``(B,)`` of labels in ``[0, num_classes)`` (only ``>= 0`` when ``num_classes`` is None), and no
    target may equal its true label (a targeted attack would "succeed" at the clean input).
    """
    lo, hi = bounds
    if not lo < hi:
        raise ValueError(f"bounds must satisfy lo < hi, got {bounds}")
    if not isinstance(x, Tensor):
        raise ValueError(f"{name}: must be a tensor, got {type(x).__name__}")
    if x.dim() < 2:
        raise ValueError(f"{name}: must be a batch (B, ...), got shape {tuple(x.shape)}")
    if x.shape[0] == 0:
        raise ValueError(f"{name}: empty batch (shape {tuple(x.shape)}); give at least one example")
    if not x.is_floating_point():
        raise ValueError(f"{name}: must be floating point, got {x.dtype}")
    finite = torch.isfinite(x.detach()).flatten(1).all(dim=1)
    if not finite.all():
        index = int(torch.nonzero(~finite)[0])
        raise ValueError(f"{name}: contains NaN or inf (first at example {index})")
    if x.numel() and (x.min() < lo or x.max() > hi):
        raise ValueError(
            f"{name}: must lie in bounds {bounds}, got range [{x.min().item()}, {x.max().item()}]"
        )
    check_labels("y", y, x.shape[0], num_classes)
    check_labels("targets", targets, x.shape[0], num_classes)
    check_targets_differ(y, targets)


def check_targets_differ(y: Tensor | None, targets: Tensor | None) -> None:
    """No target may equal its true label (a targeted attack would succeed at the clean input);
    either being None passes."""
    if y is None or targets is None:
        return
    same = torch.nonzero(targets.to(y.device) == y).flatten()
    if len(same):
        i = int(same[0])
        raise ValueError(
            f"targets: must differ from the true labels y, got target {int(targets[i])} = "
            f"y at index {i} (a targeted attack would succeed at the clean input)"
        )


def check_labels(name: str, labels: Tensor | None, n: int, num_classes: int | None = None) -> None:
    """Validate a label vector ``labels`` (called ``name``) for ``n`` examples; None passes.

    Integer dtype, shape ``(n,)``, values in ``[0, num_classes)`` (``>= 0`` without
    ``num_classes``); the message names ``name`` and the first offending index.
    """
    if labels is None:
        return
    if not isinstance(labels, Tensor):
        raise ValueError(f"{name}: labels must be a tensor, got {type(labels).__name__}")
    if labels.dtype == torch.bool or labels.is_floating_point() or labels.is_complex():
        raise ValueError(f"{name}: labels must have an integer dtype, got {labels.dtype}")
    if labels.shape != (n,):
        raise ValueError(
            f"{name}: labels must have shape ({n},) (one per example of x), got "
            f"{tuple(labels.shape)}"
        )
    if num_classes is not None:
        bad = torch.nonzero((labels < 0) | (labels >= num_classes)).flatten()
        if len(bad):
            i = int(bad[0])
            raise ValueError(
                f"{name}: labels must lie in [0, {num_classes}), got {int(labels[i])} at index {i}"
            )
    else:
        bad = torch.nonzero(labels < 0).flatten()
        if len(bad):
            i = int(bad[0])
            raise ValueError(f"{name}: labels must be >= 0, got {int(labels[i])} at index {i}")


def example_generator(seed: int, index: int, device: torch.device) -> torch.Generator:
    """An independent generator for example ``index`` of an attack seeded with ``seed``.

    Seeding per example (not per batch) makes results independent of how inputs are batched.
    """
    state = np.random.SeedSequence([seed, index]).generate_state(2, dtype=np.uint32)
    return torch.Generator(device=device).manual_seed(int(state[0]) << 32 | int(state[1]))


def batches(n: int, batch_size: int | None) -> list[slice]:
    """Consecutive slices of at most ``batch_size`` (all of ``n`` if None)."""
    if batch_size is not None and batch_size < 1:
        raise ValueError(f"batch_size must be >= 1 or None, got {batch_size}")
    size = n if batch_size is None else batch_size
    return [slice(i, min(i + size, n)) for i in range(0, n, max(size, 1))]


def progress_bar(items: list, enabled: bool, desc: str):
    """``items``, wrapped in a tqdm progress bar when ``enabled``."""
    if not enabled:
        return items
    from tqdm.auto import tqdm

    return tqdm(items, desc=desc, unit="batch")
