"""Time the adaptive Table 2's attacks per image and project the full table's wall time (issue 19).

What it measures, on one committed run per dataset (``cpu-mnist-split``, ``cpu-cifar-split``; the
Reweight runs have the same networks and are assumed to cost the same), under both threat models,
with the budgets of :class:`paper_figures.table2_adaptive.Config` (or ``--quick``'s):

1. ``forward``: the model's cost per row of one batched forward pass (256 rows) and of one
   forward + backward pass (64 rows), under fresh noise;
2. ``attacks``: every attack of the table (``cw``, ``boundary`` and the five ensemble members at
   κ = 0, and ``cw-det`` / ``apgd-det`` at the κ of ``--kappa``) run alone by
   :func:`flows.attacks.experiment.run_experiment` on ``--n`` images, without the sanity checks
   or the audit: wall time, model evaluations per image, verified success;
3. ``cells``: the table's own cells of the run (:func:`paper_figures.table2_adaptive.run_cells`,
   sanity checks on all ``--n`` images, audit, sweep), in a fresh cache: wall time per cell and
   the sanity verdicts at these budgets.

``--project FILE`` reads a results JSON and prints the projected wall time of the full table
(``--full-n``, ``--full-sanity-n``, ``--full-deployed-n`` images): per cell,
``setup + n · (attack per image + verification per image) + sanity_n · sanity per image``, in
CPU seconds of the (single-threaded) process: the setup is an experiment run whose attack costs
nothing, the attack cost per image is item 2's time less that setup, over n, the verification
cost per image counts the rows each image is evaluated on (item 1's cost per row), and the
sanity cost per image is what item 3 adds beyond those, per sanity image (``--sanity-from``: the
ratio of sanity to attack-and-verification cost measured in another results file). The
measurements are made on a shared, loaded 2-core machine (a training and other jobs run beside):
its wall times depend on the load, so the projection uses CPU time, which is about the wall time
of one thread on an idle core (the load still inflates it by up to a third: cache and memory
contention); say so with the numbers.

Usage (``benchmarks/table2_budget.md`` records the runs and their readings)::

    python benchmarks/table2_budget.py --data-root ../shared/data --threads 1 --n 3 \\
        --set cw_binary_search_steps=5 cw_steps=100 apgd_steps=50 decision_quorum=0.5 \\
        --output benchmarks/table2_budget.json
    python benchmarks/table2_budget.py --data-root ../shared/data --threads 1 --n 3 \\
        --skip-cells --output benchmarks/table2_budget_defaults.json
    python benchmarks/table2_budget.py --project benchmarks/table2_budget_defaults.json \\
        --sanity-from benchmarks/table2_budget.json --full-deployed-n 20 --full-sanity-n 5

The results JSON is written after every measurement; a rerun skips the measurements already in it.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from dataclasses import asdict, replace
from pathlib import Path

import torch

from flows.attacks.experiment import ENSEMBLE, run_experiment
from paper_figures import Context, table2_adaptive, trained

RUNS = {"mnist": "split", "cifar10": "split"}
ATTACKS_AT_ZERO = ("cw", "boundary", *ENSEMBLE)


def _config(args) -> table2_adaptive.Config:
    base = table2_adaptive.default_config(Context(quick=args.quick))
    changes = {}
    for item in args.set or ():
        name, _, value = item.partition("=")
        if name not in table2_adaptive.Config.__dataclass_fields__ or not value:
            raise SystemExit(f"--set: expected FIELD=VALUE with a Config field, got {item!r}")
        changes[name] = json.loads(value)
    return replace(base, **changes, n=args.n, sanity_n=args.n, deployed_n=None)


def _save(path: Path, results: dict) -> None:
    temporary = path.with_suffix(".json.tmp")
    temporary.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(temporary, path)


def _forward_cost(model, x: torch.Tensor) -> dict:
    """Wall and CPU seconds per row of a batched forward (256 rows) and of a forward + backward
    (64 rows), under fresh noise."""
    generator = torch.Generator().manual_seed(0)
    rows = x[:1].expand(256, *x.shape[1:]).contiguous()
    out = {}
    with torch.no_grad():
        model.class_log_likelihoods(rows[:8], generator=generator)
        started, cpu = time.perf_counter(), time.process_time()
        model.class_log_likelihoods(rows, generator=generator)
        out["forward"] = {
            "seconds": (time.perf_counter() - started) / 256,
            "cpu_seconds": (time.process_time() - cpu) / 256,
        }
    inputs = rows[:64].clone().requires_grad_()
    started, cpu = time.perf_counter(), time.process_time()
    model.class_log_likelihoods(inputs, generator=generator).sum().backward()
    out["forward_backward"] = {
        "seconds": (time.perf_counter() - started) / 64,
        "cpu_seconds": (time.process_time() - cpu) / 64,
    }
    return out


def _attack_timing(
    run, config, threshold: float, threat: str, attack: str, kappa: str, kappa_value: float
) -> dict:
    cell = table2_adaptive._Cell(run.dataset, run.prior, threat, kappa, attack)
    attack_cfg = table2_adaptive.attack_config(config, cell, kappa_value, threshold)
    attack_cfg = replace(attack_cfg, sanity=False, audit=False)
    x, y = run.test_set
    started, cpu = time.perf_counter(), time.process_time()
    report, _, _ = run_experiment(run.model, x, y, attack_cfg, run.dataset, progress=False)
    seconds, cpu_seconds = time.perf_counter() - started, time.process_time() - cpu
    primary = "deployed" if threat == "deployed" else "attack_noise"
    stats = report[primary]["table2"]
    return {
        "seconds": seconds,
        "cpu_seconds": cpu_seconds,
        "n": attack_cfg.n,
        "mean_queries": report["attack"]["mean_queries"],
        "claimed_success_rate": report["attack"]["success_rate"],
        "verified_success_undetected_pct": stats["success_undetected_pct"],
        "verified_fools_classifier_pct": stats["fools_classifier_pct"],
        "median_l2_success_undetected": stats["median_l2_success_undetected"],
        "confidence": kappa_value,
    }


def _setup_timing(run, config, threshold: float, threat: str, kind: str) -> dict:
    """Seconds of an experiment run whose attack costs nothing: the detector's recall check, the
    choice of the attacked images and, for ``kind="pool"``, the pool's end points (what
    ``boundary-det``, ``match`` and ``segment`` prepare): ``cw`` with one step, or ``segment``
    with a one-point grid."""
    attack = "cw" if kind == "plain" else "segment"
    cell = table2_adaptive._Cell(run.dataset, run.prior, threat, "0", attack)
    attack_cfg = replace(
        table2_adaptive.attack_config(config, cell, 0.0, threshold),
        binary_search_steps=1,
        cw_steps=1,
        segment_grid=1,
        verify_draws=2,
        sanity=False,
        audit=False,
    )
    x, y = run.test_set
    started, cpu = time.perf_counter(), time.process_time()
    run_experiment(run.model, x, y, attack_cfg, run.dataset, progress=False)
    return {"seconds": time.perf_counter() - started, "cpu_seconds": time.process_time() - cpu}


def measure(args) -> None:
    output = Path(args.output)
    results = json.loads(output.read_text()) if output.is_file() else {}
    config = _config(args)
    results["meta"] = {
        "config": asdict(config),
        "threads": torch.get_num_threads(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores; shared "
        "and loaded (a training and other jobs ran beside)",
        "load_average_at_start": os.getloadavg(),
    }
    context = Context(data_root=args.data_root, quick=False)
    for dataset, prior in RUNS.items():
        if args.datasets and dataset not in args.datasets:
            continue
        run = table2_adaptive._Run(dataset, prior, config, context)
        threshold = trained.paper_detector(dataset, prior, context, config.detector_n).threshold
        entry = results.setdefault(f"{dataset}/{prior}", {})
        if "forward" not in entry:
            x, _ = trained.ordered_test_set(dataset, context, 1)
            entry["forward"] = _forward_cost(run.model, x)
            _save(output, results)
        for threat in args.threat_models:
            setup = entry.setdefault(threat, {}).setdefault("setup", {})
            for kind in ("plain", "pool"):
                if kind not in setup:
                    setup[kind] = _setup_timing(run, config, threshold, threat, kind)
                    print(
                        dataset, threat, f"setup {kind} {setup[kind]['seconds']:.1f} s", flush=True
                    )
                    _save(output, results)
            timings = entry[threat].setdefault("attacks", {})
            plan = [(a, "0", 0.0) for a in ATTACKS_AT_ZERO]
            plan += [(a, "noise", args.kappa[dataset]) for a in table2_adaptive.KAPPA_AWARE]
            for attack, kappa, value in plan:
                key = f"{attack}@k{kappa}"
                if key in timings:
                    continue
                timings[key] = _attack_timing(run, config, threshold, threat, attack, kappa, value)
                print(dataset, threat, key, f"{timings[key]['seconds']:.1f} s", flush=True)
                _save(output, results)
        if args.skip_cells or "cells" in entry:
            continue
        cpu_per_cell: dict[str, float] = {}
        with tempfile.TemporaryDirectory() as cache:
            clock = [time.perf_counter(), time.process_time()]

            def report(key: str, clock: list = clock, cpu: dict = cpu_per_cell) -> None:
                now = [time.perf_counter(), time.process_time()]
                cpu[key] = now[1] - clock[1]
                print(key, f"{now[0] - clock[0]:.0f} s", flush=True)
                clock[:] = now

            done = table2_adaptive.run_cells(
                replace(config, cache_dir=cache, threat_models=tuple(args.threat_models)),
                context,
                dataset,
                prior,
                on_cell=report,
            )
        entry["kappa"] = done["kappa"]
        entry["cells"] = {
            key: {
                "status": cell["status"],
                "reason": cell.get("reason"),
                "seconds": cell.get("seconds"),
                "cpu_seconds": cpu_per_cell.get(key),
                "sanity": None
                if cell["status"] != "ok"
                else table2_adaptive._cell_summary(cell)["sanity"],
                "audit": None
                if cell["status"] != "ok" or cell["report"]["audit"] is None
                else cell["report"]["audit"]["summary"],
            }
            for key, cell in done["cells"].items()
        }
        _save(output, results)


def _verification_rows(threat: str, cell_attack: str, draws: int) -> int:
    """Model rows each attacked image is evaluated on outside the attacks in one cell: the
    experiment's verifications (members, the final result and its 8-bit rounding: ``N`` fresh
    draws each, plus two fixed draws under the fixed threat model), the audit (``N``), and the
    table's own (deployed: the sweep's ``A`` and ``B`` and the rounded members, ``3N`` per member;
    fixed: the rounded members, one draw each)."""
    members = len(ENSEMBLE) if cell_attack == "ensemble" else 1
    per_verification = draws + (2 if threat == "fixed" else 0)
    experiment = (
        (members + 2) * per_verification if cell_attack == "ensemble" else 2 * per_verification
    )
    table = members * (3 * draws if threat == "deployed" else 1)
    return experiment + draws + table


def _setup_kind(timing_key: str) -> str:
    """Which setup an attack's timing includes: the pool's end points, or not."""
    return "pool" if timing_key.split("@")[0] in ("boundary-det", "match", "segment") else "plain"


#: The experiment runs of one trained run and threat model, and the attack timings they add up.
CELLS = {
    "ensemble@k0": [f"{a}@k0" for a in ENSEMBLE],
    "cw@k0": ["cw@k0"],
    "boundary@k0": ["boundary@k0"],
    "cw-det@knoise": ["cw-det@knoise"],
    "apgd-det@knoise": ["apgd-det@knoise"],
}


def _sanity_ratios(path: str, args, clock: str) -> dict:
    """Per (dataset, threat, cell) of another results file with measured cells: the sanity
    cost per sanity image divided by the attack cost per image there."""
    rows, _ = _projection(json.loads(Path(path).read_text()), args, clock)
    return {
        (r["dataset"], r["threat"], r["cell"]): r["sanity_per_image"]
        / (sum(r["attack_per_image"].values()) + r["verification_per_image"])
        for r in rows
        if r["sanity_per_image"] is not None
    }


def _projection(
    results: dict, args, clock: str, ratios: dict | None = None
) -> tuple[list[dict], float]:
    """Per cell (one prior) the projected seconds on ``clock`` (``seconds``: wall time as
    measured, on the loaded machine; ``cpu_seconds``: the process's CPU time, about the wall time
    of one thread on an idle core), and the full table's total (both priors). Without measured
    cells, the sanity cost per sanity image is the attack cost per image times ``ratios`` (from
    :func:`_sanity_ratios`), marked as estimated."""
    config = results["meta"]["config"]
    draws = config["verify_draws"]
    total, rows = 0.0, []
    for dataset, prior in RUNS.items():
        entry = results.get(f"{dataset}/{prior}")
        if entry is None:
            continue
        forward = entry["forward"]["forward"][clock]
        for threat in ("fixed", "deployed"):
            timings = entry.get(threat, {}).get("attacks", {})
            setup = entry.get(threat, {}).get("setup", {})
            if not timings or set(setup) != {"plain", "pool"}:
                continue
            n_full = args.full_deployed_n if threat == "deployed" else args.full_n
            for cell_name, parts in CELLS.items():
                if any(p not in timings for p in parts):
                    continue  # not measured (yet)
                attack, kappa = cell_name.split("@k")
                fixed_cost = setup["pool" if attack == "ensemble" else "plain"][clock]
                per_image = {
                    p: max(timings[p][clock] - setup[_setup_kind(p)][clock], 0.0) / timings[p]["n"]
                    for p in parts
                }
                attack_cost = sum(per_image.values())
                verification = _verification_rows(threat, attack, draws) * forward
                measured = entry.get("cells", {}).get(
                    f"{dataset}/{prior}/{threat}/{kappa}/{attack}", {}
                )
                sanity, estimated = None, False
                if measured.get(clock) is not None:
                    n = config["n"]
                    rest = measured[clock] - fixed_cost - n * (attack_cost + verification)
                    sanity = max(rest, 0.0) / min(config["sanity_n"], n)
                elif ratios and (dataset, threat, cell_name) in ratios:
                    sanity = ratios[(dataset, threat, cell_name)] * (attack_cost + verification)
                    estimated = True
                seconds = (
                    fixed_cost
                    + n_full * (attack_cost + verification)
                    + min(args.full_sanity_n, n_full) * (sanity or 0.0)
                )
                total += 2 * seconds  # both priors
                rows.append(
                    {
                        "dataset": dataset,
                        "threat": threat,
                        "cell": cell_name,
                        "setup": fixed_cost,
                        "attack_per_image": per_image,
                        "verification_per_image": verification,
                        "sanity_per_image": sanity,
                        "sanity_estimated": estimated,
                        "n": n_full,
                        "seconds": seconds,
                        "sanity_passed": None
                        if measured.get("sanity") is None
                        else measured["sanity"]["passed"],
                    }
                )
    return rows, total


def project(args) -> None:
    """Print the projection table in CPU time (the wall times of a loaded machine vary with
    the load from one measurement to the next, and subtracting them gives nonsense)."""
    results = json.loads(Path(args.project).read_text())
    for clock, label in (("cpu_seconds", "CPU time"),):
        ratios = _sanity_ratios(args.sanity_from, args, clock) if args.sanity_from else None
        rows, total = _projection(results, args, clock, ratios)
        print(
            f"\n{label}: n = {args.full_n} (deployed {args.full_deployed_n}), sanity on "
            f"{args.full_sanity_n} images\n"
        )
        print(
            "| dataset | threat model | cell | setup s | attack s/image | verification s/image | "
            "sanity s/sanity image | sanity passed (measured n) | projected min per cell (one prior) |"
        )
        print("|---|---|---|---|---|---|---|---|---|")
        for r in rows:
            parts = ", ".join(
                f"{k.split('@')[0]} {v:.1f}" for k, v in r["attack_per_image"].items()
            )
            sanity = "—" if r["sanity_per_image"] is None else f"{r['sanity_per_image']:.1f}"
            sanity += " (est.)" if r["sanity_estimated"] else ""
            print(
                f"| {r['dataset']} | {r['threat']} | {r['cell']} | {r['setup']:.0f} | {parts} | "
                f"{r['verification_per_image']:.2f} | {sanity} | {r['sanity_passed']} | "
                f"{r['seconds'] / 60:.1f} |"
            )
        print(f"\nprojected full table, both priors: {total / 3600:.2f} h ({label})")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", type=Path, help="holds MNIST/ and cifar10-jpeg/")
    parser.add_argument("--output", default="benchmarks/table2_budget.json")
    parser.add_argument("--n", type=int, default=3, help="images per measurement")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="quick mode's budgets")
    parser.add_argument("--datasets", nargs="*", choices=tuple(RUNS))
    parser.add_argument(
        "--threat-models",
        nargs="+",
        default=list(table2_adaptive.THREAT_MODELS),
        choices=table2_adaptive.THREAT_MODELS,
    )
    parser.add_argument(
        "--kappa",
        type=json.loads,
        default={"mnist": 2.0, "cifar10": 0.5},
        help="κ of the κ-aware attacks' timing, per dataset (JSON); the cells measure their own",
    )
    parser.add_argument("--skip-cells", action="store_true", help="only items 1 and 2")
    parser.add_argument(
        "--set",
        nargs="*",
        metavar="FIELD=VALUE",
        help="override Config fields (JSON values), e.g. cw_steps=300 decision_quorum=0.8",
    )
    parser.add_argument("--project", help="print the projection from this results JSON")
    parser.add_argument(
        "--sanity-from",
        help="with --project on results without cells: estimate the sanity cost from the "
        "sanity / attack cost ratio of this results JSON's cells",
    )
    parser.add_argument("--full-n", type=int, default=100)
    parser.add_argument("--full-deployed-n", type=int, default=100)
    parser.add_argument("--full-sanity-n", type=int, default=10)
    args = parser.parse_args(argv)
    if args.project:
        project(args)
        return
    if args.data_root is None:
        parser.error("--data-root is needed to measure")
    torch.set_num_threads(args.threads)
    measure(args)


if __name__ == "__main__":
    main()
