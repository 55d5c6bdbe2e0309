r"""The counterexample explorer: what Proposition 1's construction looks like at any :math:`(\epsilon, \delta, \Delta)`.

For the targets of Proposition 1 (Section 3, Appendix C) the explorer shows, in one figure:

* the smallest dimension d at which the construction works (:func:`~counterexample.find_dimension`)
  and the feasible interval of :math:`\lambda_1` against d around it
  (:func:`~counterexample.feasible_lambda1_interval`): condition 2's lower bound
  :math:`K^2(1+\Delta)^{-d}`, :math:`K = \frac{1-\delta}{\delta}`, and the smaller of conditions 3 and
  5's upper bounds, :math:`\min\bigl(1-e^{-\epsilon}, \frac{\epsilon}{d\log(1+\Delta)}\bigr)`, with the
  chosen :math:`\lambda_1` (the geometric midpoint at the minimal d);
* the class densities along the radius :math:`\|x\|` (eqs. 3–4 / 7–10), on a log scale:
  :math:`p(x|0) = \lambda_1 U(0,1) + (1-\lambda_1) U(1, 1+\Delta)`, :math:`q(x|0) = U(0, 1+\Delta)` and
  :math:`p(x|1) = q(x|1)`;
* both KL divergences, conditional and joint, beside the bounds of Lemmas 2 and 3 and beside
  :math:`\epsilon` (eq. 18 asks both joint KLs to be below :math:`\epsilon`).

:func:`explore` computes these numbers (:class:`Exploration`), :func:`plot_explorer` draws them
(a static figure: what a notebook shows without a running kernel, and what the documentation
site shows), and :func:`interactive_explorer` puts sliders for :math:`\epsilon, \delta, \Delta` on
top of the same figure (needs ``ipywidgets``, in the ``dev`` extra). Nothing is re-derived here:
every number comes from the package's closed forms.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from .construction import Counterexample
from .dimension import (
    LambdaInterval,
    feasible_lambda1_interval,
    validate_targets,
)

__all__ = ["Exploration", "explore", "plot_explorer", "interactive_explorer", "SLIDER_RANGES"]

_LN10 = math.log(10.0)
#: radii drawn in the density panel: the ball, the shell (1, 1+Delta) and the annulus (2, 3)
_RADIUS_MAX = 3.3
#: (log10 min, log10 max) of each slider; delta < 1/2 and the largest Delta keeps d >= 2
SLIDER_RANGES = {"eps": (-3.0, 1.0), "delta": (-4.0, math.log10(0.49)), "Delta": (-3.0, 0.0)}


@dataclass(frozen=True)
class Exploration:
    r"""The construction of Proposition 1 at :math:`(\epsilon, \delta, \Delta)`, and its numbers.

    ``construction`` is :meth:`Counterexample.from_targets` (minimal ``d``, :math:`\lambda_1` at the
    geometric midpoint of ``interval``, :math:`\lambda_2 = \frac{\delta}{1-\delta}\lambda_1`);
    ``kls`` is its :meth:`~Counterexample.kl_summary` (both KLs, conditional and joint, and the
    Lemma 2 and 3 bounds), in nats.
    """

    eps: float
    delta: float
    Delta: float
    construction: Counterexample
    interval: LambdaInterval
    kls: dict[str, float]

    @property
    def d(self) -> int:
        """The smallest dimension at which the construction works."""
        return self.construction.d

    def __str__(self) -> str:
        c = self.construction
        lines = [
            f"eps={self.eps:g}, delta={self.delta:g}, Delta={self.Delta:g}: minimal d = {c.d}",
            f"feasible lambda1 at d={c.d}: {self.interval}",
            f"lambda1 = {c.lambda1:.6g}, lambda2 = {c.lambda2:.6g}",
        ]
        lines += [f"  {name:<38} {value:.6g}" for name, value in self.kls.items()]
        return "\n".join(lines)


def explore(eps: float, delta: float, Delta: float) -> Exploration:
    r"""The construction at the targets :math:`(\epsilon, \delta, \Delta)` and its numbers.

    Args:
        eps: :math:`\epsilon > 0`, the bound on both KL divergences (eq. 18).
        delta: :math:`0 < \delta < 1/2`, the confidence level of items 1–4.
        Delta: :math:`\Delta > 0`, the size of the perturbation (the shell's width).

    Raises:
        ValueError: an argument out of range (named), or a feasible :math:`\lambda_1` that underflows
            double precision (extreme targets; :meth:`Counterexample.from_targets` says so).
    """
    eps, delta, Delta = validate_targets(eps, delta, Delta)
    construction = Counterexample.from_targets(eps, delta, Delta)
    interval = feasible_lambda1_interval(construction.d, eps, delta, Delta)
    return Exploration(eps, delta, Delta, construction, interval, construction.kl_summary())


def _dimension_grid(d: int, points: int = 300) -> np.ndarray:
    """Integers from about d/2 to 2d (at most ``points`` of them), d itself included."""
    low, high = max(1, d // 2), 2 * d + 1
    step = max(1, math.ceil((high - low) / points))
    return np.union1d(np.arange(low, high + 1, step), [d])


def _plot_interval(ax: Axes, ex: Exploration) -> None:
    ds = _dimension_grid(ex.d)
    intervals = [feasible_lambda1_interval(int(k), ex.eps, ex.delta, ex.Delta) for k in ds]
    lower = np.array([i.log_lower for i in intervals]) / _LN10
    upper = np.array([i.log_upper for i in intervals]) / _LN10
    feasible = ~np.array([i.empty for i in intervals])
    ax.plot(ds, lower, color="black", lw=2.0, label="condition 2: λ1 ≥ K²(1+Δ)^-d")
    ax.plot(ds, upper, color="#7b3294", lw=2.0, ls="--", label="conditions 3, 5: upper bound")
    ax.fill_between(
        ds, lower, upper, where=feasible, color="#fdae61", alpha=0.5, lw=0, label="feasible λ1"
    )
    ax.axvline(ex.d, color="#d7191c", lw=1.2)
    ax.plot([ex.d], [math.log10(ex.construction.lambda1)], "o", color="#d7191c", label="chosen λ1")
    ax.set_xlabel("dimension d")
    ax.set_ylabel("log10 λ1")
    ax.set_title(f"feasible λ1: minimal d = {ex.d}", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(alpha=0.3)


def _plot_densities(ax: Axes, ex: Exploration) -> None:
    c = ex.construction
    r = np.linspace(0.0, _RADIUS_MAX, 1321)
    with np.errstate(divide="ignore"):
        curves = [
            (c.log_p_conditional(r, 0), "p(x|0)", {"color": "C0", "lw": 2.2}),
            (c.log_p_conditional(r, 1), "p(x|1) = q(x|1)", {"color": "C1", "lw": 2.2}),
            (
                c.log_q_conditional(r, 0),
                "q(x|0) = U(0, 1+Δ)",
                {"color": "C0", "lw": 1.5, "ls": "--"},
            ),
        ]
    for log_density, label, style in curves:
        ax.plot(r, log_density / _LN10, label=label, **style)
    ax.set_xlabel("radius ‖x‖")
    ax.set_ylabel("log10 density")
    ax.set_title(f"densities along the radius (λ1 = {c.lambda1:.3g})", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3)


def _plot_kls(ax: Axes, ex: Exploration) -> None:
    names = list(ex.kls)
    values = np.array([ex.kls[name] for name in names])
    colours = ["C0", "C0", "0.6", "C2", "C2", "0.6"]
    labels = [
        "KL(q‖p)\nclass 0",
        "KL(q‖p)\njoint",
        "Lemma 2\nbound",
        "KL(p‖q)\nclass 0",
        "KL(p‖q)\njoint",
        "Lemma 3\nbound",
    ]
    positions = np.arange(len(names))
    ax.bar(positions, values, color=colours)
    ax.axhline(ex.eps, color="#d7191c", lw=1.2, ls="--", label=f"ε = {ex.eps:g}")
    ax.set_xticks(positions, labels, fontsize=7)
    ax.set_yscale("log")
    ax.set_ylabel("nats")
    ax.set_title("both KLs (joint ones < ε: eq. 18)", fontsize=10)
    ax.legend(fontsize=8)
    ax.grid(alpha=0.3, axis="y")


def plot_explorer(eps: float, delta: float, Delta: float) -> tuple[Figure, np.ndarray]:
    r"""The explorer's figure at :math:`(\epsilon, \delta, \Delta)`: three panels, ``(fig, axes)``.

    ``axes[0]``: :math:`\log_{10}` of the feasible :math:`\lambda_1` bounds against d (shaded where
    all five conditions hold), the minimal d and the chosen :math:`\lambda_1`; ``axes[1]``:
    :math:`\log_{10}` of the class densities along the radius; ``axes[2]``: both KLs and the lemma
    bounds (bars, log scale) against :math:`\epsilon`. A :class:`matplotlib.figure.Figure`, not
    registered with pyplot: ``display(fig)`` in a notebook, ``fig.savefig(path)`` elsewhere.

    Raises:
        ValueError: as :func:`explore`.
    """
    ex = explore(eps, delta, Delta)
    fig = Figure(figsize=(15, 4.4), layout="constrained")
    axes = np.asarray(fig.subplots(1, 3))
    _plot_interval(axes[0], ex)
    _plot_densities(axes[1], ex)
    _plot_kls(axes[2], ex)
    fig.suptitle(
        f"ε = {ex.eps:g}, δ = {ex.delta:g}, Δ = {ex.Delta:g}:  d = {ex.d},  "
        f"λ1 ∈ [{ex.interval.lower:.3g}, {ex.interval.upper:.3g}"
        f"{']' if ex.interval.upper_closed else ')'}"
    )
    return fig, axes


def interactive_explorer(eps: float = 0.1, delta: float = 0.01, Delta: float = 0.1):
    r"""Sliders for :math:`\epsilon, \delta, \Delta` (log scale) above :func:`plot_explorer`'s figure.

    Returns an ``ipywidgets.VBox`` (display it, or leave it as a cell's last expression); the figure
    is redrawn when a slider is released. It needs a running kernel: a saved notebook keeps only
    the last state, so show :func:`plot_explorer`'s figure beside it as the static fallback. Targets
    whose construction cannot be drawn (a feasible :math:`\lambda_1` below double precision) print
    the reason instead of a figure. The slider ranges are :data:`SLIDER_RANGES` (powers of ten).

    Raises:
        ImportError: ``ipywidgets`` is not installed.
        ValueError: a starting value outside its slider's range (named).
    """
    try:
        import ipywidgets as widgets
        from IPython.display import display
    except ImportError as error:  # pragma: no cover - ipywidgets is in the dev extra
        raise ImportError(
            "interactive_explorer needs ipywidgets (python -m pip install ipywidgets); "
            "plot_explorer draws the same figure without it"
        ) from error
    start = {"eps": eps, "delta": delta, "Delta": Delta}
    labels = {"eps": "ε", "delta": "δ", "Delta": "Δ"}
    sliders = {}
    for name, (low, high) in SLIDER_RANGES.items():
        value = float(start[name])
        if not 10.0**low <= value <= 10.0**high:
            raise ValueError(
                f"{name} must lie in [{10.0**low:g}, {10.0**high:g}] (the slider's range), "
                f"got {start[name]!r}"
            )
        sliders[name] = widgets.FloatLogSlider(
            value=value,
            base=10,
            min=low,
            max=high,
            step=0.05,
            description=labels[name],
            continuous_update=False,
            readout_format=".3g",
        )

    def show(eps: float, delta: float, Delta: float) -> None:
        try:
            fig, _ = plot_explorer(eps, delta, Delta)
        except ValueError as error:
            print(f"no figure at eps={eps:g}, delta={delta:g}, Delta={Delta:g}: {error}")
            return
        display(fig)

    output = widgets.interactive_output(show, sliders)
    return widgets.VBox([widgets.HBox(list(sliders.values())), output])
