r"""The feasible :math:`\lambda_1` interval of Proposition 1's proof against the dimension d.

For each :math:`(\epsilon, \delta, \Delta)` one panel draws, on a log scale and at every integer d,
the bounds of the proof's conditions (with :math:`\lambda_2 = \frac{\delta}{1-\delta}\lambda_1`,
condition 1 holds with equality):

* condition 2, :math:`\lambda_1 \ge K^2 (1+\Delta)^{-d}`, :math:`K = \frac{1-\delta}{\delta}` (lower);
* condition 3, :math:`\lambda_1 \le 1 - e^{-\epsilon}` (upper, flat);
* condition 4, :math:`\lambda_1 > (1+\Delta)^{-d}` (lower, implied by condition 2; dotted);
* condition 5, :math:`\lambda_1 < \frac{\epsilon}{d\log(1+\Delta)}` (upper);

shades the feasible interval (:func:`counterexample.feasible_lambda1_interval`), and marks the
minimal dimension (:func:`counterexample.find_dimension`) and, where it differs, the dimension the
paper's eq. (19) alone gives (:func:`counterexample.find_dimension_eq19`, which drops condition 3).
The default parameter sets show condition 5 binding (:math:`\epsilon = 0.1`), a moderate case, and
condition 3 binding where eq. (19) is wrong (:math:`\epsilon = 10, \delta = 0.4, \Delta = 1`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from matplotlib.figure import Figure

from counterexample import feasible_lambda1_interval, find_dimension, find_dimension_eq19
from counterexample.lemmas import log_volume_ratio

__all__ = ["NAME", "Config", "compute", "plot", "table_rows"]

NAME = "lambda_interval"

_LN10 = math.log(10.0)
_LABEL_BOX = {"boxstyle": "round,pad=0.15", "facecolor": "white", "alpha": 0.85, "lw": 0}
BOUND_STYLES = {
    "log10_cond2_lower": ("condition 2: λ1 ≥ K²(1+Δ)^-d", {"color": "black", "lw": 2.0}),
    "log10_cond4_lower": (
        "condition 4: λ1 > (1+Δ)^-d (implied by 2)",
        {"color": "0.45", "lw": 1.2, "ls": ":"},
    ),
    "log10_cond3_upper": (
        "condition 3: λ1 ≤ 1 - exp(-ε)",
        {"color": "#1a9641", "lw": 2.0, "ls": "--"},
    ),
    "log10_cond5_upper": (
        "condition 5: λ1 < ε / (d log(1+Δ))",
        {"color": "#7b3294", "lw": 2.0, "ls": "-."},
    ),
}


COLUMNS = (
    "d",
    "log10_cond2_lower",
    "log10_cond4_lower",
    "log10_cond3_upper",
    "log10_cond5_upper",
    "log10_upper",
    "upper_condition",
    "feasible",
)


@dataclass(frozen=True)
class Config:
    """The (eps, delta, Delta) of each panel and how far past the minimal d to draw."""

    cases: tuple[tuple[float, float, float], ...] = (
        (0.1, 0.01, 0.1),
        (1.0, 0.1, 0.5),
        (10.0, 0.4, 1.0),
    )
    d_range_factor: float = 2.5
    d_max_at_least: int = 10


def compute(config: Config) -> dict:
    """Per case: the minimal d (exact and eq. 19) and, at each integer d = 1, 2, ..., the condition
    bounds and the feasible interval as columns (log10 of the bounds: they underflow for large d)."""
    cases = []
    for eps, delta, Delta in config.cases:
        d_min = find_dimension(eps, delta, Delta)
        d_max = max(config.d_max_at_least, math.ceil(config.d_range_factor * d_min))
        columns: dict[str, list] = {key: [] for key in COLUMNS}
        for d in range(1, d_max + 1):
            interval = feasible_lambda1_interval(d, eps, delta, Delta)
            log_v = log_volume_ratio(d, Delta)
            row = {
                "d": d,
                "log10_cond2_lower": interval.log_lower / _LN10,
                "log10_cond4_lower": -log_v / _LN10,
                "log10_cond3_upper": math.log(-math.expm1(-eps)) / _LN10,
                "log10_cond5_upper": math.log(eps / log_v) / _LN10,
                "log10_upper": interval.log_upper / _LN10,
                "upper_condition": interval.upper_condition,
                "feasible": not interval.empty,
            }
            for key in COLUMNS:
                columns[key].append(row[key])
        cases.append(
            {
                "eps": eps,
                "delta": delta,
                "Delta": Delta,
                "find_dimension": d_min,
                "find_dimension_eq19": find_dimension_eq19(eps, delta, Delta),
                "columns": columns,
            }
        )
    return {"cases": cases}


def plot(numbers: dict, config: Config) -> tuple[Figure, np.ndarray]:
    """One log-scale panel per case: condition bounds against d, feasible region shaded."""
    cases = numbers["cases"]
    fig = Figure(figsize=(5.2 * len(cases), 5.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(cases)))
    for ax, case in zip(axes, cases, strict=True):
        columns = {key: np.array(values) for key, values in case["columns"].items()}
        d = columns["d"]
        lower, upper = 10.0 ** columns["log10_cond2_lower"], 10.0 ** columns["log10_upper"]
        for key, (label, style) in BOUND_STYLES.items():
            ax.plot(
                d, 10.0 ** columns[key], label=label, marker="." if d.size <= 30 else None, **style
            )
        ax.fill_between(
            d,
            lower,
            upper,
            where=columns["feasible"],
            color="#fdae61",
            alpha=0.45,
            lw=0,
            label="feasible λ1 (all five conditions)",
        )
        d_min, d_19 = case["find_dimension"], case["find_dimension_eq19"]
        ax.axvline(d_min, color="#d7191c", lw=1.4)
        ax.text(
            d_min,
            0.97,
            f" minimal d = {d_min}",
            color="#d7191c",
            transform=ax.get_xaxis_transform(),
            ha="left",
            va="top",
            fontsize=9,
            bbox=_LABEL_BOX,
        )
        if d_19 != d_min:
            ax.axvline(d_19, color="#d7191c", lw=1.0, ls=":")
            ax.text(
                d_19,
                0.88,
                f" eq. (19) alone: d = {d_19}",
                color="#d7191c",
                transform=ax.get_xaxis_transform(),
                ha="left",
                va="top",
                fontsize=9,
                bbox=_LABEL_BOX,
            )
        ax.set_yscale("log")
        ax.set_ylim(0.05 * float(np.min(upper)), 10.0)
        ax.set_xlim(0.5 if d.size <= 30 else 0, d[-1])
        ax.axhline(1.0, color="0.6", lw=0.6)
        ax.set_xlabel("dimension d")
        ax.set_ylabel("λ1")
        ax.set_title(f"ε={case['eps']:g}, δ={case['delta']:g}, Δ={case['Delta']:g}", fontsize=11)
        ax.grid(alpha=0.3, which="major")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=3, fontsize=9, frameon=False)
    fig.suptitle(
        "Feasible λ1 of Proposition 1's proof against d (λ2 = δ/(1-δ)·λ1, condition 1 "
        "holds with equality)",
        fontsize=11,
    )
    return fig, axes


def table_rows(numbers: dict) -> list[dict]:
    """One CSV row per case and dimension d."""
    return [
        {
            "eps": c["eps"],
            "delta": c["delta"],
            "Delta": c["Delta"],
            **{key: c["columns"][key][i] for key in COLUMNS},
        }
        for c in numbers["cases"]
        for i in range(len(c["columns"]["d"]))
    ]
