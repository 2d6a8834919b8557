"""Files used as they are (the Predict page's uploads): the checks and wording of a dataset import,
and the engine's small helpers around datasets (roll-back, examples per class)."""

from __future__ import annotations

import errno
import io
import stat
import zipfile
from pathlib import Path

import pytest

from tests.conftest import synthetic_image, write_image_folder
from tl_core.data import Dataset, Limits, Skipped, check_images, create_dataset, ingest
from tl_core.errors import DataError, DiskFull


def jpeg(seed: int = 0, colour=(200, 60, 60)) -> bytes:
    buf = io.BytesIO()
    synthetic_image(colour, seed).save(buf, "JPEG")
    return buf.getvalue()


def zipped(members: dict[str, bytes], symlinks: dict[str, str] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
        for name, target in (symlinks or {}).items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (stat.S_IFLNK | 0o777) << 16
            zf.writestr(info, target)
    return buf.getvalue()


def ingest_reasons(tmp_path: Path, data: bytes, limits: Limits | None = None) -> dict[str, str]:
    """What a dataset import of the same zip says of each member it skips."""
    path = tmp_path / "same.zip"
    path.write_bytes(data)
    ds = ingest(path, tmp_path / "ds", limits=limits)
    return {s.path: s.reason for s in ds.skipped}


def test_good_files_pass_and_junk_is_dropped_silently():
    good, bad = check_images([("a.jpg", jpeg(1)), (".DS_Store", b"junk"),
                              ("set.zip", zipped({"set/b.jpg": jpeg(2), "__MACOSX/set/._b.jpg": b"junk"}))])
    assert [(g.name, g.width, g.height) for g in good] == [("a.jpg", 64, 48), ("set.zip/set/b.jpg", 64, 48)]
    assert good[0].data == jpeg(1) and bad == []


def test_a_zip_with_unsafe_paths_corrupt_images_and_links_says_what_ingest_says(tmp_path: Path):
    data = zipped({"c/ok.jpg": jpeg(1), "c/../../evil.jpg": jpeg(2), "c/broken.jpg": b"\xff\xd8\xff not a photo",
                   "c/notes.txt": b"hello"}, symlinks={"c/link.jpg": "/etc/passwd"})
    good, bad = check_images([("up.zip", data)])
    assert [g.name for g in good] == ["up.zip/c/ok.jpg"]
    reasons = {b.path: b.reason for b in bad}
    assert set(reasons) == {"up.zip/c/../../evil.jpg", "up.zip/c/broken.jpg", "up.zip/c/notes.txt",
                            "up.zip/c/link.jpg"}
    assert "points outside the archive" in reasons["up.zip/c/../../evil.jpg"]
    # The very same reasons as importing the zip as a dataset (one engine, one wording).
    assert {f"up.zip/{path}": reason for path, reason in ingest_reasons(tmp_path, data).items()} == reasons


def test_a_corrupt_upload_is_skipped_with_the_reason():
    good, bad = check_images([("ok.jpg", jpeg(1)), ("c.jpg", b"\xff\xd8\xff garbage"), ("empty.png", b"")])
    assert [g.name for g in good] == ["ok.jpg"]
    assert [b.path for b in bad] == ["c.jpg", "empty.png"]
    assert "0 bytes" in bad[1].reason


def test_a_decompression_bomb_image_is_refused_in_ingest_words(tmp_path: Path):
    limits = Limits(max_image_pixels=1000)  # 64x48 = 3072 pixels: too many under this limit
    data = zipped({"c/big.jpg": jpeg(1), "c/also_big.jpg": jpeg(2)})
    _, bad = check_images([("bomb.jpg", jpeg(1)), ("z.zip", data)], limits)
    assert bad[0].path == "bomb.jpg" and "too many pixels (64x48, more than the limit of 1,000)" in bad[0].reason
    with pytest.raises(DataError, match="No usable images") as info:
        ingest_reasons(tmp_path, data, limits)
    assert bad[1].reason in str(info.value)


def test_a_zip_bomb_or_a_broken_zip_is_one_skipped_file_with_ingest_words(tmp_path: Path):
    bomb = zipped({"c/zeros.jpg": bytes(8 * 1024**2)})  # 8 MiB of zeros deflate about 1000:1
    _, bad = check_images([("bomb.zip", bomb), ("bad.zip", b"PK nope")])
    path = tmp_path / "bomb.zip"
    path.write_bytes(bomb)
    with pytest.raises(DataError) as info:
        ingest(path, tmp_path / "ds")
    assert bad[0] == Skipped("bomb.zip", str(info.value)) and "zip bomb" in bad[0].reason
    assert bad[1].path == "bad.zip" and "not a valid zip file" in bad[1].reason


def test_create_dataset_removes_a_half_made_dataset_and_names_a_full_disk(tmp_path: Path):
    source = write_image_folder(tmp_path / "src", {"red": 3, "blue": 3})
    ds = create_dataset(tmp_path / "ok", lambda dest: ingest(source, dest))
    assert ds.root == tmp_path / "ok" and Dataset.load(ds.root).records

    def half_then_fail(dest: Path) -> Dataset:
        (dest / "images").mkdir(parents=True)
        (dest / "images" / "a.jpg").write_bytes(b"x")
        raise KeyboardInterrupt  # a page rerun or a stop: not an Exception, still rolled back

    with pytest.raises(KeyboardInterrupt):
        create_dataset(tmp_path / "stopped", half_then_fail)
    assert not (tmp_path / "stopped").exists()

    def disk_full(dest: Path) -> Dataset:
        dest.mkdir()
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(DiskFull, match="disk is full"):
        create_dataset(tmp_path / "full", disk_full)
    assert not (tmp_path / "full").exists()


def test_examples_per_class(tmp_path: Path):
    ds = ingest(write_image_folder(tmp_path / "d", {"red": 4, "blue": 3, "green": 2}))
    picked = ds.examples(per_class=2)
    assert {c: [r.path for r in rs] for c, rs in picked.items()} == {
        "blue": ["blue/0.jpg", "blue/1.jpg"], "green": ["green/0.jpg", "green/1.jpg"], "red": ["red/0.jpg", "red/1.jpg"]}
    assert list(ds.examples(per_class=1, max_classes=2)) == ["blue", "green"]
    (tmp_path / "d" / "blue" / "0.jpg").unlink()
    (tmp_path / "d" / "green" / "0.jpg").unlink()
    (tmp_path / "d" / "green" / "1.jpg").unlink()
    on_disk = ds.examples(per_class=1, max_classes=2, on_disk=True)
    assert {c: [r.path for r in rs] for c, rs in on_disk.items()} == {"blue": ["blue/1.jpg"], "red": ["red/0.jpg"]}
