"""Attack a trained run under the fixed or the deployed threat model and verify it → JSON.

Section 6.2 and Table 2, with the adaptive evaluation of issue 19.

``python -m flows.attack RUN_DIR --attack ATTACK --threat-model {fixed,deployed} --eot K
--verify-draws N --eps E --n 100 --data-root DIR`` loads the run with :func:`flows.load`, attacks
the first ``n`` correctly classified test images of a fixed random order with ``ATTACK`` (``cw``,
``cw-det``, ``apgd``, ``apgd-det``, ``boundary``, ``boundary-det``, ``match``, ``segment``, or
``ensemble``: the worst case of the detection-aware ones), re-verifies every adversarial (over
``N`` fresh draws of the deployed model; also under the attack's noise and one fresh fixed draw
for ``fixed``; and rounded to 8-bit images), and writes ``<attack>.json`` (resolved config,
detector, Table 2 statistics with Wilson intervals from verified adversarials only, per-example
records, the randomness audit, and with ``--sanity`` the sanity checks with a pass/fail flag each)
and ``<attack>_examples.png`` (clean / adversarial / difference with labels and verdicts). The
options are :class:`flows.attacks.experiment.AttackConfig`'s fields (``--help`` lists them with
their defaults and ranges); the experiment, its rules and its report are
:func:`flows.attacks.experiment.run_experiment`'s.

Resuming. The attack runs batch by batch (``--batch-size``); each finished batch is saved in
``<output stem>.partial/`` beside the JSON. A killed run started again with the same options
continues after its last finished batch (the report is the same as an uninterrupted run's); with
other options it stops with a one-line error naming the option, unless ``--restart`` discards the
cache. The cache is removed once the JSON is written.

Output. By default beside the run, ``RUN_DIR/attacks/<attack>.json``, unless the run lies inside
the package's committed ``artifacts/`` folder: nothing is written into the repository, so such
runs need ``--output FILE.json``.

Data. The test set is read from ``--data-root``, else ``$CGM_DATA_ROOT``, else the ``data_root``
recorded in ``RUN_DIR/config.json`` (:func:`flows.arguments.resolve_data_root`).
``--stored-order`` takes the test images in their stored order instead of the fixed random order
of ``--order-seed``. ``--threads`` sets torch's intra-op threads (1 is fastest on a busy 2-core
CPU).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import time
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path

import torch

import flows
from flows import arguments
from flows.attacks import experiment
from flows.attacks.experiment import ATTACKS, AttackConfig, ExperimentError
from flows.checkpoint import CheckpointError
from flows.data import DATASETS, DatasetNotFoundError
from flows.paper import PAPER_EPS, PAPER_RECALL

PROG = "python -m flows.attack"
#: AttackConfig fields given in groups of mutually exclusive options.
_DETECTOR = ("threshold", "threshold_quantile")
_ORDER = ("order_seed",)

#: Where each dataset's test split is expected under the data root (for error messages).
_LAYOUT = {
    "mnist": "torchvision's layout, ROOT/MNIST/raw/",
    "cifar10": "torchvision's layout, ROOT/cifar-10-batches-py/",
    "imagefolder": "one folder per class under ROOT/test/, e.g. ROOT = .../cifar10-jpeg",
}


def build_parser() -> arguments.ArgumentParser:
    """The CLI's parser (validated argument types; errors are one line, exit status 2)."""
    parser = arguments.ArgumentParser(
        prog=PROG,
        description=__doc__.split("\n")[0],
        epilog="Defaults: detector at the paper's recall (MNIST 100%, CIFAR-10 78.6%); output "
        "RUN_DIR/attacks/<attack>.json, except for runs inside the package's artifacts/ folder "
        "(pass --output); data root --data-root, else $CGM_DATA_ROOT, else the run's recorded "
        "data_root.",
        argument_default=argparse.SUPPRESS,  # only what is given; defaults are AttackConfig's
    )
    parser.add_argument("run_dir", type=arguments.existing_dir, help="a trained run's folder")
    parser.add_argument(
        "--attack",
        choices=ATTACKS,
        required=True,
        help="cw / apgd / boundary (the classifier alone), cw-det / apgd-det (with the "
        "detector), boundary-det (the modified Boundary attack on the C+1-way decision), match "
        "(likelihood matching), segment (the segment bound), or ensemble (the worst case of "
        "cw-det, apgd-det, boundary-det, match and segment)",
    )
    arguments.add_options(parser, AttackConfig, skip=_DETECTOR + _ORDER)
    detector = parser.add_mutually_exclusive_group()
    arguments.add_options(detector, AttackConfig, skip=_others(_DETECTOR))
    order = parser.add_mutually_exclusive_group()
    arguments.add_options(order, AttackConfig, skip=_others(_ORDER))
    order.add_argument(
        "--stored-order",
        action="store_true",
        default=False,
        help="take test images in their stored order instead (class by class for ImageFolder)",
    )
    parser.add_argument(
        "--data-root",
        type=arguments.existing_dir,
        default=None,
        help=f"folder holding the datasets (default: ${arguments.DATA_ROOT_ENV}, else the "
        "data_root recorded in RUN_DIR/config.json)",
    )
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    parser.add_argument(
        "--threads",
        type=arguments.positive_int,
        default=None,
        help="torch intra-op threads (default: torch's; 1 is fastest on a busy 2-core CPU)",
    )
    parser.add_argument(
        "--restart",
        action="store_true",
        default=False,
        help="discard the cache of finished batches (<output stem>.partial/) and start afresh",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="results JSON, FILE.json (default RUN_DIR/attacks/<attack>.json; required for runs "
        "inside the package's artifacts/ folder); the examples PNG goes beside it",
    )
    return parser


def _others(names: tuple[str, ...]) -> tuple[str, ...]:
    """Every AttackConfig field but ``names`` (to generate only those options into a group)."""
    return tuple(f.name for f in fields(AttackConfig) if f.name not in names)


def _one_line(text: object) -> str:
    return " ".join(str(text).split())


def _run_config(run_dir: Path, parser: arguments.ArgumentParser) -> dict:
    """RUN_DIR/config.json as written by :func:`flows.training.train` ({} when there is none)."""
    path = run_dir / "config.json"
    if not path.is_file():
        return {}
    try:
        saved = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        parser.error(f"argument run_dir: cannot read {path}: {_one_line(error)}")
    if not isinstance(saved, dict) or not isinstance(saved.get("train", {}), dict):
        parser.error(f"argument run_dir: {path} is not a run configuration (no 'train' object)")
    return saved


def main(argv: Sequence[str] | None = None) -> dict:
    """The CLI (module docstring); returns the report it wrote. Input errors exit with status 2
    and one line on stderr, checked before the model and the data are loaded where possible."""
    parser = build_parser()
    given = vars(parser.parse_args(argv))
    run_dir, data_root_arg = given.pop("run_dir"), given.pop("data_root")
    device_name, output_arg = given.pop("device"), given.pop("output")
    stored_order, restart, threads = (given.pop(k) for k in ("stored_order", "restart", "threads"))
    saved = _run_config(run_dir, parser)
    train_config = saved.get("train", {})
    data_name = given.get("dataset") or train_config.get("dataset")
    if data_name is None:
        parser.error(f"argument --dataset: {run_dir} has no config.json naming its dataset")
    if data_name not in DATASETS:
        parser.error(
            f"argument --dataset: the run's dataset {data_name!r} is not one of {DATASETS}"
        )
    # the paper's defaults (ε, recall) are per dataset; an image-folder run names its preset's
    paper_name = data_name
    preset = saved.get("preset")
    preset_dataset = preset.get("dataset") if isinstance(preset, dict) else None
    if data_name == "imagefolder" and preset_dataset in PAPER_EPS:
        paper_name = preset_dataset
    if "eps" not in given and paper_name not in PAPER_EPS:
        parser.error(f"argument --eps: no paper budget for dataset {paper_name!r}; pass --eps")
    if not any(name in given for name in _DETECTOR) and paper_name not in PAPER_RECALL:
        parser.error(
            f"argument --threshold: no paper recall for dataset {paper_name!r} to set the "
            "detector at; pass --threshold T or --threshold-quantile Q"
        )
    try:
        device = torch.device(device_name)
    except RuntimeError:
        parser.error(f"argument --device: not a torch device: {device_name!r}")
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error(f"argument --device: {device_name!r}, but CUDA is not available")
    attack = given["attack"]
    output = arguments.output_path(PROG, output_arg, run_dir, f"attacks/{attack}.json")
    data_root = arguments.resolve_data_root(data_root_arg, train_config.get("data_root"))
    if data_name != "synthetic" and data_root is None:
        parser.error(
            f"argument --data-root: dataset {data_name!r} needs a data root: pass --data-root DIR "
            f"or set ${arguments.DATA_ROOT_ENV}"
        )
    if stored_order:
        given["order_seed"] = None
    try:
        config = AttackConfig(**{**given, "dataset": paper_name})
    except ValueError as error:
        parser.error(_one_line(error))

    try:
        model = flows.load(run_dir, map_location=device)
    except FileNotFoundError as error:
        arguments.fail(PROG, f"no trained model in run folder {run_dir}: {_one_line(error)}")
    except CheckpointError as error:
        arguments.fail(PROG, _one_line(error))
    try:
        test_x, test_y = experiment.load_test_set(
            data_name, data_root, model, train_config.get("synthetic_size", 512)
        )
    except DatasetNotFoundError:
        arguments.fail(
            PROG,
            f"the {data_name} test set is not under data root {data_root} (from "
            f"{_data_root_source(data_root_arg)}); expected "
            f"{_LAYOUT.get(data_name, 'the dataset')}: point --data-root or "
            f"${arguments.DATA_ROOT_ENV} at the folder holding it",
        )
    shape = getattr(getattr(model, "config", None), "data_shape", None)
    if shape is not None and tuple(test_x.shape[1:]) != tuple(shape):
        arguments.fail(
            PROG,
            f"the {data_name} test images have shape {tuple(test_x.shape[1:])}, the model of "
            f"{run_dir} takes {tuple(shape)}: wrong --dataset?",
        )
    test_x, test_y = test_x.to(device), test_y.to(device)
    if threads is not None:
        torch.set_num_threads(threads)
    cache = experiment.cache_folder(output)
    earlier = None if restart else experiment.cached_batch_seconds(cache)
    started = time.perf_counter()
    try:
        report, result, x = experiment.run_experiment(
            model,
            test_x,
            test_y,
            config,
            paper_name,
            warn=_print_warning,
            cache=cache,
            restart=restart,
        )
    except ExperimentError as error:
        arguments.fail(PROG, _one_line(error))
    seconds = time.perf_counter() - started
    if earlier is not None and earlier["batches"]:
        seconds += earlier["seconds"]  # the batches killed runs finished: their time counts
    report["config"]["run_dir"] = str(run_dir)
    report["data"] = {
        "dataset": data_name,
        "data_root": None if data_root is None else str(data_root),
    }
    image = experiment.save_examples(
        output.with_name(f"{output.stem}_examples.png"), x, result, report, config.example_images
    )
    report["example_images"] = None if image is None else str(image)
    output.write_text(json.dumps(report, indent=2))
    shutil.rmtree(cache, ignore_errors=True)
    print(json.dumps(_summary(report, output, seconds, earlier), indent=2))
    return report


def _summary(report: dict, output: Path, seconds: float, earlier: dict | None = None) -> dict:
    """What the CLI prints: the detector, the Table 2 statistics of every verification (without
    per-example records), the sanity verdict, the wall time (this run's, plus the recorded times
    of the batches that earlier, killed runs finished: ``resumed``) and the output path."""
    sections = ("attack_noise", "fresh_noise", "deployed")
    table2 = {k: report[k]["table2"] for k in sections if report[k] is not None}
    rounded = {k: report["rounded_8bit"][k]["table2"] for k in sections if report[k] is not None}
    sanity = report["sanity"]
    return {
        "detector": report["detector"],
        "threat_model": report["threat_model"],
        **table2,
        "rounded_8bit": rounded,
        "sanity_passed": None if sanity is None else sanity["passed"],
        "seconds": seconds,
        "resumed": earlier if earlier is not None and earlier["batches"] else None,
        "output": str(output),
    }


def _print_warning(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _data_root_source(given: Path | None) -> str:
    """Which rule of :func:`flows.arguments.resolve_data_root` chose the data root."""
    if given is not None:
        return "--data-root"
    if os.environ.get(arguments.DATA_ROOT_ENV):
        return f"${arguments.DATA_ROOT_ENV}"
    return "the data_root recorded in RUN_DIR/config.json"


if __name__ == "__main__":
    main()
