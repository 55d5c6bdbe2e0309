"""Frozen presets: the paper's Appendix A settings, CPU-sized ones, and a tiny one for tests.

``cpu-mnist`` / ``cpu-cifar`` keep the paper's 4 levels and input pipeline but use 4 steps per level
and 32 / 48 hidden channels. Measured training throughput on this 2-core machine, shared with
other jobs (``--threads 1``): 119–230 and 62–130 images/s depending on load, so their 5 MNIST and
4 CIFAR-10 epochs take roughly 25–55 minutes plus evaluation. Their accuracy after a full run has
not been measured (see docs/readme_flows.md).

``cpu-mnist-deep`` (MNIST classifiers nearer the paper's 99%) doubles the steps per level and trains
20 epochs, the learning rate divided by 10 after 10: on this CPU, depth is the cheap way to a larger
model and width is not (``benchmarks/preset_pilot.py``, results in ``benchmarks/preset_pilot.md``).
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


PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
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
        ),
        Preset(
            "paper-cifar",
            "cifar10",
            (3, 32, 32),
            32,
            levels=4,
            steps=16,
            hidden_channels=256,
            epochs=150,
            batch_size=64,
            lr=1e-3,
            lr_decay_epochs=60,
            lr_decay_factor=0.1,
            crop_padding=4,
            hflip=True,
        ),
        Preset(
            "cpu-mnist",
            "mnist",
            (1, 28, 28),
            32,
            levels=4,
            steps=4,
            hidden_channels=32,
            epochs=5,
            batch_size=64,
            lr=1e-3,
            lr_decay_epochs=4,
            lr_decay_factor=0.1,
            crop_padding=4,
            hflip=False,
        ),
        Preset(
            "cpu-mnist-deep",
            "mnist",
            (1, 28, 28),
            32,
            levels=4,
            steps=8,
            hidden_channels=32,
            epochs=20,
            batch_size=64,
            lr=1e-3,
            lr_decay_epochs=10,
            lr_decay_factor=0.1,
            crop_padding=4,
            hflip=False,
        ),
        Preset(
            "cpu-cifar",
            "cifar10",
            (3, 32, 32),
            32,
            levels=4,
            steps=4,
            hidden_channels=48,
            epochs=4,
            batch_size=64,
            lr=1e-3,
            lr_decay_epochs=3,
            lr_decay_factor=0.1,
            crop_padding=4,
            hflip=True,
        ),
        Preset(
            "tiny",
            "synthetic",
            (1, 8, 8),
            8,
            levels=2,
            steps=2,
            hidden_channels=8,
            epochs=2,
            batch_size=16,
            lr=1e-3,
            lr_decay_epochs=1,
            lr_decay_factor=0.5,
            crop_padding=0,
            hflip=False,
        ),
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
