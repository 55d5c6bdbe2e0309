"""Datasets as in-memory 8-bit tensors, and batch-wise augmentation.

:func:`load_dataset` returns a :class:`ImageData` — ``images`` ``(N, C, H, W)`` ``uint8`` and
``labels`` ``(N,)`` ``int64`` — for ``mnist`` and ``cifar10`` (torchvision; ``download=True``
fetches them when online), ``imagefolder`` (a folder per class, e.g. the CIFAR-10 JPEG copy:
``ROOT/train/<class>/…`` and ``ROOT/test/<class>/…``) and ``synthetic`` (class-dependent
patterns, no files; for tests and smoke runs). Holding the data in memory keeps every epoch's order
and augmentation a pure function of the seed and step, which exact resumption relies on.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

DATASETS = ("mnist", "cifar10", "imagefolder", "synthetic")


class DatasetNotFoundError(FileNotFoundError):
    """A dataset is missing under the given root; the message says where and how to get it."""


@dataclass(frozen=True)
class ImageData:
    images: Tensor
    labels: Tensor
    classes: tuple[str, ...]

    def __len__(self) -> int:
        return self.labels.shape[0]


def load_dataset(
    name: str,
    root: str | Path | None,
    train: bool,
    download: bool = False,
    data_shape: tuple[int, int, int] = (1, 28, 28),
    num_classes: int = 10,
    synthetic_size: int = 512,
    workers: int = 0,
) -> ImageData:
    """Load a split of a dataset (``data_shape``, ``num_classes``, ``synthetic_size``: synthetic only)."""
    if name == "synthetic":
        return synthetic_dataset(synthetic_size, data_shape, num_classes, seed=0 if train else 1)
    if root is None:
        raise ValueError(f"dataset {name!r} needs a data root (--data-root)")
    root = Path(root)
    if name == "mnist":
        return _torchvision_dataset("MNIST", root, train, download)
    if name == "cifar10":
        return _torchvision_dataset("CIFAR10", root, train, download)
    if name == "imagefolder":
        return _image_folder(root / ("train" if train else "test"), workers)
    raise ValueError(f"unknown dataset {name!r}; expected one of {DATASETS}")


def _torchvision_dataset(kind: str, root: Path, train: bool, download: bool) -> ImageData:
    import torchvision

    cls = getattr(torchvision.datasets, kind)
    try:
        dataset = cls(root=str(root), train=train, download=download)
    except RuntimeError as error:
        raise DatasetNotFoundError(
            f"{kind} not found under data root {root!s} ({error}). Expected torchvision's layout "
            f"({root}/{kind}/raw/ for MNIST, {root}/cifar-10-batches-py/ for CIFAR10). Point "
            "--data-root (or $CGM_DATA_ROOT) at a folder holding it; flows.train --download "
            "fetches it when online."
        ) from None
    if kind == "MNIST":
        images = dataset.data[:, None].contiguous()
        labels = dataset.targets.to(torch.int64)
    else:
        images = torch.from_numpy(dataset.data).permute(0, 3, 1, 2).contiguous()
        labels = torch.as_tensor(dataset.targets, dtype=torch.int64)
    return ImageData(images, labels, tuple(dataset.classes))


def _image_folder(folder: Path, workers: int) -> ImageData:
    import torchvision
    from torch.utils.data import DataLoader

    if not folder.is_dir() or not any(p.is_dir() for p in folder.iterdir()):
        raise DatasetNotFoundError(
            f"no image folder at {folder!s}: expected one sub-folder per class "
            f"({folder}/<class>/<image>). For the CIFAR-10 JPEG copy, pass --data-root "
            ".../cifar10-jpeg (holding train/ and test/)."
        )
    dataset = torchvision.datasets.ImageFolder(
        str(folder), transform=torchvision.transforms.PILToTensor()
    )
    loader = DataLoader(dataset, batch_size=1000, num_workers=workers)
    images, labels = zip(*loader, strict=True)
    return ImageData(torch.cat(images), torch.cat(labels).to(torch.int64), tuple(dataset.classes))


#: Seed of the fixed random order in which test images are taken (:func:`fixed_order`).
ORDER_SEED = 0


def fixed_order(size: int, seed: int = ORDER_SEED) -> Tensor:
    """``(size,)`` the fixed random permutation in which images are taken when not all are used.

    Datasets may be stored class by class (the CIFAR-10 JPEG copy: its first 1000 test images
    are airplanes), so "the first n images" would be one class; every subset (``--limit``,
    ``--eval-limit``, the figures' test sets) is the first n of this order instead.
    """
    return torch.randperm(size, generator=torch.Generator().manual_seed(seed))


def fixed_subset(data: ImageData, limit: int, seed: int = ORDER_SEED) -> ImageData:
    """The first ``limit`` images of :func:`fixed_order` (all of them when ``limit >= len``)."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise ValueError(f"limit must be an integer >= 1, got {limit!r}")
    index = fixed_order(len(data), seed)[:limit]
    return ImageData(data.images[index], data.labels[index], data.classes)


def load_test_split(
    name: str, root: str | Path | None, n: int | None = None, **options: object
) -> ImageData:
    """The test split in the fixed random order (:func:`fixed_order`), all of it or its first ``n``.

    The one loader for evaluation, attacks and figures: whatever takes "n test images" takes the
    same ones. ``options`` go to :func:`load_dataset`.
    """
    data = load_dataset(name, root, train=False, **options)
    return fixed_subset(data, len(data) if n is None else n)


def synthetic_dataset(
    size: int, data_shape: tuple[int, int, int], num_classes: int, seed: int
) -> ImageData:
    """``size`` 8-bit images: a fixed random template per class plus pixel noise (class-separable).

    Templates depend only on the shape and class count; ``seed`` draws the labels and the noise.
    """
    templates = torch.rand((num_classes, *data_shape), generator=torch.Generator().manual_seed(7))
    generator = torch.Generator().manual_seed(1000 + seed)
    labels = torch.randint(0, num_classes, (size,), generator=generator)
    noise = 0.15 * torch.randn((size, *data_shape), generator=generator)
    values = (0.2 + 0.6 * templates[labels] + noise).clamp(0.0, 1.0)
    images = (values * 255).round().to(torch.uint8)
    return ImageData(images, labels, tuple(f"class{c}" for c in range(num_classes)))
