"""Execute the notebooks top to bottom in one fresh kernel each, and save them in place.

Usage (from the repository root or anywhere)::

    CGM_DATA_ROOT=/path/to/data python notebooks/execute.py                 # every notebook
    python notebooks/execute.py section2_flows --data-root /path/to/data   # some, by name
    python notebooks/execute.py section2_flows --quick                      # CGM_QUICK=1 trial

The committed notebooks hold the *full* run, so a normal run gives the kernels no ``CGM_QUICK`` and
writes the executed notebook back in place. ``--quick`` gives them ``CGM_QUICK=1`` and never touches
the committed file: it only reports the time (what the test suite's guard measures), or writes the
executed copy into ``--out DIR``. The data root (``--data-root``, else ``$CGM_DATA_ROOT``) reaches
the kernels as an absolute ``CGM_DATA_ROOT``, since every kernel runs with ``notebooks/`` as its
working directory. These settings go into the kernels' environment only; this process's own
environment is never written. A notebook that fails is not written in place; its partly executed
copy goes to a temporary folder, named in the message. Prints each notebook's wall time; exits with
status 1 if any failed.
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


def kernel_environment(
    quick: bool, data_root: str | None, base: dict[str, str] | None = None
) -> dict[str, str]:
    """The kernels' environment: ``base`` (default a copy of :data:`os.environ`) with
    ``CGM_QUICK=1`` when ``quick`` (removed otherwise) and ``CGM_DATA_ROOT`` made absolute."""
    env = dict(os.environ if base is None else base)
    env.pop(QUICK_ENV, None)
    if quick:
        env[QUICK_ENV] = "1"
    root = data_root if data_root is not None else env.get(DATA_ROOT_ENV)
    if root:
        env[DATA_ROOT_ENV] = str(Path(root).expanduser().resolve())
    return env


def execute(nb: nbformat.NotebookNode, timeout: int | None, env: dict[str, str]) -> None:
    """Run ``nb`` in place in a fresh kernel whose working directory is ``notebooks/`` and whose
    environment is ``env``.

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
    client.execute(env=env)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("names", nargs="*", help="notebook names (default: all in notebooks/)")
    parser.add_argument(
        "--quick", action="store_true", help="kernels get CGM_QUICK=1; never writes in place"
    )
    parser.add_argument("--out", type=Path, help="with --quick: folder for the executed copies")
    parser.add_argument(
        "--data-root", help=f"the kernels' {DATA_ROOT_ENV} (default: this process's)"
    )
    parser.add_argument("--timeout", type=int, default=1800, help="seconds per cell (default 1800)")
    args = parser.parse_args(argv)
    if args.out is not None and not args.quick:
        parser.error("--out is for --quick runs; a full run writes the notebooks in place")

    env = kernel_environment(args.quick, args.data_root)
    if not env.get(DATA_ROOT_ENV):
        print(f"warning: {DATA_ROOT_ENV} is unset; notebooks that need data will fail", flush=True)

    failed = []
    for path in resolve(args.names):
        mode = "quick" if args.quick else "full"
        print(f"{path.name}: executing ({mode}) ...", flush=True)
        start = time.perf_counter()
        nb = nbformat.read(path, as_version=4)
        try:
            execute(nb, args.timeout, env)
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
