"""The robustness report of a conditional generative model from the command line.

``python -m flows.robustness --model package.module:factory --out DIR --eps E`` imports
``package.module`` (from the current folder or the installed packages), calls ``factory()`` and
runs :func:`flows.robustness.evaluate` on what it returns, writing ``DIR/report.json``
(the versioned schema, :mod:`flows.robustness.schema`), ``DIR/report.md``, ``DIR/report.html``
(figures embedded) and ``DIR/figures/*.png``, and prints a summary (flags, leaderboard row).

The model. ``factory()`` returns either ``(model, test_set)`` or a model alone (then ``--data``
is needed). The model is a :class:`~flows.robustness.ConditionalGenerativeModel`
(``class_log_likelihoods(x, generator=None) -> (B, C)`` in nats, ``num_classes``, ``num_dims``;
:func:`flows.robustness.wrap` turns a plain callable into one); the test set is ``(x, y)`` or
``{"x": x, "y": y}``: inputs ``(N, ...)`` within the model's bounds and integer labels ``(N,)``.
For example, a file ``mymodels.py`` in the current folder::

    def two_gaussians():
        model = flows.robustness.TwoGaussianModel()
        return model, model.sample(1000)

and ``python -m flows.robustness --model mymodels:two_gaussians --eps 0.2 --out report/``.

``--data`` gives the test set instead: ``package.module:factory`` (``factory()`` returns
``(x, y)``) or a ``.pt`` file holding ``{"x": x, "y": y}`` or ``(x, y)`` (read with
``torch.load(..., weights_only=True)``: tensors only, no code runs).

Resuming. Every finished stage is kept in ``DIR/stages/``; the same command started again after
a crash continues from there. A command with other options, model or test set stops with a
one-line error naming the option, unless ``--restart`` discards the stages. ``--stages`` runs a
subset (with what it depends on), e.g. ``--stages clean,detector``.

Errors in the arguments (a module that does not import, a factory that is not callable or
fails, a model that fails :func:`~flows.robustness.check_model`'s required members, a bad test
set) are one line on stderr and exit status 2 (:mod:`flows.arguments`). Every
:class:`~flows.robustness.ReportConfig` field is an option (``--help``); ``--threads`` sets
torch's intra-op threads (1 is fastest on a busy 2-core CPU).
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import torch

from flows import arguments
from flows.robustness.protocol import check_model
from flows.robustness.report import (
    STAGES,
    ReportConfig,
    RobustnessError,
    _test_tensors,
    evaluate,
)

PROG = "python -m flows.robustness"

__all__ = ["PROG", "build_parser", "load_callable", "main"]


def _stage_list(text: str) -> list[str]:
    """``--stages``: comma-separated names of :data:`~flows.robustness.report.STAGES`."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in STAGES]
    if unknown or not names:
        raise argparse.ArgumentTypeError(
            f"must be comma-separated stages among {', '.join(STAGES)}, got {text!r}"
        )
    return names


def build_parser() -> arguments.ArgumentParser:
    """The CLI's parser (one-line errors, exit status 2)."""
    parser = arguments.ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n")[0],
        argument_default=argparse.SUPPRESS,  # only what is given; defaults are ReportConfig's
    )
    parser.add_argument(
        "--model",
        required=True,
        help="package.module:factory; factory() returns (model, test_set) or a model",
    )
    parser.add_argument(
        "--data",
        default=None,
        help="the test set: package.module:factory returning (x, y), or a .pt file with "
        "{'x': x, 'y': y} (default: the one --model's factory returns)",
    )
    parser.add_argument("--out", type=Path, required=True, help="folder of the report (created)")
    parser.add_argument(
        "--stages",
        type=_stage_list,
        default=None,
        help=f"comma-separated subset of {', '.join(STAGES)} (default: all)",
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        default=False,
        help="discard the finished stages in OUT/stages and start afresh",
    )
    parser.add_argument(
        "--threads",
        type=arguments.positive_int,
        default=None,
        help="torch intra-op threads (default: torch's)",
    )
    parser.add_argument("--quiet", action="store_true", default=False, help="no progress bars")
    arguments.add_options(parser, ReportConfig)
    return parser


def load_callable(spec: str, option: str, parser: arguments.ArgumentParser) -> Callable[[], Any]:
    """``package.module:name`` → the callable it names; a one-line error naming ``option``
    otherwise."""
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        parser.error(f"argument {option}: must be package.module:factory, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        parser.error(f"argument {option}: cannot import {module_name!r}: {_one_line(error)}")
    except Exception as error:  # the module's own code failed
        parser.error(
            f"argument {option}: importing {module_name!r} raised {type(error).__name__}: "
            f"{_one_line(error)}"
        )
    target: Any = module
    for part in attribute.split("."):
        if not hasattr(target, part):
            parser.error(
                f"argument {option}: module {module_name!r} has no attribute {attribute!r}"
            )
        target = getattr(target, part)
    if not callable(target):
        parser.error(
            f"argument {option}: {spec} is not callable (a {type(target).__name__}); name a "
            "function that returns it"
        )
    return target


def _call(factory: Callable[[], Any], spec: str, option: str, parser) -> Any:
    try:
        return factory()
    except Exception as error:
        parser.error(
            f"argument {option}: {spec}() raised {type(error).__name__}: {_one_line(error)}"
        )


def _load_data(spec: str, parser: arguments.ArgumentParser) -> Any:
    """``--data``: a ``.pt`` file or a factory."""
    if spec.endswith(".pt"):
        path = Path(spec)
        if not path.is_file():
            parser.error(f"argument --data: {spec!r} does not exist")
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as error:
            parser.error(
                f"argument --data: cannot read {spec!r} with torch.load(weights_only=True): "
                f"{_one_line(error)}"
            )
    return _call(load_callable(spec, "--data", parser), spec, "--data", parser)


def main(argv: Sequence[str] | None = None) -> dict:
    """The CLI (module docstring); returns the summary it printed."""
    parser = build_parser()
    given = vars(parser.parse_args(argv))
    model_spec, data_spec, out = given.pop("model"), given.pop("data"), given.pop("out")
    stages, restart = given.pop("stages"), given.pop("restart")
    threads, quiet = given.pop("threads"), given.pop("quiet")
    try:
        config = ReportConfig(**given)
    except ValueError as error:
        parser.error(_one_line(error))
    wanted = stages if stages is not None else list(STAGES)
    if config.eps is None and any(s in wanted for s in ("attacks", "calibration", "leaderboard")):
        parser.error("argument --eps: the attacks need an L2 budget: pass --eps E")
    problem = arguments.writable_dir(out)
    if problem is not None:
        parser.error(f"argument --out: {problem}")
    if threads is not None:
        torch.set_num_threads(threads)

    made = _call(load_callable(model_spec, "--model", parser), model_spec, "--model", parser)
    test_set = None
    if isinstance(made, tuple) and len(made) == 2 and not isinstance(made[0], torch.Tensor):
        made, test_set = made
    if data_spec is not None:
        test_set = _load_data(data_spec, parser)
    if test_set is None:
        parser.error(
            f"argument --data: {model_spec}() returned a model only: pass --data with the test set"
        )
    try:
        x, y = _test_tensors(test_set)
    except ValueError as error:
        source = "--data" if data_spec is not None else "--model"
        parser.error(f"argument {source}: {_one_line(error)}")
    try:
        check_model(made, x[: config.check_n], seed=config.noise_seed, warn=False)
    except (TypeError, ValueError) as error:
        parser.error(f"argument --model: the model fails check_model: {_one_line(error)}")

    started = time.perf_counter()
    try:
        report = evaluate(
            made,
            (x, y),
            config,
            out=out,
            stages=stages,
            restart=restart,
            progress=not quiet,
        )
    except RobustnessError as error:
        arguments.fail(PROG, _one_line(error))
    summary = {
        "flags": report.flags,
        "leaderboard": None if report.leaderboard is None else report.leaderboard["row"],
        "stages": report["stages"],
        "seconds": time.perf_counter() - started,
        "outputs": [str(out / name) for name in ("report.json", "report.md", "report.html")],
    }
    print(json.dumps(summary, indent=2))
    return summary


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


if __name__ == "__main__":
    main(sys.argv[1:])
