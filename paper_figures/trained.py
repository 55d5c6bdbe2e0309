"""The committed trained runs and the test sets that the Section 6 figures and tables use.

One place decides where runs and data live, so every figure, table and notebook agrees:

* runs: ``artifacts/runs/cpu-{mnist,cifar}-{base,reweight,split}`` (Table 1's six models), plus the
  Appendix B runs; :func:`run_dir` names them, :func:`load_run` loads one (cached);
* data: the root is an argument, else the environment variable ``CGM_DATA_ROOT`` (never a
  hard-coded path). MNIST is read in torchvision's layout under the root; CIFAR-10 is the JPEG q75
  copy under ``ROOT/cifar10-jpeg`` (ImageFolder layout), labelled as such in every output
  (:data:`DATASET_LABELS`);
* quick mode: ``CGM_QUICK=1`` in the environment makes figures use small sample sizes, so the test
  suite and the notebooks re-execute in minutes; every output records whether it was quick.

Images are returned in the models' range ``k/256 − 0.5`` (float32, shape (N, C, H, W) of the
dataset: 1×28×28 MNIST, 3×32×32 CIFAR-10); padding and noise channels are the model's business.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

import torch
from torch import Tensor

__all__ = [
    "DATASETS",
    "DATASET_LABELS",
    "PRIORS",
    "RUNS_ROOT",
    "DataRootError",
    "data_root",
    "load_run",
    "quick_mode",
    "run_dir",
    "test_order",
    "test_set",
]

RUNS_ROOT = Path(__file__).resolve().parent.parent / "artifacts" / "runs"
DATASETS = ("mnist", "cifar10")
PRIORS = ("base", "reweight", "split")
DATASET_LABELS = {"mnist": "MNIST", "cifar10": "CIFAR-10 (JPEG q75 copy)"}
_PRESET_STEM = {"mnist": "cpu-mnist", "cifar10": "cpu-cifar"}
DATA_ROOT_ENV = "CGM_DATA_ROOT"
QUICK_ENV = "CGM_QUICK"


class DataRootError(FileNotFoundError):
    """No data root was given and ``CGM_DATA_ROOT`` is unset (or points nowhere)."""


def quick_mode() -> bool:
    """True when ``CGM_QUICK`` is set to 1/true/yes (small sample sizes everywhere)."""
    return os.environ.get(QUICK_ENV, "").strip().lower() in {"1", "true", "yes"}


def data_root(root: str | Path | None = None) -> Path:
    """``root`` if given, else ``$CGM_DATA_ROOT``; a clear error when neither names a folder."""
    if root is None:
        env = os.environ.get(DATA_ROOT_ENV)
        if not env:
            raise DataRootError(
                f"no data root: pass data_root=... or set {DATA_ROOT_ENV} to the folder holding "
                "MNIST/ (torchvision layout) and cifar10-jpeg/ (ImageFolder layout)"
            )
        root = env
    path = Path(root).expanduser()
    if not path.is_dir():
        raise DataRootError(f"data root {str(path)!r} is not a folder")
    return path


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")


def run_dir(dataset: str, prior: str, root: str | Path | None = None) -> Path:
    """The run folder ``cpu-{mnist|cifar}-{prior}`` under ``root`` (default :data:`RUNS_ROOT`).

    ``prior`` is any suffix of a committed run (``base``, ``reweight``, ``split``, or an Appendix B
    run such as ``laplace-2ep``).
    """
    _check_dataset(dataset)
    return Path(RUNS_ROOT if root is None else root) / f"{_PRESET_STEM[dataset]}-{prior}"


@functools.lru_cache(maxsize=16)
def _load_cached(path: str):
    import flows

    model = flows.load(path)
    model.eval()
    return model


def load_run(dataset: str, prior: str, root: str | Path | None = None):
    """The trained :class:`flows.ConditionalGlow` of :func:`run_dir` (eval mode, cached)."""
    path = run_dir(dataset, prior, root)
    if not (path / "checkpoint.pt").is_file():
        raise FileNotFoundError(
            f"no trained run at {path} (expected checkpoint.pt); train it with "
            f"python -m flows.train --preset {_PRESET_STEM[dataset]} --prior ... --out {path}"
        )
    return _load_cached(str(path.resolve()))


@functools.lru_cache(maxsize=4)
def _test_set_cached(dataset: str, root: str) -> tuple[Tensor, Tensor]:
    from flows.data import load_dataset
    from flows.preprocess import to_model_range

    if dataset == "mnist":
        data = load_dataset("mnist", root, train=False)
    else:
        data = load_dataset("imagefolder", Path(root) / "cifar10-jpeg", train=False)
    return to_model_range(data.images).to(torch.float32), data.labels


#: Seed of the fixed order in which every figure takes test images (see :func:`test_order`).
ORDER_SEED = 0


def test_order(size: int) -> Tensor:
    """A fixed random permutation of ``range(size)`` (seed :data:`ORDER_SEED`).

    The CIFAR-10 JPEG copy is stored class by class, so "the first n test images" would all be
    airplanes; every figure therefore takes test images in this order instead.
    """
    return torch.randperm(size, generator=torch.Generator().manual_seed(ORDER_SEED))


def test_set(
    dataset: str, root: str | Path | None = None, n: int | None = None
) -> tuple[Tensor, Tensor]:
    """Test images ``(N, C, H, W)`` and labels ``(N,)`` in the fixed order of :func:`test_order`.

    ``n``: keep the first ``n`` of that order (a fixed random subset, the same for every figure);
    default all 10 000.
    """
    _check_dataset(dataset)
    x, y = _test_set_cached(dataset, str(data_root(root).resolve()))
    order = test_order(len(y))
    if n is not None:
        if n < 1:
            raise ValueError(f"n must be >= 1, got {n}")
        order = order[:n]
    return x[order], y[order]
