"""Atomic file writes, so a reader in another process never sees a half-written file.

Every whole-file write goes through ``replacing`` (for writers that want a file name: ``np.save``
into a memory map, safetensors) or ``write_with`` (for writers that fill a file object:
``torch.save``), or their shorthands ``write_bytes`` and ``write_json``. The data goes to a
temporary file beside the target, which replaces the target in one rename only once complete. On
any failure the temporary file is removed and the target keeps its old content; a full disk
raises ``DiskFull``, whose message says so.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from .errors import DiskFull

__all__ = ["DiskFull", "read_json", "replacing", "write_bytes", "write_json", "write_with"]


@contextlib.contextmanager
def replacing(path: Path, *, fsync: bool = True) -> Iterator[Path]:
    """A temporary file beside ``path`` to write; when the block ends it replaces ``path`` in one
    rename. ``fsync=False`` keeps the atomicity for readers but not the durability through a power
    cut (cheaper for many files)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
        os.close(fd)
    except OSError as exc:
        _raise_if_disk_full(exc, path)
        raise
    tmp = Path(name)
    try:
        yield tmp
        if fsync:
            handle = os.open(tmp, os.O_RDONLY)
            try:
                os.fsync(handle)
            finally:
                os.close(handle)
        os.replace(tmp, path)
    except BaseException as exc:
        tmp.unlink(missing_ok=True)
        _raise_if_disk_full(exc, path)
        raise


def write_with(path: Path, write: Callable[[IO[bytes]], object], *, fsync: bool = True) -> None:
    """Write ``path`` whole or not at all: ``write`` fills a binary file object
    (``lambda f: torch.save(state, f)``)."""
    with replacing(path, fsync=fsync) as tmp, tmp.open("wb") as handle:
        write(handle)


def write_bytes(path: Path, data: bytes, *, fsync: bool = True) -> None:
    write_with(path, lambda handle: handle.write(data), fsync=fsync)


def write_json(path: Path, obj: Any) -> None:
    write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode("utf-8"))


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except FileNotFoundError:
        return default


def _raise_if_disk_full(exc: BaseException, path: Path) -> None:
    # torch.save reports the OSError of a full disk as a RuntimeError: look down the chain, and
    # at the message too.
    seen: BaseException | None = exc
    while seen is not None:
        if isinstance(seen, DiskFull):
            return
        if ((isinstance(seen, OSError) and seen.errno in (errno.ENOSPC, errno.EDQUOT))
                or "No space left on device" in str(seen)):
            full = DiskFull(f"Could not save {path.name}: the disk is full. Free some space "
                            "(delete old runs or exports) and try again.")
            full.errno = errno.ENOSPC
            raise full from exc
        seen = seen.__cause__ or seen.__context__
