r"""Appendix B at CPU scale: robust priors and label smoothing beside the Gaussian prior.

The paper (Appendix B.1, B.2) replaced the class-conditional Gaussian by Laplace, Cauchy and a
Gaussian–Laplace mixture with a shared location, and tried label smoothing of the cluster variable
(:class:`flows.priors.LabelSmoothed`), and saw "no significant difference from the Gaussian
prior"; it gives no numbers. We train each variant with the Reweight objective (eq. 6), the same
``cpu-mnist`` architecture, seed and learning-rate schedule, for two epochs each
(:data:`paper_figures.retrain.RUN_SPECS`, runs ``cpu-mnist-*-2ep``), beside a Gaussian Reweight run
of the same length, and compare:

* test accuracy and bits/dim: the training's own final evaluation (``flows.evaluate`` on all
  10 000 test images, dequantised; from ``metrics.jsonl``), with the binomial standard error of
  the accuracy difference, :math:`\sqrt{p_1(1-p_1)/n + p_2(1-p_2)/n}`;
* from one encoding of ``n`` test images under fixed noise
  (:func:`paper_figures.trained.run_statistics`): the eq. 5 class term
  :math:`\mathbb{E}[-\log p(y \mid x)]` in nats, and the 99th percentile of
  :math:`-\log p(y \mid x)` — the penalty of confident mistakes, which the robust priors are meant
  to bound — and the accuracy on those images (a check of the checkpoint against its log).

"Significant" here means an accuracy difference beyond 3 standard errors; the bits/dim are
compared in absolute terms (their run-to-run spread is not measured: one seed per variant).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from matplotlib.figure import Figure

from flows.training import final_evaluation

from . import trained
from .context import Context

__all__ = [
    "NAME",
    "TABLE_COLUMNS",
    "VARIANTS",
    "Config",
    "compute",
    "default_config",
    "plot",
    "table_rows",
]

NAME = "appendix_b"

#: (run suffix under cpu-mnist-, label, prior family, label smoothing ε); the first is the reference.
VARIANTS: tuple[tuple[str, str, str, float], ...] = (
    ("reweight-2ep", "Gaussian (reference)", "gaussian", 0.0),
    ("laplace-2ep", "Laplace", "laplace", 0.0),
    ("cauchy-2ep", "Cauchy", "cauchy", 0.0),
    ("gaussian-laplace-2ep", "Gaussian-Laplace mixture", "gaussian-laplace", 0.0),
    ("reweight-ls-2ep", "Gaussian + label smoothing 0.1", "gaussian", 0.1),
)
SIGNIFICANCE_SE = 3.0
_SHORT_LABELS = {
    "Gaussian (reference)": "Gaussian\n(reference)",
    "Gaussian-Laplace mixture": "Gaussian-\nLaplace",
    "Gaussian + label smoothing 0.1": "Gaussian +\nlabel sm. 0.1",
}


@dataclass(frozen=True)
class Config:
    """``n``: test images encoded for the posterior statistics."""

    n: int = 2000


def default_config(context: Context) -> Config:
    """:class:`Config`, with ``n = 300`` in quick mode (``context.quick``)."""
    return replace(Config(), n=300) if context.quick else Config()


def compute(config: Config, context: Context) -> dict:
    """Per variant: logged accuracy/bits/dim, posterior statistics, difference to the reference.

    Raises FileNotFoundError when none of the runs is present.
    """
    rows, missing = [], []
    for suffix, label, family, smoothing in VARIANTS:
        run = trained.run_dir("mnist", suffix, context)
        if not (run / "checkpoint.pt").is_file():
            missing.append(f"cpu-mnist-{suffix}")
            continue
        final = final_evaluation(run)
        if final is None:
            raise ValueError(f"{run}/metrics.jsonl holds no evaluation record")
        stats = trained.run_statistics("mnist", suffix, context, config.n)
        log_post = stats.class_log_likelihoods - torch.logsumexp(
            stats.class_log_likelihoods, dim=1, keepdim=True
        )
        nll_true = -log_post.gather(1, stats.labels[:, None]).squeeze(1)
        rows.append(
            {
                "run": f"cpu-mnist-{suffix}",
                "label": label,
                "prior": family,
                "label_smoothing": smoothing,
                "epochs": final["epoch"],
                "accuracy": final["accuracy"],
                "bits_per_dim": final["bits_per_dim"],
                "eval_examples": final["num_examples"],
                "subset_accuracy": stats.correct.double().mean().item(),
                "class_term_nats": nll_true.mean().item(),
                "class_term_p99_nats": torch.quantile(nll_true, 0.99).item(),
            }
        )
    if not rows:
        raise FileNotFoundError(f"no Appendix B run found: {missing}")
    if rows[0]["run"] == f"cpu-mnist-{VARIANTS[0][0]}":
        ref = rows[0]
        for row in rows:
            n1, n2 = row["eval_examples"], ref["eval_examples"]
            p1, p2 = row["accuracy"], ref["accuracy"]
            se = math.sqrt(p1 * (1 - p1) / n1 + p2 * (1 - p2) / n2)
            row["accuracy_diff"] = p1 - p2
            row["accuracy_diff_se"] = se
            row["accuracy_diff_in_se"] = (p1 - p2) / se if se > 0 else 0.0
            row["significant"] = bool(abs(p1 - p2) > SIGNIFICANCE_SE * se)
            row["bits_per_dim_diff"] = row["bits_per_dim"] - ref["bits_per_dim"]
    significant = [r["label"] for r in rows[1:] if r.get("significant")]
    return {
        "quick": context.quick,
        "dataset": trained.DATASET_LABELS["mnist"],
        "n_posterior": config.n,
        "rows": rows,
        "missing_runs": missing,
        "significance_rule": f"|accuracy difference| > {SIGNIFICANCE_SE:g} standard errors",
        "paper_claim": "no significant difference from the Gaussian prior (no numbers given)",
        "significant_accuracy_differences": significant,
    }


def plot(numbers: dict, config: Config) -> tuple[Figure, np.ndarray]:
    """Accuracy (with ±2 SE bars), bits/dim and the class term per variant."""
    rows = numbers["rows"]
    fig = Figure(figsize=(11, 3.6), layout="constrained")
    axes = np.asarray(fig.subplots(1, 3))
    labels = [_SHORT_LABELS.get(r["label"], r["label"]) for r in rows]
    x = np.arange(len(rows))
    colours = ["0.35"] + ["#2c7bb6"] * (len(rows) - 1)
    acc = [100 * r["accuracy"] for r in rows]
    err = [200 * math.sqrt(r["accuracy"] * (1 - r["accuracy"]) / r["eval_examples"]) for r in rows]
    axes[0].bar(x, acc, yerr=err, color=colours, capsize=3)
    axes[0].set_ylim(min(acc) - 3, min(100, max(acc) + 1.5))
    axes[0].set_ylabel("test accuracy (%)  [±2 SE]")
    axes[1].bar(x, [r["bits_per_dim"] for r in rows], color=colours)
    axes[1].set_ylabel("test bits/dim")
    bpd = [r["bits_per_dim"] for r in rows]
    axes[1].set_ylim(min(bpd) - 0.3, max(bpd) + 0.2)
    axes[2].bar(x - 0.2, [r["class_term_nats"] for r in rows], 0.4, color=colours, label="mean")
    axes[2].bar(
        x + 0.2,
        [r["class_term_p99_nats"] for r in rows],
        0.4,
        color=colours,
        alpha=0.5,
        hatch="//",
        label="99th percentile",
    )
    axes[2].set_ylabel("−log p(y|x) on test images (nats)")
    axes[2].legend(fontsize=7)
    for ax in axes:
        ax.set_xticks(x, labels, fontsize=7)
    quick = " [QUICK]" if numbers["quick"] else ""
    fig.suptitle(
        f"Appendix B on {numbers['dataset']}: robust priors and label smoothing, 2 cpu-mnist "
        f"epochs each, Reweight objective{quick}",
        fontsize=9,
    )
    return fig, axes


#: The columns of ``numbers.csv`` (those a row lacks are left empty).
TABLE_COLUMNS = (
    "run",
    "label",
    "epochs",
    "accuracy",
    "bits_per_dim",
    "accuracy_diff",
    "accuracy_diff_in_se",
    "significant",
    "bits_per_dim_diff",
    "class_term_nats",
    "class_term_p99_nats",
)


def table_rows(numbers: dict) -> list[dict]:
    """One CSV row per present variant (:data:`TABLE_COLUMNS`)."""
    return [{k: r.get(k) for k in TABLE_COLUMNS} for r in numbers["rows"]]
