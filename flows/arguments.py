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
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import NoReturn

__all__ = [
    "ArgumentParser",
    "Range",
    "option",
    "check_fields",
    "add_options",
    "POSITIVE_INT",
    "NONNEGATIVE_INT",
    "FINITE_FLOAT",
    "POSITIVE_FLOAT",
    "NONNEGATIVE_FLOAT",
    "PROBABILITY",
    "UNIT_FRACTION",
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


@dataclass(frozen=True)
class Range:
    """A numeric range: ``kind`` (int or float, floats always finite) between ``low`` and ``high``.

    One object serves both sides of a setting: :meth:`check` validates a value given through the
    API (``ValueError`` naming the field), :meth:`parse` converts and validates command-line text
    (``ArgumentTypeError``, which argparse prefixes with the option's name).

    Example::

        >>> POSITIVE_INT.parse("3"), PROBABILITY.describe()
        (3, 'a number in (0, 1]')
    """

    kind: type
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False

    def describe(self) -> str:
        noun = "an integer" if self.kind is int else "a finite number"
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            noun = "a number" if self.kind is float else noun
            return f"{noun} in {left}{self.low:g}, {self.high:g}{right}"
        if self.low is not None:
            return f"{noun} {'>' if self.low_open else '>='} {self.low:g}"
        if self.high is not None:
            return f"{noun} {'<' if self.high_open else '<='} {self.high:g}"
        return noun

    def holds(self, value: object) -> bool:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        if self.kind is int and not isinstance(value, int):
            return False
        if not math.isfinite(value):
            return False
        if self.low is not None and (value <= self.low if self.low_open else value < self.low):
            return False
        if self.high is not None and (value >= self.high if self.high_open else value > self.high):
            return False
        return True

    def check(self, name: str, value: object) -> None:
        """``ValueError`` naming ``name`` unless ``value`` lies in the range."""
        if not self.holds(value):
            raise ValueError(f"{name} must be {self.describe()}, got {value!r}")

    def parse(self, text: str) -> int | float:
        """Command-line text → a value in the range (``ArgumentTypeError`` otherwise)."""
        try:
            value = self.kind(text)
        except ValueError:
            value = None
        if value is None or not self.holds(value):
            raise argparse.ArgumentTypeError(f"must be {self.describe()}, got {text!r}")
        return value

    def __call__(self, text: str) -> int | float:  # argparse calls its ``type`` with the text
        return self.parse(text)


POSITIVE_INT = Range(int, low=1)
NONNEGATIVE_INT = Range(int, low=0)
FINITE_FLOAT = Range(float)
POSITIVE_FLOAT = Range(float, low=0, low_open=True)
NONNEGATIVE_FLOAT = Range(float, low=0)
PROBABILITY = Range(float, low=0, high=1, low_open=True)
UNIT_FRACTION = Range(float, low=0, high=1, high_open=True)

positive_int = POSITIVE_INT.parse
nonnegative_int = NONNEGATIVE_INT.parse
finite_float = FINITE_FLOAT.parse
positive_float = POSITIVE_FLOAT.parse
nonnegative_float = NONNEGATIVE_FLOAT.parse
probability = PROBABILITY.parse
unit_fraction = UNIT_FRACTION.parse


def option(
    default: object,
    help: str,
    range: Range | None = None,
    choices: tuple | None = None,
    cli: bool = True,
):
    """A dataclass field that is also a command-line option (:func:`add_options`).

    ``default`` is written here only; ``range`` validates it both ways (:func:`check_fields`
    and the option's argparse type); ``cli=False`` keeps the field off the command line.
    """
    metadata = {"help": help, "range": range, "choices": choices, "cli": cli}
    return field(default=default, metadata=metadata)


def check_fields(instance: object) -> None:
    """Validate every field of a dataclass made with :func:`option` (``None`` always passes)."""
    for item in fields(instance):
        value = getattr(instance, item.name)
        if value is None:
            continue
        checker = item.metadata.get("range")
        if checker is not None:
            checker.check(item.name, value)
        choices = item.metadata.get("choices")
        if choices is not None and value not in choices:
            raise ValueError(f"{item.name} must be one of {list(choices)}, got {value!r}")


def add_options(parser: argparse.ArgumentParser, cls: type, skip: tuple[str, ...] = ()) -> None:
    """One ``--field-name`` option per :func:`option` field of ``cls``, typed and documented.

    Booleans become flags that set the opposite of their default (``--name`` for a False default,
    ``--no-name`` for a True one). The parser should use ``argument_default=argparse.SUPPRESS``,
    so that only given options reach the namespace and every default stays the dataclass's.
    """
    for item in fields(cls):
        if item.name in skip or not item.metadata.get("cli", False):
            continue
        flag = item.name.replace("_", "-")
        default = item.default
        help_text = item.metadata["help"]
        if isinstance(default, bool):
            name = f"--no-{flag}" if default else f"--{flag}"
            action = "store_false" if default else "store_true"
            parser.add_argument(name, dest=item.name, action=action, help=help_text)
            continue
        shown = "" if default is None else f" (default: {default})"
        kind = item.metadata.get("range") or str
        parser.add_argument(
            f"--{flag}", type=kind, choices=item.metadata.get("choices"), help=help_text + shown
        )


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
