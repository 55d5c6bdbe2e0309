r"""Linear interpolation between two test images of different classes (Section 6.3, Figs. 1 and 3).

For images :math:`x_0, x_1` of classes :math:`y_0 \ne y_1` and :math:`\alpha \in [0, 1]`,

.. math:: x_\alpha = \alpha\, x_1 + (1 - \alpha)\, x_0 ,

so :math:`x_{\alpha=0} = x_0` and :math:`x_{\alpha=1} = x_1` exactly. Along each path a model gives
``log p(x_α | c)`` for every class from one encoding, hence ``log p(x_α)``, bits/dim and the
posteriors ``p(y0 | x_α)``, ``p(y1 | x_α)`` by the model's own classification rule: the softmax of
its ``class_scores`` (:meth:`flows.ConditionalGlow.class_scores`: the ``z_s`` logits of the Split
prior), or Bayes' rule with a uniform class prior for a model without them.

Conventions (decided once here):

* **Fixed noise.** The model's padding and noise channels are drawn by
  :class:`flows.noise.FixedNoise` with a seed: every image (test image or interpolant) sees the
  same noise realisation, whatever batch it is evaluated in. With the same seed the endpoints'
  statistics are those of :func:`paper_figures.trained.run_statistics` (what the detector's
  threshold and the endpoint selection use). Images are points of the continuous space: no
  dequantisation (interpolants are not on the 8-bit grid anyway).
* **α grid.** "Sampling 100 α values uniformly in the range [0, 1]" is read as 100 evenly spaced
  values including both endpoints (:func:`alpha_grid`), so a path is "entirely undetected" only if
  its endpoints are too (they are, by the selection of :func:`eligible_endpoints`).
* **Endpoints.** "Real images that are classified correctly and are above the detection threshold"
  means likelihood above the threshold, i.e. bits/dim at or below the detector's threshold ``T``
  (:class:`flows.attacks.LikelihoodDetector` flags ``bits/dim > T``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from flows.measures import bits_per_dim as _bits_per_dim
from flows.measures import marginal_log_prob, predictions
from flows.noise import FixedNoise

__all__ = [
    "PathStatistics",
    "alpha_grid",
    "eligible_endpoints",
    "evaluate_paths",
    "fraction_entirely_undetected",
    "interpolate",
    "select_pairs",
    "summarise_paths",
]


def alpha_grid(num_alphas: int) -> Tensor:
    """``(A,)`` float64: ``num_alphas`` evenly spaced values from 0 to 1, both included."""
    if num_alphas < 2:
        raise ValueError(f"a path needs at least its two endpoints, got num_alphas={num_alphas}")
    return torch.linspace(0.0, 1.0, num_alphas, dtype=torch.float64)


def _mix(x0: Tensor, x1: Tensor, alpha: Tensor) -> Tensor:
    """``α·x1 + (1 − α)·x0`` with ``alpha`` broadcast over the trailing image dimensions."""
    alpha = alpha.to(x0.dtype).reshape(alpha.shape + (1,) * (x0.dim() - alpha.dim()))
    return alpha * x1 + (1 - alpha) * x0


def interpolate(x0: Tensor, x1: Tensor, alphas: Tensor) -> Tensor:
    r"""Interpolants :math:`x_\alpha = \alpha x_1 + (1-\alpha) x_0` of ``P`` pairs at ``A`` values.

    Args:
        x0, x1: ``(P, *S)`` start and end images (same shape and dtype).
        alphas: ``(A,)`` interpolation coefficients (any real values; the paper uses [0, 1]).

    Returns:
        ``(P, A, *S)`` in the images' dtype; ``[:, a]`` is the batch at ``alphas[a]``, and
        ``α = 0`` / ``α = 1`` return ``x0`` / ``x1`` exactly.
    """
    _check_pairs(x0, x1)
    _check_alphas(alphas)
    return _mix(x0[:, None], x1[:, None], alphas[None, :])


@dataclass(frozen=True)
class PathStatistics:
    """A model evaluated along ``P`` interpolation paths at ``A`` coefficients.

    Attributes:
        alphas: ``(A,)`` float64 coefficients.
        class_log_likelihoods: ``(P, A, C)`` float64, ``log p(x_α | y = c)`` in nats.
        y0, y1: ``(P,)`` the classes of the endpoints ``x0`` (α = 0) and ``x1`` (α = 1).
        num_dims: ``D`` of the bits/dim convention.
        noise_seed: seed of the fixed model noise.
        class_scores: ``(P, A, C)`` float64, the scores the model classifies by (softmax:
            ``p(y | x_α)``); None: the class log-likelihoods (Bayes' rule).
    """

    alphas: Tensor
    class_log_likelihoods: Tensor
    y0: Tensor
    y1: Tensor
    num_dims: int
    noise_seed: int
    class_scores: Tensor | None = None

    @property
    def num_paths(self) -> int:
        return self.class_log_likelihoods.shape[0]

    @property
    def log_prob(self) -> Tensor:
        """``(P, A)`` ``log p(x_α) = logsumexp_c log p(x_α | c) − log C`` in nats."""
        return marginal_log_prob(self.class_log_likelihoods)

    @property
    def bits_per_dim(self) -> Tensor:
        """``(P, A)`` ``−log p(x_α)`` in bits/dim (:func:`flows.measures.bits_per_dim`)."""
        return _bits_per_dim(self.log_prob, self.num_dims)

    @property
    def posteriors(self) -> Tensor:
        """``(P, A, C)`` ``p(y = c | x_α)``: softmax of the class scores (of the class
        log-likelihoods when the model has none)."""
        scores = self.class_log_likelihoods if self.class_scores is None else self.class_scores
        return torch.softmax(scores, dim=-1)

    @property
    def p_y0(self) -> Tensor:
        """``(P, A)`` ``p(y0 | x_α)``, the posterior of the start image's class."""
        return self._posterior_of(self.y0)

    @property
    def p_y1(self) -> Tensor:
        """``(P, A)`` ``p(y1 | x_α)``, the posterior of the end image's class."""
        return self._posterior_of(self.y1)

    def _posterior_of(self, labels: Tensor) -> Tensor:
        index = labels.view(-1, 1, 1).expand(-1, len(self.alphas), 1)
        return self.posteriors.gather(-1, index).squeeze(-1)


def evaluate_paths(
    model,
    x0: Tensor,
    x1: Tensor,
    y0: Tensor,
    y1: Tensor,
    alphas: Tensor,
    noise_seed: int = 0,
    batch_size: int = 250,
) -> PathStatistics:
    """Evaluate ``model`` at every interpolant of every pair, one encoding per image.

    ``model`` has ``class_log_likelihoods(x, generator=..., shared_noise=...) -> (B, C)`` and
    ``num_dims`` (a :class:`flows.ConditionalGlow`); when it also has
    ``class_scores_and_log_likelihoods`` (the same signature, returning both from one encoding)
    the posteriors are its class scores'. The ``P·A`` interpolants are built chunk by
    chunk (never all at once) and encoded in batches of ``batch_size`` under :class:`FixedNoise`
    with ``noise_seed``, inside ``torch.no_grad``; the result does not depend on ``batch_size``.

    Args:
        x0, x1: ``(P, *S)`` endpoint images; y0, y1: ``(P,)`` their classes.
        alphas: ``(A,)`` coefficients (e.g. :func:`alpha_grid`).

    Returns:
        :class:`PathStatistics` with ``(P, A, C)`` float64 class log-likelihoods (and class
        scores).
    """
    _check_pairs(x0, x1)
    _check_alphas(alphas)
    if y0.shape != (len(x0),) or y1.shape != (len(x0),):
        raise ValueError(
            f"expected labels shaped ({len(x0)},), got {tuple(y0.shape)} and {tuple(y1.shape)}"
        )
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    num_pairs, num_alphas = len(x0), len(alphas)
    joint = getattr(model, "class_scores_and_log_likelihoods", None)
    fn = FixedNoise(model.class_log_likelihoods if joint is None else joint, noise_seed)
    scores, lls = [], []
    with torch.no_grad():
        for start in range(0, num_pairs * num_alphas, batch_size):
            flat = torch.arange(start, min(start + batch_size, num_pairs * num_alphas))
            pair, step = flat // num_alphas, flat % num_alphas
            out = fn(_mix(x0[pair], x1[pair], alphas[step]))
            score, ll = (out, out) if joint is None else out
            scores.append(score.double())
            lls.append(ll.double())
    shape = (num_pairs, num_alphas, -1)
    return PathStatistics(
        alphas=alphas.double(),
        class_log_likelihoods=torch.cat(lls).reshape(shape),
        y0=y0,
        y1=y1,
        num_dims=model.num_dims,
        noise_seed=noise_seed,
        class_scores=torch.cat(scores).reshape(shape),
    )


def eligible_endpoints(
    class_scores: Tensor, labels: Tensor, bits_per_dim: Tensor, threshold: float
) -> Tensor:
    """``(N,)`` bool: correctly classified (the argmax of ``class_scores`` ``(N, C)``, the model's
    rule: its class scores, or the class log-likelihoods for Bayes' rule, equals the label) and
    undetected (``bits_per_dim <= threshold``) — the paper's condition on interpolation
    endpoints."""
    if class_scores.dim() != 2 or labels.shape != class_scores.shape[:1]:
        raise ValueError(
            f"expected (N, C) class scores and (N,) labels, got "
            f"{tuple(class_scores.shape)} and {tuple(labels.shape)}"
        )
    if bits_per_dim.shape != labels.shape:
        raise ValueError(f"expected bits_per_dim shaped {tuple(labels.shape)}")
    return (predictions(class_scores) == labels) & (bits_per_dim <= threshold)


def select_pairs(
    labels: Tensor, eligible: Tensor, num_pairs: int, seed: int = 0
) -> tuple[Tensor, Tensor]:
    """Draw ``num_pairs`` distinct pairs of eligible images of different classes, seeded.

    Each pair is drawn uniformly among the ordered pairs ``(i0, i1)`` of eligible indices with
    ``labels[i0] != labels[i1]``, rejecting a pair already drawn in either order (a path and its
    reverse are the same segment).

    Args:
        labels: ``(N,)`` classes; eligible: ``(N,)`` bool (e.g. :func:`eligible_endpoints`).
        num_pairs: how many pairs; seed: seeds the draws (same seed, same pairs).

    Returns:
        ``(i0, i1)``, two ``(num_pairs,)`` int64 index tensors into the ``N`` images.

    Raises:
        ValueError: when fewer than ``num_pairs`` distinct different-class eligible pairs exist.
    """
    if labels.dim() != 1 or eligible.shape != labels.shape or eligible.dtype != torch.bool:
        raise ValueError("expected (N,) labels and an (N,) bool eligible mask")
    if num_pairs < 1:
        raise ValueError(f"num_pairs must be >= 1, got {num_pairs}")
    candidates = torch.nonzero(eligible).flatten()
    counts = torch.bincount(labels[candidates]).double()
    available = (counts.sum() ** 2 - (counts**2).sum()) / 2
    if available < num_pairs:
        raise ValueError(
            f"only {int(available)} distinct pairs of eligible images of different classes "
            f"exist ({len(candidates)} eligible images); asked for {num_pairs}"
        )
    gen = torch.Generator().manual_seed(seed)
    cand_labels = labels[candidates]
    seen: set[tuple[int, int]] = set()
    first, second = [], []
    while len(first) < num_pairs:
        a = candidates[torch.randint(len(candidates), (1,), generator=gen)].item()
        others = candidates[cand_labels != labels[a]]
        b = others[torch.randint(len(others), (1,), generator=gen)].item()
        key = (min(a, b), max(a, b))
        if key in seen:
            continue
        seen.add(key)
        first.append(a)
        second.append(b)
    return torch.tensor(first, dtype=torch.int64), torch.tensor(second, dtype=torch.int64)


def fraction_entirely_undetected(bits_per_dim: Tensor, threshold: float) -> float:
    """Share of paths whose every point has ``bits/dim <= threshold`` (all considered real).

    ``bits_per_dim``: ``(P, A)``, one row per path.
    """
    if bits_per_dim.dim() != 2 or bits_per_dim.shape[0] == 0:
        raise ValueError(f"expected (P, A) bits/dim with P >= 1, got {tuple(bits_per_dim.shape)}")
    return (bits_per_dim <= threshold).all(dim=1).double().mean().item()


def summarise_paths(stats: PathStatistics, threshold: float) -> dict:
    """Per-α curves averaged over paths and the path-level shares, JSON-serialisable.

    Returns a dict of lists of length ``A`` (``alphas``; ``mean_/std_bits_per_dim``, its 10% and
    90% quantiles; ``mean_log_prob_nats``; ``mean_p_y0``, ``mean_p_y1``; ``fraction_detected``: share of paths whose point at that α has
    ``bits/dim > threshold``) and scalars (``num_paths``, ``threshold``,
    ``fraction_paths_entirely_undetected``, ``mean_bits_per_dim_endpoints`` (over both
    endpoints), ``mean_bits_per_dim_midpoint`` (α closest to 1/2), ``max_mean_bits_per_dim`` and
    ``min_mean_bits_per_dim`` over α).
    """
    bpd = stats.bits_per_dim
    log_prob = stats.log_prob
    middle = int(torch.argmin((stats.alphas - 0.5).abs()))
    mean_bpd = bpd.mean(dim=0)
    quantiles = torch.quantile(bpd, torch.tensor([0.1, 0.9], dtype=bpd.dtype), dim=0)
    return {
        "num_paths": stats.num_paths,
        "threshold": float(threshold),
        "alphas": stats.alphas.tolist(),
        "mean_bits_per_dim": mean_bpd.tolist(),
        "std_bits_per_dim": bpd.std(dim=0).tolist()
        if stats.num_paths > 1
        else [0.0] * len(mean_bpd),
        "q10_bits_per_dim": quantiles[0].tolist(),
        "q90_bits_per_dim": quantiles[1].tolist(),
        "mean_log_prob_nats": log_prob.mean(dim=0).tolist(),
        "mean_p_y0": stats.p_y0.mean(dim=0).tolist(),
        "mean_p_y1": stats.p_y1.mean(dim=0).tolist(),
        "fraction_detected": (bpd > threshold).double().mean(dim=0).tolist(),
        "fraction_paths_entirely_undetected": fraction_entirely_undetected(bpd, threshold),
        "mean_bits_per_dim_endpoints": torch.cat([bpd[:, 0], bpd[:, -1]]).mean().item(),
        "mean_bits_per_dim_midpoint": mean_bpd[middle].item(),
        "max_mean_bits_per_dim": mean_bpd.max().item(),
        "min_mean_bits_per_dim": mean_bpd.min().item(),
    }


def _check_pairs(x0: Tensor, x1: Tensor) -> None:
    if x0.shape != x1.shape or x0.dim() < 2:
        raise ValueError(
            f"expected start and end images of one shape (P, *S), got {tuple(x0.shape)} and "
            f"{tuple(x1.shape)}"
        )


def _check_alphas(alphas: Tensor) -> None:
    if alphas.dim() != 1 or len(alphas) == 0 or not torch.isfinite(alphas).all():
        raise ValueError(f"expected a non-empty 1-D tensor of finite alphas, got {alphas}")
