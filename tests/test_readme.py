"""The README's Python examples run, and the values stated in their comments are the real ones."""

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def _python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_python_examples_run():
    blocks = _python_blocks()
    assert blocks, "the README has no python examples"
    for block in blocks:
        exec(compile(block, str(README), "exec"), {"__name__": "__readme__"})


def test_readme_counterexample_numbers_are_current():
    import counterexample as ce

    text = README.read_text()
    assert f"# {ce.find_dimension(1e-3, 1e-5, 1e-9)}: exact" in text
    assert f"d = {ce.find_dimension(0.1, 0.01, 0.1)}" in text
    assert "(1, 2): eq. (19)" in text
    assert (ce.find_dimension_eq19(10, 0.4, 1.0), ce.find_dimension(10, 0.4, 1.0)) == (1, 2)
