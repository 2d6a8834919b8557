"""Hostile and broken inputs: every one is refused or skipped with a message, none crashes."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tests.conftest import synthetic_image
from tl_core.data import Limits, UploadedImage, ingest
from tl_core.data.safety import check_member_name, open_rgb, safe_component
from tl_core.errors import DataError


def encode(im: Image.Image, fmt: str = "JPEG", **kw) -> bytes:
    buf = io.BytesIO()
    im.save(buf, fmt, **kw)
    return buf.getvalue()


def good(seed: int) -> bytes:
    return encode(synthetic_image((60, 120, 200), seed))


def ingest_zip(tmp_path: Path, members: dict, limits: Limits | None = None, compress=zipfile.ZIP_DEFLATED):
    path = tmp_path / "in.zip"
    with zipfile.ZipFile(path, "w", compress) as zf:
        for name, data in members.items():  # name: str or ZipInfo
            zf.writestr(name, data)
    return ingest(path, tmp_path / "ds", limits=limits)


def reasons(ds) -> dict[str, str]:
    return {s.path: s.reason for s in ds.skipped}


BASE = {"cat/1.jpg": good(1), "dog/1.jpg": good(2)}


@pytest.mark.parametrize("name, expected", [
    ("../evil.jpg", "outside"), ("cat/../../evil.jpg", "outside"), ("/abs/evil.jpg", "absolute"),
    ("C:/evil.jpg", "absolute"), ("cat\\..\\evil.jpg", "backslash"),
])
def test_unsafe_member_names_are_skipped(tmp_path: Path, name: str, expected: str):
    ds = ingest_zip(tmp_path, BASE | {name: good(3)})
    assert expected in reasons(ds)[name]
    assert len(ds.records) == 2
    assert not (tmp_path / "evil.jpg").exists() and not Path("/abs/evil.jpg").exists()
    assert all((ds.root / r.path).resolve().is_relative_to(ds.root.resolve()) for r in ds.records)


def test_symlink_member_is_skipped(tmp_path: Path):
    link = zipfile.ZipInfo("cat/link.jpg")
    link.external_attr = 0o120777 << 16
    ds = ingest_zip(tmp_path, BASE | {link: "/etc/passwd"})
    assert "symbolic link" in reasons(ds)["cat/link.jpg"]
    assert not any(p.is_symlink() for p in ds.root.rglob("*"))


def test_zip_bomb_is_refused(tmp_path: Path):
    with pytest.raises(DataError, match="zip bomb"):
        ingest_zip(tmp_path, BASE | {"cat/bomb.bmp": bytes(20 * 1024 * 1024)})
    assert not (tmp_path / "ds" / "dataset.json").exists()


def test_caps_on_files_and_size(tmp_path: Path):
    many = {f"cat/{i}.jpg": good(i) for i in range(6)}
    with pytest.raises(DataError, match="more than the limit of 5"):
        ingest_zip(tmp_path, many, Limits(max_files=5))
    with pytest.raises(DataError, match="GiB"):
        ingest_zip(tmp_path, many, Limits(max_total_bytes=1000))
    ups = [UploadedImage(f"{i}.jpg", good(i), "cat") for i in range(6)]
    with pytest.raises(DataError, match="limit"):
        ingest(ups, tmp_path / "up", limits=Limits(max_files=5))


def test_bad_files_are_skipped_with_reasons(tmp_path: Path):
    jpeg = good(5)
    members = BASE | {
        "cat/truncated.jpg": jpeg[: len(jpeg) // 2],
        "cat/corrupt.jpg": jpeg[:20] + bytes(range(256)) * 4,
        "cat/text.jpg": b"this is not a picture",
        "cat/empty.jpg": b"",
        "cat/photo.heic": b"....",
        "__MACOSX/cat/._1.jpg": b"junk",
        "cat/.DS_Store": b"junk",
        "dog/Thumbs.db": b"junk",
        "cat/.hidden.jpg": good(6),
    }
    ds = ingest_zip(tmp_path, members)
    r = reasons(ds)
    assert len(ds.records) == 2
    assert "truncated" in r["cat/truncated.jpg"]
    assert "corrupt" in r["cat/corrupt.jpg"] or "not an image" in r["cat/corrupt.jpg"]
    assert "not an image" in r["cat/text.jpg"]
    assert "0 bytes" in r["cat/empty.jpg"]
    assert "HEIC" in r["cat/photo.heic"]
    assert not any("MACOSX" in p or "DS_Store" in p or "Thumbs" in p or "hidden" in p for p in r)  # silent


def test_decompression_bomb_guard(tmp_path: Path, monkeypatch):
    big = encode(Image.new("L", (400, 400)), "PNG")
    ds = ingest([UploadedImage("a.png", good(1), "a"), UploadedImage("big.png", big, "a")], tmp_path / "d1",
                limits=Limits(max_image_pixels=100_000))
    assert "too large" in reasons(ds)["big.png"]
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # PIL's own guard: warning at 1x, error at 2x
    ds = ingest([UploadedImage("a.jpg", good(1), "a"), UploadedImage("big.png", big, "a")], tmp_path / "d2")
    assert "decompression bomb" in reasons(ds)["big.png"]


def test_member_name_checks():
    assert check_member_name("./cat//1.jpg") == "cat/1.jpg"
    for bad in ("", "..", "a/../../b", "/etc/passwd", "D:evil", "a\\b", "a\x00b"):
        with pytest.raises(Exception, match="name"):
            check_member_name(bad)


def test_safe_component_shortens_and_sanitises():
    name = safe_component("ü" * 200 + ".jpeg")
    assert len(name.encode()) <= 120 and name.endswith(".jpeg")
    assert safe_component("a:b?c*.jpg") == "a_b_c_.jpg"
    assert safe_component("CON.jpg") == "_CON.jpg"
    assert safe_component("..") == "_"


# ---------------------------------------------------------------- modes and EXIF, on real photos


@pytest.mark.parametrize("mode, fmt", [("L", "JPEG"), ("RGBA", "PNG"), ("P", "PNG"), ("CMYK", "JPEG"),
                                       ("LA", "PNG"), ("1", "PNG")])
def test_modes_become_rgb(real_photos, tmp_path: Path, mode: str, fmt: str):
    photo = real_photos["coffee"].resize((100, 75))
    im = photo.convert(mode)
    path = tmp_path / f"x.{fmt.lower()}"
    im.save(path, fmt)
    rgb = open_rgb(path)
    assert rgb.mode == "RGB" and rgb.size == (100, 75)
    assert np.asarray(rgb).std() > 10  # still a picture, not a flat field


def test_sixteen_bit_is_scaled_not_clipped(tmp_path: Path):
    ramp = (np.linspace(0, 65535, 64 * 32).reshape(32, 64)).astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "x.png")
    assert Image.open(tmp_path / "x.png").mode.startswith("I")
    arr = np.asarray(open_rgb(tmp_path / "x.png"))
    assert arr.shape == (32, 64, 3) and arr.min() == 0 and arr.max() >= 250
    assert 100 < arr.mean() < 155  # a clip at 255 would give a mostly white image


def test_exif_orientation_applied(real_photos, tmp_path: Path):
    photo = real_photos["chelsea"]  # 451 x 300, landscape
    arr = np.asarray(photo).copy()
    arr[:40, :40] = (255, 0, 0)  # a red mark in the stored top-left corner
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    data = encode(Image.fromarray(arr), "JPEG", exif=exif.tobytes(), quality=95)
    ds = ingest([UploadedImage("r.jpg", data, "cat"), UploadedImage("s.jpg", good(1), "dog")], tmp_path / "ds")
    record = next(r for r in ds.records if r.label == "cat")
    assert (record.width, record.height) == (300, 451)  # portrait once oriented
    shown = np.asarray(open_rgb(ds.root / record.path))
    assert shown.shape == (451, 300, 3)
    assert shown[5:30, -30:-5, 0].mean() > 200 and shown[5:30, -30:-5, 1].mean() < 60  # mark now top-right
