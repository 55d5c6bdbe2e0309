"""``notebooks/execute.py`` hands its settings to the kernels through their environment only."""

import importlib.util
import os
from pathlib import Path

from . import harness

SCRIPT = harness.NOTEBOOKS_DIR / "execute.py"


def _script():
    spec = importlib.util.spec_from_file_location("notebooks_execute", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_kernel_environment_sets_quick_and_an_absolute_data_root(tmp_path, monkeypatch):
    script = _script()
    monkeypatch.chdir(tmp_path)
    base = {"PATH": "/bin", "CGM_QUICK": "1", "CGM_DATA_ROOT": "data"}
    full = script.kernel_environment(False, None, base)
    assert "CGM_QUICK" not in full and full["PATH"] == "/bin"
    assert full["CGM_DATA_ROOT"] == str(tmp_path / "data")
    quick = script.kernel_environment(True, "elsewhere", base)
    assert quick["CGM_QUICK"] == "1" and quick["CGM_DATA_ROOT"] == str(tmp_path / "elsewhere")
    assert base == {"PATH": "/bin", "CGM_QUICK": "1", "CGM_DATA_ROOT": "data"}
    assert "CGM_DATA_ROOT" not in script.kernel_environment(True, None, {})


def test_kernel_environment_leaves_this_process_alone():
    script = _script()
    before = dict(os.environ)
    env = script.kernel_environment(True, str(Path.cwd()))
    assert dict(os.environ) == before
    assert env["CGM_QUICK"] == "1"


def test_cells_seconds_sums_the_kernels_busy_time_of_code_cells():
    nb = harness.nbformat.v4.new_notebook()
    nb.cells = [
        harness.nbformat.v4.new_markdown_cell("text"),
        harness.nbformat.v4.new_code_cell("1"),
        harness.nbformat.v4.new_code_cell("2"),
        harness.nbformat.v4.new_code_cell("not run"),
    ]
    for cell, (busy, idle) in zip(
        nb.cells[1:3],
        [("00:00:01.500000", "00:00:03.000000"), ("00:00:10", "00:01:10")],
        strict=True,
    ):
        cell.metadata["execution"] = {
            "iopub.status.busy": f"2026-12-05T12{busy[2:]}Z",
            "iopub.status.idle": f"2026-12-05T12{idle[2:]}Z",
        }
    assert harness.cells_seconds(nb) == 61.5
