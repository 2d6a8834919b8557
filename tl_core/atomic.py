"""Atomic file writes, so a reader in another process never sees a half-written file.

Every whole-file write of the engine goes through ``write_with`` (or its two shorthands): the
data goes to a temporary file beside the target, which replaces the target only once complete.
A full disk raises ``DiskFull`` (a ``TLError``: the user can fix it) and leaves no temp file.
"""

from __future__ import annotations

import errno
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

from .errors import TLError


class DiskFull(TLError):
    """A file could not be written because the disk (or the user's quota) is full."""


def write_with(path: Path, write: Callable[[IO[bytes]], object], *, fsync: bool = True) -> None:
    """Write ``path`` whole or not at all: ``write`` gets a binary file to fill (``torch.save(obj, f)``
    works), which replaces ``path`` only after ``write`` returned. On any failure the temporary file
    is removed and ``path`` keeps its old content. ``fsync=False`` keeps the atomicity for readers
    but not the durability through a power cut (cheaper for many files)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    except OSError as exc:
        _raise_if_disk_full(exc, path)
        raise
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)
            if fsync:
                handle.flush()
                os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)
        _raise_if_disk_full(exc, path)
        raise


def _raise_if_disk_full(exc: BaseException, path: Path) -> None:
    # torch.save reports the OSError of a full disk as a RuntimeError: look down the chain, and
    # at the message too.
    seen: BaseException | None = exc
    while seen is not None:
        if ((isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT))
                or "No space left on device" in str(seen)):
            raise DiskFull(f"Could not save {path.name}: the disk is full. Free some space (delete old "
                           "runs or exports) and try again.") from exc
        seen = seen.__cause__ or seen.__context__


def write_bytes(path: Path, data: bytes, *, fsync: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (see ``write_with``)."""
    write_with(path, lambda handle: handle.write(data), fsync=fsync)


def write_json(path: Path, obj: Any) -> None:
    write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode("utf-8"))


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default
