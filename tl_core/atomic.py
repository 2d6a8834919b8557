"""Atomic file writes, so a reader in another process never sees a half-written file."""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any


@contextlib.contextmanager
def replacing(path: Path, *, fsync: bool = True) -> Iterator[Path]:
    """A temporary file beside ``path`` for a writer that needs a file name (``np.save`` into a
    memory map, safetensors): when the block ends it replaces ``path`` in one rename; on any error
    it is removed and ``path`` is left as it was. A full disk is reported as such."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        if fsync:
            handle = os.open(tmp, os.O_RDWR)
            try:
                os.fsync(handle)
            finally:
                os.close(handle)
        os.replace(tmp, path)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        if exc.errno == errno.ENOSPC:
            raise OSError(errno.ENOSPC, f"the disk is full: {path.name} was not written. Free some space "
                                        "and try again.", str(path)) from exc
        raise
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_bytes(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` through a temporary file and a rename. ``fsync=False`` keeps the
    atomicity for readers but not the durability through a power cut (cheaper for many files)."""
    with replacing(path, fsync=fsync) as tmp:
        tmp.write_bytes(data)


def write_json(path: Path, obj: Any) -> None:
    write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode("utf-8"))


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
