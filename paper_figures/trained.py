"""The committed trained runs and the test sets that the Section 6 figures and tables use.

One place decides where runs and data live, so every figure, table and notebook agrees; each
function takes the :class:`~paper_figures.context.Context` that says where they are:

* runs: Table 1's six models, one per dataset and prior (:data:`TABLE1_RUNS`: the deeper
  ``cpu-mnist-deep`` preset for MNIST, ``cpu-cifar-*`` for CIFAR-10), plus the Appendix B runs
  (``cpu-mnist-<suffix>``); :func:`run_dir` names them, :func:`load_run` loads one (cached);
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
    "TABLE1_RUNS",
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

#: The run folder of each (dataset, prior) that Table 1 and every Section 4–6 item use (issue 18).
#: MNIST's are the ``cpu-mnist-deep`` runs (4 levels × 8 steps × 32 channels, 20 epochs: Base
#: 75.43 %, Reweight 98.76 %, Split 98.97 %), which replaced the 5-epoch ``cpu-mnist`` ones (64.8 %,
#: 97.3 %, 96.1 %). Any other prior name is a run suffix (below).
TABLE1_RUNS = {
    ("mnist", "base"): "cpu-mnist-deep-base",
    ("mnist", "reweight"): "cpu-mnist-deep-reweight",
    ("mnist", "split"): "cpu-mnist-deep-split",
    ("cifar10", "base"): "cpu-cifar-base",
    ("cifar10", "reweight"): "cpu-cifar-reweight",
    ("cifar10", "split"): "cpu-cifar-split",
}


def _check_dataset(dataset: str) -> None:
    if dataset not in DATASETS:
        raise ValueError(f"dataset must be one of {DATASETS}, got {dataset!r}")


def run_dir(dataset: str, prior: str, context: Context) -> Path:
    """The run folder of ``(dataset, prior)`` under ``context.runs_root``.

    ``prior`` is ``base``, ``reweight`` or ``split`` (Table 1's run, :data:`TABLE1_RUNS`), or any
    other suffix of a committed run, named ``cpu-{mnist|cifar}-{prior}`` (an Appendix B run such
    as ``laplace-2ep``, or ``deep-reweight``).
    """
    _check_dataset(dataset)
    name = TABLE1_RUNS.get((dataset, prior), f"{_PRESET_STEM[dataset]}-{prior}")
    return context.runs_root / name


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
            f"python -m paper_figures --retrain --runs-dir {path.parent} (its RunSpec "
            f"{path.name!r} in paper_figures.retrain.RUN_SPECS)"
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
        class_scores: ``(N, C)`` float64 from the same encoding, the scores the model classifies
            by (:meth:`flows.ConditionalGlow.class_scores`: the ``z_s`` logits of the Split prior,
            the class log-likelihoods otherwise); :attr:`predictions` take their argmax.
    """

    class_log_likelihoods: Tensor
    labels: Tensor
    num_dims: int
    noise_seed: int
    class_scores: Tensor

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
        """``(N,)`` argmax_c p(y=c|x), by the model's classification rule (:attr:`class_scores`)."""
        return predictions(self.class_scores)

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
    fn = FixedNoise(model.class_scores_and_log_likelihoods, noise_seed)
    scores, lls = [], []
    with torch.no_grad():
        for start in tqdm(
            range(0, len(x), batch_size),
            desc=f"{dataset}-{prior} test set",
            leave=False,
            disable=None,
        ):
            score, ll = fn(x[start : start + batch_size])
            scores.append(score.double())
            lls.append(ll.double())
    return RunStatistics(torch.cat(lls), y, model.num_dims, noise_seed, torch.cat(scores))


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
