"""Webcam snapshots kept on disk until they become a dataset."""

from __future__ import annotations

import io
import json

import pytest
from PIL import Image

from tests.conftest import synthetic_image
from tl_core.data import ingest
from tl_core.snapshots import SnapshotTray
from tl_core.workspace import Workspace


def _jpeg(seed: int) -> bytes:
    out = io.BytesIO()
    synthetic_image((200, 40 * (seed % 5), 30), seed=seed).save(out, "JPEG")
    return out.getvalue()


def test_snapshots_survive_a_new_tray_and_become_a_dataset(tmp_path):
    ws = Workspace(tmp_path / "ws")
    tray = SnapshotTray(ws)
    for i in range(3):
        tray.add("thumbs up", _jpeg(i))
        tray.add("thumbs down", _jpeg(10 + i))
    # A refresh builds a new tray over the same workspace: everything is still there, in order.
    again = SnapshotTray(ws)
    assert again.counts() == {"thumbs up": 3, "thumbs down": 3}
    assert [s.label for s in again.items()][:2] == ["thumbs up", "thumbs down"]

    ds = ingest(again.as_uploads(), tmp_path / "dataset")
    assert sorted(ds.classes) == ["thumbs down", "thumbs up"]
    assert len(ds.records) == 6
    with Image.open(ds.root / ds.records[0].path) as image:
        assert image.size == (64, 48)


def test_undo_and_clear_delete_the_files(tmp_path):
    tray = SnapshotTray(Workspace(tmp_path))
    a = tray.add("cat", _jpeg(1))
    b = tray.add("dog", _jpeg(2))
    c = tray.add("cat", _jpeg(3))
    assert tray.remove_last("dog") == b and not b.path.exists()
    assert tray.remove_last() == c and not c.path.exists()
    assert tray.remove_last("dog") is None
    assert [s.path for s in tray.items()] == [a.path]
    tray.clear()
    assert tray.items() == [] and not a.path.exists()


def test_a_tampered_manifest_cannot_point_outside_and_a_class_name_is_needed(tmp_path):
    tray = SnapshotTray(Workspace(tmp_path / "ws"))
    tray.add("cat", _jpeg(1))
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(_jpeg(2))
    manifest = tray.dir / "snapshots.json"
    entries = json.loads(manifest.read_text())
    entries.append({"file": "../../secret.jpg", "label": "cat"})
    manifest.write_text(json.dumps(entries))
    assert len(tray.items()) == 1
    with pytest.raises(ValueError, match="class name"):
        tray.add("  ", _jpeg(3))
