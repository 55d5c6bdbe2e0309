"""The command line: python -m counterexample."""

import subprocess
import sys

from counterexample import find_dimension
from counterexample.__main__ import main


def test_cli_prints_dimension_interval_kls_and_report(capsys):
    assert main(["--eps", "0.1", "--delta", "0.01", "--Delta", "0.1", "--monte-carlo", "2000"]) == 0
    out = capsys.readouterr().out
    assert f"minimal dimension d = {find_dimension(0.1, 0.01, 0.1)}" in out
    for needle in ("feasible lambda1", "KL(q(x,y)||p(x,y))", "Lemma 3 bound", "item 7b",
                   "all checked items hold: True", "Monte Carlo (n=2000"):
        assert needle in out


def test_cli_rejects_invalid_arguments_with_a_clear_message(capsys):
    assert main(["--delta", "0.7"]) == 2
    err = capsys.readouterr().err
    assert "delta" in err and "0.7" in err and "(0.0, 0.5)" in err


def test_module_entry_point_runs():
    result = subprocess.run([sys.executable, "-m", "counterexample", "--eps", "0.5"],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "minimal dimension d =" in result.stdout


def test_docstring_examples():
    import doctest

    import counterexample

    failures, tried = doctest.testmod(counterexample)
    assert tried > 0 and failures == 0
