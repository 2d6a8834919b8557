"""Images gathered class by class (uploads, webcam photos), kept on disk until they become a dataset."""

from __future__ import annotations

import io
import json
import threading

import pytest

from tests.conftest import synthetic_image
from tl_core.data import ingest
from tl_core.data.snapshots import SnapshotTray
from tl_core.workspace import Workspace


def _jpeg(seed: int) -> bytes:
    out = io.BytesIO()
    synthetic_image((200, 40 * (seed % 5), 30), seed=seed).save(out, "JPEG")
    return out.getvalue()


def test_images_survive_a_new_tray_and_become_a_dataset(tmp_path):
    ws = Workspace(tmp_path / "ws")
    tray = SnapshotTray(ws)
    for i in range(3):
        tray.add("thumbs up", _jpeg(i))
        tray.add("thumbs down", _jpeg(10 + i))
    # A refresh builds a new tray over the same workspace: everything is still there, in order.
    again = SnapshotTray(ws)
    assert again.counts() == {"thumbs up": 3, "thumbs down": 3}
    assert [s.label for s in again.items()][:2] == ["thumbs up", "thumbs down"]

    snapshots = again.items()
    ds = ingest(again.as_uploads(snapshots), tmp_path / "dataset")
    assert sorted(ds.classes) == ["thumbs down", "thumbs up"] and len(ds.records) == 6
    again.remove(SnapshotTray.taken_by(ds, snapshots))
    assert again.items() == []


@pytest.mark.parametrize("label", [".net", "../up", "/root", "a\\b", "C: drive", "猫 ✓", "x" * 300])
def test_any_class_name_reaches_the_dataset(tmp_path, label):
    """The class travels as the label, never inside a file name that ingest must distrust."""
    tray = SnapshotTray(Workspace(tmp_path / "ws"))
    tray.add_many(label, [(_jpeg(1), ".jpg"), (_jpeg(2), ".JPG")])
    tray.add("other", _jpeg(3))
    snapshots = tray.items()
    ds = ingest(tray.as_uploads(snapshots), tmp_path / "dataset")
    assert label.strip() in ds.classes and not ds.skipped
    assert len(SnapshotTray.taken_by(ds, snapshots)) == 3


def test_images_the_dataset_skips_stay_in_the_tray(tmp_path):
    tray = SnapshotTray(Workspace(tmp_path / "ws"))
    tray.add_many("cat", [(_jpeg(1), ".jpg"), (_jpeg(2), ".jpg")])
    whole = _jpeg(4)
    broken = tray.add("cat", whole[: len(whole) // 2], ".jpg")  # a sound header: only the full decode fails
    tray.add("dog", _jpeg(3))
    snapshots = tray.items()
    ds = ingest(tray.as_uploads(snapshots), tmp_path / "dataset")
    tray.remove(SnapshotTray.taken_by(ds, snapshots))
    assert tray.items() == [broken]


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


def test_two_tabs_adding_at_once_lose_nothing(tmp_path):
    ws = Workspace(tmp_path / "ws")
    photo = _jpeg(1)

    def add(label: str) -> None:
        tray = SnapshotTray(ws)  # each tab has its own tray object over the same folder
        for _ in range(40):
            tray.add(label, photo)

    threads = [threading.Thread(target=add, args=(label,)) for label in ("left", "right")]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert SnapshotTray(ws).counts() == {"left": 40, "right": 40}


def test_damaged_or_hostile_sidecars_are_ignored(tmp_path):
    tray = SnapshotTray(Workspace(tmp_path / "ws"))
    good = tray.add("cat", _jpeg(1))
    outside = tmp_path / "secret.jpg"
    outside.write_bytes(_jpeg(2))
    sidecar_id = good.id[:-1] + ("0" if good.id[-1] != "0" else "1")
    cases = {
        f"{sidecar_id}.json": json.dumps({"label": "cat", "image": "../../secret.jpg"}),  # points outside
        "0000000000000000001-deadbeef.json": "{not json",  # damaged
        "0000000000000000002-deadbeef.json": json.dumps(["cat"]),  # not an object
        "0000000000000000003-deadbeef.json": json.dumps({"label": "cat", "image": f"{good.id}.json"}),
        "0000000000000000004-deadbeef.json": json.dumps({"label": "  ", "image": "x.jpg"}),  # no class
        "notes.json": json.dumps({"label": "cat", "image": good.path.name}),  # not one of ours
    }
    for name, text in cases.items():
        (tray.dir / name).write_text(text)
    assert tray.items() == [good]
    tray.clear()
    assert outside.exists() and not good.path.exists()
    with pytest.raises(ValueError, match="class name"):
        tray.add("  ", _jpeg(3))
