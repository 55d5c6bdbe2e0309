"""python -m flows.robustness: a factory defined in a test module writes the three files; bad
arguments are one line on stderr with exit status 2."""

import json
import subprocess
import sys
import textwrap

import pytest
import torch

from flows.robustness import TwoGaussianModel, validate_report
from flows.robustness.cli import PROG, main

FACTORIES = """
import torch
from flows.robustness import TwoGaussianModel

NOT_CALLABLE = 3


def gaussians():
    model = TwoGaussianModel(dim=20)
    return model, model.sample(200)


def model_only():
    return TwoGaussianModel(dim=20)


def test_set():
    return TwoGaussianModel(dim=20).sample(100, seed=4)


def fails():
    raise RuntimeError("no weights here")


class NoLikelihoods:
    num_classes, num_dims = 2, 20


def broken():
    return NoLikelihoods(), TwoGaussianModel(dim=20).sample(50)
"""

#: Tiny attack budgets.
SMALL = [
    "--n", "2", "--binary-search-steps", "2", "--cw-steps", "20", "--apgd-steps", "10",
    "--boundary-steps", "50", "--max-queries", "200", "--match-steps", "10",
    "--segment-grid", "4", "--pool-size", "20", "--num-pairs", "10", "--num-noise", "20",
    "--num-alphas", "5", "--no-sanity", "--quiet",
]  # fmt: skip


@pytest.fixture
def factories(tmp_path, monkeypatch):
    """A module ``cli_factories`` importable from ``tmp_path``; returns the folder."""
    (tmp_path / "cli_factories.py").write_text(textwrap.dedent(FACTORIES))
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "cli_factories", raising=False)
    return tmp_path


def test_a_factory_in_a_test_module_writes_the_three_files(factories, capsys):
    out = factories / "report"
    summary = main(
        ["--model", "cli_factories:gaussians", "--out", str(out), "--eps", "0.3", *SMALL]
    )
    for name in ("report.json", "report.md", "report.html"):
        assert (out / name).is_file()
    data = json.loads((out / "report.json").read_text())
    validate_report(data)
    assert data["config"]["eps"] == 0.3 and data["config"]["n"] == 2
    assert set(data["stages"].values()) == {"done"}
    assert data["leaderboard"]["row"] == summary["leaderboard"]
    printed = json.loads(capsys.readouterr().out)
    assert printed["outputs"] == [str(out / n) for n in ("report.json", "report.md", "report.html")]


def test_data_from_a_pt_file_or_a_factory(factories):
    x, y = TwoGaussianModel(dim=20).sample(80, seed=2)
    path = factories / "test_set.pt"
    torch.save({"x": x, "y": y}, path)
    for data, size in ((str(path), 80), ("cli_factories:test_set", 100)):
        out = factories / f"out_{size}"
        argv = ["--model", "cli_factories:model_only", "--data", data, "--out", str(out)]
        main([*argv, "--stages", "clean", "--quiet"])
        report = json.loads((out / "report.json").read_text())
        assert report["test_set"]["size"] == size
        assert report["stages"]["clean"] == "done" and report["stages"]["attacks"] == "not run"


@pytest.mark.parametrize(
    "argv, expected",
    [
        (["--model", "cli_factories"], "argument --model: must be package.module:factory"),
        (
            ["--model", "no_such_module_xyz:f"],
            "argument --model: cannot import 'no_such_module_xyz'",
        ),
        (["--model", "cli_factories:missing"], "argument --model: module 'cli_factories' has no"),
        (["--model", "cli_factories:NOT_CALLABLE"], "is not callable (a int)"),
        (["--model", "cli_factories:fails"], "fails() raised RuntimeError: no weights here"),
        (["--model", "cli_factories:model_only"], "argument --data: cli_factories:model_only()"),
        (["--model", "cli_factories:broken"], "the model fails check_model: model: must have a"),
        (
            ["--model", "cli_factories:gaussians", "--data", "nowhere.pt"],
            "argument --data: 'nowhere.pt' does not exist",
        ),
        (["--model", "cli_factories:gaussians", "--stages", "clean,nope"], "argument --stages:"),
        (["--model", "cli_factories:gaussians", "--recalls", "1.5"], "argument --recalls:"),
        (["--model", "cli_factories:gaussians", "--stages", "attacks"], "argument --eps:"),
    ],
    ids=[
        "no-colon",
        "no-module",
        "no-attribute",
        "not-callable",
        "factory-raises",
        "no-test-set",
        "check-model",
        "missing-pt",
        "bad-stage",
        "bad-recall",
        "no-eps",
    ],
)
def test_bad_arguments_are_one_line_errors(factories, capsys, argv, expected):
    budget = [] if "attacks" in argv else ["--eps", "0.3"]
    with pytest.raises(SystemExit) as exit_:
        main([*argv, *budget, "--out", str(factories / "out"), "--quiet"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{PROG}: error: ") and err.count("\n") == 1
    assert expected in err


def test_a_changed_option_is_refused_until_restart(factories, capsys):
    out = str(factories / "out")
    base = ["--model", "cli_factories:gaussians", "--out", out, "--stages", "clean", "--quiet"]
    main(base)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_:
        main([*base, "--num-test", "50"])
    assert exit_.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"{PROG}: error: --num-test: ") and "--restart" in err
    main([*base, "--num-test", "50", "--restart"])
    assert json.loads((factories / "out" / "report.json").read_text())["clean"]["n"] == 50


def test_help_lists_the_report_options(capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = capsys.readouterr().out
    for option in ("--model", "--data", "--stages", "--restart", "--threads", "--eps", "--n"):
        assert f"{option} " in text
    assert "--calibration-factor" in text and "--no-sanity" in text


def test_python_dash_m_runs_the_cli(factories):
    """The module entry point, in a real process started in the factories' folder."""
    failed = subprocess.run(
        [
            sys.executable,
            "-m",
            "flows.robustness",
            "--model",
            "cli_factories:fails",
            "--eps",
            "0.3",
            "--out",
            str(factories / "o"),
        ],  # fmt: skip
        capture_output=True,
        text=True,
        cwd=factories,
    )
    assert failed.returncode == 2
    assert failed.stderr.strip().count("\n") == 0 and "raised RuntimeError" in failed.stderr
