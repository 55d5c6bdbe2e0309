"""``python -m paper_figures [--only NAME ...] [--out DIR]``: regenerate the registered figures."""

from __future__ import annotations

import argparse
import time

import matplotlib

from .paths import OUTPUT_ROOT
from .registry import FIGURES, generate


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m paper_figures",
        description="Regenerate the paper's figures from the package code "
        f"(registered: {', '.join(FIGURES)}).",
    )
    p.add_argument("--only", action="append", choices=sorted(FIGURES), metavar="NAME",
                   help="regenerate only this figure (repeatable); default: all")
    p.add_argument("--out", default=None, metavar="DIR",
                   help=f"output root, one folder per figure (default: {OUTPUT_ROOT})")
    return p


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    matplotlib.use("Agg")
    for name in args.only or list(FIGURES):
        t0 = time.perf_counter()
        files = generate(name, root=args.out)
        print(f"{name}: {len(files)} files in {files[0].parent} ({time.perf_counter() - t0:.1f} s)")
    return 0
