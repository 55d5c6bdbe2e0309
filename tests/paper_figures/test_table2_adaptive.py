"""The adaptive Table 2 (:mod:`paper_figures.table2_adaptive`).

Data-free: the plan, κ from an audit, the worst case against :func:`flows.attacks.worst_case`, the ensemble row, and a table with no
runs. With ``CGM_DATA_ROOT`` and the committed runs, the whole table is computed in quick mode (3
images per cell, tiny budgets) into a temporary cache: every cell and row present, intervals
ordered, medians of verified successes only, the sweep reproducing the experiments' own
verification, the ensemble's selection reproducing the experiments' worst case, the cache resumed,
the figure drawn.
"""

import json
import math
import shutil
from dataclasses import replace
from pathlib import Path

import matplotlib
import pytest
import torch

from flows.attacks import (
    AttackResult,
    worst_case,
)
from flows.attacks.verification import Verification
from flows.paper import PAPER_EPS
from paper_figures import Context, table2_adaptive, trained
from paper_figures.common import write_figure
from paper_figures.paths import figure_paths

T2 = table2_adaptive


@pytest.fixture(scope="module", autouse=True)
def agg_backend():
    matplotlib.use("Agg")


# -- configuration and plan ---------------------------------------------------------------------


def test_default_config_honours_quick_mode():
    assert T2.default_config(Context()) == T2.Config()
    quick = T2.default_config(Context(quick=True))
    assert quick.n == 3 and quick.cw_steps < T2.Config().cw_steps


@pytest.mark.parametrize(
    "change, argument",
    [
        ({"threat_models": ()}, "threat_models"),
        ({"threat_models": ("fixed", "noisy")}, "threat_models"),
        ({"kappa_factor": 0.0}, "kappa_factor"),
        ({"recall_levels": (0.5, 1.2)}, "recall_levels"),
        ({"verify_draws": 1}, "verify_draws"),
        ({"n": 0}, "n"),
        ({"deployed_n": 0}, "deployed_n"),
        ({"deployed_attack_precision": "float16"}, "deployed_attack_precision"),
        ({"model_batch": 0}, "model_batch"),
    ],
    ids=lambda v: str(v),
)
def test_config_names_the_bad_argument(change, argument):
    with pytest.raises(ValueError, match=argument):
        T2.Config(**change)


def test_plan_has_every_cell_and_row():
    config = T2.Config()
    cells = T2.cell_plan(config, "mnist", "split")
    # per threat model: the κ = 0 ensemble, cw, boundary, and cw-det / apgd-det at κ > 0
    assert len(cells) == 10 and len({c.key for c in cells}) == 10
    assert cells[0].attack == "ensemble" and cells[0].kappa == "0"
    assert [c.kappa for c in cells[-4:]] == ["noise"] * 4
    rows = T2.row_plan(config)
    # per run and threat model: 2 + 5 + 1 rows at κ = 0, 5 + 1 at κ > 0
    assert len(rows) == 4 * 2 * (8 + 6) and len(set(rows)) == len(rows)
    fixed_only = T2.row_plan(replace(config, threat_models=("fixed",)))
    assert len(fixed_only) == len(rows) // 2


def test_attack_config_carries_the_budgets():
    config = replace(T2.Config(), deployed_n=40, sanity_n=60)
    cell = T2.cell_plan(config, "cifar10", "reweight")[1]  # the deployed ensemble
    attack = T2.attack_config(config, cell, 0.0, 4.2)
    assert (attack.threat_model, attack.attack, attack.n) == ("deployed", "ensemble", 40)
    assert attack.sanity and attack.sanity_n == 40 and attack.audit
    assert attack.threshold == 4.2 and attack.cw_space == "box" and attack.max_queries is None
    assert (attack.eot_draws, attack.decision_votes) == (8, 15)  # the library's defaults
    fixed = T2.attack_config(config, T2.cell_plan(config, "cifar10", "reweight")[0], 1.5, 4.2)
    assert (fixed.n, fixed.eot_draws, fixed.confidence) == (100, 1, 1.5)
    # APGD runs to the end under the deployed threat model only; at the old behaviour the new
    # option is left out of the cell's hash (the fixed cells cached before it stay valid)
    assert attack.apgd_run_to_end and not fixed.apgd_run_to_end
    assert "apgd_run_to_end" not in T2.attack_config_for_hash(fixed)
    assert T2.attack_config_for_hash(attack)["apgd_run_to_end"] is True
    # the attack's precision: the deployed cells attack in bfloat16 (in their hash), the fixed
    # ones in float32 whatever the Config says (left out of the hash: cached before the option)
    assert (attack.attack_precision, fixed.attack_precision) == ("bfloat16", "float32")
    assert T2.attack_config_for_hash(attack)["attack_precision"] == "bfloat16"
    assert "attack_precision" not in T2.attack_config_for_hash(fixed)
    fp32 = replace(config, deployed_attack_precision="float32")
    assert "attack_precision" not in T2.attack_config_for_hash(T2.attack_config(fp32, cell, 0, 4.2))
    fixed32 = T2.attack_config(fp32, T2.cell_plan(fp32, "cifar10", "reweight")[0], 1.5, 4.2)
    assert T2.attack_config_for_hash(fixed32) == T2.attack_config_for_hash(fixed)
    # model_batch reaches the experiment (the sweep's threat models use the same value) and,
    # speed only, stays out of the cells' keys
    small = replace(config, model_batch=8)
    assert T2.attack_config(small, cell, 0.0, 4.2).model_batch == 8
    assert T2.attack_config_for_hash(T2.attack_config(small, cell, 0.0, 4.2)) == (
        T2.attack_config_for_hash(attack)
    )


def test_kappa_is_the_factor_times_the_median_spread():
    assert T2.kappa_from_audit([1.0, 5.0, 2.0], 3.0) == pytest.approx(6.0)
    assert T2.kappa_from_audit([1.0, 2.0, 3.0, 10.0], 1.0) == pytest.approx(2.5)
    for bad in ([], [1.0, math.nan], [-1.0]):
        with pytest.raises(ValueError, match="margin_std"):
            T2.kappa_from_audit(bad, 3.0)
    with pytest.raises(ValueError, match="factor"):
        T2.kappa_from_audit([1.0], 0.0)


# -- the worst case and the ensemble row -----------------------------------------------------------


def test_worst_case_sources_by_hand():
    inf = math.inf
    l2 = torch.tensor([[0.3, 0.2, 0.5, inf], [0.3, 0.1, 0.4, 0.9], [0.1, 0.1, 0.6, 0.2]])
    success = torch.tensor(
        [[True, True, False, False], [True, False, False, False], [False, True, False, True]]
    )
    sources = T2.worst_case_sources(l2, success)
    # example 0: members 0 and 1 tie at 0.3, member 2 failed -> the first; 1: member 1 failed,
    # members 0 and 2 tie at 0.2 / 0.1 -> member 2; 2: nobody; 3: member 2
    assert sources.tolist() == [0, 2, -1, 2]
    with pytest.raises(ValueError, match="l2 and success"):
        T2.worst_case_sources(l2[0], success[0])


def test_worst_case_sources_agree_with_flows_worst_case():
    generator = torch.Generator().manual_seed(5)
    b = 30
    x = torch.rand(b, 6, generator=generator) - 0.5
    results, verifications = {}, {}
    for name in T2.MEMBERS:
        adv = x + 0.1 * torch.randn(x.shape, generator=generator)
        success = torch.rand(b, generator=generator) < 0.6
        l2 = (adv - x).norm(dim=1)
        status = tuple("success" if s else "failed" for s in success.tolist())
        results[name] = AttackResult(adv, success, l2, torch.ones(b, dtype=torch.long), status)
        verified = success & (torch.rand(b, generator=generator) < 0.7)
        verifications[name] = Verification(
            claimed=success,
            in_bounds=torch.ones(b, dtype=torch.bool),
            l2=l2,
            within_eps=torch.ones(b, dtype=torch.bool),
            fools_classifier=verified,
            detected=torch.zeros(b, dtype=torch.bool),
            success_undetected=verified,
        )
    expected = worst_case(x, results, verifications, require_undetected=True)
    sources = T2.worst_case_sources(
        torch.stack([verifications[n].l2 for n in T2.MEMBERS]),
        torch.stack([verifications[n].success_undetected for n in T2.MEMBERS]),
    )
    names = [None if s < 0 else T2.MEMBERS[s] for s in sources.tolist()]
    assert names == list(expected.source)


def test_ensemble_row_reports_the_selected_members_verdicts():
    """Selected under 'sel', the ensemble takes the chosen member's verdicts under 'other' (not
    whether any member succeeds there): selection bias stays out of the reported number."""
    members = {name: {} for name in T2.MEMBERS}
    n = 4
    for name in T2.MEMBERS:
        members[name]["sel"] = {
            "success_undetected": [False] * n,
            "fools_classifier": [False] * n,
            "l2": [1.0] * n,
        }
        members[name]["other"] = {
            "success_undetected": [True] * n,
            "fools_classifier": [True] * n,
            "l2": [1.0] * n,
        }
    # example 0: cw-det (0.2) beats segment (0.1 but not selected) -> cw-det's 'other' = False
    members["cw-det"]["sel"]["success_undetected"][0] = True
    members["cw-det"]["sel"]["l2"][0] = 0.2
    members["cw-det"]["other"]["success_undetected"][0] = False
    members["segment"]["sel"]["l2"][0] = 0.1
    # example 1: match at 0.3 and boundary-det at 0.5 both selected -> match, whose 'other' holds
    for name, distance in (("match", 0.3), ("boundary-det", 0.5)):
        members[name]["sel"]["success_undetected"][1] = True
        members[name]["sel"]["l2"][1] = distance
        members[name]["other"]["l2"][1] = distance
    row = T2._ensemble_row(members, "sel", ("sel", "other"))
    stats = row["stats"]
    assert stats["sel"]["success_undetected"]["successes"] == 2
    assert stats["other"]["success_undetected"]["successes"] == 1  # examples 2, 3: no selection
    assert stats["other"]["fools_classifier"]["successes"] == 2
    assert stats["other"]["median_l2_success_undetected"] == pytest.approx(0.3)
    assert row["any_member_fools"]["successes"] == 0
    # some member's own adversarial breaks it: under 'sel' examples 0 and 1, under 'other'
    # every example (members succeed there throughout, but cw-det on example 0)
    assert row["any_member_success_undetected"]["sel"]["successes"] == 2
    assert row["any_member_success_undetected"]["other"]["successes"] == n
    assert row["by_source"] == {
        "cw-det": 1,
        "apgd-det": 0,
        "boundary-det": 0,
        "match": 1,
        "segment": 0,
    }


def test_without_runs_every_cell_is_missing_and_the_table_is_drawn(tmp_path):
    context = Context(runs_root=tmp_path / "no-runs", quick=True)
    config = replace(T2.default_config(context), cache_dir=str(tmp_path / "cells"))
    numbers = T2.compute(config, context)
    assert {c["status"] for c in numbers["cells"].values()} == {"missing"}
    assert len(numbers["missing_runs"]) == 4
    assert len(numbers["rows"]) == len(T2.row_plan(config))
    rows = T2.table_rows(numbers)
    assert len(rows) == len(numbers["rows"]) and {r["status"] for r in rows} == {"missing"}
    fig, _ = T2.plot(numbers, config)
    written = write_figure(figure_paths(T2.NAME, tmp_path), fig, numbers, config, table=rows)
    assert all(path.stat().st_size > 0 for path in written)


def test_cached_only_reads_the_committed_cells_and_computes_nothing(tmp_path, monkeypatch):
    """The interim table: the committed cells (``paper_figures/output/table2_adaptive/cells``)
    come back as they are, every other cell is missing, and nothing is computed (no data)."""

    def refuse(*args, **kwargs):
        raise AssertionError("cached_only computed something")

    monkeypatch.setattr(T2, "_compute_cell", refuse)
    monkeypatch.setattr(T2, "_run_info", refuse)
    context = Context(data_root=tmp_path / "no-data")
    committed = figure_paths(T2.NAME).folder / "cells"
    config = T2.default_config(context)
    cache = tmp_path / "cells"
    shutil.copytree(committed, cache)
    config = replace(config, cache_dir=str(cache))
    numbers = T2.compute(config, context, cached_only=True)
    finished = {
        json.loads(path.read_text())["key"]
        for path in cache.glob("*.json")
        if not path.name.startswith("run-")
    }
    ok = {key for key, cell in numbers["cells"].items() if cell["status"] == "ok"}
    assert ok == finished and "cifar10/split/fixed/0/ensemble" in ok
    assert all(
        numbers["cells"][key]["status"] == "missing" for key in numbers["cells"] if key not in ok
    )
    assert numbers["interim"] == {
        "cached_only": True,
        "cells_finished": len(ok),
        "cells": len(numbers["cells"]),
    }
    assert numbers["missing_runs"] == []  # every run is committed: not computed is not missing
    row = numbers["rows"][T2.row_key("cifar10", "split", "fixed", "0", "ensemble")]
    assert row["status"] == "ok" and row["stats"]
    rows = T2.table_rows(numbers)
    fig, _ = T2.plot(numbers, config)
    written = write_figure(figure_paths(T2.NAME, tmp_path), fig, numbers, config, table=rows)
    assert all(path.stat().st_size > 0 for path in written)
    notes = " ".join(T2._notes(numbers, config))
    assert f"INTERIM: {len(ok)} of {len(numbers['cells'])} cells computed" in notes
    for key, run in numbers["runs"].items():  # runs whose detector is not cached yet
        if run["status"] != "ok":
            assert run["reason"] == T2.NOT_COMPUTED and f"{key}: not computed yet" in notes


def test_kappa_comes_from_the_fixed_ensemble_however_the_cells_are_restricted(
    tmp_path, monkeypatch
):
    """κ (and so every κ = noise cell's key) is the fixed κ = 0 ensemble's, also where the plan
    leaves that cell out: ``--threat-models deployed`` or ``attacks`` without ``ensemble`` (read
    from the committed cells; nothing is computed)."""

    def refuse(*args, **kwargs):
        raise AssertionError("computed something")

    monkeypatch.setattr(T2, "_compute_cell", refuse)
    monkeypatch.setattr(T2, "_run_info", refuse)
    cache = tmp_path / "cells"
    shutil.copytree(figure_paths(T2.NAME).folder / "cells", cache)
    context = Context(data_root=tmp_path / "no-data")
    config = replace(T2.default_config(context), cache_dir=str(cache))
    assert T2.KAPPA_SOURCE == "fixed"
    full = T2.run_cells(config, context, "mnist", "split", compute=False)
    source = "mnist/split/fixed/0/ensemble"
    assert full["kappa"]["source"] == source and full["cells"][source]["status"] == "ok"
    deployed_only = replace(config, threat_models=("deployed",))
    for restricted in (
        T2.run_cells(deployed_only, context, "mnist", "split", compute=False),
        T2.run_cells(config, context, "mnist", "split", attacks=("cw-det",), compute=False),
    ):
        assert restricted["kappa"] == full["kappa"]
        assert source not in restricted["cells"]
    fixed_cw_det = "mnist/split/fixed/noise/cw-det"  # found under the fixed ensemble's κ
    assert full["cells"][fixed_cw_det]["status"] == "ok"
    assert full["cells"][fixed_cw_det]["confidence"] == full["kappa"]["value"]


def test_committed_interim_table_and_notebook_show_every_committed_cell():
    """The committed interim table (``numbers.json``) and notebook 6.2's committed outputs were
    regenerated after the last cell was committed: both count exactly the committed cells (a cell
    committed without them would leave the table stale and the notebook's re-execution test red)."""
    folder = figure_paths(T2.NAME).folder
    keys = {
        json.loads(path.read_text())["key"]
        for path in (folder / "cells").glob("*.json")
        if not path.name.startswith("run-")
    }
    numbers = json.loads((folder / "numbers.json").read_text())
    ok = {key for key, cell in numbers["cells"].items() if cell["status"] == "ok"}
    assert ok == keys
    assert numbers["interim"]["cells_finished"] == len(keys)
    notebook = Path(__file__).parents[2] / "notebooks" / "section6_2_attacks.ipynb"
    printed = [
        "".join(output.get("text", ""))
        for cell in json.loads(notebook.read_text())["cells"]
        for output in cell.get("outputs", [])
        if output.get("output_type") == "stream"
    ]
    expected = f"{len(keys)} of {numbers['interim']['cells']} cells computed"
    assert any(expected in text for text in printed), expected


# -- quick mode on the committed runs (slow: a few minutes) ----------------------------------------


def _context_or_skip() -> Context:
    context = replace(Context.from_environment(), quick=True)
    if context.data_root is None or not context.data_root.is_dir():
        pytest.skip("CGM_DATA_ROOT is unset or missing: the table needs the test sets")
    needed = [trained.run_dir(d, p, context) for d in trained.DATASETS for p in T2.PRIORS]
    absent = [str(r) for r in needed if not (r / "checkpoint.pt").is_file()]
    if absent:
        pytest.skip(f"committed runs missing: {absent}")
    return context


@pytest.fixture(scope="module")
def quick(tmp_path_factory):
    context = _context_or_skip()
    cache = tmp_path_factory.mktemp("table2_adaptive_cells")
    config = replace(T2.default_config(context), cache_dir=str(cache))
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        numbers = T2.compute(config, context)
    finally:
        torch.set_num_threads(previous)
    return context, config, numbers, cache


def _cached(cache, key: str) -> dict:
    stem = "{}-{}-{}-k{}-{}".format(*key.split("/"))
    return json.loads((cache / f"{stem}.json").read_text())["value"]


@pytest.mark.slow
def test_quick_every_cell_and_row_is_present(quick):
    _, config, numbers, _ = quick
    assert numbers["missing_runs"] == []
    planned = {
        c.key for d in trained.DATASETS for p in T2.PRIORS for c in T2.cell_plan(config, d, p)
    }
    assert set(numbers["cells"]) == planned
    for key, cell in numbers["cells"].items():
        assert cell["status"] == "ok", (key, cell.get("reason"))
        assert cell["from_cache"] is False
        assert cell["sanity"]["n"] == min(config.sanity_n, config.n)
        assert cell["audit"]["summary"]["draws"] == config.verify_draws
    assert set(numbers["rows"]) == {T2.row_key(*r) for r in T2.row_plan(config)}
    for key, row in numbers["rows"].items():
        assert row["status"] == "ok", key
        assert row["primary"] in row["stats"], key
    for key, run in numbers["runs"].items():
        kappa = run["kappa"]
        assert kappa["value"] > 0 and kappa["factor"] == config.kappa_factor, key
        assert kappa["value"] == pytest.approx(config.kappa_factor * kappa["median_margin_std"])
        assert run["detector"]["recall"] >= run["detector"]["target_recall"], key
        assert run["table1"]["logged_bits_per_dim"] is not None, key


@pytest.mark.slow
def test_quick_intervals_are_ordered_and_counts_consistent(quick):
    _, config, numbers, _ = quick
    for key, row in numbers["rows"].items():
        for name, stats in row["stats"].items():
            assert stats["n"] == config.n, (key, name)
            for what in ("success_undetected", "fools_classifier"):
                s = stats[what]
                assert 0 <= s["low_pct"] <= s["pct"] <= s["high_pct"] <= 100, (key, name, s)
                assert s["pct"] == pytest.approx(100 * s["successes"] / config.n)
            assert (
                stats["success_undetected"]["successes"] <= stats["fools_classifier"]["successes"]
            )
    for key, sweep in numbers["sweeps"].items():
        for series in [sweep.get("ensemble", []), *sweep.get("members", {}).values()]:
            for s in series:
                u = s["success_undetected"]
                assert 0 <= u["low_pct"] <= u["pct"] <= u["high_pct"] <= 100, key
        for series in sweep.get("classification", {}).values():
            # the classification-only attacks never saw the detector: success grows with T
            counts = [s["success_undetected"]["successes"] for s in series]
            assert counts == sorted(counts), key


@pytest.mark.slow
def test_quick_medians_are_over_verified_successes_only(quick):
    _, _, numbers, cache = quick
    checked = 0
    for key, row in numbers["rows"].items():
        if row.get("same_as") or key.endswith("/ensemble"):
            continue
        attack = key.split("/")[-1]
        verdicts = _cached(cache, row["cell"])["verdicts"][attack]
        eps = PAPER_EPS[key.split("/")[0]]
        for name, stats in row["stats"].items():
            v = verdicts[name]
            distances = [d for d, ok in zip(v["l2"], v["success_undetected"], strict=True) if ok]
            # within ε as the verification decides it, in float32 (a projection onto the ball
            # may land on ε rounded up by one float32 step)
            assert all(d <= eps * (1 + 1e-6) for d in distances), (key, name)
            assert stats["success_undetected"]["successes"] == len(distances)
            if distances:
                expected = torch.quantile(torch.tensor(distances, dtype=torch.float64), 0.5)
                assert stats["median_l2_success_undetected"] == pytest.approx(expected.item())
                checked += 1
            else:
                assert stats["median_l2_success_undetected"] is None
    assert checked > 0  # some verified success somewhere, or the check checked nothing


@pytest.mark.slow
def test_quick_sweep_and_selection_reproduce_the_experiments(quick):
    """At the paper's threshold the sweep's A draws are the experiment's own verification, and
    the ensemble's selection equals the experiment's worst case under the same verification."""
    _, config, numbers, cache = quick
    for key, cell in numbers["cells"].items():
        if key.split("/")[2] == "deployed":
            assert all(cell["sweep_matches_report"].values()), key
    for dataset in trained.DATASETS:
        for prior in T2.PRIORS:
            for threat in config.threat_models:
                cell_key = f"{dataset}/{prior}/{threat}/0/ensemble"
                experiment = numbers["cells"][cell_key]["experiment_ensemble"]
                selection = T2._primary(threat)
                row = numbers["rows"][f"{cell_key}"]
                ours = row["stats"][selection]["success_undetected"]["successes"]
                assert ours == experiment["worst_case"][selection]["success"]["successes"]
                verdicts = _cached(cache, cell_key)["verdicts"]
                assert set(verdicts) == set(T2.MEMBERS)


@pytest.mark.slow
def test_quick_kappa_rows_reuse_the_kappa_free_attacks(quick):
    _, config, numbers, _ = quick
    for dataset, prior, threat, kappa, attack in T2.row_plan(config):
        if kappa != "noise":
            continue
        row = numbers["rows"][T2.row_key(dataset, prior, threat, kappa, attack)]
        if attack in T2.KAPPA_AWARE:
            assert row["confidence"] == numbers["runs"][f"{dataset}/{prior}"]["kappa"]["value"]
        elif attack != "ensemble":
            same = numbers["rows"][row["same_as"]]
            assert row["stats"] == same["stats"] and same["confidence"] == 0.0


@pytest.mark.slow
def test_quick_cache_resumes_only_the_missing_cell(quick):
    context, config, numbers, cache = quick
    key = "mnist/split/fixed/0/boundary"
    stem = "mnist-split-fixed-k0-boundary"
    (cache / f"{stem}.json").unlink()
    torch.set_num_threads(1)
    again = T2.compute(config, context)
    recomputed = [k for k, c in again["cells"].items() if not c["from_cache"]]
    assert recomputed == [key]

    def strip(cell):
        return {k: v for k, v in cell.items() if k not in ("seconds", "timing", "from_cache")}

    assert strip(again["cells"][key]) == strip(numbers["cells"][key])
    assert again["rows"] == numbers["rows"] and again["sweeps"] == numbers["sweeps"]
    assert not any(cache.glob("*.partial"))


@pytest.mark.slow
def test_quick_plot_and_csv(quick, tmp_path):
    _, config, numbers, _ = quick
    fig, axes = T2.plot(numbers, config)
    assert len(axes) == 2 + 4  # table, notes, one sweep per run
    rows = T2.table_rows(numbers)
    written = write_figure(figure_paths(T2.NAME, tmp_path), fig, numbers, config, table=rows)
    assert all(path.stat().st_size > 0 for path in written)
    assert len(rows) == len(numbers["rows"])
    fixed_cw = [
        r
        for r in rows
        if r["attack"] == "cw" and r["threat_model"] == "fixed" and r["kappa"] == "0"
    ]
    assert all(r["paper_success_undetected_pct"] is not None for r in fixed_cw)
    assert json.loads(json.dumps(numbers)) == numbers  # JSON-ready


@pytest.mark.parametrize("where", ["default", "cache_dir", "work_dir"])
def test_unfinished_cells_keep_their_batches_in_the_work_dir(where, tmp_path, monkeypatch):
    """An unfinished cell's per-batch cache goes to ``work_dir`` (default: WORK_ROOT, outside
    the committed outputs, which must stay small; the cell cache when only that is given), the
    finished cell's JSON to the cell cache. The computation is stubbed: it records where it was
    asked to keep its batches, then fails, as a killed run leaves it."""
    from flows.attacks.experiment import ExperimentError

    seen = []

    def record(run, cell, attack_cfg, info, partial):
        seen.append(partial)
        assert (partial / "cell_hash.txt").is_file()
        raise ExperimentError("stopped")

    # The committed outputs, copied without the cell computed here (it may be committed by now):
    # the default configuration reads them and must write nothing there on failure.
    output_root = tmp_path / "output"
    committed = figure_paths(T2.NAME, root=output_root).folder
    shutil.copytree(figure_paths(T2.NAME).folder / "cells", committed / "cells")
    (committed / "cells" / "mnist-split-deployed-k0-cw.json").unlink(missing_ok=True)
    monkeypatch.setattr(T2, "figure_paths", lambda name: figure_paths(name, root=output_root))
    monkeypatch.setattr(T2, "_compute_cell", record)
    monkeypatch.setattr(T2, "WORK_ROOT", tmp_path / "work-root")
    cache = tmp_path / "cells"
    shutil.copytree(committed / "cells", cache)
    context = Context(data_root=tmp_path / "no-data")
    config = replace(T2.default_config(context), threat_models=("deployed",))
    config = {
        "default": config,
        "cache_dir": replace(config, cache_dir=str(cache)),
        "work_dir": replace(config, cache_dir=str(cache), work_dir=str(tmp_path / "w")),
    }[where]
    before = sorted(p.name for p in committed.rglob("*"))
    cells = T2.run_cells(config, context, "mnist", "split", attacks=("cw",))["cells"]
    assert cells == {
        "mnist/split/deployed/0/cw": {"status": "error", "reason": "stopped", "from_cache": False}
    }
    expected = {
        "default": tmp_path / "work-root" / T2.NAME,
        "cache_dir": cache,
        "work_dir": tmp_path / "w",
    }[where]
    assert seen == [expected / "mnist-split-deployed-k0-cw.partial"]
    assert sorted(p.name for p in committed.rglob("*")) == before


@pytest.mark.slow
def test_cells_option_computes_only_the_named_runs_and_threat_models(quick, tmp_path, capsys):
    """``--cells mnist/split --threat-models fixed``: the missing fixed cell of that run is
    computed into the shared cache, a missing deployed one and the other runs are left alone."""
    context, _, _, cache = quick
    copy = tmp_path / "cells"
    shutil.copytree(cache, copy)
    fixed, deployed = "mnist-split-fixed-k0-boundary", "mnist-split-deployed-k0-boundary"
    (copy / f"{fixed}.json").unlink()
    (copy / f"{deployed}.json").unlink()
    before = {p.name: p.stat().st_mtime_ns for p in copy.glob("*.json")}
    argv = ["--quick", "--cells", "mnist/split", "--threat-models", "fixed"]
    argv += ["--cache-dir", str(copy), "--data-root", str(context.data_root)]
    T2.main(argv)
    assert (copy / f"{fixed}.json").is_file() and not (copy / f"{deployed}.json").exists()
    after = {p.name: p.stat().st_mtime_ns for p in copy.glob("*.json")}
    assert {k: v for k, v in after.items() if k in before} == before  # others read, not rewritten
    printed = capsys.readouterr()
    assert "mnist/split/fixed/0/boundary: ok" in printed.out
    # progress on stderr, for runs left in the background: the cell started, its batches
    assert "mnist/split/fixed/0/boundary: computing" in printed.err
    assert "boundary (fixed noise)" in printed.err and "batch" in printed.err
    assert "mnist/split/deployed" not in printed.err


def test_cached_only_and_cells_exclude_each_other(capsys):
    with pytest.raises(SystemExit):
        T2.main(["--cached-only", "--cells", "mnist/split"])
    assert "--cached-only" in capsys.readouterr().err
