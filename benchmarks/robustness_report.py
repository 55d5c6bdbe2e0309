"""Time the whole robustness report (issue 20's benchmark): each stage, wall and CPU seconds.

Issue 20's goals: the whole report of :func:`flows.robustness.evaluate` on the counterexample
model within 60 s, and on the ``cpu-mnist-split`` run with 100 attacked images within 30 minutes,
on this 2-core CPU. Two models:

* ``counterexample``: :meth:`flows.robustness.CounterexampleModel.from_targets` at ``d = 300``,
  smoothing ``5e-4`` (the calibration case of ``tests/robustness/test_report.py``), 1000 test
  points ``model.sample(1000, seed=1)``, ε = 0.15 (the report's docstring: APGD's random start
  leaves the annulus above about 0.2);
* ``cpu-mnist-split``: the committed run (``flows.load(--run)``), the MNIST test split in the
  fixed order (:func:`flows.data.load_test_split`, images in the model range), ε = 1.5 (the
  paper's MNIST budget, :data:`flows.paper.PAPER_EPS`). The model is randomised (padding and
  noise channels), so the report attacks it under the deployed threat model with EOT.

Every other setting is :class:`flows.robustness.ReportConfig`'s default (``--n``, ``--eps``,
``--num-test`` and ``--set FIELD=VALUE`` change them). The report runs once, in a fresh folder
(``--report-dir``, default a temporary one), with ``--threads`` intra-op threads (default 1). Per
stage, the wall seconds are the report's own ``timings`` and the CPU seconds
(:func:`time.process_time`, all threads of this process) are measured around each stage
function; the total is the whole :func:`evaluate` call (its stage cache and the written
``report.json``/``.md``/``.html`` included). The load average before and after goes into the
results: on a shared machine the wall time depends on the load, and the CPU time of one thread is
about the wall time on an idle core (still inflated by cache and memory contention).

``--project SMALL.json LARGE.json --to N``: two results of the same model and settings but ``n``
give the attacks stage's cost as ``fixed + n · per_image`` (a line through both; the sanity
reruns on ``sanity_n`` inputs are in ``fixed``), and the whole report at ``n = N`` is the other
stages of LARGE plus that line at N, in wall and in CPU seconds.

Usage (``benchmarks/robustness_report.md`` records the runs)::

    python benchmarks/robustness_report.py counterexample \\
        --output benchmarks/robustness_report_counterexample.json
    python benchmarks/robustness_report.py cpu-mnist-split --data-root ../shared/data --n 10 \\
        --output benchmarks/robustness_report_mnist_n10.json
    python benchmarks/robustness_report.py cpu-mnist-split --data-root ../shared/data --n 5 \\
        --stages attacks --output benchmarks/robustness_report_mnist_n5.json
    python benchmarks/robustness_report.py --project benchmarks/robustness_report_mnist_n5.json \\
        benchmarks/robustness_report_mnist_n10.json --to 100
    python benchmarks/robustness_report.py cpu-mnist-split --data-root ../shared/data --n 100 \\
        --threads 2 --output benchmarks/robustness_report_mnist_n100.json   # the goal: < 30 min
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import subprocess
import tempfile
import time
from pathlib import Path

import torch

from flows.robustness import STAGES, CounterexampleModel, ReportConfig, evaluate
from flows.robustness import report as report_module

MODELS = ("counterexample", "cpu-mnist-split")
#: The default ε per model (the module docstring says why).
DEFAULT_EPS = {"counterexample": 0.15, "cpu-mnist-split": 1.5}
#: The issue's goal per model: (attacked images, seconds).
GOALS = {"counterexample": (10, 60.0), "cpu-mnist-split": (100, 1800.0)}


def load(name: str, args) -> tuple[object, tuple[torch.Tensor, torch.Tensor], dict]:
    """``(model, (x, y), description)`` of one benchmark model."""
    if name == "counterexample":
        model = CounterexampleModel.from_targets(d=300, smoothing=5e-4)
        return model, model.sample(1000, seed=1), {"d": 300, "smoothing": 5e-4, "test": 1000}
    if args.data_root is None:
        raise SystemExit("--data-root: cpu-mnist-split needs the folder holding MNIST/")
    import flows
    from flows.data import load_test_split
    from flows.preprocess import to_model_range

    model = flows.load(args.run)
    model.eval()
    data = load_test_split("mnist", args.data_root)
    x = to_model_range(data.images).to(torch.float32)
    return model, (x, data.labels), {"run": str(args.run), "test": len(x)}


def _config(args, name: str) -> ReportConfig:
    changes = {"eps": args.eps if args.eps is not None else DEFAULT_EPS[name]}
    if args.n is not None:
        changes["n"] = args.n
    if args.num_test is not None:
        changes["num_test"] = args.num_test
    for item in args.set or ():
        field, _, value = item.partition("=")
        if field not in ReportConfig.__dataclass_fields__ or not value:
            raise SystemExit(f"--set: expected FIELD=VALUE with a ReportConfig field, got {item!r}")
        changes[field] = json.loads(value)
        if isinstance(changes[field], list):
            changes[field] = tuple(changes[field])
    return dataclasses.replace(ReportConfig(), **changes)


def _uptime() -> str:
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "uptime unavailable; load average " + " ".join(f"{v:.2f}" for v in os.getloadavg())


def measure(args) -> dict:
    """One whole report, timed (module docstring)."""
    torch.set_num_threads(args.threads)
    name = args.model
    config = _config(args, name)
    model, data, description = load(name, args)
    cpu: dict[str, float] = {}
    original = dict(report_module._STAGE_FUNCTIONS)

    def clocked(stage: str, fn):
        def run(*a):
            started = time.process_time()
            try:
                return fn(*a)
            finally:
                cpu[stage] = time.process_time() - started

        return run

    report_module._STAGE_FUNCTIONS.update({k: clocked(k, f) for k, f in original.items()})
    folder = args.report_dir or Path(tempfile.mkdtemp(prefix="robustness-benchmark-"))
    before = {"load_average": os.getloadavg(), "uptime": _uptime()}
    started, cpu_started = time.perf_counter(), time.process_time()
    try:
        report = evaluate(
            model, data, config, out=folder, stages=args.stages, restart=True, progress=False
        )
    finally:
        report_module._STAGE_FUNCTIONS.update(original)
    wall, cpu_total = time.perf_counter() - started, time.process_time() - cpu_started
    after = {"load_average": os.getloadavg(), "uptime": _uptime()}
    attacks = report["attacks"]
    goal_n, goal_s = GOALS[name]
    results = {
        "model": name,
        "description": description,
        "config": report["config"],
        "stages_run": [k for k, v in report["stages"].items() if v == "done"],
        "threads": torch.get_num_threads(),
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
        "before": before,
        "after": after,
        "total": {"seconds": wall, "cpu_seconds": cpu_total},
        "stages": {
            stage: {"seconds": seconds, "cpu_seconds": cpu.get(stage)}
            for stage, seconds in report["timings"].items()
        },
        "goal": {
            "n": goal_n,
            "seconds": goal_s,
            "met": bool(
                config.n >= goal_n and wall <= goal_s and set(STAGES) <= set(_done(report))
            ),
        },
        "flags": sorted(report.flags),
        "leaderboard": None if report.leaderboard is None else report.leaderboard["row"],
        "attack_table": None
        if attacks is None
        else {
            row["attack"]: {
                "success_undetected_pct": row["success_undetected"]["pct"],
                "median_l2": row["median_l2_success_undetected"],
                "success_at_infinity": row["success_at_infinity"],
            }
            for row in attacks["table"]
        },
        "threat_model": None if attacks is None else attacks["threat_model"],
        "eot": None if attacks is None else attacks["eot"],
        "report_dir": str(folder),
    }
    calibration = report["calibration"]
    if calibration is not None and calibration["available"]:
        results["calibration"] = {
            k: v.get("median_ratio") for k, v in calibration["attacks"].items()
        }
    return results


def _done(report) -> list[str]:
    return [k for k, v in report["stages"].items() if v == "done"]


def project(small: dict, large: dict, to: int) -> dict:
    """The whole report at ``n = to`` from two results that differ in ``n`` (module docstring)."""
    n_small, n_large = small["config"]["n"], large["config"]["n"]
    same = {k: v for k, v in small["config"].items() if k != "n"}
    if same != {k: v for k, v in large["config"].items() if k != "n"} or n_small == n_large:
        raise SystemExit("--project: the two results must differ in n only")
    if small["model"] != large["model"]:
        raise SystemExit("--project: the two results are of different models")
    out = {"n": to, "from_n": [n_small, n_large]}
    for clock in ("seconds", "cpu_seconds"):
        a_small = small["stages"]["attacks"][clock]
        a_large = large["stages"]["attacks"][clock]
        per_image = (a_large - a_small) / (n_large - n_small)
        fixed = a_large - n_large * per_image
        others = sum(v[clock] for k, v in large["stages"].items() if k != "attacks")
        out[clock] = {
            "attacks_per_image": per_image,
            "attacks_fixed": fixed,
            "other_stages": others,
            "total": others + fixed + to * per_image,
        }
    return out


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("model", nargs="?", choices=MODELS)
    parser.add_argument("--data-root", type=Path, help="holds MNIST/ (cpu-mnist-split)")
    parser.add_argument("--run", type=Path, default=Path("artifacts/runs/cpu-mnist-split"))
    parser.add_argument("--n", type=int, help="attacked images (default: ReportConfig's, 10)")
    parser.add_argument("--eps", type=float, help="L2 budget (default: 0.15 / 1.5)")
    parser.add_argument("--num-test", type=int, help="test inputs (default: ReportConfig's)")
    parser.add_argument("--stages", type=lambda s: s.split(","), help="comma-separated subset")
    parser.add_argument("--set", nargs="*", metavar="FIELD=VALUE", help="ReportConfig fields")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--report-dir", type=Path, help="the report's folder (default: temporary)")
    parser.add_argument("--output", type=Path, help="results JSON (default: print only)")
    parser.add_argument("--project", nargs=2, metavar=("SMALL", "LARGE"), help="results JSONs")
    parser.add_argument("--to", type=int, default=100, help="with --project: images to project")
    args = parser.parse_args(argv)
    if args.project:
        small, large = (json.loads(Path(p).read_text()) for p in args.project)
        results = project(small, large, args.to)
    else:
        if args.model is None:
            parser.error("name a model (counterexample or cpu-mnist-split) or pass --project")
        results = measure(args)
    text = json.dumps(results, indent=1)
    print(text)
    if args.output is not None:
        args.output.write_text(text + "\n")


if __name__ == "__main__":
    main()
