r"""Figure 4 of the paper: NLL given the correct class vs given the most likely wrong class.

For MNIST and CIFAR-10 (Split models), over test images: :math:`-\log p(x_i \mid y_i)` and
:math:`-\log p(x_i \mid y_w)` with :math:`y_w` the most likely wrong class
(:func:`flows.analysis.wrong_class_nll`), as histograms in bits/dim beside the detector's
threshold (top), and the gap :math:`\log p(x_i \mid y_i) - \log p(x_i \mid y_w)` in nats beside
the paper's logit-margin bound :math:`\log C + \log\frac{1-\delta}{\delta}` and the standard
deviation of the NLL over images (bottom). Reported: the share of wrong-class pairs
:math:`(x_i, y_w)` a likelihood threshold would flag as outliers, the gap's size against the
NLL's spread (:func:`flows.analysis.outlier_summary`) and the margin bound in nats, bits and base
10 (:func:`flows.analysis.margin_bounds`).

**Differences from the paper.** The paper's bound "about 6" for ``C = 10``, ``δ = 1e−5`` holds in
base 10; in nats it is 13.8 (19.9 bits), which is what a gap in nats must be compared with. The
NLLs are discrete (``−log p(x|y) + D log 256``: nats per image, or bits/dim), the unit in which
"the likelihood of the image is in the scale of thousands" holds. Two thresholds are applied to
the wrong-class NLLs: the run's detector (on ``−log p(x)``, at the paper's recall, see
:func:`paper_figures.trained.paper_detector`) and the same recall quantile of the true-class NLLs
``−log p(x|y_i)`` (a detector of the joint pair ``(x, y)``). Images are evaluated as given (not
dequantised), with fixed model noise (:func:`paper_figures.trained.run_statistics`).

The figure is about class-conditional likelihoods, so its ``accuracy`` and its "correct" images
are those whose true class has the largest ``log p(x | y)`` (a positive gap). The Split prior
classifies by its ``z_s`` logits instead (:class:`flows.priors.SplitPrior`); that rule's accuracy
on the same encodings is reported as ``classifier_accuracy``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from matplotlib.figure import Figure

from flows.analysis import fraction_flagged, margin_bounds, outlier_summary, wrong_class_nll
from flows.attacks import LikelihoodDetector
from flows.paper import MARGIN_DELTA, PAPER_FIGURE4

from . import trained
from .context import Context

__all__ = ["NAME", "Config", "compute", "default_config", "plot"]

NAME = "figure4"

COLOURS = {"true": "#1f5fa8", "wrong": "#e08214"}


@dataclass(frozen=True)
class Config:
    """``num_test``: the first test images in the fixed order (None: all 10 000); ``delta`` of the
    margin bound; ``bins`` of the histograms."""

    datasets: tuple[str, ...] = ("mnist", "cifar10")
    prior: str = "split"
    num_test: int | None = None
    delta: float = MARGIN_DELTA
    bins: int = 60


def default_config(context: Context) -> Config:
    """:class:`Config`; in quick mode (``context.quick``) 500 test images."""
    return replace(Config(), num_test=500) if context.quick else Config()


def _histogram(values: list[torch.Tensor], bins: int) -> tuple[list[float], list[list[int]]]:
    """Shared bin edges over all ``values`` (some may be empty) and the counts of each."""
    everything = torch.cat([v.flatten() for v in values])
    low, high = everything.min().item(), everything.max().item()
    edges = np.linspace(low, high, bins + 1)
    return edges.tolist(), [np.histogram(v.numpy(), edges)[0].tolist() for v in values]


def compute(config: Config, context: Context) -> dict:
    """Per dataset: histograms, the outlier summary under two thresholds, and the margin bound."""
    results = {}
    for dataset in config.datasets:
        stats = trained.run_statistics(dataset, config.prior, context, config.num_test)
        detector = trained.paper_detector(dataset, config.prior, context, config.num_test)
        result = wrong_class_nll(stats.class_log_likelihoods, stats.labels, stats.num_dims)
        joint = LikelihoodDetector.from_quantile(
            result.nll_true_bits_per_dim, trained.PAPER_RECALL[dataset], stats.num_dims
        )
        edges, (true_counts, wrong_counts) = _histogram(
            [result.nll_true_bits_per_dim, result.nll_wrong_bits_per_dim], config.bins
        )
        gap_edges, (gap_correct_counts, gap_wrong_counts) = _histogram(
            [result.gap_nats[result.correct], result.gap_nats[~result.correct]], config.bins
        )
        summary = outlier_summary(result, detector.threshold, config.delta)
        del summary["margin_bounds"]
        results[dataset] = {
            "label": trained.DATASET_LABELS[dataset],
            "run": trained.run_dir(dataset, config.prior, context).name,
            "num_dims": stats.num_dims,
            **summary,
            "classifier_accuracy": stats.correct.double().mean().item(),
            "joint_threshold_bits_per_dim": joint.threshold,
            "fraction_wrong_flagged_joint_threshold": fraction_flagged(
                result.nll_wrong_bits_per_dim, joint.threshold
            ),
            "fraction_true_flagged_joint_threshold": fraction_flagged(
                result.nll_true_bits_per_dim, joint.threshold
            ),
            "histogram_bits_per_dim": {
                "edges": edges,
                "true_class": true_counts,
                "wrong_class": wrong_counts,
            },
            "histogram_gap_nats": {
                "edges": gap_edges,
                "correct": gap_correct_counts,
                "misclassified": gap_wrong_counts,
            },
        }
    return {
        "quick": context.quick,
        "prior": config.prior,
        "units": "NLL: discrete, -log p(x|y) + D log 256, in nats per image or bits/dim "
        "(= nats / (D ln 2)); gap = log p(x|y_i) - log p(x|y_w) in nats",
        "margin_bounds": margin_bounds(PAPER_FIGURE4["num_classes"], config.delta),
        "paper": PAPER_FIGURE4,
        "datasets": results,
    }


def plot(numbers: dict, config: Config) -> tuple[Figure, np.ndarray]:
    """2 × datasets panels: NLL histograms (bits/dim) on top, the gap (nats) below."""
    datasets = [d for d in config.datasets if d in numbers["datasets"]]
    bound = numbers["margin_bounds"]
    fig = Figure(figsize=(4.4 * len(datasets), 6.4), layout="constrained")
    axes = np.asarray(fig.subplots(2, len(datasets), squeeze=False))
    for col, dataset in enumerate(datasets):
        res = numbers["datasets"][dataset]
        hist = res["histogram_bits_per_dim"]
        ax = axes[0, col]
        ax.stairs(
            hist["true_class"],
            hist["edges"],
            color=COLOURS["true"],
            lw=1.6,
            label="-log p(x | true class)",
        )
        ax.stairs(
            hist["wrong_class"],
            hist["edges"],
            color=COLOURS["wrong"],
            lw=1.6,
            ls="--",
            label="-log p(x | most likely wrong class)",
        )
        ax.axvline(
            res["threshold_bits_per_dim"],
            color="#d7191c",
            lw=1.2,
            ls=":",
            label=f"detector threshold {res['threshold_bits_per_dim']:.3f}",
        )
        ax.set_xlabel("NLL (bits/dim)")
        ax.set_ylabel("test images")
        ax.set_title(
            f"{res['label']} ({numbers['prior']}), {res['num_images']} test images\n"
            f"wrong-class pairs flagged: {100 * res['fraction_wrong_flagged']:.2f}% "
            f"(true: {100 * res['fraction_true_flagged']:.2f}%)",
            fontsize=9,
        )
        ax.legend(fontsize=7)
        gaps = res["histogram_gap_nats"]
        ax = axes[1, col]
        ax.stairs(
            gaps["correct"], gaps["edges"], color="0.25", lw=1.4, label="correctly classified"
        )
        if sum(gaps["misclassified"]):
            ax.stairs(
                gaps["misclassified"],
                gaps["edges"],
                color="#d7191c",
                lw=1.0,
                label="misclassified (gap < 0)",
            )
        ax.axvline(
            bound["paper_bound_nats"],
            color="#1a9641",
            lw=1.4,
            ls="--",
            label=f"log C + log((1-δ)/δ) = {bound['paper_bound_nats']:.1f} nats\n"
            f"(= {bound['paper_bound_log10']:.2f} in log10, δ={bound['delta']:g})",
        )
        ax.set_xlabel("gap log p(x|y_i) - log p(x|y_w) (nats)")
        ax.set_ylabel("test images")
        ax.set_title(
            f"median gap (correct) {res.get('median_gap_nats_correct', math.nan):.1f} nats; std of NLL "
            f"{res['std_nll_true_nats']:.0f} nats",
            fontsize=9,
        )
        ax.legend(fontsize=7)
    for ax in axes.flat:
        ax.grid(alpha=0.3)
    quick = " [QUICK]" if numbers["quick"] else ""
    fig.suptitle(
        f"Figure 4: NLL given the correct class vs the most likely wrong class{quick}", fontsize=10
    )
    return fig, axes
