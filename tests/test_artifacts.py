"""Committed trained runs load, agree with their own config.json, and end with a complete evaluation.

Checked against each run's own records only (``config.json``, ``metrics.jsonl``), never against
prose: the loaded model is the configured one, training logged one test evaluation per epoch up to
the configured epoch count, and the last one (what Table 1 and the README report) covers the whole
test split with finite values.
"""

import json
import math
from dataclasses import asdict
from pathlib import Path

import pytest
import torch

import flows
from flows.training import final_evaluation, read_metrics

ROOT = Path(__file__).resolve().parents[1]
RUNS = sorted(p for p in (ROOT / "artifacts" / "runs").glob("*") if (p / "checkpoint.pt").exists())
#: test images of MNIST and of the CIFAR-10 JPEG copy
TEST_SPLIT_SIZE = 10_000


def _config(run: Path) -> dict:
    return json.loads((run / "config.json").read_text())


def test_there_are_committed_runs():
    assert RUNS


@pytest.mark.parametrize("run", RUNS, ids=lambda p: p.name)
def test_committed_run_loads_as_configured(run):
    model = flows.load(run)
    assert not model.training
    saved = _config(run)["model"]
    loaded = json.loads(json.dumps(asdict(model.config)))
    assert {key: loaded[key] for key in saved} == saved
    shape = tuple(model.config.data_shape)
    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0)) - 0.5
    with torch.no_grad():
        proba = model.predict_proba(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(proba.sum(1), torch.ones(2))


@pytest.mark.parametrize("run", RUNS, ids=lambda p: p.name)
def test_committed_run_ends_with_a_complete_finite_evaluation(run):
    config = _config(run)
    epochs = config["train"]["epochs"] or config["preset"]["epochs"]
    records = read_metrics(run / "metrics.jsonl")
    evaluations = [r for r in records if r["kind"] == "eval"]
    assert [r["epoch"] for r in evaluations] == list(range(1, epochs + 1))
    steps = [r["step"] for r in records]
    assert steps == sorted(steps), "records out of order"
    final = final_evaluation(run)
    assert final == evaluations[-1]
    assert config["train"]["eval_limit"] is None
    assert final["num_examples"] == TEST_SPLIT_SIZE
    assert 0.0 < final["accuracy"] <= 1.0
    for key in ("bits_per_dim", "bits_per_dim_std", "loss"):
        assert math.isfinite(final[key]), key
    assert final["bits_per_dim"] > 0 and final["bits_per_dim_std"] > 0
    assert all(
        math.isfinite(r[key]) for r in records for key in ("loss", "bits_per_dim", "accuracy")
    ), "a non-finite training or evaluation record"
