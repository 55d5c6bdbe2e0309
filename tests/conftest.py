"""Shared pytest fixtures: a seeded random generator for every test, and an environment guard."""

import os

import numpy as np
import pytest

#: The package's environment variables (``CGM_DATA_ROOT``, ``CGM_QUICK``, ``CGM_RUNS_ROOT``): read
#: at the edges (command lines, notebooks, ``Context.from_environment``), never written.
ENV_PREFIX = "CGM_"


def _package_environment() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if k.startswith(ENV_PREFIX)}


@pytest.fixture(scope="session", autouse=True)
def package_environment_is_left_alone():
    """No test, and no code a test runs, leaves a ``CGM_*`` variable set, changed or unset."""
    before = _package_environment()
    yield
    assert _package_environment() == before, (
        f"the session changed the {ENV_PREFIX}* environment: {before} -> {_package_environment()}"
    )


@pytest.fixture
def rng() -> np.random.Generator:
    """A NumPy generator with a fixed seed, so every test is reproducible."""
    return np.random.default_rng(12345)
