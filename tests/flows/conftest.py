"""Fixtures for the flows tests."""

import pytest
import torch


@pytest.fixture(autouse=True)
def single_thread():
    """Run torch on one thread: these tiny models gain nothing from two, and on a shared 2-core
    machine two intra-op threads contending with other processes run several times slower."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
