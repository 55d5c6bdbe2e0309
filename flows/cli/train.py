"""``python -m flows.train --preset P --variant V --out RUN_DIR``: train a class-conditional GLOW.

The options are :class:`flows.training.TrainConfig`'s fields (``--help`` lists them with their
defaults and ranges); ``--resume`` continues the run in ``--out`` from its checkpoint, exactly, and
``--overwrite`` starts afresh in a folder that holds a run or other files. See
:func:`flows.training.train` for the run-folder rules.
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from pathlib import Path

from flows import arguments
from flows.checkpoint import CHECKPOINT_NAME, CheckpointError
from flows.data import DatasetNotFoundError
from flows.presets import PRESETS
from flows.training import (
    CONFIG_NAME,
    LOCK_NAME,
    RESUMABLE_CHANGES,
    RunFolderError,
    TrainConfig,
    train,
)
from flows.variants import VARIANTS

PROG = "python -m flows.train"


def build_parser() -> arguments.ArgumentParser:
    parser = arguments.ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n")[0],
        argument_default=argparse.SUPPRESS,  # only what is given; defaults are TrainConfig's
    )
    parser.add_argument("--preset", choices=sorted(PRESETS))
    parser.add_argument(
        "--variant",
        "--prior",
        dest="prior",
        choices=sorted(VARIANTS),
        help="the training setting: prior family + objective (flows.VARIANTS); --prior is the "
        "old spelling",
    )
    parser.add_argument("--out", required=True, help="run folder (new or empty, unless --resume)")
    arguments.add_options(parser, TrainConfig)
    parser.add_argument(
        "--resume", action="store_true", help="continue the run in --out from its checkpoint"
    )
    parser.add_argument(
        "--overwrite",
        action="store_true",
        help="start afresh in --out even though it holds a run or other files (run files are "
        "replaced, other files left alone)",
    )
    return parser


def parse_args(argv: Sequence[str] | None = None) -> TrainConfig:
    """Parse the command line into a :class:`TrainConfig` (argument errors exit with status 2).

    With ``--resume``, the run's saved ``config.json`` is used; settings given again must equal
    the saved ones, except :data:`flows.training.RESUMABLE_CHANGES`, which may change.
    """
    return _parse(build_parser(), argv)[0]


def _parse(
    parser: arguments.ArgumentParser, argv: Sequence[str] | None
) -> tuple[TrainConfig, bool, bool]:
    given = vars(parser.parse_args(argv))
    resume, overwrite = given.pop("resume", False), given.pop("overwrite", False)
    out = Path(given["out"])
    if resume and overwrite:
        parser.error("--resume and --overwrite exclude each other")
    if resume:
        values = _saved_settings(parser, out, given)
    else:
        if "preset" not in given or "prior" not in given:
            parser.error("--preset and --variant are required (unless --resume)")
        if int(os.environ.get("RANK", "0")) == 0:  # under torchrun, rank 0 owns the folder
            _check_new_out(parser, out, overwrite)
        values = given
        root = arguments.resolve_data_root(given.get("data_root"))
        values["data_root"] = None if root is None else str(root)
    try:
        config = TrainConfig(**values)
    except (TypeError, ValueError) as error:
        parser.error(str(error))
    return config, resume, overwrite


def _saved_settings(parser: arguments.ArgumentParser, out: Path, given: dict) -> dict:
    """The run's saved settings, with the given ones that may change; others must be equal."""
    saved_path = out / CONFIG_NAME
    if not (out / CHECKPOINT_NAME).exists() or not saved_path.exists():
        parser.error(f"--resume: no checkpoint and config.json in {out}")
    try:
        values = json.loads(saved_path.read_text())["train"]
    except (ValueError, KeyError, TypeError) as error:
        parser.error(f"--resume: {saved_path} is not a run configuration ({error})")
    changed = [
        f"--{'variant' if name == 'prior' else name.replace('_', '-')} {value} "
        f"(the run has {values.get(name)})"
        for name, value in given.items()
        if name not in RESUMABLE_CHANGES and values.get(name) != value
    ]
    if changed:
        parser.error(
            f"--resume keeps the run's settings, but {'; '.join(changed)} differ. Only "
            "--epochs, --device, --workers, --threads and --data-root may change; start a new "
            "run in another --out to change the others"
        )
    values.update({key: given[key] for key in RESUMABLE_CHANGES if key in given})
    values["out"] = str(out)
    return values


def _check_new_out(parser: arguments.ArgumentParser, out: Path, overwrite: bool) -> None:
    """``--out`` for a new run: writable, and empty or new unless ``--overwrite``."""
    if out.exists() and not out.is_dir():
        parser.error(f"--out {str(out)!r} exists and is not a folder")
    if out.is_dir() and not overwrite:
        if (out / CHECKPOINT_NAME).exists():
            parser.error(
                f"--out {out} already holds a run; pass --resume to continue it, --overwrite to "
                "replace it, or another --out"
            )
        if any(p.name != LOCK_NAME for p in out.iterdir()):
            parser.error(
                f"--out {out} is not empty and holds no run of this package; pass a new or empty "
                "folder, or --overwrite to write the run files there anyway"
            )
    problem = arguments.writable_dir(out)
    if problem is not None:
        parser.error(f"--out: {problem}")


def main(argv: Sequence[str] | None = None) -> dict:
    parser = build_parser()
    config, resume, overwrite = _parse(parser, argv)
    try:
        return train(config, resume=resume, overwrite=overwrite)
    except (DatasetNotFoundError, RunFolderError, CheckpointError) as error:
        arguments.fail(parser.prog, str(error))


if __name__ == "__main__":
    main()
