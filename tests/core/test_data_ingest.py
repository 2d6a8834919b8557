"""Ingest from folders, zips, CSVs and uploads: layouts, splits, names, and round trips."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

from tests.conftest import synthetic_image, write_image_folder
from tl_core.data import IMAGES_DIR, Dataset, UploadedImage, ingest
from tl_core.errors import DataError


def jpeg_bytes(seed: int = 0, colour=(200, 60, 60), size=(40, 30)) -> bytes:
    buf = io.BytesIO()
    synthetic_image(colour, seed, size).save(buf, "JPEG")
    return buf.getvalue()


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


def test_folder_in_place(image_folder: Path):
    ds = ingest(image_folder)
    assert ds.root == image_folder
    assert ds.classes == ["blue", "green", "red"]
    assert len(ds.records) == 36 and not ds.skipped
    assert all((image_folder / r.path).is_file() and r.split is None for r in ds.records)
    assert {(r.width, r.height) for r in ds.records} == {(64, 48)}
    assert ds.labels.count(0) == 12
    assert (image_folder / "dataset.json").is_file()


def test_folder_copied_to_dest(image_folder: Path, tmp_path: Path):
    ds = ingest(image_folder, tmp_path / "copy")
    assert ds.root == tmp_path / "copy"
    assert all(r.path.startswith(IMAGES_DIR + "/") and (ds.root / r.path).is_file() for r in ds.records)


def test_load_in_another_process(image_folder: Path):
    ingest(image_folder)
    code = "import sys; from tl_core.data import Dataset; ds = Dataset.load(sys.argv[1]); print(len(ds.records), ds.classes)"
    out = subprocess.run([sys.executable, "-c", code, str(image_folder)], capture_output=True, text=True,
                         check=True, cwd=Path(__file__).parents[2]).stdout
    assert out.strip() == "36 ['blue', 'green', 'red']"


def test_load_missing_or_damaged(tmp_path: Path):
    with pytest.raises(DataError, match="missing"):
        Dataset.load(tmp_path)
    (tmp_path / "dataset.json").write_text('{"format": 1, "records": [{"path": 1}]}')
    with pytest.raises(DataError, match="damaged"):
        Dataset.load(tmp_path)


def test_split_folders_honoured(tmp_path: Path):
    root = tmp_path / "data"
    write_image_folder(root / "train", {"red": 4, "green": 4})
    write_image_folder(root / "val", {"red": 2, "green": 2})
    write_image_folder(root / "test", {"red": 1, "green": 1})
    ds = ingest(root)
    assert ds.classes == ["green", "red"]
    splits = [r.split for r in ds.records]
    assert splits.count("train") == 8 and splits.count("val") == 4 and splits.count("test") == 2


def test_zip_with_wrapper_folder_and_splits_is_unwrapped(tmp_path: Path):
    members = {f"flowers/train/{c}/{i}.jpg": jpeg_bytes(i + 10 * k) for k, c in enumerate(["cat", "dog"])
               for i in range(3)}
    members |= {"flowers/valid/cat/v.jpg": jpeg_bytes(99), "flowers/valid/dog/v.jpg": jpeg_bytes(98),
                "flowers/empty/": b""}
    ds = ingest(make_zip(tmp_path / "flowers.zip", members), tmp_path / "ds")
    assert ds.name == "flowers" and ds.classes == ["cat", "dog"]
    assert sorted({r.split for r in ds.records}) == ["train", "val"]
    assert all((ds.root / r.path).is_file() for r in ds.records)
    assert Dataset.load(ds.root).records == ds.records


def test_zip_single_wrapper_without_splits(tmp_path: Path):
    members = {"my pics/cat/1.jpg": jpeg_bytes(1), "my pics/dog/1.jpg": jpeg_bytes(2),
               "my pics/empty/": b"", "README.txt": b"hello"}
    ds = ingest(make_zip(tmp_path / "p.zip", members), tmp_path / "ds")
    assert ds.classes == ["cat", "dog", "empty"]
    assert [s.reason for s in ds.skipped] == ["not an image file (.txt)"]


def test_csv_with_and_without_header(tmp_path: Path):
    write_image_folder(tmp_path / "imgs", {"red": 3, "green": 3})
    lines = [f"imgs/{c}/{i}.jpg,{c.upper()}" for c in ("red", "green") for i in range(3)]
    (tmp_path / "plain.csv").write_text("\n".join(lines + ["../outside.jpg,RED", "imgs/missing.jpg,RED"]))
    ds = ingest(tmp_path / "plain.csv")
    assert ds.classes == ["GREEN", "RED"] and len(ds.records) == 6 and ds.root == tmp_path
    reasons = {s.path: s.reason for s in ds.skipped}
    assert "outside" in reasons["../outside.jpg"] and reasons["imgs/missing.jpg"] == "file not found"
    (tmp_path / "header.csv").write_text("path,label\n" + "\n".join(lines))
    assert len(ingest(tmp_path / "header.csv", tmp_path / "copy").records) == 6


def test_uploads(tmp_path: Path):
    ups = [UploadedImage(f"img{i}.jpg", jpeg_bytes(i), "cat" if i % 2 else "dog") for i in range(6)]
    ups += [UploadedImage("../evil.jpg", jpeg_bytes(7), "cat"), UploadedImage("x.jpg", jpeg_bytes(8), "  "),
            UploadedImage("same.jpg", jpeg_bytes(9), "cat"), UploadedImage("SAME.jpg", jpeg_bytes(10), "cat")]
    ds = ingest(ups, tmp_path / "ds")
    assert ds.classes == ["cat", "dog"] and len(ds.records) == 8
    assert len({r.path.casefold() for r in ds.records}) == 8  # unique even on case-insensitive disks
    assert {s.path: s.reason for s in ds.skipped}["x.jpg"] == "no class given for this image"
    assert "unsafe" in {s.path: s.reason for s in ds.skipped}["../evil.jpg"]
    assert ds.name == "uploads"
    # The app names the dataset after what the user made (webcam, class by class, a folder's name),
    # and the name is saved with it.
    named = ingest(ups, tmp_path / "named", name="  my leaves ")
    assert named.name == "my leaves" and Dataset.load(tmp_path / "named").name == "my leaves"


def test_unicode_and_very_long_names(tmp_path: Path):
    long_a = "ünïcødé_猫_" + "a" * 200 + ".jpg"
    long_b = "ünïcødé_猫_" + "a" * 199 + "b.jpg"
    members = {f"chats é/{long_a}": jpeg_bytes(1), f"chats é/{long_b}": jpeg_bytes(2),
               "собаки/1.jpg": jpeg_bytes(3), "собаки/2.jpg": jpeg_bytes(4)}
    ds = ingest(make_zip(tmp_path / "u.zip", members), tmp_path / "ds")
    assert ds.classes == ["chats é", "собаки"] and len(ds.records) == 4 and not ds.skipped
    paths = [r.path for r in ds.records]
    assert len(set(paths)) == 4
    assert all(len(Path(p).name.encode()) <= 120 and (ds.root / p).is_file() for p in paths)
    # In place, the names stay as they are.
    folder = tmp_path / "folder"
    write_image_folder(folder, {"red": 1, "green": 1})
    (folder / "red" / ("é" * 100 + ".jpg")).write_bytes(jpeg_bytes(5))
    assert len(ingest(folder).records) == 3


def test_progress_reported(image_folder: Path):
    calls = []
    ingest(image_folder, progress=lambda done, total, msg: calls.append((done, total)))
    assert calls[-1] == (36, 36) and len(calls) == 36


def test_nothing_usable_is_a_clear_error(tmp_path: Path):
    with pytest.raises(DataError, match="No usable images"):
        ingest(make_zip(tmp_path / "t.zip", {"cat/a.txt": b"hi", "b.jpg": jpeg_bytes()}), tmp_path / "ds")
    with pytest.raises(DataError, match="does not exist"):
        ingest(tmp_path / "nope")
    (tmp_path / "x.tar").write_bytes(b"abc")
    with pytest.raises(DataError, match="not a folder"):
        ingest(tmp_path / "x.tar")
    (tmp_path / "broken.zip").write_bytes(b"PK\x03\x04 broken")
    with pytest.raises(DataError, match="not a valid zip"):
        ingest(tmp_path / "broken.zip", tmp_path / "ds")
    with pytest.raises(DataError, match="destination"):
        ingest(tmp_path / "broken.zip")
