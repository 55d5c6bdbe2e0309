"""Committed trained runs load, and the figures the README and artifacts/README.md state are theirs."""

import json
from pathlib import Path

import pytest
import torch

import flows

ROOT = Path(__file__).resolve().parents[1]
RUNS = sorted(p for p in (ROOT / "artifacts" / "runs").glob("*") if (p / "checkpoint.pt").exists())


def _final_eval(run: Path) -> dict:
    lines = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    return [r for r in lines if r["kind"] == "eval"][-1]


def test_there_are_committed_runs():
    assert RUNS


@pytest.mark.parametrize("run", RUNS, ids=lambda p: p.name)
def test_committed_run_loads_and_its_figures_are_documented(run):
    model = flows.load(run)
    assert not model.training
    shape = tuple(model.config.data_shape)
    x = torch.rand(2, *shape, generator=torch.Generator().manual_seed(0)) - 0.5
    with torch.no_grad():
        proba = model.predict_proba(x, torch.Generator().manual_seed(0))
    torch.testing.assert_close(proba.sum(1), torch.ones(2))
    final = _final_eval(run)
    accuracy = f"{100 * final['accuracy']:.2f}%"
    bpd = f"{final['bits_per_dim']:.3f}"
    for doc in (ROOT / "README.md", ROOT / "artifacts" / "README.md"):
        text = doc.read_text()
        assert accuracy in text and bpd in text, (doc.name, run.name, accuracy, bpd)
