"""The counterexample explorer draws the package's numbers: minimal d, λ1 interval, densities, KLs.

The oracles are independent of the explorer: the condition bounds written out by hand
(condition 2: K²(1+Δ)^-d; conditions 3 and 5: min(1 - e^-ε, ε / (d log(1+Δ)))), and the package's
own closed forms called directly.
"""

import math

import matplotlib
import numpy as np
import pytest

import counterexample as cx
from counterexample import explorer

matplotlib.use("Agg")

TARGETS = [(0.1, 0.01, 0.1), (10.0, 0.4, 1.0), (1.0, 0.1, 0.5), (1e-3, 1e-4, 1e-3)]
IDS = ["eps0.1", "cond3-binds", "figure2", "slider-corner"]


@pytest.mark.parametrize("targets", TARGETS, ids=IDS)
def test_exploration_is_the_minimal_construction_with_its_kls(targets):
    eps, delta, Delta = targets
    ex = explorer.explore(*targets)
    assert ex.d == cx.find_dimension(*targets)
    assert ex.interval.contains(ex.construction.lambda1)
    assert ex.d == 1 or not cx.is_feasible(ex.d - 1, *targets)
    assert ex.construction.lambda2 == pytest.approx(delta / (1 - delta) * ex.construction.lambda1)
    assert ex.kls["KL(q(x,y)||p(x,y))"] < eps and ex.kls["KL(p(x,y)||q(x,y))"] < eps
    assert ex.kls["KL(q(x|0)||p(x|0))"] == ex.construction.kl_q_p_conditional()
    text = str(ex)
    assert f"minimal d = {ex.d}" in text and "Lemma 3 bound" in text


@pytest.mark.parametrize("targets", TARGETS, ids=IDS)
def test_interval_panel_draws_the_condition_bounds_and_opens_at_the_minimal_d(targets):
    eps, delta, Delta = targets
    fig, axes = explorer.plot_explorer(*targets)
    lower_line, upper_line = axes[0].lines[:2]
    ds = np.asarray(lower_line.get_xdata(), dtype=float)
    log_k = math.log((1 - delta) / delta)
    log_l = math.log(math.log1p(Delta))
    by_hand_lower = (2 * log_k - ds * math.log1p(Delta)) / math.log(10)
    by_hand_upper = np.minimum(
        math.log(-math.expm1(-eps)), math.log(eps) - np.log(ds) - log_l
    ) / math.log(10)
    np.testing.assert_allclose(lower_line.get_ydata(), by_hand_lower, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(upper_line.get_ydata(), by_hand_upper, rtol=1e-9, atol=1e-9)
    d = cx.find_dimension(*targets)
    assert d in ds
    # by the hand-written bounds too, the interval is empty below the minimal d and open at it
    assert np.all(by_hand_lower[ds < d] > by_hand_upper[ds < d])
    assert by_hand_lower[ds == d] <= by_hand_upper[ds == d]
    (marker,) = [line for line in axes[0].lines if line.get_marker() == "o"]
    assert marker.get_xdata()[0] == d
    assert f"d = {d}" in fig.get_suptitle()


def test_density_panel_draws_the_class_densities_along_the_radius():
    fig, axes = explorer.plot_explorer(1.0, 0.1, 0.5)
    c = cx.Counterexample.from_targets(1.0, 0.1, 0.5)
    lines = {line.get_label(): line for line in axes[1].lines}
    r = np.asarray(lines["p(x|0)"].get_xdata())
    assert r.min() == 0.0 and r.max() > 3.0  # the ball, the shell and the annulus (2, 3)
    with np.errstate(divide="ignore"):
        expected = {
            "p(x|0)": c.log_p_conditional(r, 0),
            "p(x|1) = q(x|1)": c.log_p_conditional(r, 1),
            "q(x|0) = U(0, 1+Δ)": c.log_q_conditional(r, 0),
        }
    for label, log_density in expected.items():
        np.testing.assert_allclose(lines[label].get_ydata(), log_density / math.log(10))
    # p(x|0) puts mass lambda1 in the unit ball: its density there is lambda1 / vol(B)
    inside = lines["p(x|0)"].get_ydata()[r < 1][0] * math.log(10)
    assert inside == pytest.approx(math.log(c.lambda1) - c.log_unit_ball_volume)


def test_kl_panel_bars_are_the_closed_forms_and_eps_is_drawn():
    eps, delta, Delta = 0.1, 0.01, 0.1
    _, axes = explorer.plot_explorer(eps, delta, Delta)
    c = cx.Counterexample.from_targets(eps, delta, Delta)
    heights = [patch.get_height() for patch in axes[2].patches]
    expected = [
        c.kl_q_p_conditional(),
        c.kl_q_p_joint(),
        c.lemma2_bound(),
        c.kl_p_q_conditional(),
        c.kl_p_q_joint(),
        c.lemma3_bound(),
    ]
    assert heights == pytest.approx(expected, rel=1e-12)
    (eps_line,) = [line for line in axes[2].lines if line.get_label().startswith("ε")]
    assert eps_line.get_ydata()[0] == eps


@pytest.mark.parametrize(
    ("kwargs", "name"),
    [
        (dict(eps=0.1, delta=0.6, Delta=0.1), "delta"),
        (dict(eps=-1.0, delta=0.01, Delta=0.1), "eps"),
        (dict(eps=0.1, delta=0.01, Delta=float("nan")), "Delta"),
    ],
    ids=["delta-above-half", "negative-eps", "nan-Delta"],
)
def test_bad_targets_name_the_argument(kwargs, name):
    with pytest.raises(ValueError, match=name):
        explorer.plot_explorer(**kwargs)


def test_interactive_explorer_has_a_log_slider_per_target():
    pytest.importorskip("ipywidgets")
    box = explorer.interactive_explorer(eps=0.5, delta=0.05, Delta=0.2)
    sliders = box.children[0].children
    assert [s.description for s in sliders] == ["ε", "δ", "Δ"]
    assert [s.value for s in sliders] == pytest.approx([0.5, 0.05, 0.2])
    for slider, (low, high) in zip(sliders, explorer.SLIDER_RANGES.values(), strict=True):
        assert (slider.min, slider.max, slider.base) == (low, high, 10)
    # every slider corner has a drawable construction
    corners = [10.0 ** np.array(r) for r in explorer.SLIDER_RANGES.values()]
    for eps in corners[0]:
        for delta in corners[1]:
            for Delta in corners[2]:
                assert explorer.explore(eps, delta, Delta).d >= 1


def test_interactive_explorer_refuses_a_start_outside_the_sliders():
    pytest.importorskip("ipywidgets")
    with pytest.raises(ValueError, match="Delta must lie in"):
        explorer.interactive_explorer(Delta=5.0)
