"""Every registered paper figure regenerates into a temporary folder, with numbers equal to the package's.

Also: the committed outputs in paper_figures/output are current (same numbers as a fresh run) and small.
The Section 6 items (registry.NEEDS_DATA) need the trained runs and the test sets: they are
regenerated in quick mode (a quick Context) when CGM_DATA_ROOT names the data (CI sets it), and
their committed outputs must be full-mode outputs of today's default configuration.
"""

import json
import math
from dataclasses import asdict, replace

import matplotlib
import numpy as np
import pytest

import counterexample as cx
from counterexample.proposition import attack_success_probability
from paper_figures import Context, figure2, lambda_interval, registry
from paper_figures.cli import main
from paper_figures.common import json_text
from paper_figures.paths import OUTPUT_ROOT, figure_paths


@pytest.fixture(scope="module", autouse=True)
def agg_backend():
    """The figures never touch pyplot; the backend is set anyway, as the command line does."""
    matplotlib.use("Agg")


DATA_FREE = [name for name in registry.FIGURES if name not in registry.NEEDS_DATA]
NEEDS_DATA = sorted(registry.NEEDS_DATA)


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    """Each data-free figure generated once, into its own temporary root (an empty context: no
    data, no environment)."""
    root = tmp_path_factory.mktemp("figures")
    return root, {name: registry.generate(name, Context(), root=root) for name in DATA_FREE}


@pytest.fixture(scope="module")
def generated_quick(tmp_path_factory):
    """Each Section 6 item generated once in quick mode (skipped without CGM_DATA_ROOT)."""
    context = replace(Context.from_environment(), quick=True)
    if context.data_root is None or not context.data_root.is_dir():
        pytest.skip("CGM_DATA_ROOT is unset or missing: the Section 6 items need the test sets")
    root = tmp_path_factory.mktemp("figures_quick")
    written = {name: registry.generate(name, context, root=root) for name in NEEDS_DATA}
    configs = {name: asdict(registry.default_config(name, context)) for name in NEEDS_DATA}
    return root, written, configs


def _numbers(root, name):
    return json.loads(figure_paths(name, root).numbers_json.read_text())


def _check_files(paths, written):
    for path in (paths.png, paths.pdf, paths.numbers_json, paths.params_json):
        assert path in written and path.stat().st_size > 0, path
    assert paths.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert paths.pdf.read_bytes()[:5] == b"%PDF-"


@pytest.mark.parametrize("name", NEEDS_DATA)
def test_section6_item_regenerates_in_quick_mode(generated_quick, name):
    root, written, configs = generated_quick
    paths = figure_paths(name, root)
    _check_files(paths, written[name])
    assert json.loads(paths.params_json.read_text()) == json.loads(json.dumps(configs[name]))
    assert configs[name] != asdict(registry.load(name).Config()), "quick mode must shrink it"
    assert _numbers(root, name)["quick"] is True


@pytest.mark.parametrize("name", NEEDS_DATA)
def test_section6_committed_outputs_are_full_runs_of_the_current_config(name):
    """Committed Section 6 outputs: not quick, and made with today's full default configuration."""
    committed = figure_paths(name, OUTPUT_ROOT)
    for path in (committed.png, committed.pdf, committed.numbers_json, committed.params_json):
        assert path.exists(), f"{path} missing: run python -m paper_figures --only {name}"
    assert json.loads(committed.numbers_json.read_text())["quick"] is False
    full = asdict(registry.load(name).Config())
    assert json.loads(committed.params_json.read_text()) == json.loads(json.dumps(full))


@pytest.mark.parametrize("name", DATA_FREE)
def test_figure_writes_png_pdf_numbers_and_params(generated, name):
    root, written = generated
    paths = figure_paths(name, root)
    _check_files(paths, written[name])
    module = registry.load(name)
    params = json.loads(paths.params_json.read_text())
    assert params == json.loads(json.dumps(asdict(module.Config())))


def test_figure2_numbers_are_the_package_values(generated):
    root, _ = generated
    numbers = _numbers(root, "figure2")
    cfg = figure2.Config()
    ce = cx.Counterexample.from_targets(cfg.eps, cfg.delta, cfg.Delta)
    assert numbers["d"] == cx.find_dimension(cfg.eps, cfg.delta, cfg.Delta) == ce.d
    assert (numbers["lambda1"], numbers["lambda2"]) == (ce.lambda1, ce.lambda2)
    assert numbers["kl_q_p_joint"] == ce.kl_q_p_joint() < cfg.eps
    assert numbers["kl_p_q_joint"] == ce.kl_p_q_joint() < cfg.eps
    assert (
        numbers["attack_success_probability"] == attack_success_probability(ce, cfg.delta) > 1 / 3
    )
    ball = numbers["regions"][0]
    assert (ball["lo"], ball["hi"]) == (0.0, 1.0)
    assert ball["p_0_given_x"] == pytest.approx(1 - cfg.delta, rel=1e-12)  # Bayes: class 0
    assert ball["q_0_given_x"] == pytest.approx(ce.lemma1_q_class0_in_ball(), rel=1e-12)
    assert ball["q_0_given_x"] <= cfg.delta  # model: class 1
    attack = numbers["attack"]
    r, r_bar = np.array(attack["r"]), np.array(attack["r_bar"])
    assert len(r) == cfg.n_arrows
    assert np.all((r > 1) & (r < 1 + cfg.Delta)) and np.all(r_bar < 1)
    assert np.all(r - r_bar < cfg.Delta)


def test_lambda_interval_numbers_are_the_package_values(generated):
    root, _ = generated
    numbers = _numbers(root, "lambda_interval")
    assert [(c["eps"], c["delta"], c["Delta"]) for c in numbers["cases"]] == [
        tuple(case) for case in lambda_interval.Config().cases
    ]
    for case in numbers["cases"]:
        args = (case["eps"], case["delta"], case["Delta"])
        cols = case["columns"]
        assert case["find_dimension"] == cx.find_dimension(*args)
        assert case["find_dimension_eq19"] == cx.find_dimension_eq19(*args)
        assert cols["d"] == list(range(1, len(cols["d"]) + 1))
        assert cols["feasible"] == [cx.is_feasible(d, *args) for d in cols["d"]]
        assert cols["feasible"].index(True) + 1 == case["find_dimension"]
        for i, d in enumerate(cols["d"]):
            interval = cx.feasible_lambda1_interval(d, *args)
            assert cols["log10_cond2_lower"][i] == pytest.approx(interval.log_lower / math.log(10))
            upper = min(cols["log10_cond3_upper"][i], cols["log10_cond5_upper"][i])
            assert upper == pytest.approx(cols["log10_upper"][i], rel=1e-12, abs=1e-12)
            assert cols["upper_condition"][i] == interval.upper_condition
    eq19_wrong = [c for c in numbers["cases"] if c["find_dimension_eq19"] != c["find_dimension"]]
    assert eq19_wrong, "the figure should show a case where eq. (19) alone is wrong"


def test_lambda_interval_csv_has_one_row_per_case_and_dimension(generated):
    root, _ = generated
    numbers = _numbers(root, "lambda_interval")
    lines = figure_paths("lambda_interval", root).numbers_csv.read_text().splitlines()
    assert lines[0].startswith("eps,delta,Delta,d,")
    assert len(lines) - 1 == sum(len(c["columns"]["d"]) for c in numbers["cases"])


def _assert_close(committed, fresh, where="numbers"):
    if isinstance(fresh, dict):
        assert committed.keys() == fresh.keys(), where
        for key in fresh:
            _assert_close(committed[key], fresh[key], f"{where}.{key}")
    elif isinstance(fresh, list):
        assert len(committed) == len(fresh), where
        for i, (a, b) in enumerate(zip(committed, fresh, strict=True)):
            _assert_close(a, b, f"{where}[{i}]")
    elif isinstance(fresh, float):
        assert committed == pytest.approx(fresh, rel=1e-9, abs=1e-12), where
    else:
        assert committed == fresh, where


@pytest.mark.parametrize("name", DATA_FREE)
def test_committed_outputs_are_current(generated, name):
    """paper_figures/output holds what `python -m paper_figures` writes today (regenerate if not)."""
    root, _ = generated
    committed = figure_paths(name, OUTPUT_ROOT)
    for path in (committed.png, committed.pdf, committed.numbers_json, committed.params_json):
        assert path.exists(), f"{path} missing: run python -m paper_figures"
    _assert_close(json.loads(committed.numbers_json.read_text()), _numbers(root, name))
    assert json.loads(committed.params_json.read_text()) == json.loads(
        figure_paths(name, root).params_json.read_text()
    )


def test_committed_outputs_are_small():
    total = sum(p.stat().st_size for p in OUTPUT_ROOT.rglob("*") if p.is_file())
    assert total < 8_000_000, f"paper_figures/output holds {total} bytes"


def test_cli_only_and_out(tmp_path, capsys):
    assert main(["--only", "lambda_interval", "--out", str(tmp_path)]) == 0
    assert "lambda_interval: 5 files" in capsys.readouterr().out
    assert sorted(p.name for p in (tmp_path / "lambda_interval").iterdir()) == [
        "lambda_interval.pdf",
        "lambda_interval.png",
        "numbers.csv",
        "numbers.json",
        "params.json",
    ]
    assert not (tmp_path / "figure2").exists()


def test_cli_rejects_unknown_figure(capsys):
    with pytest.raises(SystemExit):
        main(["--only", "figure99"])
    assert "figure99" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["", "a/b", ".hidden"])
def test_figure_paths_reject_bad_names(tmp_path, bad):
    with pytest.raises(ValueError, match="figure name"):
        figure_paths(bad, tmp_path)


def test_registry_rejects_unknown_name():
    with pytest.raises(KeyError, match="registered"):
        registry.load("figure99")


def test_json_text_puts_scalar_lists_on_one_line_and_parses_back():
    payload = {
        "flags": [True, False, None],
        "l2": [0.1, float("inf"), 1e-300],
        "tricky": ["a, [b]\n{c}", "]", "[\n"],
        "nested": {"empty": [], "rows": [[1, 2], [3, {"x": [4, 5]}]], "text": "[1,\n2]"},
        "z": 1,
    }
    text = json_text(payload)
    assert json.loads(text) == json.loads(json.dumps(payload))
    lines = text.splitlines()
    assert ' "flags": [true, false, null],' in lines
    assert ' "l2": [0.1, Infinity, 1e-300],' in lines
    assert '  "empty": [],' in lines and '     "x": [4, 5]' in lines
    assert len(lines) < len(json.dumps(payload, indent=1).splitlines())
    assert text.endswith("}\n") and list(json.loads(text)) == sorted(payload)
