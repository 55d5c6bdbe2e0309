"""The committed trained runs and the test sets that the Section 6 figures and tables use.

One place decides where runs and data live, so every figure, table and notebook agrees; each
function takes the :class:`~paper_figures.context.Context` that says where they are:

* runs: ``context.runs_root/cpu-{mnist,cifar}-{base,reweight,split}`` (Table 1's six models), plus
  the Appendix B runs; :func:`run_dir` names them, :func:`load_run` loads one (cached);
* data: ``context.data_root`` (never a hard-coded path). MNIST is read in torchvision's layout
  under it; CIFAR-10 is the JPEG q75 copy under ``ROOT/cifar10-jpeg`` (ImageFolder layout),
  labelled as such in every output (:data:`DATASET_LABELS`). Test images are taken in the fixed
  random order of :func:`flows.data.load_test_split` (:func:`ordered_test_set`);
* :func:`run_statistics`: one encoding of the test images by a run under fixed model noise, which
  the detectors (:func:`paper_detector`) and the Section 6 figures share.

Images are returned in the models' range ``k/256 − 0.5`` (float32, shape (N, C, H, W) of the
dataset: 1×28×28 MNIST, 3×32×32 CIFAR-10); padding and noise channels are the model's business.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from tqdm.auto import tqdm

from flows.measures import bits_per_dim, marginal_log_prob, predictions
from flows.paper import PAPER_RECALL

from .context import RUNS_ROOT, Context

__all__ = [
    "DATASETS",
    "DATASET_LABELS",
    "PAPER_RECALL",
    "PRIORS",
    "RUNS_ROOT",
    "RunStatistics",
    "load_run",
    "ordered_test_set",
    "paper_detector",
    "run_dir",
    "run_statistics",
]

DATASETS = ("mnist", "cifar10")
PRIORS = ("base", "reweight", "split")
DATASET_LABELS = {"mnist": "MNIST", "cifar10": "CIFAR-10 (JPEG q75 copy)"}
_PRESET_STEM = {"mnist": "cpu-mnist", "cifar10": "cpu-cifar"}


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")


def run_dir(dataset: str, prior: str, context: Context) -> Path:
    """The run folder ``cpu-{mnist|cifar}-{prior}`` under ``context.runs_root``.

    ``prior`` is any suffix of a committed run (``base``, ``reweight``, ``split``, or an Appendix B
    run such as ``laplace-2ep``).
    """
    _check_dataset(dataset)
    return context.runs_root / f"{_PRESET_STEM[dataset]}-{prior}"


@functools.lru_cache(maxsize=16)
def _load_cached(path: str):
    import flows

    model = flows.load(path)
    model.eval()
    return model


def load_run(dataset: str, prior: str, context: Context):
    """The trained :class:`flows.ConditionalGlow` of :func:`run_dir` (eval mode, cached)."""
    path = run_dir(dataset, prior, context)
    if not (path / "checkpoint.pt").is_file():
        raise FileNotFoundError(
            f"no trained run at {path} (expected checkpoint.pt); train it with "
            f"python -m flows.train --preset {_PRESET_STEM[dataset]} --prior ... --out {path}"
        )
    return _load_cached(str(path.resolve()))


@functools.lru_cache(maxsize=4)
def _test_set_cached(dataset: str, root: str) -> tuple[Tensor, Tensor]:
    """The whole test split in the fixed order, in the models' range."""
    from flows.data import load_test_split
    from flows.preprocess import to_model_range

    if dataset == "mnist":
        data = load_test_split("mnist", root)
    else:
        data = load_test_split("imagefolder", Path(root) / "cifar10-jpeg")
    return to_model_range(data.images).to(torch.float32), data.labels


def ordered_test_set(dataset: str, context: Context, n: int | None = None) -> tuple[Tensor, Tensor]:
    """Test images ``(N, C, H, W)`` and labels ``(N,)`` in the order :func:`flows.data.fixed_order`
    (:func:`flows.data.load_test_split`).

    The CIFAR-10 JPEG copy is stored class by class, so "the first n test images" would all be
    airplanes; every figure therefore takes test images in this fixed random order. ``n``: keep the
    first ``n`` of that order (a fixed random subset, the same for every figure); default all
    10 000. The tensors are the caller's (copies of the cached split).
    """
    _check_dataset(dataset)
    if n is not None and n < 1:
        raise ValueError(f"n must be >= 1, got {n}")
    x, y = _test_set_cached(dataset, str(context.require_data_root().resolve()))
    return x[:n].clone(), y[:n].clone()


@dataclass(frozen=True)
class RunStatistics:
    """One encoding of test images by a run under fixed model noise (seed ``noise_seed``).

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
    context: Context,
    noise_seed: int,
    batch_size: int,
) -> RunStatistics:
    from flows.attacks import FixedNoise

    model = load_run(dataset, prior, context)
    x, y = ordered_test_set(dataset, context, n)
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
    return RunStatistics(torch.cat(chunks), y, model.num_dims, noise_seed)


def run_statistics(
    dataset: str,
    prior: str,
    context: Context,
    n: int | None = None,
    noise_seed: int = 0,
    batch_size: int = 250,
) -> RunStatistics:
    """Class log-likelihoods of the first ``n`` test images (:func:`ordered_test_set`), cached."""
    resolved = Context(
        data_root=context.require_data_root().resolve(), runs_root=context.runs_root.resolve()
    )
    return _statistics_cached(dataset, prior, n, resolved, noise_seed, batch_size)


def paper_detector(dataset: str, prior: str, context: Context, n: int | None = None):
    """The likelihood detector at the paper's recall (:data:`PAPER_RECALL`) for this run.

    The threshold is the :data:`PAPER_RECALL` quantile of the run's bits/dim on the first ``n``
    test images (:meth:`flows.attacks.LikelihoodDetector.from_quantile`): for MNIST the largest
    test value (100% kept), for CIFAR-10 the 78.6% quantile.
    """
    from flows.attacks import LikelihoodDetector

    stats = run_statistics(dataset, prior, context, n)
    return LikelihoodDetector.from_quantile(
        stats.bits_per_dim, PAPER_RECALL[dataset], stats.num_dims
    )
