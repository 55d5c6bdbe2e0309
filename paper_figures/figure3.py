r"""Figure 3 of the paper: interpolations between test images of different classes, on average.

For MNIST and CIFAR-10 (Split models), pairs of test images ``(x0, x1)`` of different classes, both
correctly classified and accepted by the likelihood detector, are drawn at random
(:func:`flows.analysis.select_pairs`); each is interpolated at evenly spaced
:math:`\alpha \in [0, 1]` (:math:`x_\alpha = \alpha x_1 + (1-\alpha) x_0`) and the model is evaluated
on every interpolant under fixed noise (:func:`flows.analysis.evaluate_paths`). Drawn per α,
averaged over pairs: bits/dim with its 10–90% band and the detection threshold, the posteriors
:math:`p(y_0 \mid x_\alpha)` and :math:`p(y_1 \mid x_\alpha)`, and the share of interpolants the
detector flags. Reported: the share of paths that stay entirely on the real side of the threshold
(paper: 0.5% on MNIST, 100% on CIFAR-10).

**Differences from the paper.** The paper averages 1487 MNIST and 1179 CIFAR-10 pairs; we use
``Config.num_pairs`` pairs per dataset (100 by default: 2 × 10 000 test images plus 2 × 10 000
interpolants, about 5 minutes on a 2-core CPU shared with two training runs), so the shares carry
sampling error: an exact 95% (Clopper–Pearson) interval is reported beside them. The paper plots "average log likelihoods"; we draw bits/dim (``−log p(x)`` per dimension, lower
is more likely) so the detector's threshold can be drawn on the same axis, and give the mean
``log p(x_α)`` in nats in the numbers. The threshold is set at the paper's recall on our models'
own test bits/dim (:func:`paper_figures.trained.paper_detector`: 100% of MNIST, 78.6% of
CIFAR-10), since our CPU models' bits/dim differ from the paper's. The 100 α values are read as
evenly spaced, endpoints included. Images are evaluated as given (not dequantised), with the model
noise fixed (seed 0, as the test statistics that set the threshold).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
from matplotlib.figure import Figure
from scipy.stats import beta

from flows.analysis import (
    alpha_grid,
    eligible_endpoints,
    evaluate_paths,
    select_pairs,
    summarise_paths,
)
from flows.paper import PAPER_FIGURE3

from . import trained
from .context import Context

__all__ = ["NAME", "Config", "clopper_pearson", "compute", "default_config", "plot"]

NAME = "figure3"

CLASS_COLOURS = ("#1f5fa8", "#e08214")


@dataclass(frozen=True)
class Config:
    """Which runs, how many pairs and α values, and the test images the pairs come from.

    ``num_test``: the first ``num_test`` test images (fixed order,
    :func:`trained.ordered_test_set`) set the threshold and supply the endpoints (None: all
    10 000). ``pair_seed`` seeds the pairs.
    """

    datasets: tuple[str, ...] = ("mnist", "cifar10")
    prior: str = "split"
    num_pairs: int = 100
    num_alphas: int = 100
    num_test: int | None = None
    pair_seed: int = 0
    batch_size: int = 250


def default_config(context: Context) -> Config:
    """:class:`Config`; in quick mode (``context.quick``) 10 pairs, 20 α and 500 test images."""
    if context.quick:
        return replace(Config(), num_pairs=10, num_alphas=20, num_test=500)
    return Config()


def clopper_pearson(successes: int, trials: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper–Pearson) two-sided confidence interval of a binomial proportion."""
    tail = (1.0 - level) / 2.0
    lower = 0.0 if successes == 0 else float(beta.ppf(tail, successes, trials - successes + 1))
    upper = (
        1.0 if successes == trials else float(beta.ppf(1 - tail, successes + 1, trials - successes))
    )
    return lower, upper


def compute(config: Config, context: Context) -> dict:
    """Per dataset: the threshold, the pairs, the per-α curves and the path-level shares."""
    results = {}
    for dataset in config.datasets:
        model = trained.load_run(dataset, config.prior, context)
        stats = trained.run_statistics(dataset, config.prior, context, config.num_test)
        detector = trained.paper_detector(dataset, config.prior, context, config.num_test)
        x, y = trained.ordered_test_set(dataset, context, config.num_test)
        eligible = eligible_endpoints(stats.class_scores, y, stats.bits_per_dim, detector.threshold)
        i0, i1 = select_pairs(y, eligible, config.num_pairs, config.pair_seed)
        paths = evaluate_paths(
            model,
            x[i0],
            x[i1],
            y[i0],
            y[i1],
            alpha_grid(config.num_alphas),
            noise_seed=stats.noise_seed,
            batch_size=config.batch_size,
        )
        summary = summarise_paths(paths, detector.threshold)
        undetected = round(summary["fraction_paths_entirely_undetected"] * len(i0))
        results[dataset] = {
            "label": trained.DATASET_LABELS[dataset],
            "run": trained.run_dir(dataset, config.prior, context).name,
            "num_test": len(y),
            "test_accuracy": stats.correct.double().mean().item(),
            "test_mean_bits_per_dim": stats.bits_per_dim.mean().item(),
            "detector_recall": detector.recall(stats.bits_per_dim),
            "num_eligible_endpoints": int(eligible.sum()),
            "pairs": {"i0": i0.tolist(), "i1": i1.tolist()},
            **summary,
            "fraction_paths_entirely_undetected_ci95": clopper_pearson(undetected, len(i0)),
            "paper": PAPER_FIGURE3[dataset],
        }
    return {
        "quick": context.quick,
        "prior": config.prior,
        "num_pairs": config.num_pairs,
        "num_alphas": config.num_alphas,
        "paper_num_alphas": PAPER_FIGURE3["num_alphas"],
        "units": "bits/dim: -log p(x) per dimension with the 8-bit offset "
        "(flows.measures.bits_per_dim); log p in nats; pair indices into trained.test_set order",
        "datasets": results,
    }


def plot(numbers: dict, config: Config) -> tuple[Figure, np.ndarray]:
    """3 × datasets panels: bits/dim, class posteriors and share detected, against α."""
    datasets = [d for d in config.datasets if d in numbers["datasets"]]
    fig = Figure(figsize=(4.6 * len(datasets), 7.4), layout="constrained")
    axes = np.asarray(fig.subplots(3, len(datasets), sharex=True, squeeze=False))
    for col, dataset in enumerate(datasets):
        res = numbers["datasets"][dataset]
        alphas = np.array(res["alphas"])
        ax = axes[0, col]
        ax.fill_between(
            alphas,
            res["q10_bits_per_dim"],
            res["q90_bits_per_dim"],
            color="0.8",
            lw=0,
            label="10-90% of paths",
        )
        ax.plot(alphas, res["mean_bits_per_dim"], color="black", lw=1.8, label="mean over paths")
        ax.axhline(
            res["threshold"],
            color="#d7191c",
            ls="--",
            lw=1.2,
            label=f"threshold T = {res['threshold']:.3f}",
        )
        ax.set_ylabel("bits/dim of x_α (lower = more likely)")
        share = res["fraction_paths_entirely_undetected"]
        low, high = res["fraction_paths_entirely_undetected_ci95"]
        paper = res["paper"]
        ax.set_title(
            f"{res['label']} ({numbers['prior']})\npaths entirely undetected: {100 * share:.1f}% "
            f"of {res['num_paths']}\n(95% CI {100 * low:.1f}-{100 * high:.1f}%; paper: "
            f"{100 * paper['fraction_paths_entirely_undetected']:g}% of {paper['num_pairs']})",
            fontsize=9,
        )
        ax.legend(fontsize=7)
        ax = axes[1, col]
        ax.plot(alphas, res["mean_p_y0"], color=CLASS_COLOURS[0], lw=1.8, label="p(y0 | x_α)")
        ax.plot(alphas, res["mean_p_y1"], color=CLASS_COLOURS[1], lw=1.8, label="p(y1 | x_α)")
        ax.set_ylim(-0.03, 1.03)
        ax.set_ylabel("mean class probability")
        ax.legend(fontsize=7)
        ax = axes[2, col]
        ax.plot(alphas, 100 * np.array(res["fraction_detected"]), color="#d7191c", lw=1.5)
        ax.set_ylim(-3, 103)
        ax.set_ylabel("% of x_α detected")
        ax.set_xlabel("α  (x_α = α x1 + (1 - α) x0)")
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    quick = " [QUICK]" if numbers["quick"] else ""
    fig.suptitle(
        f"Figure 3: interpolations between test images of different classes{quick}", fontsize=10
    )
    return fig, axes
