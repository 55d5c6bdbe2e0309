"""What every attack shares: the result record, bounds checks, per-example seeds, batching.

Attacks here are *minimum-norm* attacks: they return the closest adversarial they found, and the L2
budget ε is applied afterwards by :func:`flows.attacks.verification.verify` (foolbox 3 applies ε
inside ``__call__`` and returns ``(raw, clipped, success)``; we return the raw adversarial plus
per-example records, and ε-clipping is a verification question, not an attack one).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from flows.attacks.criteria import Observation

__all__ = [
    "AttackResult",
    "Model",
    "flat_l2",
    "check_inputs",
    "check_labels",
    "example_generator",
]

#: A model as the attacks see it: inputs ``(B, ...)`` -> :class:`Observation`.
Model = Callable[[Tensor], Observation]


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
    """

    adversarial: Tensor
    success: Tensor
    l2: Tensor
    queries: Tensor
    status: tuple[str, ...]

    def __post_init__(self):
        b = self.adversarial.shape[0]
        for name in ("success", "l2", "queries"):
            if getattr(self, name).shape != (b,):
                raise ValueError(f"{name} must have shape ({b},)")
        if len(self.status) != b:
            raise ValueError(f"status must have {b} entries, got {len(self.status)}")

    @staticmethod
    def concatenate(parts: list[AttackResult]) -> AttackResult:
        """Join results of consecutive batches."""
        return AttackResult(
            adversarial=torch.cat([p.adversarial for p in parts]),
            success=torch.cat([p.success for p in parts]),
            l2=torch.cat([p.l2 for p in parts]),
            queries=torch.cat([p.queries for p in parts]),
            status=tuple(s for p in parts for s in p.status),
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
                self.success.tolist(), self.l2.tolist(), self.queries.tolist(), self.status,
                strict=True,
            )
        ]


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
    if y is not None and targets is not None:
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
