"""The Split prior's σ and classification weight: a short measured sweep (issue 18).

``python benchmarks/split_sweep.py --data-root DATA --out RUNS_DIR [--threads 1]``

The paper gives neither the scale σ of ``p(z_s | y) = N(e_y, σ² I)`` ("covariance matrix scaled by
a constant") nor the weight ``w`` of the classification term ("explicitly up-weight the loss on this
subspace"). Each (σ, w) of the grid trains ``cpu-mnist-deep`` with the Split prior for one epoch on
the first ``--train-limit`` images of the fixed order, then evaluates on ``--eval-limit`` test images
of the fixed order: accuracy by the z_s rule (the model's) and by Bayes' rule on p(x | y), and
bits/dim, with standard errors. Every configuration is its own run folder: a killed sweep
resumes (finished runs are read back, an unfinished one continues with ``resume=True``). Results
go to ``RUNS_DIR/sweep.json`` and, as a Markdown table, to stdout (recorded in
``benchmarks/split_sweep.md``).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

from flows.training import TrainConfig, final_evaluation, train

SIGMAS = (0.25, 0.5, 1.0)
WEIGHTS = (1.0, 4.0)


def run_one(sigma: float, weight: float, args: argparse.Namespace) -> dict:
    out = Path(args.out) / f"sigma{sigma:g}-w{weight:g}"
    record = final_evaluation(out) if (out / "metrics.jsonl").is_file() else None
    seconds = None
    if record is None or record.get("epoch") != args.epochs:
        config = TrainConfig(
            preset="cpu-mnist-deep",
            prior="split",
            out=str(out),
            data_root=args.data_root,
            epochs=args.epochs,
            split_sigma=sigma,
            split_weight=weight,
            train_limit=args.train_limit,
            eval_limit=args.eval_limit,
            threads=args.threads,
            seed=args.seed,
        )
        start = time.perf_counter()
        train(config, resume=(out / "checkpoint.pt").is_file(), progress=not args.no_progress)
        seconds = time.perf_counter() - start
        record = final_evaluation(out)
    n = record["num_examples"]

    def se(p: float) -> float:
        return math.sqrt(p * (1 - p) / n)

    return {
        "sigma": sigma,
        "weight": weight,
        "n": n,
        "accuracy": record["accuracy"],
        "accuracy_se": se(record["accuracy"]),
        "accuracy_likelihood_rule": record.get("accuracy_likelihood_rule"),
        "bits_per_dim": record["bits_per_dim"],
        "bits_per_dim_se": record["bits_per_dim_std"] / math.sqrt(n),
        "train_seconds": seconds,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--data-root", required=True)
    parser.add_argument("--out", required=True)
    parser.add_argument("--epochs", type=int, default=1)
    parser.add_argument("--train-limit", type=int, default=20000)
    parser.add_argument("--eval-limit", type=int, default=2000)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args()
    rows = [run_one(s, w, args) for s in SIGMAS for w in WEIGHTS]
    Path(args.out, "sweep.json").write_text(json.dumps(rows, indent=2))
    print("| σ | w | accuracy, z_s rule (%) | accuracy, Bayes on p(x|y) (%) | bits/dim |")
    print("|---|---|---|---|---|")
    for r in rows:
        bayes = r["accuracy_likelihood_rule"]
        print(
            f"| {r['sigma']:g} | {r['weight']:g} | {100 * r['accuracy']:.2f} ± "
            f"{100 * r['accuracy_se']:.2f} | "
            f"{'—' if bayes is None else f'{100 * bayes:.2f}'} | "
            f"{r['bits_per_dim']:.3f} ± {r['bits_per_dim_se']:.3f} |"
        )


if __name__ == "__main__":
    main()
