"""A griffe extension for the API reference: the package's reST docstring markup in Markdown.

The docstrings are written for Sphinx-style reading (``:math:`...```, ``.. math::`` blocks,
``:func:`...``` roles, ``::`` literal blocks, ``>>>`` examples, simple ``===`` tables);
mkdocstrings renders Markdown. Before griffe parses a docstring this extension rewrites:

* ``:math:`x``` → ``$x$`` and ``.. math::`` blocks → ``$$ ... $$``, rows with ``&`` in an
  ``aligned`` environment (rendered by pymdownx.arithmatex and MathJax);
* ``:func:`~a.b.c``` (and ``:class:``, ``:meth:``, ``:mod:``, ``:data:``, ``:attr:``) → an
  optional cross-reference: a link where mkdocs-autorefs knows the object, plain code elsewhere
  (relative targets such as ``.lemmas`` stay code);
* a paragraph ending in ``::`` and its indented block, and ``>>>`` sessions → fenced code
  blocks; simple tables (``===`` borders) → Markdown tables.

Used by mkdocs.yml only (``plugins.mkdocstrings.handlers.python.options.extensions``); the
package itself never imports it.
"""

from __future__ import annotations

import html
import re

from griffe import Extension, Object

_MATH_ROLE = re.compile(r":math:`([^`]+)`")
_XREF_ROLE = re.compile(r":(?:func|class|meth|mod|data|attr|obj|exc):`(~?)([^`]+)`")
_TABLE_BORDER = re.compile(r"^\s*=+(\s+=+)+\s*$")
_MATH_DIRECTIVE = re.compile(r"^(\s*)\.\. math::\s*(.*)$")
_ROLE_OVER_LINES = re.compile(r":\w+:`[^`]*\n[^`]*`")


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _block_end(lines: list[str], start: int, parent: int) -> int:
    """Index after the block of lines indented deeper than ``parent`` that begins at ``start``
    (blank lines inside it included, trailing blank lines excluded)."""
    end = last = start
    while end < len(lines) and (not lines[end].strip() or _indent(lines[end]) > parent):
        if lines[end].strip():
            last = end + 1
        end += 1
    return last


def _dedent(block: list[str]) -> list[str]:
    width = min((_indent(line) for line in block if line.strip()), default=0)
    return [line[width:] if line.strip() else "" for line in block]


def _fence(block: list[str], indent: str, language: str = "") -> list[str]:
    return [f"{indent}```{language}", *[indent + line for line in _dedent(block)], f"{indent}```"]


def _environment(body: list[str]) -> list[str]:
    """Multi-line display math as Sphinx reads it: rows (``\\``) aligned at ``&``."""
    text = "\n".join(body)
    if "&" in text:
        return [r"\begin{aligned}", *body, r"\end{aligned}"]
    if "\\\\" in text:
        return [r"\begin{gathered}", *body, r"\end{gathered}"]
    return body


def _xref(match: re.Match) -> str:
    short, target = match.group(1), match.group(2).rstrip("()")
    title = target.rsplit(".", 1)[-1] if short else target.lstrip(".")
    code = f"<code>{html.escape(title)}</code>"
    if target.startswith("."):
        return code
    return f'<autoref optional identifier="{html.escape(target)}">{code}</autoref>'


def _inline(line: str) -> str:
    line = _MATH_ROLE.sub(lambda m: f"${m.group(1).strip()}$", line)
    return _XREF_ROLE.sub(_xref, line)


def _table(lines: list[str], borders: list[int], indent: str) -> list[str]:
    """A simple reST table (three ``===`` border lines) as a Markdown table."""
    border = lines[borders[0]]
    starts = [m.start() for m in re.finditer(r"=+", border)]

    def cells(line: str) -> list[str]:
        edges = [*starts[1:], max(len(line), starts[-1])]
        return [line[a:b].strip() for a, b in zip(starts, edges, strict=True)]

    header = cells(lines[borders[0] + 1])
    rows: list[list[str]] = []
    for line in lines[borders[1] + 1 : borders[2]]:
        row = cells(line)
        if rows and not row[0]:
            rows[-1] = [f"{a} {b}".strip() for a, b in zip(rows[-1], row, strict=True)]
        else:
            rows.append(row)
    table = [header, ["---"] * len(header), *rows]
    return [indent + "| " + " | ".join(_inline(cell) for cell in row) + " |" for row in table]


def rst_to_markdown(text: str) -> str:
    """The docstring ``text`` with its reST markup rewritten as Markdown (module docstring)."""
    text = _ROLE_OVER_LINES.sub(lambda m: re.sub(r"\s*\n\s*", " ", m.group(0)), text)
    lines = text.splitlines()
    out: list[str] = []
    i = 0
    while i < len(lines):
        line = lines[i]
        indent = line[: _indent(line)]
        math = _MATH_DIRECTIVE.match(line)
        if math:
            end = _block_end(lines, i + 1, len(indent))
            body = [math.group(2)] if math.group(2) else []
            body += [row.strip() for row in lines[i + 1 : end] if row.strip()]
            body = _environment(body)
            out += ["", f"{indent}$$", *[indent + row for row in body], f"{indent}$$", ""]
            i = end
            continue
        if _TABLE_BORDER.match(line):
            borders = [i]
            j = i + 1
            while j < len(lines) and len(borders) < 3 and lines[j].strip():
                if _TABLE_BORDER.match(lines[j]):
                    borders.append(j)
                j += 1
            if len(borders) == 3:
                out += ["", *_table(lines, borders, indent), ""]
                i = j
                continue
        if line.lstrip().startswith(">>>"):
            j = i
            while j < len(lines) and lines[j].strip():
                j += 1
            out += ["", *_fence(lines[i:j], indent, "pycon"), ""]
            i = j
            continue
        if line.rstrip().endswith("::") and not line.strip().startswith(".."):
            j = i + 1
            while j < len(lines) and not lines[j].strip():
                j += 1
            if j < len(lines) and _indent(lines[j]) > len(indent):
                end = _block_end(lines, j, len(indent))
                head = line.rstrip()[:-2].rstrip()
                out.append(_inline(head + ":") if head.strip() else "")
                out += ["", *_fence(lines[j:end], indent), ""]
                i = end
                continue
        out.append(_inline(line))
        i += 1
    return "\n".join(out)


class RstToMarkdown(Extension):
    """Rewrite every docstring's reST markup as Markdown before griffe parses it."""

    def on_instance(self, *, obj: Object, **kwargs) -> None:
        if obj.docstring is not None:
            obj.docstring.value = rst_to_markdown(obj.docstring.value)
