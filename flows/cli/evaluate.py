"""``python -m flows.evaluate RUN_DIR``: evaluate a trained run → JSON.

Reads ``RUN_DIR/checkpoint.pt`` (weights only) and ``RUN_DIR/config.json``, evaluates on the test
split (:func:`flows.evaluation.evaluate_model`) and writes ``RUN_DIR/evaluation.json`` (resolved
evaluation config included); for the package's committed runs (``artifacts/``) ``--output`` is
required. The data root is ``--data-root``, else ``$CGM_DATA_ROOT``, else the one the run was
trained with. ``--limit N`` evaluates the first N images of the fixed random order
(:func:`flows.data.fixed_order`), not the first N stored.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from flows import arguments
from flows.checkpoint import MODEL_KEYS, CheckpointError, load_checkpoint
from flows.data import DATASETS, DatasetNotFoundError, fixed_subset, load_dataset
from flows.evaluation import evaluate_model
from flows.model import ConditionalGlow, model_from_checkpoint


def build_parser() -> arguments.ArgumentParser:
    parser = arguments.ArgumentParser(
        prog="python -m flows.evaluate", description=__doc__.split("\n")[0]
    )
    parser.add_argument("run_dir", type=arguments.existing_dir, help="a run folder of flows.train")
    parser.add_argument(
        "--data-root", default=None, help="folder holding the dataset (see the rule above)"
    )
    parser.add_argument(
        "--dataset",
        choices=DATASETS,
        default=None,
        help="defaults to the dataset the run was trained on",
    )
    parser.add_argument("--split", choices=("test", "train"), default="test")
    parser.add_argument("--batch-size", type=arguments.positive_int, default=256)
    parser.add_argument("--seed", type=arguments.nonnegative_int, default=0)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--limit",
        type=arguments.positive_int,
        default=None,
        help="evaluate N images of the fixed random order only",
    )
    parser.add_argument(
        "--output",
        type=Path,
        default=None,
        help="JSON path (default RUN_DIR/evaluation.json; required for committed runs)",
    )
    parser.add_argument(
        "--likelihood-draws",
        type=arguments.positive_int,
        default=1,
        help="also the importance-weighted bits/dim over S noise draws (S > 1; S× the time)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    parser = build_parser()
    args = parser.parse_args(argv)
    prog = parser.prog
    config_path = args.run_dir / "config.json"
    try:
        run_config = json.loads(config_path.read_text())
        train_config = run_config["train"]
    except FileNotFoundError:
        arguments.fail(prog, f"run_dir: {args.run_dir} holds no config.json (not a run folder)")
    except (ValueError, KeyError, TypeError) as error:
        arguments.fail(prog, f"run_dir: {config_path} is not a run configuration ({error})")
    output = arguments.output_path(prog, args.output, args.run_dir, "evaluation.json")
    try:
        checkpoint = load_checkpoint(args.run_dir, map_location=args.device, required=MODEL_KEYS)
        model: ConditionalGlow = model_from_checkpoint(checkpoint, args.run_dir)
    except (FileNotFoundError, CheckpointError) as error:
        arguments.fail(prog, f"run_dir: {error}")
    model_config = model.config
    model.to(args.device)
    dataset = args.dataset or train_config["dataset"]
    root = arguments.resolve_data_root(args.data_root, train_config.get("data_root"))
    try:
        data = load_dataset(
            dataset,
            root,
            train=args.split == "train",
            data_shape=model_config.data_shape,
            num_classes=model_config.num_classes,
            synthetic_size=train_config.get("synthetic_size", 512),
        )
    except (DatasetNotFoundError, ValueError) as error:
        arguments.fail(prog, str(error))
    if args.limit is not None:
        data = fixed_subset(data, args.limit)
    results = evaluate_model(
        model,
        data,
        args.batch_size,
        args.seed,
        args.device,
        progress=not args.no_progress,
        likelihood_draws=args.likelihood_draws,
    )
    report = {
        "config": {
            **{k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
            "dataset": dataset,
            "data_root": None if root is None else str(root),
            "test_order": "all" if args.limit is None else "flows.data.fixed_order",
            "model": model_config.to_dict(),
            "position": checkpoint["position"] if "position" in checkpoint else None,
        },
        "results": results,
    }
    output.write_text(json.dumps(report, indent=2))
    print(json.dumps({k: v for k, v in results.items() if k != "per_class"}, indent=2))
    return report


if __name__ == "__main__":
    main()
