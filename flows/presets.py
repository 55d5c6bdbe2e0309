"""Frozen presets: the paper's Appendix A settings, CPU-sized ones, and a tiny one for tests.

Every preset derives from a paper preset (``Preset.replace``), so what differs from the paper is
exactly what each one changes. ``cpu-mnist`` / ``cpu-cifar`` keep the paper's 4 levels and input
pipeline with 4 steps per level and 32 / 48 hidden channels; ``cpu-mnist-deep`` (MNIST classifiers
nearer the paper's 99%) doubles the steps and trains 20 epochs, the learning rate divided by 10
after 10: on a CPU, depth is the cheap way to a larger model and width is not. Measured step times
and throughputs are recorded in ``benchmarks/preset_pilot.md``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

ARCHITECTURE_FIELDS = ("levels", "steps", "hidden_channels")


@dataclass(frozen=True)
class Preset:
    """Architecture, data shape and optimisation schedule of one training setting.

    ``data_shape`` is the dataset's image shape (the model's input); ``padded_size`` the square size
    the model pads it to (Appendix A: 32). The learning rate is divided by ``lr_decay_factor``'s
    inverse every ``lr_decay_epochs`` epochs; augmentation is a random crop after ``crop_padding``
    pixels of edge padding, plus a horizontal flip when ``hflip`` (``tiny`` trains on synthetic
    random-pixel templates, which shifts would destroy, so it does not crop).
    """

    name: str
    dataset: str
    data_shape: tuple[int, int, int]
    padded_size: int
    levels: int
    steps: int
    hidden_channels: int
    epochs: int
    batch_size: int
    lr: float
    lr_decay_epochs: int
    lr_decay_factor: float
    crop_padding: int
    hflip: bool

    def replace(self, **changes: object) -> Preset:
        """A copy with some fields changed."""
        return dataclasses.replace(self, **changes)


#: Appendix A: 4 levels, 12 steps of 128 channels (MNIST) or 16 of 256 (CIFAR-10), Adam 1e-3
#: divided by 10 every 60 of 150 epochs, batch 64, random crops after 4 pixels of edge padding
#: (and horizontal flips for CIFAR-10).
PAPER_MNIST = Preset(
    "paper-mnist",
    "mnist",
    (1, 28, 28),
    32,
    levels=4,
    steps=12,
    hidden_channels=128,
    epochs=150,
    batch_size=64,
    lr=1e-3,
    lr_decay_epochs=60,
    lr_decay_factor=0.1,
    crop_padding=4,
    hflip=False,
)
PAPER_CIFAR = PAPER_MNIST.replace(
    name="paper-cifar", dataset="cifar10", data_shape=(3, 32, 32), steps=16,
    hidden_channels=256, hflip=True,
)  # fmt: skip

PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        PAPER_MNIST,
        PAPER_CIFAR,
        # CPU sizes: the paper's input pipeline and 4 levels, fewer steps and channels
        PAPER_MNIST.replace(
            name="cpu-mnist", steps=4, hidden_channels=32, epochs=5, lr_decay_epochs=4
        ),
        PAPER_MNIST.replace(
            name="cpu-mnist-deep", steps=8, hidden_channels=32, epochs=20, lr_decay_epochs=10
        ),
        PAPER_CIFAR.replace(
            name="cpu-cifar", steps=4, hidden_channels=48, epochs=4, lr_decay_epochs=3
        ),
        # tests and smoke runs: synthetic 8 x 8 images, no augmentation (shifts would destroy
        # the synthetic random-pixel templates)
        PAPER_MNIST.replace(
            name="tiny",
            dataset="synthetic",
            data_shape=(1, 8, 8),
            padded_size=8,
            levels=2,
            steps=2,
            hidden_channels=8,
            epochs=2,
            batch_size=16,
            lr_decay_epochs=1,
            lr_decay_factor=0.5,
            crop_padding=0,
        ),  # fmt: skip
    )
}


def get_preset(preset: str | Preset) -> Preset:
    """Look a preset up by name (or pass a :class:`Preset` through)."""
    if isinstance(preset, Preset):
        return preset
    try:
        return PRESETS[preset]
    except KeyError:
        raise ValueError(f"unknown preset {preset!r}; expected one of {sorted(PRESETS)}") from None
