r"""Section 4.1, eq. (5): the data term and the class term of the joint NLL, for Table 1's models.

.. math::
    \mathbb E[-\log p(x, y)] = \mathbb E[-\log p(x)] + \mathbb E[-\log p(y \mid x)]

For every committed Table 1 run (Base, Reweight, Split × MNIST, CIFAR-10; runs not present are
skipped and listed in ``missing_runs``), both terms are measured on test images
(:func:`flows.analysis.measure_likelihood_terms`): in nats per image and in bits/dim, beside
:math:`\log C`, the class term of a posterior that ignores the image. The paper's claim is that
:math:`\log C` "is negligible compared to the first term", so the penalty for ignoring the label is
negligible under maximum likelihood; the measured class term shows how much of that small budget
each objective spends, and ``log_num_classes_over_data`` how small it is.

**Conventions.** The data and joint terms are discrete NLLs (``−log p(x) + D log 256``; their
bits/dim is :func:`flows.measures.bits_per_dim`), see :mod:`flows.analysis.likelihood_terms`.
Test images are dequantised with seeded uniform noise (``dequantise_seed``), the estimate of
Table 1, and every image gets its own draw of the model's noise channels (one generator seeded
with ``noise_seed``), as in training and :mod:`flows.evaluate`: a single shared draw for all images
moves ``cpu-cifar-reweight``'s accuracy by several points (46.7% with draw 0, 57.1% and 59.2% with
draws 1 and 2, on 1000 test images). Beside each row: the run's own final evaluation from
its training log (``metrics.jsonl``, all test images with fresh noise) and the paper's Table 1.
The paper gives no measured value of either term; the "paper" values here are Table 1's bits/dim
and accuracy, and the bits/dim turned into nats per image with our ``D`` (1·32·32 padded MNIST,
3·32·32 CIFAR-10) for scale.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, replace

import numpy as np
import torch
from matplotlib.figure import Figure

from flows.analysis import measure_likelihood_terms
from flows.paper import PAPER_TABLE1
from flows.preprocess import dequantize
from flows.training import final_evaluation

from . import trained
from .context import Context

__all__ = ["NAME", "TABLE_COLUMNS", "Config", "compute", "default_config", "plot", "table_rows"]

NAME = "section4_eq5"

TERM_COLOURS = {"data": "#1f5fa8", "class": "#e08214"}


@dataclass(frozen=True)
class Config:
    """Runs, test images (the first ``num_test`` in the fixed order; None: all 10 000), seeds."""

    datasets: tuple[str, ...] = ("mnist", "cifar10")
    priors: tuple[str, ...] = ("base", "reweight", "split")
    num_test: int | None = None
    dequantise_seed: int = 0
    noise_seed: int = 0
    batch_size: int = 250


def default_config(context: Context) -> Config:
    """:class:`Config`; in quick mode (``context.quick``) 200 test images per run."""
    return replace(Config(), num_test=200) if context.quick else Config()


def compute(config: Config, context: Context) -> dict:
    """One row per present run: both terms, log C, the training log's and the paper's values.

    Raises FileNotFoundError when none of the runs is present.
    """
    rows, missing = [], []
    for dataset in config.datasets:
        x, y = trained.ordered_test_set(dataset, context, config.num_test)
        x = dequantize(x, torch.Generator().manual_seed(config.dequantise_seed))
        for prior in config.priors:
            run = trained.run_dir(dataset, prior, context)
            if not (run / "checkpoint.pt").is_file():
                missing.append(run.name)
                continue
            model = trained.load_run(dataset, prior, context)
            terms = measure_likelihood_terms(model, x, y, config.noise_seed, config.batch_size)
            logged = final_evaluation(run)
            row = {
                "dataset": dataset,
                "label": trained.DATASET_LABELS[dataset],
                "prior": prior,
                "run": run.name,
                **terms.to_dict(),
            }
            row["training_log_accuracy"] = None if logged is None else logged["accuracy"]
            row["training_log_bits_per_dim"] = None if logged is None else logged["bits_per_dim"]
            paper = PAPER_TABLE1.get((dataset, prior))
            row["paper_accuracy"] = None if paper is None else round(paper[0] / 100, 4)
            row["paper_bits_per_dim"] = None if paper is None else paper[1]
            row["paper_data_nats_implied"] = (
                None if paper is None else paper[1] * terms.num_dims * math.log(2.0)
            )
            rows.append(row)
    if not rows:
        raise FileNotFoundError(f"no Table 1 run found: {missing}")
    return {
        "quick": context.quick,
        "units": "nats per image; data and joint terms discrete (-log p + D log 256), "
        "bits/dim = nats / (D ln 2)",
        "rows": rows,
        "missing_runs": missing,
        "log_num_classes_nats": math.log(10),
        "paper_claim": "with a uniform posterior p(y|x) the second term is log(C), which is "
        "negligible compared to the first term E[-log p(x)]",
    }


def plot(numbers: dict, config: Config) -> tuple[Figure, np.ndarray]:
    """Per dataset: the two terms per model (nats per image, log scale) with log C."""
    datasets = [d for d in config.datasets if any(r["dataset"] == d for r in numbers["rows"])]
    fig = Figure(figsize=(4.6 * max(len(datasets), 1), 4.2), layout="constrained")
    axes = np.atleast_1d(np.asarray(fig.subplots(1, max(len(datasets), 1), squeeze=False))[0])
    for ax, dataset in zip(axes, datasets, strict=False):
        rows = [r for r in numbers["rows"] if r["dataset"] == dataset]
        x = np.arange(len(rows))
        data = [r["data_nats"] for r in rows]
        class_ = [r["class_nats"] for r in rows]
        ax.bar(x - 0.2, data, 0.4, color=TERM_COLOURS["data"], label="E[-log P(x)] (data)")
        ax.bar(x + 0.2, class_, 0.4, color=TERM_COLOURS["class"], label="E[-log p(y|x)] (class)")
        for xi, (d, c) in enumerate(zip(data, class_, strict=True)):
            ax.text(xi - 0.2, d, f"{d:.0f}", ha="center", va="bottom", fontsize=7)
            ax.text(xi + 0.2, c, f"{c:.2f}", ha="center", va="bottom", fontsize=7)
        ax.axhline(
            numbers["log_num_classes_nats"],
            color="#d7191c",
            ls="--",
            lw=1.2,
            label=f"log C = {numbers['log_num_classes_nats']:.2f} (uniform p(y|x))",
        )
        ax.set_yscale("log")
        smallest = min((c for c in class_ if c > 0), default=0.1)
        ax.set_ylim(bottom=min(0.05, 0.5 * smallest), top=3 * max(data))
        ax.set_xticks(
            x, [f"{r['prior']}\nacc {100 * r['accuracy']:.1f}%" for r in rows], fontsize=8
        )
        ax.set_ylabel("nats per test image (log scale)")
        ax.set_title(rows[0]["label"], fontsize=9)
        ax.grid(alpha=0.3, axis="y")
        ax.legend(fontsize=7, loc="center right")
    missing = numbers["missing_runs"]
    note = f"; runs not present: {', '.join(missing)}" if missing else ""
    quick = " [QUICK]" if numbers["quick"] else ""
    fig.suptitle(
        f"Eq. (5): E[-log p(x,y)] = E[-log p(x)] + E[-log p(y|x)] on test images{note}{quick}",
        fontsize=9,
    )
    return fig, axes


#: The columns of ``numbers.csv``.
TABLE_COLUMNS = (
    "dataset",
    "prior",
    "num_images",
    "accuracy",
    "data_nats",
    "class_nats",
    "joint_nats",
    "log_num_classes_nats",
    "data_bits_per_dim",
    "class_bits_per_dim",
    "joint_bits_per_dim",
    "log_num_classes_over_data",
    "training_log_bits_per_dim",
    "paper_bits_per_dim",
    "paper_accuracy",
)


def table_rows(numbers: dict) -> list[dict]:
    """One CSV row per present run (:data:`TABLE_COLUMNS`)."""
    return [{k: r[k] for k in TABLE_COLUMNS} for r in numbers["rows"]]
