r"""Figure 2 of the paper, drawn from the code: the counterexample of Section 3 and its attack.

The paper's Figure 2 is a sketch: "on the left the two class data densities, on the right the
Bayes-optimal classifier for this problem (assuming :math:`\lambda_1 > \lambda_2`) and the model we
consider [...] undetectable adversarial examples (red arrows)". Here every colour and curve is
computed by :mod:`counterexample` for the construction that
:meth:`counterexample.Counterexample.from_targets` builds at a moderate dimension:

* top row — the data densities :math:`p(x|0)` and :math:`p(x|1)` on a 2-D slice through the origin
  of :math:`\mathbb{R}^d` (unit disk, shell :math:`(1, 1+\Delta)`, annulus :math:`(2, 3)`), and all
  densities along the radius, with the model's marginal :math:`q(x)` and its median under p
  (the detection threshold of item 5);
* bottom row — the Bayes-optimal decision :math:`p(0|x)` and the model's :math:`q(0|x)` on the same
  slice, the attack of :mod:`counterexample.proposition` as red arrows (class-0 shell points, their
  radii drawn from :math:`U(1, 1+\Delta)` in :math:`\mathbb{R}^d`, moved radially into the unit ball),
  and both posteriors along the radius with the confidence levels :math:`\delta, 1-\delta`.

**Differences from the paper's sketch.** The sketch is schematic; here the radii are to scale, the
colours are exact log-densities and posteriors at the stated :math:`(d, \lambda_1, \lambda_2)`, and the
detection threshold is drawn. Every density is radial, so a slice through the origin shows the exact
d-dimensional values at each norm.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.colors import LinearSegmentedColormap
from matplotlib.figure import Figure
from matplotlib.patches import Circle

from counterexample import Counterexample, sample_annulus_norms
from counterexample.proposition import (
    attack_success_probability,
    attacked_radius,
    log_median_q_density,
    radial_regions,
)

__all__ = ["NAME", "Config", "compute", "plot"]

NAME = "figure2"

CLASS_COLOURS = ("#1f5fa8", "#e08214")  # class 0 blue, class 1 orange
ATTACK_COLOUR = "#d7191c"
_LOG10_E = 1.0 / math.log(10.0)
_LABEL_BOX = {"boxstyle": "round,pad=0.2", "facecolor": "white", "alpha": 0.85, "lw": 0}


@dataclass(frozen=True)
class Config:
    """Proposition 1's targets (the dimension is the minimal one), the picture's size and the seed."""

    eps: float = 1.0
    delta: float = 0.1
    Delta: float = 0.5
    extent: float = 3.3
    pixels: int = 501
    n_arrows: int = 12
    seed: int = 0


def _finite_or_none(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None


def compute(config: Config) -> dict:
    """Region-wise densities and posteriors (all are constant between the radii 1, 1+Δ, 2, 3), the
    sampled attack, and the construction's key numbers."""
    ce = Counterexample.from_targets(config.eps, config.delta, config.Delta)
    bounds = [(reg.lo, reg.hi) for reg in radial_regions(ce)] + [(3.0, config.extent)]
    regions = []
    for lo, hi in bounds:
        r = np.array([0.5 * (lo + hi)])
        p_post, q_post = ce.p_posterior(r)[0], ce.q_posterior(r)[0]
        regions.append(
            {
                "lo": lo,
                "hi": hi,
                "log10_p_x_given_0": _finite_or_none(_LOG10_E * ce.log_p_conditional(r, 0)[0]),
                "log10_p_x_given_1": _finite_or_none(_LOG10_E * ce.log_p_conditional(r, 1)[0]),
                "log10_q_x_given_0": _finite_or_none(_LOG10_E * ce.log_q_conditional(r, 0)[0]),
                "log10_q_x": _finite_or_none(_LOG10_E * ce.log_q_marginal(r)[0]),
                "p_0_given_x": _finite_or_none(p_post[0]),
                "q_0_given_x": _finite_or_none(q_post[0]),
            }
        )
    rng = np.random.default_rng(config.seed)
    r_shell = np.sort(sample_annulus_norms(config.n_arrows, 1.0, 1.0 + ce.Delta, ce.d, rng))
    r_bar = attacked_radius(r_shell, ce.Delta)
    return {
        "d": ce.d,
        "lambda1": ce.lambda1,
        "lambda2": ce.lambda2,
        "kl_q_p_joint": ce.kl_q_p_joint(),
        "kl_p_q_joint": ce.kl_p_q_joint(),
        "attack_success_probability": attack_success_probability(ce, config.delta),
        "log10_median_q_density": _LOG10_E * log_median_q_density(ce),
        "regions": regions,
        "attack": {
            "r": r_shell.tolist(),
            "r_bar": r_bar.tolist(),
            "angle": np.linspace(0.0, 2.0 * np.pi, config.n_arrows, endpoint=False).tolist(),
        },
    }


def _region_values(numbers: dict, key: str) -> tuple[np.ndarray, np.ndarray]:
    """Region edges (n+1,) and values (n,) of one quantity, NaN where it vanishes or is undefined."""
    regions = numbers["regions"]
    edges = np.array([regions[0]["lo"]] + [reg["hi"] for reg in regions])
    values = np.array([np.nan if reg[key] is None else reg[key] for reg in regions])
    return edges, values


def _slice(numbers: dict, key: str, config: Config) -> np.ndarray:
    """The quantity on a pixels × pixels slice through the origin, looked up by norm."""
    edges, values = _region_values(numbers, key)
    axis = np.linspace(-config.extent, config.extent, config.pixels)
    radius = np.hypot(*np.meshgrid(axis, axis))
    index = np.clip(np.searchsorted(edges, radius, side="right") - 1, 0, values.size - 1)
    return values[index]


def _draw_circles(ax: Axes, Delta: float) -> None:
    for radius in (1.0, 1.0 + Delta, 2.0, 3.0):
        ax.add_patch(Circle((0, 0), radius, fill=False, lw=0.6, color="0.25"))


def _style_slice(ax: Axes, config: Config, title: str) -> None:
    ax.set_xlim(-config.extent, config.extent)
    ax.set_ylim(-config.extent, config.extent)
    ax.set_aspect("equal")
    ax.set_xticks([-3, -2, -1, 0, 1, 2, 3])
    ax.set_yticks([-3, -2, -1, 0, 1, 2, 3])
    ax.set_title(title, fontsize=10)


def _attack_arrows(ax: Axes, numbers: dict) -> None:
    attack = numbers["attack"]
    for r, rb, t in zip(attack["r"], attack["r_bar"], attack["angle"], strict=True):
        c, s = math.cos(t), math.sin(t)
        ax.annotate(
            "",
            xy=(rb * c, rb * s),
            xytext=(r * c, r * s),
            arrowprops={
                "arrowstyle": "-|>",
                "color": ATTACK_COLOUR,
                "lw": 1.6,
                "mutation_scale": 9,
                "shrinkA": 0,
                "shrinkB": 0,
            },
        )


def _step(ax: Axes, numbers: dict, key: str, **kwargs) -> None:
    edges, values = _region_values(numbers, key)
    ax.stairs(values, edges, baseline=None, **kwargs)


def plot(numbers: dict, config: Config) -> tuple[Figure, np.ndarray]:
    """The 2 × 3 figure: densities (top) and decisions with the attack (bottom)."""
    fig = Figure(figsize=(15, 9.4), layout="constrained")
    axes = fig.subplots(2, 3)
    Delta = config.Delta
    extent = (-config.extent, config.extent, -config.extent, config.extent)

    # -- top: the class densities on the slice, shared log10 scale
    dens = [_slice(numbers, f"log10_p_x_given_{y}", config) for y in (0, 1)]
    vmin = min(np.nanmin(v) for v in dens)
    vmax = max(np.nanmax(v) for v in dens)
    for y, (ax, cmap) in enumerate(zip(axes[0, :2], ("Blues", "Oranges"), strict=True)):
        im = ax.imshow(
            np.ma.masked_invalid(dens[y]),
            extent=extent,
            origin="lower",
            cmap=cmap,
            vmin=vmin - 0.15 * (vmax - vmin),
            vmax=vmax,
            interpolation="nearest",
        )
        _draw_circles(ax, Delta)
        _style_slice(ax, config, f"data density p(x | y={y}) on a 2-D slice of R^{numbers['d']}")
        fig.colorbar(im, ax=ax, shrink=0.8, label=r"$\log_{10}$ density")
    lam = (numbers["lambda1"], numbers["lambda2"])
    labels = (
        (axes[0, 0], 0.0, f"unit ball: mass λ1 = {lam[0]:.3g}"),
        (axes[0, 0], 1.0 + 0.5 * Delta, f"shell (1, {1 + Delta:g}): mass 1-λ1 = {1 - lam[0]:.3g}"),
        (axes[0, 1], 0.0, f"unit ball: mass λ2 = {lam[1]:.3g}"),
        (axes[0, 1], 2.5, f"annulus (2, 3): mass 1-λ2 = {1 - lam[1]:.3g}"),
    )
    for ax, height, text in labels:
        ax.text(0, height, text, ha="center", va="center", fontsize=9, bbox=_LABEL_BOX)

    ax = axes[0, 2]
    _step(ax, numbers, "log10_p_x_given_0", color=CLASS_COLOURS[0], lw=2.2, label="p(x | 0)")
    _step(
        ax,
        numbers,
        "log10_p_x_given_1",
        color=CLASS_COLOURS[1],
        lw=2.2,
        label="p(x | 1) = q(x | 1)",
    )
    _step(
        ax,
        numbers,
        "log10_q_x_given_0",
        color=CLASS_COLOURS[0],
        lw=1.6,
        ls="--",
        label="model q(x | 0) = U(0, 1+Δ)",
    )
    _step(ax, numbers, "log10_q_x", color="0.35", lw=1.2, ls=":", label="model marginal q(x)")
    ax.axhline(
        numbers["log10_median_q_density"],
        color="0.35",
        lw=0.9,
        ls="-.",
        label="median of q(x), x ~ p (detection threshold)",
    )
    edges, log_q = _region_values(numbers, "log10_q_x")
    r_mid = 1.0 + 0.6 * Delta
    r_to = float(attacked_radius(np.array([r_mid]), Delta)[0])
    q_at = [log_q[np.searchsorted(edges, x, side="right") - 1] for x in (r_mid, r_to)]
    ax.annotate(
        "",
        xy=(r_to, q_at[1]),
        xytext=(r_mid, q_at[0]),
        arrowprops={"arrowstyle": "-|>", "color": ATTACK_COLOUR, "lw": 1.8},
    )
    ax.set_xlim(0, config.extent)
    ax.set_xlabel("radius ‖x‖")
    ax.set_ylabel(r"$\log_{10}$ density")
    ax.set_title("densities along the radius (attack: red, q(x) only increases)", fontsize=10)
    ax.legend(fontsize=8, loc="lower left")
    ax.grid(alpha=0.3)

    # -- bottom: decisions
    cmap = LinearSegmentedColormap.from_list(
        "class", [CLASS_COLOURS[1], "white", CLASS_COLOURS[0]]
    ).with_extremes(bad="0.8")
    for ax, key, who in (
        (axes[1, 0], "p_0_given_x", "Bayes-optimal p(y=0 | x)"),
        (axes[1, 1], "q_0_given_x", "model q(y=0 | x), attack in red"),
    ):
        im = ax.imshow(
            np.ma.masked_invalid(_slice(numbers, key, config)),
            extent=extent,
            origin="lower",
            cmap=cmap,
            vmin=0.0,
            vmax=1.0,
            interpolation="nearest",
        )
        _draw_circles(ax, Delta)
        _style_slice(ax, config, who)
        fig.colorbar(im, ax=ax, shrink=0.8, label="P(y=0 | x)   (grey: no data, undefined)")
    _attack_arrows(axes[1, 1], numbers)

    ax = axes[1, 2]
    _step(ax, numbers, "p_0_given_x", color="black", lw=2.2, label="Bayes p(y=0 | x)")
    _step(
        ax, numbers, "q_0_given_x", color=ATTACK_COLOUR, lw=1.6, ls="--", label="model q(y=0 | x)"
    )
    for level, text in ((config.delta, "δ"), (1.0 - config.delta, "1-δ")):
        ax.axhline(level, color="0.5", lw=0.8, ls=":")
        ax.text(config.extent - 0.05, level + 0.015, text, ha="right", va="bottom", fontsize=9)
    _, q0 = _region_values(numbers, "q_0_given_x")
    ax.annotate(
        "",
        xy=(r_to, q0[0]),
        xytext=(r_mid, 1.0),
        arrowprops={"arrowstyle": "-|>", "color": ATTACK_COLOUR, "lw": 1.8},
    )
    ax.set_xlim(0, config.extent)
    ax.set_ylim(-0.03, 1.08)
    ax.set_xlabel("radius ‖x‖")
    ax.set_ylabel("posterior of class 0")
    ax.set_title("decisions along the radius (no data where undefined)", fontsize=10)
    ax.legend(fontsize=8, loc="center right")
    ax.grid(alpha=0.3)

    fig.suptitle(
        f"Figure 2 from the code: ε={config.eps:g}, δ={config.delta:g}, Δ={Delta:g} → minimal "
        f"d={numbers['d']}, λ1={lam[0]:.4g}, λ2={lam[1]:.4g};  KL(q‖p)={numbers['kl_q_p_joint']:.3g}, "
        f"KL(p‖q)={numbers['kl_p_q_joint']:.3g};  P(attack succeeds)={numbers['attack_success_probability']:.3g}",
        fontsize=11,
    )
    return fig, axes
