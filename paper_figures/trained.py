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
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from flows.data import ORDER_SEED, fixed_order
from flows.measures import bits_per_dim, marginal_log_prob, predictions
from flows.paper import PAPER_RECALL

__all__ = [
    "DATASETS",
    "PAPER_RECALL",
    "TestStatistics",
    "paper_detector",
    "test_statistics",
    "DATASET_LABELS",
    "PRIORS",
    "RUNS_ROOT",
    "DataRootError",
    "data_root",
    "load_run",
    "quick_mode",
    "run_dir",
    "runs_root",
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
RUNS_ROOT_ENV = "CGM_RUNS_ROOT"


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
    """The run folder ``cpu-{mnist|cifar}-{prior}`` under ``root`` (default :func:`runs_root`).

    ``prior`` is any suffix of a committed run (``base``, ``reweight``, ``split``, or an Appendix B
    run such as ``laplace-2ep``).
    """
    _check_dataset(dataset)
    return _resolve_runs_root(root) / f"{_PRESET_STEM[dataset]}-{prior}"


def _resolve_runs_root(root: str | Path | None = None) -> Path:
    """``root`` if given, else ``$CGM_RUNS_ROOT`` (set by ``python -m paper_figures --retrain``),
    else the committed :data:`RUNS_ROOT`."""
    if root is not None:
        return Path(root)
    env = os.environ.get(RUNS_ROOT_ENV)
    return Path(env) if env else RUNS_ROOT


runs_root = _resolve_runs_root


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


def test_order(size: int) -> Tensor:
    """The fixed random permutation of ``range(size)`` (:func:`flows.data.fixed_order`).

    The CIFAR-10 JPEG copy is stored class by class, so "the first n test images" would all be
    airplanes; every figure therefore takes test images in this order instead.
    """
    return fixed_order(size, ORDER_SEED)


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



@dataclass(frozen=True)
class TestStatistics:
    """One encoding of test images under fixed model noise (seed ``noise_seed``).

    Attributes:
        class_log_likelihoods: ``(N, C)`` float64, log p(x|y=c) in nats at the (non-dequantised)
            image x, with padding and noise channels drawn once for all images (shared noise).
        labels: ``(N,)`` true classes.
        num_dims: D of the bits/dim convention.
    """

    class_log_likelihoods: Tensor
    labels: Tensor
    num_dims: int
    noise_seed: int

    @property
    def log_prob(self) -> Tensor:
        """``(N,)`` log p(x) = logsumexp_c log p(x|c) − log C (uniform class prior)."""
        return marginal_log_prob(self.class_log_likelihoods)

    @property
    def bits_per_dim(self) -> Tensor:
        """``(N,)`` −log p(x) in bits/dim (:func:`flows.measures.bits_per_dim`)."""
        return bits_per_dim(self.log_prob, self.num_dims)

    @property
    def predictions(self) -> Tensor:
        """``(N,)`` argmax_c p(y=c|x)."""
        return predictions(self.class_log_likelihoods)

    @property
    def correct(self) -> Tensor:
        """``(N,)`` bool, prediction == label."""
        return self.predictions == self.labels


@functools.lru_cache(maxsize=32)
def _statistics_cached(
    dataset: str,
    prior: str,
    n: int | None,
    root: str,
    runs_root: str,
    noise_seed: int,
    batch_size: int,
) -> TestStatistics:
    from flows.attacks import FixedNoise

    model = load_run(dataset, prior, runs_root)
    x, y = test_set(dataset, root, n)
    fn = FixedNoise(model.class_log_likelihoods, noise_seed)
    chunks = []
    with torch.no_grad():
        for start in tqdm(
            range(0, len(x), batch_size),
            desc=f"{dataset}-{prior} test set",
            leave=False,
            disable=None,
        ):
            chunks.append(fn(x[start : start + batch_size]).double())
    return TestStatistics(torch.cat(chunks), y, model.num_dims, noise_seed)


def test_statistics(
    dataset: str,
    prior: str,
    n: int | None = None,
    root: str | Path | None = None,
    runs_root: str | Path | None = None,
    noise_seed: int = 0,
    batch_size: int = 250,
) -> TestStatistics:
    """Class log-likelihoods of the first ``n`` test images (:func:`test_set` order), cached."""
    return _statistics_cached(
        dataset,
        prior,
        n,
        str(data_root(root).resolve()),
        str(_resolve_runs_root(runs_root).resolve()),
        noise_seed,
        batch_size,
    )


def paper_detector(
    dataset: str,
    prior: str,
    n: int | None = None,
    root: str | Path | None = None,
    runs_root: str | Path | None = None,
):
    """The likelihood detector at the paper's recall (:data:`PAPER_RECALL`) for this run.

    The threshold is the :data:`PAPER_RECALL` quantile of the run's bits/dim on the first ``n``
    test images (:meth:`flows.attacks.LikelihoodDetector.from_quantile`): for MNIST the largest
    test value (100% kept), for CIFAR-10 the 78.6% quantile.
    """
    from flows.attacks import LikelihoodDetector

    stats = test_statistics(dataset, prior, n, root, runs_root)
    return LikelihoodDetector.from_quantile(
        stats.bits_per_dim, PAPER_RECALL[dataset], stats.num_dims
    )
