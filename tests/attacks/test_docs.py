"""The python examples of docs/readme_attacks.md run and their assertions hold."""

import re
from pathlib import Path

import pytest

DOC = Path(__file__).resolve().parents[2] / "docs" / "readme_attacks.md"


@pytest.mark.skipif(not DOC.exists(), reason="docs/readme_attacks.md merged into README.md")
def test_attack_docs_examples_run():
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    assert len(blocks) == 2
    for block in blocks:
        exec(compile(block, str(DOC), "exec"), {"__name__": "__doc_example__"})
