"""The command line: python -m counterexample."""

import math
import subprocess
import sys

import mpmath
import pytest

from counterexample import (
    Counterexample,
    check_proposition,
    feasible_lambda1_interval,
    find_dimension,
    simulate_attack,
)
from counterexample.__main__ import MAX_MONTE_CARLO, main, monte_carlo_limit


def test_cli_prints_dimension_interval_kls_and_report(capsys):
    assert main(["--eps", "0.1", "--delta", "0.01", "--Delta", "0.1", "--monte-carlo", "2000"]) == 0
    out = capsys.readouterr().out
    assert f"minimal dimension d = {find_dimension(0.1, 0.01, 0.1)}" in out
    for needle in (
        "feasible lambda1",
        "KL(q(x,y)||p(x,y))",
        "Lemma 3 bound",
        "item 7b",
        "all checked items hold: True",
        "Monte Carlo (n=2000",
    ):
        assert needle in out


def test_cli_rejects_invalid_arguments_with_a_clear_message(capsys):
    assert main(["--delta", "0.7"]) == 2
    err = capsys.readouterr().err
    assert "delta" in err and "0.7" in err and "(0.0, 0.5)" in err


def test_module_entry_point_runs():
    result = subprocess.run(
        [sys.executable, "-m", "counterexample", "--eps", "0.5"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "minimal dimension d =" in result.stdout


def test_docstring_examples():
    import doctest

    import counterexample

    failures, tried = doctest.testmod(counterexample)
    assert tried > 0 and failures == 0


# --------------------------------------------------------------------------------------------
# Hardening: every bad argument is one line on stderr naming it and its range, exit status 2.
# --------------------------------------------------------------------------------------------
MIN_D = 149  # find_dimension(0.1, 0.01, 0.1), the default targets

# (argv, the argument named, the valid range or reason that must appear)
BAD_ARGS = [
    (["--Delta", "1e-17"], "--Delta", "[1e-15, inf)"),
    (["--Delta", "1e-300"], "--Delta", "[1e-15, inf)"),
    (["--Delta", "5e-324"], "--Delta", "[1e-15, inf)"),
    (["--Delta", "1e-16"], "--Delta", "at double-precision radii"),
    (["--Delta", "9.9e-16"], "--Delta", "[1e-15, inf)"),
    (["--Delta", "0"], "--Delta", "[1e-15, inf)"),
    (["--Delta", "-1"], "--Delta", "[1e-15, inf)"),
    (["--Delta", "nan"], "--Delta", "[1e-15, inf)"),
    (["--Delta", "inf"], "--Delta", "[1e-15, inf)"),
    (["--monte-carlo", "-5"], "--monte-carlo", "0 or an integer in [2, 10**7]"),
    (["--monte-carlo", "1"], "--monte-carlo", "0 or an integer in [2, 10**7]"),
    (["--monte-carlo", str(10**12)], "--monte-carlo", "0 or an integer in [2, 10**7]"),
    (["--monte-carlo", "1e3"], "--monte-carlo", "0 or an integer in [2, 10**7]"),
    (["--Delta", "1e-15", "--monte-carlo", "100"], "--monte-carlo", "must be 0 at d="),
    (["--Delta", "1e-10", "--monte-carlo", "1000000"], "--monte-carlo", "0 or an integer in [2, "),
    (["--eps", "nan"], "--eps", "(0.0, inf)"),
    (["--eps", "inf"], "--eps", "(0.0, inf)"),
    (["--eps=-inf"], "--eps", "(0.0, inf)"),
    (
        ["--eps", "-inf"],
        "--eps",
        "eps > 0",
    ),  # argparse reads "-inf" as an option: "expected one argument"
    (["--eps", "0"], "--eps", "(0.0, inf)"),
    (["--eps", "-0.1"], "--eps", "(0.0, inf)"),
    (["--eps", "abc"], "--eps", "(0.0, inf)"),
    (["--eps", ""], "--eps", "(0.0, inf)"),
    (["--eps", "1e400"], "--eps", "(0.0, inf)"),
    (["--eps"], "--eps", "eps > 0"),
    (["--eps", "5e-324"], "--eps/--delta", "smallest normal double"),
    (["--delta", "nan"], "--delta", "(0.0, 0.5)"),
    (["--delta", "inf"], "--delta", "(0.0, 0.5)"),
    (["--delta", "0"], "--delta", "(0.0, 0.5)"),
    (["--delta", "0.5"], "--delta", "(0.0, 0.5)"),
    (["--delta", "0.7"], "--delta", "(0.0, 0.5)"),
    (["--delta", "5e-324"], "--eps/--delta", "smallest normal double"),
    (["--lambda1", "nan"], "--lambda1", "(0.0, 1.0)"),
    (["--lambda1", "inf"], "--lambda1", "(0.0, 1.0)"),
    (["--lambda1", "0"], "--lambda1", "(0.0, 1.0)"),
    (["--lambda1", "1"], "--lambda1", "(0.0, 1.0)"),
    (["--lambda1", "2"], "--lambda1", "(0.0, 1.0)"),
    (["--lambda1", "0.5"], "--lambda1", "feasible interval [0.00666439, 0.00704165)"),
    (["--lambda1", "0.0066"], "--lambda1", "feasible interval [0.00666439, 0.00704165)"),
    (["--d", "100000", "--lambda1", "1e-310"], "--lambda1", "smallest normal double"),
    (["--d", "0"], "--d", "[1, 10**300]"),
    (["--d", "-3"], "--d", "[1, 10**300]"),
    (["--d", "1.5"], "--d", "[1, 10**300]"),
    (["--d", "abc"], "--d", "[1, 10**300]"),
    (["--d", str(10**301)], "--d", "[1, 10**300]"),
    (["--d", str(MIN_D - 1)], "--d", f">= {MIN_D}, the minimal dimension"),
    (["--d", "100000"], "--d", f"[{MIN_D}, "),  # the default lambda1 would underflow
    (["--seed", "-1", "--monte-carlo", "10"], "--seed", "[0, 2**128-1]"),
    (["--seed", str(2**128)], "--seed", "[0, 2**128-1]"),
    (["--seed", "x"], "--seed", "[0, 2**128-1]"),
    (["--foo", "1"], "--foo", "valid: --help, --eps, --delta, --Delta, --d, --lambda1"),
]


@pytest.mark.parametrize(
    "argv, name, valid", BAD_ARGS, ids=lambda v: " ".join(v) if isinstance(v, list) else None
)
def test_bad_argument_is_one_line_naming_it_with_exit_status_2(capsys, argv, name, valid):
    assert main(argv) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    lines = [line for line in captured.err.splitlines() if line.strip()]
    assert len(lines) == 1 and captured.err.count("\n") == 1, captured.err
    assert lines[0].startswith("python -m counterexample: error: ")
    assert f"argument {name}" in lines[0] or f"arguments: {name}" in lines[0], lines[0]
    assert valid in lines[0], lines[0]
    assert "Traceback" not in captured.err and "usage:" not in captured.err


@pytest.mark.parametrize(
    "argv",
    [
        ["--Delta", "1e-17"],
        ["--Delta", "5e-324"],
        ["--monte-carlo", "-5"],
        ["--eps", "abc"],
        ["--d", "0"],
    ],
    ids=" ".join,
)
def test_module_entry_point_refuses_with_one_line_and_status_2(argv):
    """The former crashes, through the real ``python -m`` entry point."""
    result = subprocess.run(
        [sys.executable, "-m", "counterexample", *argv], capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.splitlines()) == 1 and argv[0] in result.stderr
    assert "Traceback" not in result.stderr


HOSTILE_BUT_VALID = [
    ["--Delta", "1e-15"],
    ["--eps", "1e-300"],
    ["--eps", "1e300"],
    ["--delta", "0.49999999999999994"],
    ["--Delta", "1e308"],
    ["--d", str(10**19), "--lambda1", "1e-21"],
    ["--d", str(10**300), "--lambda1", "1e-303"],
    ["--monte-carlo", "2"],
    ["--seed", str(2**128 - 1), "--monte-carlo", "50"],
]


@pytest.mark.parametrize("argv", HOSTILE_BUT_VALID, ids=" ".join)
def test_extreme_but_valid_arguments_run_without_stderr(capsys, argv):
    assert main(argv) == 0
    captured = capsys.readouterr()
    assert captured.err == ""
    assert "all checked items hold: " in captured.out


# --------------------------------------------------------------------------------------------
# Delta = 1e-15: the report against the closed forms evaluated with mpmath.
# --------------------------------------------------------------------------------------------
def reference_rows(ce, eps, delta, rtol=1e-12):
    """The checked rows of ``check_proposition`` recomputed from the closed forms in high precision.

    Same doubles as inputs (eps, delta, Delta, lambda1, lambda2, the report's shell point r =
    1 + Delta/2 and its attacked radius), everything else exact: the Bernoulli KLs of Lemmas 2-3
    (halved for the joints), conditions 1-5 as listed in the proof, the posteriors of Lemma 1, and the
    lower median of q(X), X ~ p, over the radial regions. For Delta < 1.
    """
    with mpmath.workdps(40 + len(str(ce.d))):
        f = mpmath.mpf
        e, dl, D, l1, l2, d = f(eps), f(delta), f(ce.Delta), f(ce.lambda1), f(ce.lambda2), f(ce.d)
        L = mpmath.log1p(D)
        V = mpmath.exp(d * L)

        def ber(a, b):
            return a * mpmath.log(a / b) + (1 - a) * mpmath.log((1 - a) / (1 - b))

        conf = (1 - dl) * (1 - rtol)
        rows = [
            ber(1 / V, l1) / 2 < e,  # (18), KL(q||p) joint
            ber(l1, 1 / V) / 2 < e,  # (18), KL(p||q) joint
            l1 / (l1 + l2) >= conf,  # condition 1
            (
                l1 >= ((1 - dl) / dl) ** 2 / V
                and l1 <= -mpmath.expm1(-e)
                and l1 > 1 / V
                and l1 < e / (d * L)
            ),  # conditions 2-5
        ]
        r = 1.0 + 0.5 * ce.Delta
        r_bar = max(0.0, 0.5 * (r + 1.0 - ce.Delta))
        R, Rb = f(r), f(r_bar)
        in_shell = 1 < R <= 1 + D  # there p(0|x) = q(0|x) = 1
        p_bar0, q_bar0 = l1 / (l1 + l2), 1 / (1 + l2 * V)  # Lemma 1 inside the unit ball
        q_bar = (1 / V + l2) / 2  # c_d q(x_bar)
        pairs = sorted(
            [
                (q_bar, (l1 + l2) / 2),
                (1 / (2 * V), (1 - l1) / 2),
                ((1 - l2) / (2 * (mpmath.power(3, d) - mpmath.power(2, d))), (1 - l2) / 2),
            ]
        )
        cumulative, median = 0, None
        for value, mass in pairs:
            cumulative += mass
            if cumulative >= 0.5 * (1 - 1e-15):
                median = value
                break
        items = [
            in_shell,
            in_shell and Rb < 1 and p_bar0 > 0.5 and q_bar0 < 0.5,
            Rb < 1 and max(p_bar0, 1 - p_bar0) >= conf and max(q_bar0, 1 - q_bar0) >= conf,
            R - Rb < D,
            Rb < 1 and q_bar >= median,
        ]
        p_attack = (1 - l1) / 2 if all(items) else 0  # items 1-5 hold on the whole shell or nowhere
        return [bool(x) for x in [*rows, p_attack > f(1) / 3, *items]]


def _checked(report):
    return [ok for _, _, ok in report.rows if ok is not None]


@pytest.mark.parametrize(
    "eps, delta, Delta",
    [
        (0.1, 0.01, 1e-15),
        (1.0, 0.1, 1e-15),
        (1e-3, 1e-5, 3e-15),
        (0.5, 0.3, 1e-14),
        (0.05, 0.2, 1e-12),
        (0.1, 0.01, 0.1),
    ],
    ids=str,
)
def test_report_agrees_with_the_high_precision_reference_down_to_Delta_1e_15(eps, delta, Delta):
    ce = Counterexample.from_targets(eps, delta, Delta)
    report = check_proposition(ce, eps, delta)
    reference = reference_rows(ce, eps, delta)
    assert len(reference) == len(_checked(report)) == 10
    assert _checked(report) == reference
    assert all(reference), str(report)


def test_Delta_1e_15_report_holds_and_the_old_float_midpoint_was_outside_the_interval(capsys):
    """The finding: at Delta=1e-15 the feasible lambda1 interval at the minimal d is narrower (in log)
    than the rounding error of its float bounds, so the double-precision geometric midpoint violated
    condition 5 and the report said FAIL; the midpoint is now resolved in high precision."""
    eps, delta, Delta = 0.1, 0.01, 1e-15
    d = find_dimension(eps, delta, Delta)
    assert d == 14141971899412665
    interval = feasible_lambda1_interval(d, eps, delta, Delta)
    with mpmath.workdps(80):
        f = mpmath.mpf
        L = mpmath.log1p(f(Delta))
        log_lower = 2 * mpmath.log((1 - f(delta)) / f(delta)) - d * L  # condition 2
        log_upper = mpmath.log(f(eps)) - mpmath.log(d) - mpmath.log(L)  # condition 5 binds
        assert log_upper < mpmath.log(-mpmath.expm1(-f(eps)))
        width = log_upper - log_lower
        assert 5e-16 < width < 1e-15  # relative width of the interval, about 8.0e-16
        # the previous default: the double-precision midpoint, off by more than the width
        old = math.exp(0.5 * (interval.log_lower + interval.log_upper))
        assert mpmath.log(f(old)) >= log_upper
        assert not interval.contains(old)
        ce = Counterexample.from_targets(eps, delta, Delta)
        assert log_lower <= mpmath.log(f(ce.lambda1)) < log_upper
        # d is minimal: the interval at d - 1 is empty
        assert 2 * mpmath.log((1 - f(delta)) / f(delta)) - (d - 1) * L > (
            mpmath.log(f(eps)) - mpmath.log(d - 1) - mpmath.log(L)
        )
    assert main(["--Delta", "1e-15"]) == 0
    out = capsys.readouterr().out
    assert "minimal dimension d = 14141971899412665" in out
    assert "FAIL" not in out and "all checked items hold: True" in out


def test_interval_too_narrow_for_a_double_is_refused_with_a_working_d(capsys):
    """At eps=0.0874, Delta=1e-15 the interval at the minimal d has relative width 2.5e-17: no double."""
    argv = ["--eps", "0.0874", "--Delta", "1e-15"]
    d = find_dimension(0.0874, 0.01, 1e-15)
    with pytest.raises(ValueError, match="no double-precision number"):
        feasible_lambda1_interval(d, 0.0874, 0.01, 1e-15).geometric_midpoint()
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "argument --d" in err and f"pass --d {d + 1}" in err
    assert main([*argv, "--d", str(d + 1)]) == 0
    assert "all checked items hold: True" in capsys.readouterr().out


def test_monte_carlo_limit_keeps_the_rounding_bias_below_a_tenth_of_the_standard_error():
    assert monte_carlo_limit(MIN_D) == MAX_MONTE_CARLO
    assert monte_carlo_limit(10**9) == MAX_MONTE_CARLO
    for d in (141419719002, 1414197189941, 14141971899420):  # Delta = 1e-10, 1e-11, 1e-12
        n = monte_carlo_limit(d)
        bias = d * 2.0**-51
        assert 2 <= n < MAX_MONTE_CARLO
        assert bias <= 0.1 / (2 * math.sqrt(n))  # n is allowed
        assert bias > 0.1 / (2 * math.sqrt(n + 1))  # and the largest such
    assert monte_carlo_limit(14141971899412665) < 2  # Delta = 1e-15: no Monte Carlo at all


def test_monte_carlo_is_indeed_biased_where_it_is_refused():
    """At Delta=1e-14 (d = 1.4e15) double-precision radii put about 15% of the attacked shell points
    at distance >= Delta: the simulated attack misses its exact value by dozens of standard errors."""
    ce = Counterexample.from_targets(0.1, 0.01, 1e-14)
    assert monte_carlo_limit(ce.d) < 2
    sim = simulate_attack(ce, 0.01, n=100_000, rng=0)
    assert sim.estimate.z_score(sim.theory) < -10
