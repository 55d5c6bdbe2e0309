"""Shared fixtures of the flows.analysis tests: one thread, and initialised tiny models."""

import pytest
import torch

import flows


@pytest.fixture(autouse=True)
def single_thread():
    """Tiny models gain nothing from two threads on a shared 2-core machine."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def make_tiny_model(prior: str):
    """An untrained tiny GLOW (1×8×8 images, 10 classes) with ``prior``, actnorm initialised, eval."""
    gen = torch.Generator().manual_seed(0)
    model = flows.build_model("tiny", prior, num_classes=10, generator=gen)
    x = torch.rand((16, *model.config.data_shape), generator=gen) - 0.5
    model.initialise(x, torch.Generator().manual_seed(1))
    return model.eval()
