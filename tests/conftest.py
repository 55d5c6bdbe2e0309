"""Shared pytest fixtures: a seeded random generator for every test."""

import numpy as np
import pytest


@pytest.fixture
def rng() -> np.random.Generator:
    """A NumPy generator with a fixed seed, so every test is reproducible."""
    return np.random.default_rng(12345)
