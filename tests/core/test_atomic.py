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


def test_staging_replaces_a_set_of_files_together_or_not_at_all(tmp_path: Path):
    folder = tmp_path / "export"
    folder.mkdir()
    (folder / "model.bin").write_bytes(b"old model")
    (folder / "notes.txt").write_bytes(b"the user's own file")
    with pytest.raises(OSError, match="disk is full"), atomic.staging(folder) as stage:
        atomic.write_bytes(stage / "model.bin", b"new model")
        raise OSError(errno.ENOSPC, "No space left on device")
    assert (folder / "model.bin").read_bytes() == b"old model"
    with atomic.staging(folder, last=("done.json",)) as stage:
        atomic.write_bytes(stage / "model.bin", b"new model")
        atomic.write_json(stage / "done.json", {"ok": True})
    assert (folder / "model.bin").read_bytes() == b"new model" and atomic.read_json(folder / "done.json") == {"ok": True}
    assert (folder / "notes.txt").read_bytes() == b"the user's own file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export"]  # the staging folder is gone


def test_append_line_adds_whole_lines(tmp_path: Path):
    log = tmp_path / "events.jsonl"
    atomic.append_line(log, '{"a": 1}')
    log.write_bytes(log.read_bytes() + b'{"half')  # a writer that died mid-line
    atomic.append_line(log, '{"b": 2}\n')
    assert log.read_text().splitlines() == ['{"a": 1}', '{"half', '{"b": 2}']


def test_read_json_of_a_damaged_file_is_the_default(tmp_path: Path):
    (tmp_path / "cut.json").write_bytes(b'{"state": "runn')
    (tmp_path / "binary.json").write_bytes(b"\xff\xfe\x00")
    assert atomic.read_json(tmp_path / "cut.json", default={}) == {}
    assert atomic.read_json(tmp_path / "binary.json") is None
