"""``python -m paper_figures [--only NAME ...] [--out DIR] [--data-root DIR] [--quick] [--retrain]``.

Regenerates the registered figures and tables. The Section 6 items read the committed trained runs
(``artifacts/runs``) and the test sets under the data root (``--data-root``, else
``$CGM_DATA_ROOT``); the Section 3 items need neither. ``--retrain`` first trains every run again
(:mod:`paper_figures.retrain`) into ``--runs-dir`` (default ``./runs``; interrupted runs resume)
and then regenerates the figures from there. ``--quick`` (or ``CGM_QUICK=1``) uses small sample
sizes, as the tests and notebooks do; the outputs say whether they are quick. The options and the
environment become one :class:`~paper_figures.context.Context`, passed to every item; the
environment is read, never written.
"""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import matplotlib

from flows.arguments import ArgumentParser, existing_dir, positive_int

from .context import DATA_ROOT_ENV, QUICK_ENV, Context, DataRootError
from .paths import OUTPUT_ROOT
from .registry import FIGURES, generate


def _parser() -> ArgumentParser:
    p = ArgumentParser(
        prog="python -m paper_figures",
        description="Regenerate the paper's figures and tables from the package code "
        f"(registered: {', '.join(FIGURES)}).",
    )
    p.add_argument(
        "--only",
        action="append",
        choices=sorted(FIGURES),
        metavar="NAME",
        help="regenerate only this figure (repeatable); default: all",
    )
    p.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help=f"output root, one folder per figure (default: {OUTPUT_ROOT}; required with --quick)",
    )
    p.add_argument(
        "--data-root",
        type=existing_dir,
        default=None,
        metavar="DIR",
        help=f"folder holding MNIST/ and cifar10-jpeg/ (default: ${DATA_ROOT_ENV})",
    )
    p.add_argument(
        "--quick", action="store_true", help=f"small sample sizes (same as {QUICK_ENV}=1)"
    )
    p.add_argument(
        "--retrain",
        action="store_true",
        help="train every run again first (resuming interrupted ones), then regenerate",
    )
    p.add_argument(
        "--runs-dir",
        default="runs",
        metavar="DIR",
        help="where --retrain trains (default: ./runs; never the committed artifacts)",
    )
    p.add_argument(
        "--threads", type=positive_int, default=1, help="threads per training run (--retrain)"
    )
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    context = Context.from_environment()
    if args.data_root is not None:
        context = replace(context, data_root=Path(args.data_root).resolve())
    if args.quick:
        context = replace(context, quick=True)
    if context.quick and args.out is None:
        parser.error(
            f"--quick (or {QUICK_ENV}=1) needs --out: quick-mode numbers must not overwrite the "
            f"committed outputs in {OUTPUT_ROOT}"
        )
    matplotlib.use("Agg")
    if args.retrain:
        from .retrain import retrain

        try:
            data_root = context.require_data_root()
        except DataRootError as error:
            parser.error(f"--retrain needs the datasets: {error}")
        runs = Path(args.runs_dir).resolve()
        retrain(runs, data_root, threads=args.threads)
        context = replace(context, runs_root=runs)
    for name in args.only or list(FIGURES):
        t0 = time.perf_counter()
        files = generate(name, context, root=args.out)
        print(f"{name}: {len(files)} files in {files[0].parent} ({time.perf_counter() - t0:.1f} s)")
    return 0
