"""docs/ARCHITECTURE.md matches the tree: every file and module it names exists, and its module
lists name every module of tl_core and tl_ui (a new module is added there, a removed one goes)."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DOC = REPO / "docs" / "ARCHITECTURE.md"

# ```text blocks whose first line is a folder ("tl_core/model/  ...") list that folder's modules,
# one per line: the line starts with the file name.
_BLOCK = re.compile(r"```text\n(.*?)```", re.S)
_FOLDER = re.compile(r"^((?:tl_core|tl_ui|pages)(?:/\w+)*/)\s")
_ENTRY = re.compile(r"^(\w+\.py)\b")
_PATH = re.compile(r"\b((?:tl_core|tl_ui|pages|tests|bench|docs)/[\w/.-]*\w)")
_DOTTED = re.compile(r"\b(tl_core(?:\.\w+)+)")


def listed_modules(text: str) -> dict[str, set[str]]:
    """Folder -> the module files its block lists."""
    found: dict[str, set[str]] = {}
    for block in _BLOCK.findall(text):
        lines = block.splitlines()
        head = _FOLDER.match(lines[0] + " ") if lines else None
        if not head:
            continue
        names = found.setdefault(head.group(1), set())
        for line in lines[1:]:
            names.update(_ENTRY.findall(line))
    return found


def test_every_path_the_doc_names_exists():
    text = DOC.read_text(encoding="utf-8")
    missing = sorted({p for p in _PATH.findall(text) if not (REPO / p).exists()})
    assert not missing, f"docs/ARCHITECTURE.md names files that do not exist: {missing}"


def test_every_dotted_module_the_doc_names_exists():
    text = DOC.read_text(encoding="utf-8")
    missing = []
    for dotted in set(_DOTTED.findall(text)):
        parts = dotted.split(".")
        # the longest prefix that is a module or package; what follows is a name in it
        for n in range(len(parts), 1, -1):
            base = REPO.joinpath(*parts[:n])
            if base.with_suffix(".py").is_file() or (base / "__init__.py").is_file():
                break
        else:
            missing.append(dotted)
    assert not missing, f"docs/ARCHITECTURE.md names modules that do not exist: {sorted(missing)}"


def test_the_module_lists_match_the_folders():
    listed = listed_modules(DOC.read_text(encoding="utf-8"))
    folders = [REPO / "tl_core", *sorted(p for p in (REPO / "tl_core").iterdir() if (p / "__init__.py").is_file()),
               REPO / "tl_ui"]
    for folder in folders:
        key = folder.relative_to(REPO).as_posix() + "/"
        actual = {p.name for p in folder.glob("*.py") if p.name != "__init__.py"}
        assert key in listed, f"docs/ARCHITECTURE.md has no module list for {key}"
        assert listed[key] - actual == set(), f"{key}: listed but not there: {sorted(listed[key] - actual)}"
        assert actual - listed[key] == set(), f"{key}: there but not listed: {sorted(actual - listed[key])}"


def test_the_checks_can_fail():
    listed = listed_modules("```text\ntl_core/model/   the model wing\nregistry.py   the registry\nnope.py x\n```\n")
    assert listed == {"tl_core/model/": {"registry.py", "nope.py"}}
    assert _PATH.findall("see `tl_core/nope.py` and tests/core/") == ["tl_core/nope.py", "tests/core"]
