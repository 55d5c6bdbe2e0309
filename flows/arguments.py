"""Command-line argument types and the parser that every CLI of the package uses.

A bad argument gets one line on stderr, ``PROG: error: argument --NAME: <what is wrong>``, and exit
status 2; never a traceback, never a silent fallback. The type functions below raise
:class:`argparse.ArgumentTypeError`, so argparse prefixes the argument's name; checks that need
several arguments (or the file system) call :meth:`ArgumentParser.error` with the name in the text.

Example::

    >>> parser = ArgumentParser(prog="demo")
    >>> _ = parser.add_argument("--eps", type=nonnegative_float)
    >>> parser.parse_args(["--eps", "0.5"]).eps
    0.5
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from pathlib import Path
from typing import NoReturn

__all__ = [
    "ArgumentParser",
    "existing_dir",
    "finite_float",
    "nonnegative_float",
    "nonnegative_int",
    "positive_float",
    "positive_int",
    "probability",
    "unit_fraction",
    "resolve_data_root",
    "writable_dir",
    "inside_artifacts",
    "output_path",
    "fail",
    "ARTIFACTS_ROOT",
    "DATA_ROOT_ENV",
]

#: The environment variable naming the folder that holds the datasets (see :func:`resolve_data_root`).
DATA_ROOT_ENV = "CGM_DATA_ROOT"


class ArgumentParser(argparse.ArgumentParser):
    """``argparse.ArgumentParser`` whose errors are one line (no usage block) and exit status 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _number(text: str, kind: type) -> float | int:
    try:
        value = kind(text)
    except ValueError:
        noun = "an integer" if kind is int else "a number"
        raise argparse.ArgumentTypeError(f"must be {noun}, got {text!r}") from None
    if kind is float and not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"must be a finite number, got {text!r}")
    return value


def positive_int(text: str) -> int:
    """An integer ≥ 1."""
    value = _number(text, int)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an integer >= 1, got {text!r}")
    return value


def nonnegative_int(text: str) -> int:
    """An integer ≥ 0."""
    value = _number(text, int)
    if value < 0:
        raise argparse.ArgumentTypeError(f"must be an integer >= 0, got {text!r}")
    return value


def finite_float(text: str) -> float:
    """Any finite number (no NaN, no ±inf)."""
    return _number(text, float)


def positive_float(text: str) -> float:
    """A finite number > 0."""
    value = _number(text, float)
    if not value > 0:
        raise argparse.ArgumentTypeError(f"must be a finite number > 0, got {text!r}")
    return value


def nonnegative_float(text: str) -> float:
    """A finite number ≥ 0."""
    value = _number(text, float)
    if not value >= 0:
        raise argparse.ArgumentTypeError(f"must be a finite number >= 0, got {text!r}")
    return value


def probability(text: str) -> float:
    """A number in (0, 1] (a quantile or a recall)."""
    value = _number(text, float)
    if not 0 < value <= 1:
        raise argparse.ArgumentTypeError(f"must be in (0, 1], got {text!r}")
    return value


def unit_fraction(text: str) -> float:
    """A number in [0, 1)."""
    value = _number(text, float)
    if not 0 <= value < 1:
        raise argparse.ArgumentTypeError(f"must be in [0, 1), got {text!r}")
    return value


def existing_dir(text: str) -> Path:
    """A folder that exists."""
    path = Path(text)
    if not path.is_dir():
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a folder" if path.exists() else f"{text!r} does not exist"
        )
    return path


def writable_dir(path: Path) -> str | None:
    """Why ``path`` cannot be created or written as a folder, or None when it can.

    Creates the folder (and its parents) when it does not exist yet.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        return f"cannot create folder {str(path)!r}: {error.strerror or error}"
    if not path.is_dir():
        return f"{str(path)!r} exists and is not a folder"
    if not os.access(path, os.W_OK | os.X_OK):
        return f"folder {str(path)!r} is not writable"
    return None


def resolve_data_root(given: str | Path | None, recorded: str | Path | None = None) -> Path | None:
    """Where the datasets are: ``given`` (``--data-root``), else ``$CGM_DATA_ROOT``, else ``recorded``.

    ``recorded`` is the root a run was trained with (its ``config.json``); relative recorded paths
    are relative to the folder the training was started from, so they are the last resort.
    """
    for candidate in (given, os.environ.get(DATA_ROOT_ENV) or None, recorded):
        if candidate is not None:
            return Path(candidate)
    return None


#: The package's committed artifacts (trained runs): results are never written into it by default.
ARTIFACTS_ROOT = Path(__file__).resolve().parents[1] / "artifacts"


def inside_artifacts(path: str | Path) -> bool:
    """Whether ``path`` lies inside the package's committed :data:`ARTIFACTS_ROOT`."""
    return Path(path).resolve().is_relative_to(ARTIFACTS_ROOT)


def output_path(
    prog: str, given: Path | None, run_dir: Path, default: str, option: str = "--output"
) -> Path:
    """Where a CLI writes its JSON result for ``run_dir``; exits with a one-line error if it can't.

    ``given`` must end in ``.json`` (never a checkpoint or another file of the run) and lie in a
    writable folder. Without it the result goes to ``run_dir / default``, unless the run is one of
    the package's committed artifacts: those are never written into, so ``--output`` is required.
    """
    if given is None:
        if inside_artifacts(run_dir):
            fail(
                prog,
                f"{option} is required: {run_dir} is one of the package's committed runs, and "
                "results are not written into the package's artifacts",
            )
        given = run_dir / default
    elif given.suffix != ".json":
        fail(prog, f"{option} must be a .json file, got {str(given)!r}")
    if given.is_dir():
        fail(prog, f"{option} {str(given)!r} is a folder; give a .json file path")
    problem = writable_dir(given.parent)
    if problem is not None:
        fail(prog, f"{option}: {problem}")
    return given


def fail(prog: str, message: str) -> NoReturn:
    """Print ``PROG: error: MESSAGE`` on stderr and exit with status 2 (runtime input errors)."""
    print(f"{prog}: error: {message}", file=sys.stderr)
    raise SystemExit(2)
