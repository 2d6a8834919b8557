"""Atomic writes: whole or nothing, no temporary file left behind, a full disk said in words."""

from __future__ import annotations

import errno
from pathlib import Path

import numpy as np
import pytest

from tl_core import atomic


def test_replacing_renames_on_success_and_leaves_the_old_file_on_failure(tmp_path: Path):
    target = tmp_path / "sub" / "cache.npy"
    with atomic.replacing(target) as tmp:
        assert tmp.parent == target.parent and tmp != target
        np.lib.format.open_memmap(tmp, mode="w+", dtype=np.int64, shape=(3,))[:] = np.arange(3)
    np.testing.assert_array_equal(np.load(target), np.arange(3))
    with pytest.raises(RuntimeError), atomic.replacing(target) as tmp:
        tmp.write_bytes(b"half")
        raise RuntimeError("interrupted")
    np.testing.assert_array_equal(np.load(target), np.arange(3))
    assert [p.name for p in target.parent.iterdir()] == ["cache.npy"]


def test_a_full_disk_is_reported_as_such(tmp_path: Path):
    target = tmp_path / "model.safetensors"
    with pytest.raises(OSError, match="disk is full") as caught, atomic.replacing(target):
        raise OSError(errno.ENOSPC, "No space left on device")
    assert caught.value.errno == errno.ENOSPC and isinstance(caught.value, atomic.DiskFull)
    assert list(tmp_path.iterdir()) == []


def test_write_bytes_and_json(tmp_path: Path):
    atomic.write_bytes(tmp_path / "a.bin", b"abc", fsync=False)
    atomic.write_json(tmp_path / "b.json", {"x": 1})
    assert (tmp_path / "a.bin").read_bytes() == b"abc"
    assert atomic.read_json(tmp_path / "b.json") == {"x": 1}
    assert atomic.read_json(tmp_path / "missing.json", default=[]) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.bin", "b.json"]
