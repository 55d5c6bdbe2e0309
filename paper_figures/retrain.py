"""Retrain every run the Section 6 figures use: ``python -m paper_figures --retrain``.

:data:`RUN_SPECS` lists the runs, each one ``python -m flows.train`` command: the Table 1 models
(:data:`paper_figures.trained.TABLE1_RUNS`: ``cpu-cifar`` and ``cpu-mnist-deep`` × Base, Reweight,
Split), the 5-epoch ``cpu-mnist-split`` of the benchmarks, and the Appendix B models (robust priors
and label smoothing, two ``cpu-mnist`` epochs each, beside a Gaussian Reweight run of the same
length). The committed folders under ``artifacts/runs`` came from exactly these commands.

Runs go into a runs folder (default ``./runs``, never the committed ``artifacts/runs``), one
sub-folder per run; a folder that already holds a run is resumed (``--resume``), so a killed
``--retrain`` continues where it stopped and a finished run is not trained again. The figures are
then regenerated from that folder (the :class:`~paper_figures.context.Context`'s ``runs_root``).
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

__all__ = ["RUN_SPECS", "RunSpec", "retrain", "train_command"]


@dataclass(frozen=True)
class RunSpec:
    """One training run: its folder name and the ``flows.train`` arguments that make it."""

    name: str
    preset: str
    prior: str
    dataset: str  # "mnist" or "cifar10" (the JPEG copy under DATA_ROOT/cifar10-jpeg)
    epochs: int | None = None  # None: the preset's
    label_smoothing: float = 0.0

    def arguments(self, data_root: Path, out: Path, threads: int = 1) -> list[str]:
        """The ``python -m flows.train`` arguments (without the resume flag)."""
        if self.dataset == "mnist":
            data = ["--data-root", str(data_root)]
        else:
            data = ["--dataset", "imagefolder", "--data-root", str(data_root / "cifar10-jpeg")]
        args = ["--preset", self.preset, "--prior", self.prior, *data, "--out", str(out)]
        if self.epochs is not None:
            args += ["--epochs", str(self.epochs)]
        if self.label_smoothing:
            args += ["--label-smoothing", str(self.label_smoothing)]
        return args + ["--threads", str(threads), "--seed", "0"]


RUN_SPECS: tuple[RunSpec, ...] = (
    RunSpec("cpu-mnist-split", "cpu-mnist", "split", "mnist"),
    RunSpec("cpu-cifar-base", "cpu-cifar", "base", "cifar10"),
    RunSpec("cpu-cifar-reweight", "cpu-cifar", "reweight", "cifar10"),
    RunSpec("cpu-cifar-split", "cpu-cifar", "split", "cifar10"),
    RunSpec("cpu-mnist-reweight-2ep", "cpu-mnist", "reweight", "mnist", epochs=2),
    RunSpec("cpu-mnist-laplace-2ep", "cpu-mnist", "laplace", "mnist", epochs=2),
    RunSpec("cpu-mnist-cauchy-2ep", "cpu-mnist", "cauchy", "mnist", epochs=2),
    RunSpec("cpu-mnist-gaussian-laplace-2ep", "cpu-mnist", "gaussian-laplace", "mnist", epochs=2),
    RunSpec(
        "cpu-mnist-reweight-ls-2ep", "cpu-mnist", "reweight", "mnist", epochs=2, label_smoothing=0.1
    ),
    # issue 18: the deeper MNIST preset (20 epochs, lr ÷10 after 10), for the MNIST regeneration
    RunSpec("cpu-mnist-deep-reweight", "cpu-mnist-deep", "reweight", "mnist"),
    RunSpec("cpu-mnist-deep-split", "cpu-mnist-deep", "split", "mnist"),  # σ = 0.5, w = 1: defaults
    RunSpec("cpu-mnist-deep-base", "cpu-mnist-deep", "base", "mnist"),
)


def train_command(spec: RunSpec, runs_root: Path, data_root: Path, threads: int = 1) -> list[str]:
    """The full command for ``spec`` (``--resume`` when its folder already holds a run)."""
    out = Path(runs_root) / spec.name
    command = [sys.executable, "-m", "flows.train", *spec.arguments(Path(data_root), out, threads)]
    if (out / "config.json").is_file() and (out / "checkpoint.pt").is_file():
        command.append("--resume")
    return command


def retrain(
    runs_root: str | Path,
    data_root: str | Path,
    only: tuple[str, ...] | None = None,
    threads: int = 1,
) -> list[Path]:
    """Train (or resume) every run of :data:`RUN_SPECS` (or those named in ``only``), in order.

    Each run is a ``python -m flows.train`` subprocess with its own progress bar; a failing run
    stops the retraining with its exit status. Returns the run folders.
    """
    names = {spec.name for spec in RUN_SPECS}
    unknown = sorted(set(only or ()) - names)
    if unknown:
        raise ValueError(f"unknown runs {unknown}; known: {sorted(names)}")
    runs_root = Path(runs_root)
    runs_root.mkdir(parents=True, exist_ok=True)
    folders = []
    for spec in RUN_SPECS:
        if only and spec.name not in only:
            continue
        command = train_command(spec, runs_root, Path(data_root), threads)
        state = "resuming" if command[-1] == "--resume" else "training"
        print(f"[retrain] {state} {spec.name}: {' '.join(command[1:])}", flush=True)
        start = time.perf_counter()
        subprocess.run(command, check=True)
        print(f"[retrain] {spec.name} done in {time.perf_counter() - start:.0f} s", flush=True)
        folders.append(runs_root / spec.name)
    return folders
