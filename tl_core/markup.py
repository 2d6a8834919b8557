"""Names a user typed (classes, files, datasets, runs) inside Markdown: escaped, so that they show as
typed and are never a link, an image, bold, code or HTML. Used by the model card and by the app."""

from __future__ import annotations

import re

# Every ASCII punctuation mark that Markdown, GitHub's HTML, Streamlit's directives (``:red[...]``,
# ``:material/icon:``) or its LaTeX (``$``) could act on; CommonMark lets a backslash escape each one.
_SPECIAL = re.compile(r"([\\`*_{}\[\]()<>#+\-.!|~:$&^=\"'])")


def escape_markdown(text: object) -> str:
    """``text`` as one line of Markdown that renders exactly as ``text`` reads."""
    one_line = re.sub(r"[\r\n\t]+", " ", str(text))  # a newline would end a table row or a list item
    return _SPECIAL.sub(r"\\\1", one_line)


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
