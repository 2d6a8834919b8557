"""Names a user typed (classes, files, datasets, runs) inside Markdown: escaped, so that they show as
typed and are never a link, an image, bold, code or HTML. Used by the model card and by the app."""

from __future__ import annotations

import re

# The marks Markdown, GitHub's HTML, Streamlit's directives (``:red[...]``, ``:material/icon:``,
# ``:smile:``), its LaTeX (``$``) or GitHub's bare-URL links act on; CommonMark lets a backslash escape
# each one. A colon only before a letter or "//" ("2.jpg: true" stays as it is), a list mark only at the
# start, so that ordinary names stay readable.
_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>!|~$&#]|:(?=[A-Za-z]|//)|(?<=www)\.)")  # "://", "www.": autolinks
_BLOCK_START = re.compile(r"^(\s*)([-+=](?=\s|$)|\d+(?=[.)](?:\s|$)))")


def escape_markdown(text: object) -> str:
    """``text`` as one line of Markdown that renders exactly as ``text`` reads."""
    one_line = re.sub(r"[\r\n\t]+", " ", str(text))  # a newline would end a table row or a list item
    escaped = _SPECIAL.sub(r"\\\1", one_line)
    return _BLOCK_START.sub(lambda m: m.group(1) + (m.group(2) + "\\" if m.group(2)[0].isdigit() else "\\" + m.group(2)), escaped)


def code_fence(text: str) -> str:
    """A backtick fence longer than any run of backticks in ``text``, so a name cannot close it."""
    longest = max((len(run) for run in re.findall(r"`+", text)), default=0)
    return "`" * max(3, longest + 1)


def code_span(text: object) -> str:
    """``text`` as inline code (shown literally: no Markdown or HTML inside), whatever backticks it has.
    Not for table cells: GitHub splits a table row at a ``|`` even inside code."""
    one_line = re.sub(r"[\r\n\t]+", " ", str(text))
    fence = "`" * (max((len(run) for run in re.findall(r"`+", one_line)), default=0) + 1)
    pad = " " if one_line.startswith("`") or one_line.endswith("`") else ""
    return f"{fence}{pad}{one_line}{pad}{fence}"
