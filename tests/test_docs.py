"""The documentation pages cannot go stale: every ```python block of docs/ runs.

Each block runs in a fresh interpreter with a temporary working directory (as the README's, see
``tests/test_readme.py``), so blocks are independent and leave no files behind. Blocks that must not
run (they need the datasets, or hours) are fenced ``bash``, ``pycon`` or ``text`` instead; a fence
in any other language would be skipped silently, so the languages are checked too. The site itself
is built by ``mkdocs build --strict`` in CI (.ci/run), which fails on broken links and references.
"""

import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
PAGES = sorted(DOCS.rglob("*.md"))
#: fence languages that are shown, never run
NOT_RUN = frozenset({"bash", "pycon", "text"})
_FENCE = re.compile(r"^```(\S*)[^\n]*\n(.*?)^```", flags=re.S | re.M)


def _blocks(page: Path) -> list[tuple[str, str]]:
    return [(m.group(1), m.group(2)) for m in _FENCE.finditer(page.read_text())]


def _python_blocks() -> list:
    params = []
    for page in PAGES:
        runnable = [code for language, code in _blocks(page) if language == "python"]
        name = page.relative_to(DOCS)
        params += [pytest.param(code, id=f"{name}:{i}") for i, code in enumerate(runnable)]
    return params


PYTHON_BLOCKS = _python_blocks()


def test_there_are_pages_with_examples():
    assert PAGES and len(PYTHON_BLOCKS) >= 5


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(DOCS)))
def test_every_fence_is_run_or_explicitly_shown_only(page):
    unknown = {lang for lang, _ in _blocks(page)} - NOT_RUN - {"python"}
    assert not unknown, (
        f"{page.name}: fences {sorted(unknown)} (use python to run, else {sorted(NOT_RUN)})"
    )


@pytest.mark.parametrize("block", PYTHON_BLOCKS)
def test_docs_python_example_runs(block, tmp_path):
    result = subprocess.run(
        [sys.executable, "-c", block], cwd=tmp_path, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, f"docs block failed:\n{block}\n{result.stderr}"
