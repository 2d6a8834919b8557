"""The pages and ``tl_ui`` only draw: no module there imports torch or torchvision (anywhere in the
file, imports inside functions included) or writes a file. Decoding, models and every file write
live in the engine (``tl_core``), which makes them whole-or-nothing and says when the disk is full.

Read from each file's syntax tree, so a lazy import in a function counts as much as one at the top.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

HEAVY_MODULES = ("torch", "torchvision")  # and their submodules
WRITING_MODULES = ("shutil", "tempfile")  # every use of them writes or removes files
# methods and functions that write, move or remove files, whatever object they are called on
WRITING_CALLS = frozenset({"write_bytes", "write_text", "mkdir", "makedirs", "rmtree", "unlink", "rmdir",
                           "removedirs", "touch", "symlink_to", "hardlink_to", "write_json", "write_with",
                           "append_line"})
OS_WRITING = frozenset({"remove", "unlink", "rename", "replace", "renames", "makedirs", "mkdir", "rmdir",
                        "removedirs", "truncate", "symlink", "link", "mkfifo"})
ATOMIC_WRITING = re.compile(r"^(write_\w*|append_line|replacing|staging)$")  # tl_core.atomic's writers
OPENERS = frozenset({"open", "ZipFile", "TarFile"})
WRITING_MODE = re.compile(r"^[rwxabt+U]*[wxa+][rwxabt+U]*$")


def _module_of(node: ast.expr) -> str | None:
    return node.id if isinstance(node, ast.Name) else None


def _call_name(func: ast.expr) -> tuple[str | None, str | None]:
    """(the name the call is made on, the function's name): ``os.remove`` -> ("os", "remove"),
    ``Path(p).write_bytes`` -> (None, "write_bytes"), ``open`` -> (None, "open")."""
    if isinstance(func, ast.Attribute):
        return _module_of(func.value), func.attr
    if isinstance(func, ast.Name):
        return None, func.id
    return None, None


def _writing_mode(call: ast.Call) -> str | None:
    """The mode of an ``open``-like call when it opens for writing (a constant among its first two
    arguments or its ``mode`` keyword), else None."""
    candidates = list(call.args[:2]) + [k.value for k in call.keywords if k.arg == "mode"]
    for arg in candidates:
        if isinstance(arg, ast.Constant) and isinstance(arg.value, str) and WRITING_MODE.match(arg.value):
            return arg.value
    return None


def _heavy(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in HEAVY_MODULES)


def _writer_module(module: str) -> bool:
    return any(module == name or module.startswith(name + ".") for name in WRITING_MODULES)


def violations(source: str, filename: str = "<source>") -> list[str]:
    """One ``file:line: what`` per import of torch/torchvision, import of a writing module, or call
    that writes a file, in ``source``."""
    found: list[str] = []
    atomic_names: set[str] = set()  # names bound to tl_core.atomic's writers by a from-import
    tree = ast.parse(source, filename=filename)
    nodes = sorted((n for n in ast.walk(tree) if hasattr(n, "lineno")), key=lambda n: (n.lineno, n.col_offset))
    for node in nodes:  # in the order of the source: a from-import comes before the calls it names
        where = f"{filename}:{node.lineno}"
        if isinstance(node, ast.Import):
            for alias in node.names:
                if _heavy(alias.name):
                    found.append(f"{where}: imports {alias.name}")
                elif _writer_module(alias.name):
                    found.append(f"{where}: imports {alias.name} (it writes files)")
        elif isinstance(node, ast.ImportFrom) and not node.level and node.module:
            if _heavy(node.module):
                found.append(f"{where}: imports from {node.module}")
            elif _writer_module(node.module):
                found.append(f"{where}: imports from {node.module} (it writes files)")
            elif node.module == "tl_core.atomic":
                for alias in node.names:
                    if ATOMIC_WRITING.match(alias.name):
                        atomic_names.add(alias.asname or alias.name)
                        found.append(f"{where}: imports tl_core.atomic.{alias.name} (it writes files)")
        elif isinstance(node, ast.Call):
            owner, name = _call_name(node.func)
            if name is None:
                continue
            if owner == "os" and name in OS_WRITING:
                found.append(f"{where}: calls os.{name}() (it writes files)")
            elif owner == "atomic" and ATOMIC_WRITING.match(name):
                found.append(f"{where}: calls atomic.{name}() (it writes files)")
            elif owner in WRITING_MODULES:
                found.append(f"{where}: calls {owner}.{name}() (it writes files)")
            elif name in WRITING_CALLS or name in atomic_names:
                found.append(f"{where}: calls {name}() (it writes files)")
            elif name in OPENERS and (mode := _writing_mode(node)):
                found.append(f"{where}: calls {name}(..., {mode!r}) (it writes files)")
    return found


def ui_files() -> list[Path]:
    return sorted([*(REPO / "tl_ui").rglob("*.py"), *(REPO / "pages").rglob("*.py"), REPO / "app.py"])


def test_the_checker_sees_every_ui_file():
    names = {p.relative_to(REPO).as_posix() for p in ui_files()}
    assert {"app.py", "pages/1_data.py", "tl_ui/sheet_views.py", "tl_ui/models.py"} <= names
    assert len(names) > 30


def test_no_page_or_ui_module_imports_torch_or_writes_a_file():
    found = [v for path in ui_files()
             for v in violations(path.read_text(encoding="utf-8"), path.relative_to(REPO).as_posix())]
    assert found == [], "move this work into tl_core (the UI only draws):\n" + "\n".join(found)


def test_the_checker_catches_a_planted_torch_import_and_a_file_write():
    planted = '''
from pathlib import Path

import streamlit as st


def draw(data):
    import torch.nn as nn

    Path("x.bin").write_bytes(data)
    st.text("done")
'''
    assert violations(planted, "tl_ui/planted.py") == [
        "tl_ui/planted.py:8: imports torch.nn",
        "tl_ui/planted.py:10: calls write_bytes() (it writes files)"]


def test_the_checker_catches_the_other_ways_to_write():
    planted = '''import os
import shutil
from torchvision.transforms import v2
from tl_core import atomic
from tl_core.atomic import write_json


def draw(path, data):
    with open(path, "wb") as handle:
        handle.write(data)
    with path.open(mode="a") as handle:
        handle.write("x")
    atomic.write_bytes(path, data)
    write_json(path, {})
    os.remove(path)
    path.mkdir(parents=True)
'''
    assert [v.split(": ", 1)[1] for v in violations(planted)] == [
        "imports shutil (it writes files)",
        "imports from torchvision.transforms",
        "imports tl_core.atomic.write_json (it writes files)",
        "calls open(..., 'wb') (it writes files)",
        "calls open(..., 'a') (it writes files)",
        "calls atomic.write_bytes() (it writes files)",
        "calls write_json() (it writes files)",
        "calls os.remove() (it writes files)",
        "calls mkdir() (it writes files)"]


def test_reading_is_not_writing():
    clean = '''from pathlib import Path

from tl_core import atomic


def draw(path: Path, frame):
    with open(path) as handle, path.open("rb") as raw:
        handle.read(), raw.read()
    frame = frame.rename(columns={"a": "b"})
    atomic.read_json(path)
    return "a-b".replace("-", " ")
'''
    assert violations(clean) == []
