"""Attacking in bfloat16: how much faster, and is the attack as strong (``attack_precision``)?

:attr:`flows.attacks.experiment.AttackConfig.attack_precision` runs the coupling networks of the
model the attacks query in bfloat16 (:meth:`flows.ConditionalGlow.set_coupling_precision`); the
choice of the attacked images, the detector and every verification stay float32, so a weaker
attack shows as a lower verified success, never as a false one. This benchmark measures, for
committed runs:

1. **speed**: wall milliseconds per row of the attacks' inner pass (class scores and
   log-likelihoods with the input gradient, ``--rows`` inputs in calls of ``--model-batch``
   rows), float32 against bfloat16, over real test images, on ``--threads`` threads;
2. **agreement**: on the same test images under one noise draw, the largest and median change
   of the class-score margins and of bits/dim that bfloat16 makes, beside the noise spread
   (Table 2's κ unit);
3. **strength**: Table 2's deployed cells ``cw-det`` and ``apgd-det`` at κ = noise
   (``paper_figures.table2_adaptive``'s budgets, on the first ``--n`` of its images,
   no sanity reruns), run in both precisions: verified success (fooled and undetected in ≥ 1/2
   of 32 fresh float32 draws), median verified L2 and wall time. The two precisions of a cell
   run back to back, so a background load slows both alike.

Usage (``benchmarks/attack_precision.md`` records the runs)::

    python benchmarks/attack_precision.py --data-root ../shared/data --n 10 \\
        --output benchmarks/attack_precision.json
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
from model_batch import ms_per_row  # benchmarks/, the script's folder

from flows.attacks.experiment import run_experiment
from flows.measures import bits_per_dim, marginal_log_prob
from paper_figures import table2_adaptive as t2
from paper_figures import trained
from paper_figures.context import Context

RUNS = (("mnist", "split"), ("cifar10", "reweight"))
CELLS = (("noise", "cw-det"), ("noise", "apgd-det"))
PRECISIONS = ("float32", "bfloat16")


def per_row_ms(model, x: torch.Tensor, chunk: int, seconds: float) -> float:
    """Wall milliseconds per row of one gradient pass over ``x`` in calls of ``chunk`` rows."""
    generator = torch.Generator().manual_seed(0)

    def once():
        xg = x.clone().requires_grad_(True)
        parts = [
            model.class_scores_and_log_likelihoods(part, generator=generator)
            for part in xg.split(chunk)
        ]
        loss = sum(s.sum() + ll.sum() for s, ll in parts)
        torch.autograd.grad(loss, xg)

    return ms_per_row(once, len(x), seconds)


def agreement(model, x: torch.Tensor, num_dims: int) -> dict:
    """Changes bfloat16 makes to margins (nats) and bits/dim on ``x`` under one noise draw."""
    outputs = {}
    for precision in PRECISIONS:
        model.set_coupling_precision(precision)
        with torch.no_grad():
            scores, ll = model.class_scores_and_log_likelihoods(
                x, generator=torch.Generator().manual_seed(0)
            )
        bpd = bits_per_dim(marginal_log_prob(ll.double()), num_dims)
        outputs[precision] = (scores.double(), bpd)
    model.set_coupling_precision("float32")
    (s32, b32), (s16, b16) = outputs["float32"], outputs["bfloat16"]
    margin32 = s32 - s32.gather(1, s32.argmax(1, keepdim=True))
    margin16 = s16 - s16.gather(1, s32.argmax(1, keepdim=True))
    dm, db = (margin16 - margin32).abs(), (b16 - b32).abs()
    return {
        "images": len(x),
        "max_abs_margin_change_nats": dm.max().item(),
        "median_abs_margin_change_nats": dm.median().item(),
        "max_abs_bits_per_dim_change": db.max().item(),
        "median_abs_bits_per_dim_change": db.median().item(),
        "prediction_agreement": (s16.argmax(1) == s32.argmax(1)).double().mean().item(),
    }


def strength(run, threshold: float, kappa: float, cell: t2._Cell, n: int, precision: str) -> dict:
    """One deployed cell at κ = ``kappa`` on the first ``n`` images, in ``precision``."""
    config = t2.attack_config(run.config, cell, kappa, threshold)
    config = dataclasses.replace(config, n=n, sanity=False, audit=False, attack_precision=precision)
    x_all, y_all = run.test_set
    start = time.perf_counter()
    report, _, _ = run_experiment(run.model, x_all, y_all, config, run.dataset, progress=False)
    seconds = time.perf_counter() - start
    records = report["records"]
    success = [r["success_undetected"] for r in records]
    fools = [r["fools_classifier"] for r in records]
    l2 = [r["l2"] for r, ok in zip(records, success, strict=True) if ok]
    return {
        "seconds": seconds,
        "success_undetected": sum(success),
        "fools_classifier": sum(fools),
        "n": len(records),
        "median_verified_l2": statistics.median(l2) if l2 else None,
        "per_example_success": success,
    }


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data-root", required=True, type=Path)
    parser.add_argument("--n", type=int, default=10, help="images per strength cell")
    parser.add_argument("--rows", type=int, default=400, help="rows of the speed pass")
    parser.add_argument("--model-batch", type=int, default=64)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=20.0, help="per speed measurement")
    parser.add_argument("--skip-strength", action="store_true")
    parser.add_argument("--output", type=Path)
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    context = Context(data_root=args.data_root)
    config = t2.Config()
    cache = t2._cache_root(config)
    out = {
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "cpu_count": os.cpu_count(),
            "threads": args.threads,
            "torch": torch.__version__,
        },
        "runs": {},
    }
    for dataset, prior in RUNS:
        run = t2._Run(dataset, prior, config, context)
        model = run.model
        x, _ = trained.ordered_test_set(dataset, context, n=args.rows)
        entry: dict = {"run": str(run.path)}
        entry["speed_ms_per_row"] = {}
        for precision in PRECISIONS:
            model.set_coupling_precision(precision)
            entry["speed_ms_per_row"][precision] = per_row_ms(
                model, x, args.model_batch, args.seconds
            )
        model.set_coupling_precision("float32")
        speed = entry["speed_ms_per_row"]
        entry["speed_up"] = speed["float32"] / speed["bfloat16"]
        entry["agreement"] = agreement(model, x, model.num_dims)
        print(dataset, prior, json.dumps({k: entry[k] for k in ("speed_ms_per_row", "speed_up")}))
        print(json.dumps(entry["agreement"]))
        if not args.skip_strength:
            run_info = t2._run_info_cached(run, cache, compute=False)
            ensemble = json.loads(
                (cache / f"{dataset}-{prior}-fixed-k0-ensemble.json").read_text()
            )["value"]
            kappa = t2._kappa(ensemble, config.kappa_factor)["value"]
            threshold = run_info["detector"]["threshold_bits_per_dim"]
            entry["kappa"] = kappa
            entry["cells"] = {}
            for kappa_label, attack in CELLS:
                cell = t2._Cell(dataset, prior, "deployed", kappa_label, attack)
                rows = {}
                for precision in PRECISIONS:
                    rows[precision] = strength(run, threshold, kappa, cell, args.n, precision)
                    print(cell.key, precision, json.dumps(rows[precision]), flush=True)
                a, b = (rows[p]["per_example_success"] for p in PRECISIONS)
                rows["same_verdict"] = sum(u == v for u, v in zip(a, b, strict=True))
                entry["cells"][cell.key] = rows
        out["runs"][f"{dataset}/{prior}"] = entry
        if args.output is not None:
            args.output.write_text(json.dumps(out, indent=1) + "\n")
    return out


if __name__ == "__main__":
    main()
