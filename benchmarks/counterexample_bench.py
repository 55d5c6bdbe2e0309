"""Benchmark of the counterexample package: find_dimension latency and sampler throughput.

``python benchmarks/counterexample_bench.py [--repeats N] [--quick]`` prints a Markdown table:

* time per :func:`counterexample.find_dimension` call (median and minimum over many calls, in
  microseconds) for several (eps, delta, Delta), including tiny Delta (d in the billions and beyond);
* samples per second of the norm samplers (:func:`counterexample.sample_annulus_norms`,
  :func:`counterexample.sample_norms`) at d = 1e6 and of the point samplers
  (:func:`counterexample.sample_annulus_points`, :func:`counterexample.sample_points`) at d = 1e4
  (median over a few repeats).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

import counterexample as cx


@dataclass(frozen=True)
class BenchConfig:
    """What to time and how often."""

    dimension_cases: tuple[tuple[float, float, float], ...] = (
        (0.1, 0.01, 0.1),
        (1.0, 0.1, 0.5),
        (10.0, 0.4, 1.0),
        (0.1, 0.01, 1e-6),
        (1e-3, 1e-5, 1e-9),
        (0.1, 0.01, 1e-12),
    )
    dimension_repeats: int = 2000
    norm_d: int = 10**6
    norm_n: int = 10**6
    point_d: int = 10**4
    point_n: int = 1000
    sampler_repeats: int = 5
    seed: int = 0


QUICK = BenchConfig(dimension_repeats=200, norm_n=10**5, point_n=200, sampler_repeats=3)


def _time_calls(fn: Callable[[], object], repeats: int) -> list[float]:
    """Wall times in seconds of ``repeats`` calls of ``fn``."""
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def bench_find_dimension(cfg: BenchConfig) -> list[list[str]]:
    rows = []
    for eps, delta, Delta in cfg.dimension_cases:
        d = cx.find_dimension(eps, delta, Delta)  # warm-up, and the answer for the table
        times = _time_calls(
            lambda a=(eps, delta, Delta): cx.find_dimension(*a), cfg.dimension_repeats
        )
        rows.append(
            [
                f"`find_dimension({eps:g}, {delta:g}, {Delta:g})`",
                f"d = {d:,}",
                f"{statistics.median(times) * 1e6:.1f} µs (min {min(times) * 1e6:.1f})",
                f"{cfg.dimension_repeats} calls",
            ]
        )
    return rows


def bench_samplers(cfg: BenchConfig) -> list[list[str]]:
    rng = np.random.default_rng(cfg.seed)
    ce_norm = cx.Counterexample.from_targets(0.1, 0.01, 2e-5, d=cfg.norm_d)
    ce_point = cx.Counterexample.from_targets(0.1, 0.01, 2e-3, d=cfg.point_d)
    cases = [
        (
            f"`sample_annulus_norms(n, 1, 1+Δ, d={cfg.norm_d:.0e})`",
            cfg.norm_n,
            lambda: cx.sample_annulus_norms(cfg.norm_n, 1.0, 1.0 + ce_norm.Delta, cfg.norm_d, rng),
        ),
        (
            f"`sample_norms(ce, n)` joint p, d={cfg.norm_d:.0e}",
            cfg.norm_n,
            lambda: cx.sample_norms(ce_norm, cfg.norm_n, "p", rng=rng),
        ),
        (
            f"`sample_annulus_points(n, 1, 1+Δ, d={cfg.point_d:.0e})`",
            cfg.point_n,
            lambda: cx.sample_annulus_points(
                cfg.point_n, 1.0, 1.0 + ce_point.Delta, cfg.point_d, rng
            ),
        ),
        (
            f"`sample_points(ce, n)` joint p, d={cfg.point_d:.0e}",
            cfg.point_n,
            lambda: cx.sample_points(ce_point, cfg.point_n, "p", rng=rng),
        ),
    ]
    rows = []
    for label, n, fn in cases:
        fn()  # warm-up
        median = statistics.median(_time_calls(fn, cfg.sampler_repeats))
        rows.append(
            [
                label,
                f"n = {n:,}",
                f"{n / median:,.0f} samples/s",
                f"median of {cfg.sampler_repeats}, {median * 1e3:.0f} ms per call",
            ]
        )
    return rows


def machine_note() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as fh:
            names = [line.split(":", 1)[1].strip() for line in fh if line.startswith("model name")]
        cpu = names[0] if names else cpu
    except OSError:
        pass
    return (
        f"{cpu}, {os.cpu_count()} logical CPUs; Python {platform.python_version()}, "
        f"NumPy {np.__version__}"
    )


def markdown_table(rows: list[list[str]]) -> str:
    lines = ["| what | size | result | note |", "|---|---|---|---|"]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats and samples")
    parser.add_argument(
        "--repeats",
        type=int,
        default=None,
        help="find_dimension calls per case (default 2000; 200 with --quick)",
    )
    args = parser.parse_args(argv)
    cfg = QUICK if args.quick else BenchConfig()
    if args.repeats is not None:
        cfg = BenchConfig(**{**cfg.__dict__, "dimension_repeats": args.repeats})
    print(markdown_table(bench_find_dimension(cfg) + bench_samplers(cfg)))
    print(f"\nMachine: {machine_note()}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
