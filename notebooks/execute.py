"""Execute the notebooks top to bottom in one fresh kernel each, and save them in place.

Usage (from the repository root or anywhere)::

    CGM_DATA_ROOT=/path/to/data python notebooks/execute.py                 # every notebook
    python notebooks/execute.py section2_flows --data-root /path/to/data   # some, by name
    python notebooks/execute.py section2_flows --quick                      # CGM_QUICK=1 trial

The committed notebooks hold the *full* run, so a normal run unsets ``CGM_QUICK`` and writes the
executed notebook back in place. ``--quick`` sets ``CGM_QUICK=1`` and never touches the committed
file: it only reports the time (what the test suite's guard measures), or writes the executed copy
into ``--out DIR``. Every kernel runs with ``notebooks/`` as its working directory. A notebook that
fails is not written in place; its partly executed copy goes to a temporary folder, named in the
message. Prints each notebook's wall time; exits with status 1 if any failed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

NOTEBOOKS_DIR = Path(__file__).resolve().parent
QUICK_ENV = "CGM_QUICK"
DATA_ROOT_ENV = "CGM_DATA_ROOT"


def resolve(names: list[str]) -> list[Path]:
    """Notebook paths for names such as ``section2_flows``, ``section2_flows.ipynb`` or a path."""
    if not names:
        return sorted(NOTEBOOKS_DIR.glob("*.ipynb"))
    paths = []
    for name in names:
        candidate = Path(name)
        if not candidate.is_file():
            stem = candidate.name.removesuffix(".ipynb")
            candidate = NOTEBOOKS_DIR / f"{stem}.ipynb"
        if not candidate.is_file():
            available = ", ".join(p.stem for p in sorted(NOTEBOOKS_DIR.glob("*.ipynb")))
            raise SystemExit(f"no notebook {name!r} in {NOTEBOOKS_DIR} (available: {available})")
        paths.append(candidate.resolve())
    return paths


def execute(nb: nbformat.NotebookNode, timeout: int | None) -> None:
    """Run ``nb`` in place in a fresh kernel whose working directory is ``notebooks/``.

    Raises nbclient's errors (a failing cell, a cell over ``timeout`` seconds, a dead kernel);
    ``nb`` then holds the outputs up to the failure. Per-cell timing metadata is not recorded
    (and stale timings are dropped), so re-executing changes outputs only.
    """
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name=nb.metadata.get("kernelspec", {}).get("name", "python3"),
        resources={"metadata": {"path": str(NOTEBOOKS_DIR)}},
        record_timing=False,
    )
    client.execute()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebook names (default: all in notebooks/)")
    parser.add_argument("--quick", action="store_true", help="CGM_QUICK=1; never writes in place")
    parser.add_argument("--out", type=Path, help="with --quick: folder for the executed copies")
    parser.add_argument("--data-root", help=f"sets {DATA_ROOT_ENV} for the kernels")
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell (default 1800)")
    args = parser.parse_args(argv)
    if args.out is not None and not args.quick:
        parser.error("--out is for --quick runs; a full run writes the notebooks in place")

    if args.quick:
        os.environ[QUICK_ENV] = "1"
    else:
        os.environ.pop(QUICK_ENV, None)
    if args.data_root is not None:
        os.environ[DATA_ROOT_ENV] = str(Path(args.data_root).expanduser().resolve())
    if not os.environ.get(DATA_ROOT_ENV):
        print(f"warning: {DATA_ROOT_ENV} is unset; notebooks that need data will fail", flush=True)

    failed = []
    for path in resolve(args.names):
        mode = "quick" if args.quick else "full"
        print(f"{path.name}: executing ({mode}) ...", flush=True)
        start = time.perf_counter()
        nb = nbformat.read(path, as_version=4)
        try:
            execute(nb, args.timeout)
        except (CellExecutionError, CellTimeoutError, DeadKernelError) as error:
            seconds = time.perf_counter() - start
            partial = Path(tempfile.mkdtemp(prefix="notebook-failed-")) / path.name
            nbformat.write(nb, partial)
            print(
                f"{path.name}: FAILED after {seconds:.1f} s (partly executed copy: {partial})\n"
                f"{error}",
                file=sys.stderr,
            )
            failed.append(path.name)
            continue
        seconds = time.perf_counter() - start
        if args.quick:
            where = "not saved"
            if args.out is not None:
                args.out.mkdir(parents=True, exist_ok=True)
                nbformat.write(nb, args.out / path.name)
                where = f"saved to {args.out / path.name}"
        else:
            nbformat.write(nb, path)
            where = "saved in place"
        print(f"{path.name}: {seconds:.1f} s ({mode}, {where})", flush=True)

    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
