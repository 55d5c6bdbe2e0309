"""The README: short, its install and test commands are CI's, and its Python examples run (each
block in a fresh interpreter, asserts included)."""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
CI = ROOT / ".ci" / "run"
#: what a newcomer reads first stays short; everything else is on the documentation site
MAX_LINES = 150


def _python_blocks() -> list[str]:
    return re.findall(r"^```python\n(.*?)^```", README.read_text(), flags=re.S | re.M)


def _ci_command(label: str) -> str:
    """The command on the line after ``# README <label> command:`` in .ci/run."""
    lines = CI.read_text().splitlines()
    marker = lines.index(f"# README {label} command:")
    return lines[marker + 1].strip()


def test_readme_has_the_three_examples():
    assert len(_python_blocks()) >= 3


def test_readme_is_short():
    lines = README.read_text().count("\n")
    assert lines <= MAX_LINES, (
        f"README.md has {lines} lines; move details to docs/ (at most {MAX_LINES})"
    )


def test_readme_links_lead_to_files():
    targets = re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", README.read_text())
    local = [t for t in targets if "://" not in t]
    assert local, "the README links to the documentation pages"
    missing = [t for t in local if not (ROOT / t).exists()]
    assert not missing, f"README links to missing files: {missing}"


@pytest.mark.parametrize("label", ["install", "test"])
def test_readme_gives_the_commands_ci_runs(label):
    command = _ci_command(label)
    bash = "\n".join(re.findall(r"^```bash\n(.*?)^```", README.read_text(), flags=re.S | re.M))
    commands = [line.split("#")[0].strip() for line in bash.splitlines()]
    assert command in commands, f".ci/run's {label} command {command!r} is not in the README"


@pytest.mark.parametrize("index", range(len(_python_blocks())))
def test_readme_python_example_runs(index, tmp_path):
    """Each block runs in a fresh interpreter (examples may set torch's thread count)."""
    block = _python_blocks()[index]
    result = subprocess.run(
        [sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"README block {index} failed:\n{block}\n{result.stderr}"
