r"""Figure 1 of the paper: one interpolation between two test images of different classes.

For MNIST and CIFAR-10 (Split models) one pair of test images ``(x0, x1)`` of different classes,
both correctly classified and accepted by the likelihood detector, is drawn (the first pair of
:func:`flows.analysis.select_pairs` with ``pair_seed``, i.e. the first pair of Figure 3's sample),
and the model is evaluated along :math:`x_\alpha = \alpha x_1 + (1-\alpha) x_0`
(:func:`flows.analysis.evaluate_paths`, fixed noise). Drawn per dataset: a strip of interpolants
and, below it, bits/dim along the path with the detection threshold (and the class posteriors on a
second axis).

**Differences from the paper.** The paper's caption reads "negative log-likelihood in bits/dim
(*higher is more likely under model*)", which contradicts itself (a higher NLL is *less* likely);
we draw bits/dim = ``−log p(x)`` per dimension, where lower is more likely, and the detector
flags points above the threshold line. The threshold is set at the paper's recall on our models'
test bits/dim (:func:`paper_figures.trained.paper_detector`); the pair is random (seeded), not
hand-picked. The strip's pixels are stored in ``numbers.json`` as base64 8-bit values
(``round(256·(x + 0.5))`` clipped to 0..255, row-major ``(C, H, W)``), so the figure is drawn from
the numbers only.
"""

from __future__ import annotations

import base64
from dataclasses import dataclass, replace

import numpy as np
import torch
from matplotlib.figure import Figure

from flows.analysis import alpha_grid, eligible_endpoints, evaluate_paths, interpolate, select_pairs
from flows.paper import PAPER_FIGURE1

from . import trained
from .context import Context

__all__ = [
    "CLASS_NAMES",
    "NAME",
    "Config",
    "compute",
    "decode_image",
    "default_config",
    "encode_image",
    "plot",
]

NAME = "figure1"

CLASS_NAMES = {
    "mnist": tuple(str(digit) for digit in range(10)),
    "cifar10": (
        "airplane",
        "automobile",
        "bird",
        "cat",
        "deer",
        "dog",
        "frog",
        "horse",
        "ship",
        "truck",
    ),
}
CLASS_COLOURS = ("#1f5fa8", "#e08214")


@dataclass(frozen=True)
class Config:
    """``num_alphas`` points on the curve, ``strip_images`` images in the strip; the endpoints
    come from the first ``num_test`` test images (None: all) as in :mod:`paper_figures.figure3`."""

    datasets: tuple[str, ...] = ("mnist", "cifar10")
    prior: str = "split"
    num_alphas: int = 51
    strip_images: int = 7
    num_test: int | None = None
    pair_seed: int = 0
    batch_size: int = 250


def default_config(context: Context) -> Config:
    """:class:`Config`; in quick mode (``context.quick``) 21 points and 500 test images."""
    return replace(Config(), num_alphas=21, num_test=500) if context.quick else Config()


def encode_image(image: torch.Tensor) -> str:
    """``(C, H, W)`` image in [−0.5, 0.5] → base64 of its 8-bit values ``round(256(x + 0.5))``."""
    pixels = torch.clamp(torch.round((image.double() + 0.5) * 256), 0, 255).to(torch.uint8)
    return base64.b64encode(pixels.numpy().tobytes()).decode("ascii")


def decode_image(encoded: str, shape: tuple[int, int, int]) -> np.ndarray:
    """The inverse of :func:`encode_image`, as an ``(H, W, C)`` float array in [0, 1] for imshow."""
    pixels = np.frombuffer(base64.b64decode(encoded), dtype=np.uint8).reshape(shape)
    return pixels.transpose(1, 2, 0) / 255.0


def compute(config: Config, context: Context) -> dict:
    """Per dataset: the pair, the curve along α, the strip of images and the threshold."""
    results = {}
    for dataset in config.datasets:
        model = trained.load_run(dataset, config.prior, context)
        stats = trained.run_statistics(dataset, config.prior, context, config.num_test)
        detector = trained.paper_detector(dataset, config.prior, context, config.num_test)
        x, y = trained.ordered_test_set(dataset, context, config.num_test)
        eligible = eligible_endpoints(stats.class_scores, y, stats.bits_per_dim, detector.threshold)
        i0, i1 = select_pairs(y, eligible, 1, config.pair_seed)
        args = (model, x[i0], x[i1], y[i0], y[i1])
        curve = evaluate_paths(
            *args, alpha_grid(config.num_alphas), stats.noise_seed, config.batch_size
        )
        strip_alphas = alpha_grid(config.strip_images)
        strip = evaluate_paths(*args, strip_alphas, stats.noise_seed, config.batch_size)
        images = interpolate(x[i0], x[i1], strip_alphas)[0]
        bpd = curve.bits_per_dim[0]
        y0, y1 = int(y[i0]), int(y[i1])
        results[dataset] = {
            "label": trained.DATASET_LABELS[dataset],
            "run": trained.run_dir(dataset, config.prior, context).name,
            "test_index_x0": int(i0),
            "test_index_x1": int(i1),
            "y0": y0,
            "y1": y1,
            "class_y0": CLASS_NAMES[dataset][y0],
            "class_y1": CLASS_NAMES[dataset][y1],
            "threshold": detector.threshold,
            "test_mean_bits_per_dim": stats.bits_per_dim.mean().item(),
            "alphas": curve.alphas.tolist(),
            "bits_per_dim": bpd.tolist(),
            "log_prob_nats": curve.log_prob[0].tolist(),
            "p_y0": curve.p_y0[0].tolist(),
            "p_y1": curve.p_y1[0].tolist(),
            "max_bits_per_dim": bpd.max().item(),
            "min_bits_per_dim": bpd.min().item(),
            "entirely_undetected": bool((bpd <= detector.threshold).all()),
            "strip": {
                "alphas": strip_alphas.tolist(),
                "shape": list(images.shape[1:]),
                "bits_per_dim": strip.bits_per_dim[0].tolist(),
                "uint8_base64": [encode_image(image) for image in images],
            },
            "paper": PAPER_FIGURE1[dataset],
        }
    return {
        "quick": context.quick,
        "prior": config.prior,
        "units": "bits/dim: -log p(x) per dimension with the 8-bit offset; lower = more likely",
        "datasets": results,
    }


def plot(numbers: dict, config: Config) -> tuple[Figure, dict]:
    """One row per dataset: the strip of interpolants above bits/dim along α.

    Returns ``(fig, axes)`` with ``axes[dataset] = {"images": [...], "curve": ax, "probs": ax}``.
    """
    datasets = [d for d in config.datasets if d in numbers["datasets"]]
    fig = Figure(figsize=(9, 4.4 * len(datasets)), layout="constrained")
    subfigs = np.atleast_1d(fig.subfigures(len(datasets), 1))
    axes = {}
    for subfig, dataset in zip(subfigs, datasets, strict=True):
        res = numbers["datasets"][dataset]
        strip = res["strip"]
        count = len(strip["alphas"])
        grid = subfig.add_gridspec(2, count, height_ratios=(1.0, 2.2))
        image_axes = []
        for k, (alpha, encoded, bpd) in enumerate(
            zip(strip["alphas"], strip["uint8_base64"], strip["bits_per_dim"], strict=True)
        ):
            ax = subfig.add_subplot(grid[0, k])
            image = decode_image(encoded, tuple(strip["shape"]))
            ax.imshow(
                image.squeeze(-1) if image.shape[-1] == 1 else image,
                cmap="gray" if image.shape[-1] == 1 else None,
                vmin=0.0,
                vmax=1.0,
            )
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(f"α={alpha:.2f}\n{bpd:.2f} b/d", fontsize=7)
            image_axes.append(ax)
        curve = subfig.add_subplot(grid[1, :])
        curve.plot(
            res["alphas"], res["bits_per_dim"], color="black", lw=1.8, label="bits/dim of x_α"
        )
        curve.axhline(
            res["threshold"],
            color="#d7191c",
            ls="--",
            lw=1.2,
            label=f"detection threshold {res['threshold']:.3f}",
        )
        curve.axhline(
            res["test_mean_bits_per_dim"],
            color="0.5",
            ls=":",
            lw=1.0,
            label=f"mean over test images {res['test_mean_bits_per_dim']:.3f}",
        )
        curve.set_xlabel("α  (x_α = α x1 + (1 - α) x0)")
        curve.set_ylabel("bits/dim (lower = more likely)")
        curve.grid(alpha=0.3)
        probs = curve.twinx()
        probs.plot(
            res["alphas"],
            res["p_y0"],
            color=CLASS_COLOURS[0],
            lw=1.0,
            alpha=0.7,
            label=f"p({res['class_y0']} | x_α)",
        )
        probs.plot(
            res["alphas"],
            res["p_y1"],
            color=CLASS_COLOURS[1],
            lw=1.0,
            alpha=0.7,
            label=f"p({res['class_y1']} | x_α)",
        )
        values = res["bits_per_dim"] + [res["threshold"], res["test_mean_bits_per_dim"]]
        low, high = min(values), max(values)
        curve.set_ylim(low - 0.05 * (high - low), high + 0.35 * (high - low))  # room for the legend
        probs.set_ylim(-0.03, 1.35)
        probs.set_yticks([0.0, 0.25, 0.5, 0.75, 1.0])
        probs.set_ylabel("class probability", fontsize=8)
        handles = curve.get_legend_handles_labels()
        extra = probs.get_legend_handles_labels()
        curve.legend(
            handles[0] + extra[0], handles[1] + extra[1], fontsize=7, loc="upper center", ncol=3
        )
        verdict = "stays undetected" if res["entirely_undetected"] else "is detected in between"
        subfig.suptitle(
            f"{res['label']} ({numbers['prior']}): test images #{res['test_index_x0']} "
            f"({res['class_y0']}) → #{res['test_index_x1']} ({res['class_y1']}); the path {verdict}",
            fontsize=9,
        )
        axes[dataset] = {"images": image_axes, "curve": curve, "probs": probs}
    if numbers["quick"]:
        fig.suptitle("Figure 1 [QUICK]", fontsize=9)
    return fig, axes
