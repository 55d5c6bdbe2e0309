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
