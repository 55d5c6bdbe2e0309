"""Rows per model call: how fast a GLOW encodes large batches in chunks (``model_batch``).

An attack batch of ``B`` inputs under ``K`` EOT or decision draws asks the model for ``K·B``
rows at once (400 for the report's 50 inputs × 8 EOT draws). On a CPU one call of that many rows
is slower per row than several calls of fewer: :class:`flows.attacks.ThreatModel` splits calls
into chunks of at most ``model_batch`` rows. This benchmark times, for one committed run, the
forward pass (:meth:`flows.ConditionalGlow.class_scores_and_log_likelihoods`, no gradient) and
the forward pass with the input gradient of the log-likelihoods, over ``--rows`` random inputs in
the model range split into chunks of each ``--chunks`` size, with ``--threads`` intra-op threads.
Each measurement repeats the call for ``--seconds`` of wall time after one warm-up call and
reports milliseconds of wall time per row (run it on an idle machine: ``benchmarks/model_batch.md``
records the runs).

Usage::

    python benchmarks/model_batch.py --run artifacts/runs/cpu-mnist-split --threads 1 2 \\
        --output benchmarks/model_batch_mnist.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import torch

import flows


def per_row_ms(model, x: torch.Tensor, chunk: int, gradient: bool, seconds: float) -> float:
    """Wall milliseconds per row of one pass over ``x`` in chunks of ``chunk`` rows."""

    def once():
        if not gradient:
            with torch.no_grad():
                for part in x.split(chunk):
                    model.class_scores_and_log_likelihoods(part)
            return
        xg = x.clone().requires_grad_(True)
        outputs = [model.class_scores_and_log_likelihoods(part)[1] for part in xg.split(chunk)]
        torch.autograd.grad(torch.cat(outputs).sum(), xg)

    return ms_per_row(once, len(x), seconds)


def ms_per_row(once, rows: int, seconds: float) -> float:
    """Wall milliseconds per row of ``once()`` (a pass over ``rows`` rows), repeated for
    ``seconds`` after one warm-up call."""
    once()
    start, calls = time.perf_counter(), 0
    while time.perf_counter() - start < seconds:
        once()
        calls += 1
    return 1000 * (time.perf_counter() - start) / calls / rows


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run", required=True, help="a run folder (flows.load)")
    parser.add_argument("--rows", type=int, default=400, help="rows per pass (default 400)")
    parser.add_argument(
        "--chunks", type=int, nargs="+", default=[400, 200, 128, 64, 32], help="chunk sizes"
    )
    parser.add_argument("--threads", type=int, nargs="+", default=[1], help="intra-op threads")
    parser.add_argument("--seconds", type=float, default=4.0, help="wall seconds per measurement")
    parser.add_argument("--output", help="write the results here (JSON)")
    args = parser.parse_args(argv)
    model = flows.load(args.run).eval()
    gen = torch.Generator().manual_seed(0)
    x = torch.rand((args.rows, *model.config.data_shape), generator=gen) - 0.5
    results = {
        "run": args.run,
        "rows": args.rows,
        "data_shape": list(model.config.data_shape),
        "torch": torch.__version__,
        "machine": platform.processor() or platform.machine(),
        "cpus": os.cpu_count(),
        "load_average_before": list(os.getloadavg()),
        "ms_per_row": [],
    }
    for threads in args.threads:
        torch.set_num_threads(threads)
        for chunk in args.chunks:
            row = {"threads": threads, "chunk": chunk}
            for name, gradient in (("forward", False), ("forward_backward", True)):
                row[name] = round(per_row_ms(model, x, chunk, gradient, args.seconds), 3)
            results["ms_per_row"].append(row)
            print(json.dumps(row), flush=True)
    results["load_average_after"] = list(os.getloadavg())
    if args.output:
        with open(args.output, "w") as handle:
            json.dump(results, handle, indent=1)
            handle.write("\n")
    return results


if __name__ == "__main__":
    main()
