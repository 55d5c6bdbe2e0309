"""Datasets (missing-data errors, ImageFolder, synthetic), augmentation, checkpoints, flows.load."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

import flows
from flows.checkpoint import load_checkpoint, resolve_checkpoint, save_checkpoint
from flows.data import DatasetNotFoundError, load_dataset, synthetic_dataset
from flows.preprocess import augment


@pytest.mark.parametrize("name", ["mnist", "cifar10", "imagefolder"])
def test_missing_dataset_error_names_the_root_and_how_to_get_it(tmp_path, name):
    with pytest.raises(DatasetNotFoundError) as error:
        load_dataset(name, tmp_path, train=True)
    message = str(error.value)
    assert str(tmp_path) in message
    assert (
        ("--download" in message) if name != "imagefolder" else ("sub-folder per class" in message)
    )


def test_image_folder_loads_exact_pixels_and_sorted_class_labels(tmp_path):
    rng = np.random.default_rng(0)
    expected = {}
    for name in ["cat", "airplane"]:  # created out of alphabetical order on purpose
        folder = tmp_path / "test" / name
        folder.mkdir(parents=True)
        for i in range(3):
            pixels = rng.integers(0, 256, size=(4, 4, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
            expected[(name, i)] = pixels
    data = load_dataset("imagefolder", tmp_path, train=False)
    assert data.classes == ("airplane", "cat")
    assert data.images.shape == (6, 3, 4, 4) and data.images.dtype == torch.uint8
    assert data.labels.tolist() == [0, 0, 0, 1, 1, 1]
    assert np.array_equal(data.images[3].permute(1, 2, 0).numpy(), expected[("cat", 0)])
    assert np.array_equal(data.images[2].permute(1, 2, 0).numpy(), expected[("airplane", 2)])


def test_synthetic_dataset_is_deterministic_and_class_dependent():
    a = synthetic_dataset(200, (1, 6, 6), 4, seed=0)
    b = synthetic_dataset(200, (1, 6, 6), 4, seed=0)
    assert torch.equal(a.images, b.images) and torch.equal(a.labels, b.labels)
    means = torch.stack([a.images[a.labels == c].double().mean(0) for c in range(4)])
    within = torch.stack([a.images[a.labels == c].double().std(0).mean() for c in range(4)])
    between = (means[0] - means[1]).abs().mean()
    assert between > within.mean()  # classes are separable from pixels
    other = synthetic_dataset(200, (1, 6, 6), 4, seed=1)
    assert not torch.equal(a.images, other.images)


def test_augment_crops_a_window_of_the_edge_padded_image():
    x = torch.arange(2 * 25, dtype=torch.float32).reshape(2, 1, 5, 5)
    out = augment(x, crop_padding=2, hflip=False, generator=torch.Generator().manual_seed(0))
    padded = F.pad(x, (2, 2, 2, 2), mode="replicate")
    for i in range(2):
        windows = [padded[i, :, r : r + 5, c : c + 5] for r in range(5) for c in range(5)]
        assert any(torch.equal(out[i], w) for w in windows)
    assert torch.equal(augment(x, 0, False), x)


def test_augment_flips_about_half_of_the_images():
    x = torch.arange(4.0).reshape(1, 1, 1, 4).expand(400, 1, 1, 4)
    out = augment(x, 0, True, torch.Generator().manual_seed(0))
    flipped = (out == x.flip(-1)).all(dim=(1, 2, 3))
    assert ((out == x).all(dim=(1, 2, 3)) | flipped).all()
    assert 150 < int(flipped.sum()) < 250


def test_checkpoint_is_written_atomically_and_leaves_no_temporary_file(tmp_path):
    path = tmp_path / "run" / "checkpoint.pt"
    save_checkpoint(path, {"value": torch.arange(3)})
    save_checkpoint(path, {"value": torch.arange(4)})
    assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.pt"]
    assert torch.equal(load_checkpoint(path)["value"], torch.arange(4))
    assert resolve_checkpoint(path.parent) == path
    with pytest.raises(FileNotFoundError, match="no checkpoint at"):
        resolve_checkpoint(tmp_path / "elsewhere")


def test_failed_save_keeps_the_previous_checkpoint(tmp_path):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, {"value": 1})

    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    with pytest.raises(RuntimeError, match="cannot pickle"):
        save_checkpoint(path, {"value": Unpicklable()})
    assert load_checkpoint(path)["value"] == 1
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_load_round_trip_restores_an_identical_model(tmp_path: Path):
    torch.manual_seed(0)
    model = flows.build_model("tiny", "split", hidden_channels=4)
    x = torch.rand(4, 1, 8, 8) - 0.5
    model.initialise(x)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.add_(0.01 * torch.randn_like(parameter))
    save_checkpoint(
        tmp_path / "checkpoint.pt",
        {"model": model.state_dict(), "model_config": model.config.to_dict()},
    )
    loaded = flows.load(tmp_path)
    assert loaded.config == model.config and not loaded.training
    generator = torch.Generator().manual_seed
    assert torch.equal(
        loaded.class_log_likelihoods(x, generator(1)), model.class_log_likelihoods(x, generator(1))
    )
