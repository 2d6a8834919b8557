"""Atomic file writes, so a reader in another process never sees a half-written file.

Every whole-file write goes through ``replacing`` (for writers that want a file name: ``np.save``
into a memory map, safetensors) or ``write_with`` (for writers that fill a file object:
``torch.save``), or their shorthands ``write_bytes`` and ``write_json``. The data goes to a
temporary file beside the target, which replaces the target in one rename only once complete. On
any failure the temporary file is removed and the target keeps its old content; a full disk
raises ``DiskFull``, whose message says so (``DISK_FULL_MESSAGE``).

``append_line`` adds one whole line to a log (``events.jsonl``) or nothing: a write the disk cuts
short is truncated back. ``read_json`` treats a damaged file like a missing one.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import IO, Any

from tl_core.errors import DiskFull

__all__ = ["DISK_FULL_MESSAGE", "DiskFull", "append_line", "disk_full", "is_disk_full", "read_json",
           "replacing", "staging", "write_bytes", "write_json", "write_with"]

DISK_FULL_MESSAGE = ("The server's disk is full: delete runs or datasets you no longer need (Runs page), "
                     "or ask the teacher.")
_DISK_FULL_ERRNOS = (errno.ENOSPC, errno.EDQUOT)


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
        _raise_if_disk_full(exc)
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
        _raise_if_disk_full(exc)
        raise


@contextlib.contextmanager
def staging(folder: Path, *, last: Sequence[str] = ()) -> Iterator[Path]:
    """A fresh folder beside ``folder`` for a set of files written together (an export bundle);
    when the block ends they replace their namesakes in ``folder``, each in one rename (no new
    space needed), the files named in ``last`` after the others (the one saying the set is
    complete). On any failure ``folder`` is left as it was and the staging folder removed; a full
    disk raises ``DiskFull``. Files of ``folder`` the block did not write are kept."""
    folder = Path(folder)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(dir=folder.parent, prefix=f".{folder.name}.", suffix=".tmp"))
    except OSError as exc:
        _raise_if_disk_full(exc)
        raise
    try:
        yield stage
        for name in sorted((p.name for p in stage.iterdir()), key=lambda name: name in last):
            os.replace(stage / name, folder / name)
    except BaseException as exc:
        _raise_if_disk_full(exc)
        raise
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def write_with(path: Path, write: Callable[[IO[bytes]], object], *, fsync: bool = True) -> None:
    """Write ``path`` whole or not at all: ``write`` fills a binary file object
    (``lambda f: torch.save(state, f)``)."""
    with replacing(path, fsync=fsync) as tmp, tmp.open("wb") as handle:
        write(handle)


def write_bytes(path: Path, data: bytes, *, fsync: bool = True) -> None:
    write_with(path, lambda handle: handle.write(data), fsync=fsync)


def write_json(path: Path, obj: Any) -> None:
    write_bytes(path, json.dumps(obj, indent=2, sort_keys=True, default=str).encode("utf-8"))


def append_line(path: Path, line: str) -> None:
    """Append ``line`` (one line, newline added when missing) to ``path`` whole or not at all.

    One ``write`` of the whole line on an O_APPEND file, so a reader in another process never sees
    half of it; when the disk cuts it short, the file is truncated back to where it was and
    ``DiskFull`` is raised. A file left ending mid-line (by a writer that died before this rule)
    gets a newline first, so the damaged line does not swallow this one."""
    data = (line if line.endswith("\n") else line + "\n").encode("utf-8")
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT, 0o644)  # read: its last byte
    except OSError as exc:
        _raise_if_disk_full(exc)
        raise
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        written = 0
        try:
            while written < len(data):  # a short write means the disk is full; the next one says so
                written += os.write(fd, data[written:])
        except BaseException as exc:
            if written:
                with contextlib.suppress(OSError):
                    os.ftruncate(fd, size)
            _raise_if_disk_full(exc)
            raise
    finally:
        os.close(fd)


def read_json(path: Path, default: Any = None) -> Any:
    """The JSON in ``path``; ``default`` when the file is missing or damaged (not JSON, not UTF-8):
    a reader must keep working whatever a crash or a hand edit left."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except (FileNotFoundError, NotADirectoryError, ValueError):  # JSON and UTF-8 errors are ValueErrors
        return default


def is_disk_full(exc: BaseException) -> bool:
    """True when ``exc``, or an error it was raised from, says the disk (or a quota) is full.
    torch.save reports the OSError of a full disk as a RuntimeError: the chain and the message
    are looked at too."""
    seen: BaseException | None = exc
    for _ in range(20):  # a chain is short; a cycle must not hang us
        if seen is None:
            return False
        if isinstance(seen, DiskFull):
            return True
        if ((isinstance(seen, OSError) and seen.errno in _DISK_FULL_ERRNOS)
                or "No space left on device" in str(seen) or "Disk quota exceeded" in str(seen)):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def disk_full(exc: BaseException | None = None) -> DiskFull:
    """The ``DiskFull`` error to raise (``raise atomic.disk_full(exc) from exc``): the one message
    for a full disk everywhere, with errno ENOSPC for code that handles OSErrors."""
    if isinstance(exc, DiskFull):
        return exc
    full = DiskFull(DISK_FULL_MESSAGE)
    full.errno = errno.ENOSPC
    return full


def _raise_if_disk_full(exc: BaseException) -> None:
    if isinstance(exc, DiskFull) or not is_disk_full(exc):
        return
    raise disk_full() from exc
