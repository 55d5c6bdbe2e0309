"""Fixtures of the robustness tests: one intra-op thread (small tensors; a busy machine)."""

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread():
    """Tiny tensors: one intra-op thread is fastest, and immune to a busy machine's other load.
    Restored after."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
