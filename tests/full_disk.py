"""A full disk for tests: ``FullDisk`` stands in for a small tmpfs. Below its folder, writes past
the bytes left write what fits and raise ENOSPC, as a real full disk does (a short write first,
then the error), whatever writes: ``open``, ``Path.open``, ``os.write``, ``os.posix_fallocate``."""

from __future__ import annotations

import builtins
import errno
import io
import os
from pathlib import Path

import pytest


def enospc() -> OSError:
    return OSError(errno.ENOSPC, "No space left on device")


class FullDisk:
    """Below ``root``, at most ``free`` more bytes can be written (None: no limit yet)."""

    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = os.path.realpath(root)
        self.free: int | None = None
        real_write, real_open, real_fallocate = os.write, builtins.open, os.posix_fallocate

        def write(fd: int, data) -> int:
            if not self._limits_fd(fd):
                return real_write(fd, data)
            if self.free == 0:
                raise enospc()
            allowed = self.take(len(data))
            return real_write(fd, bytes(data)[:allowed])  # short when the disk fills up

        def open_(file, mode="r", *args, **kw):
            handle = real_open(file, mode, *args, **kw)
            if isinstance(file, (str, os.PathLike)) and any(c in mode for c in "wax") and self._limits(file):
                return LimitedFile(handle, self)
            return handle

        def fallocate(fd: int, offset: int, length: int) -> None:
            if self._limits_fd(fd) and self.free is not None and length > self.free:
                raise enospc()
            real_fallocate(fd, offset, length)

        monkeypatch.setattr(os, "write", write)
        monkeypatch.setattr(builtins, "open", open_)
        monkeypatch.setattr(io, "open", open_)  # pathlib's Path.open
        monkeypatch.setattr(os, "posix_fallocate", fallocate)

    def fill(self, free: int = 0) -> None:
        """From now on only ``free`` more bytes fit."""
        self.free = free

    def make_room(self) -> None:
        self.free = None

    def take(self, wanted: int) -> int:
        if self.free is None:
            return wanted
        allowed = min(wanted, self.free)
        self.free -= allowed
        return allowed

    def _limits(self, path) -> bool:
        return self.free is not None and os.path.realpath(path).startswith(self.root + os.sep)

    def _limits_fd(self, fd: int) -> bool:
        try:
            return self._limits(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            return False


class LimitedFile:
    """A file object that writes only what fits on its ``FullDisk``."""

    def __init__(self, handle, disk: FullDisk) -> None:
        self._handle, self._disk = handle, disk

    def write(self, data) -> int:
        data = bytes(data) if not isinstance(data, str) else data
        allowed = self._disk.take(len(data))
        self._handle.write(data[:allowed])
        if allowed < len(data):
            raise enospc()
        return len(data)

    def fileno(self) -> int:  # writers that would write to the descriptor directly (PIL) use write()
        raise io.UnsupportedOperation("fileno")

    def __getattr__(self, name):
        return getattr(self._handle, name)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self._handle.close()

    def __iter__(self):
        return iter(self._handle)
