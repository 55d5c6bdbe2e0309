"""The prepared GPU check (benchmarks/gpu_check.py) runs end to end, on the CPU at tiny sizes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_gpu_check_runs_every_check_on_the_cpu(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    command = [sys.executable, str(REPO / "benchmarks" / "gpu_check.py"), "--out", str(tmp_path)]
    completed = subprocess.run(
        [*command, "--device", "cpu", "--quick"], capture_output=True, text=True, env=env
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    report = json.loads((tmp_path / "gpu_check.json").read_text())
    assert not [name for name, result in report.items() if "error" in result]
    for preset in ("paper-mnist", "paper-cifar"):
        exact = report[f"exactness {preset}"]
        assert exact["float64_round_trip_relative_error"] < 1e-10
        assert exact["float64_device_vs_cpu_log_likelihood_relative_error"] < 1e-12
        assert report[f"float32 round trip {preset}"]["tf32_on"] < 1e-5
    throughputs = [result for name, result in report.items() if name.startswith("throughput")]
    assert len(throughputs) == 6
    assert all(result["train_images_per_s"] > 0 for result in throughputs)
    cli = report["cli train, resume, evaluate"]
    assert cli["position_after_resume"]["epoch"] == 2
    assert cli["evaluation"]["num_examples"] == 64
