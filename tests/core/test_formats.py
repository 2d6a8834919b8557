"""Experts' formats (tl_core.data.formats): each made here as a real small file, ingested, decoded,
and its pixels checked; a damaged file of each kind is skipped with a reason, never a crash."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import tl_core.bundle_predict as decoder
from tl_core.data import Limits, ingest
from tl_core.data.safety import ImageRefused, checked_image, extension_reason, open_rgb, thumbnail_jpeg

pillow_heif = pytest.importorskip("pillow_heif")
pydicom = pytest.importorskip("pydicom")

PATIENT = "Doe^Jane"


def ramp16(w: int = 64, h: int = 32, low: int = 1000, high: int = 4000) -> np.ndarray:
    """A 12-bit-style horizontal ramp in a 16-bit array, as a microscope camera stores it."""
    return np.tile(np.linspace(low, high, w), (h, 1)).astype(np.uint16)


def write_dicom(path: Path, pixels: np.ndarray, *, centre: float | None = None, width: float | None = None,
                photometric: str = "MONOCHROME2", frames: int = 1) -> Path:
    """A tiny but complete DICOM file (explicit VR little endian) with a patient name in it."""
    from pydicom.dataset import FileDataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(str(path), {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID, ds.PatientBirthDate = PATIENT, "ID-12345", "19700101"
    ds.Modality = "OT"
    ds.Rows, ds.Columns = pixels.shape[-2:]
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, photometric
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 0
    if frames > 1:
        ds.NumberOfFrames = frames
    if centre is not None:
        ds.WindowCenter, ds.WindowWidth = centre, width
    ds.PixelData = np.ascontiguousarray(pixels, dtype=np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def heic_bytes(rgb: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    pillow_heif.from_pillow(Image.fromarray(rgb)).save(buffer, quality=-1)  # lossless-ish
    return buffer.getvalue()


# ---------------------------------------------------------------- decoding, pixel by pixel


def test_tiff_16_bit_is_stretched_by_its_own_range(tmp_path: Path):
    path = tmp_path / "ramp.tif"
    Image.fromarray(ramp16()).save(path)  # 1000..4000: a fixed 0..65535 scale would give 4..16
    assert Image.open(path).mode == "I;16"
    grey = np.asarray(open_rgb(path))[..., 0]
    assert grey.min() == 0 and grey.max() == 255
    assert np.all(np.diff(grey[0].astype(int)) >= 0)  # the ramp stays a ramp
    assert abs(int(grey[0, 32]) - 128) <= 3


def test_tiff_8_bit_keeps_its_values(tmp_path: Path):
    arr = np.tile(np.arange(64, dtype=np.uint8) * 2, (8, 1))
    Image.fromarray(arr).save(tmp_path / "x.tif")
    assert np.array_equal(np.asarray(open_rgb(tmp_path / "x.tif"))[..., 1], arr)


def test_multi_page_tiff_gives_its_first_page_and_a_note(tmp_path: Path):
    pages = [Image.new("L", (40, 30), value) for value in (10, 200, 90)]
    pages[0].save(tmp_path / "stack.tif", save_all=True, append_images=pages[1:])
    assert np.asarray(open_rgb(tmp_path / "stack.tif")).max() == 10
    folder = tmp_path / "in"
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir()
    (tmp_path / "stack.tif").rename(folder / "a" / "stack.tif")
    Image.new("RGB", (40, 30), "red").save(folder / "b" / "one.png")
    ds = ingest(folder)
    assert [n.path for n in ds.notes] == ["a/stack.tif"]
    assert "multi-page TIFF (3 pages)" in ds.notes[0].note and "first" in ds.notes[0].note
    from tl_core.data import health_report

    assert any("first is used" in w for w in health_report(ds).warnings)


def test_png_and_webp_alpha_are_composited_on_white(tmp_path: Path):
    rgba = np.zeros((20, 20, 4), np.uint8)
    rgba[..., 0] = 255  # red ...
    rgba[:, :10, 3] = 0  # ... fully transparent on the left, opaque on the right
    rgba[:, 10:, 3] = 255
    for fmt, name in (("PNG", "a.png"), ("WEBP", "a.webp")):
        Image.fromarray(rgba, "RGBA").save(tmp_path / name, fmt, lossless=True)
        rgb = np.asarray(open_rgb(tmp_path / name)).astype(int)
        assert (rgb[:, :10] >= 250).all(), fmt  # white where it was transparent
        assert (rgb[:, 10:, 0] >= 250).all() and (rgb[:, 10:, 1:] <= 5).all(), fmt  # red where opaque
    palette = Image.fromarray(rgba, "RGBA").convert("P")  # a palette with a transparent colour
    palette.save(tmp_path / "p.png", transparency=palette.getpixel((0, 0)))
    assert (np.asarray(open_rgb(tmp_path / "p.png"))[:, :10] >= 250).all()


def test_heic_photo_decodes(tmp_path: Path):
    rgb = np.zeros((32, 48, 3), np.uint8)
    rgb[:, :24] = (200, 30, 30)
    rgb[:, 24:] = (30, 30, 200)
    (tmp_path / "p.heic").write_bytes(heic_bytes(rgb))
    got = np.asarray(open_rgb(tmp_path / "p.heic")).astype(int)
    assert got.shape == (32, 48, 3)
    assert np.abs(got[4:-4, 4:20] - (200, 30, 30)).max() < 25  # lossy HEVC: close, not exact
    assert np.abs(got[4:-4, 28:-4] - (30, 30, 200)).max() < 25
    assert checked_image(tmp_path / "p.heic") == (48, 32)


def test_dicom_window_level_is_applied(tmp_path: Path):
    values = np.tile(np.arange(0, 2000, 20, dtype=np.uint16), (10, 1))  # 0..1980 across
    path = write_dicom(tmp_path / "w.dcm", values, centre=1000, width=401)
    grey = np.asarray(open_rgb(path)).astype(int)
    assert grey.shape == (10, 100, 3) and (grey[..., 0] == grey[..., 2]).all()  # greyscale -> RGB
    row = grey[0, :, 0]
    assert (row[values[0] <= 799] == 0).all() and (row[values[0] >= 1200] == 255).all()
    assert abs(row[50] - 128) <= 1  # the centre, 1000, is mid-grey
    assert row[45] == round(((900 - 999.5) / 400 + 0.5) * 255)  # the DICOM linear window


def test_dicom_without_window_is_stretched_and_monochrome1_inverted(tmp_path: Path):
    values = ramp16(50, 8, 100, 600)
    plain = np.asarray(open_rgb(write_dicom(tmp_path / "m2.dcm", values)))[..., 0]
    assert plain[0, 0] == 0 and plain[0, -1] == 255
    inverted = np.asarray(open_rgb(write_dicom(tmp_path / "m1.dcm", values, photometric="MONOCHROME1")))[..., 0]
    assert inverted[0, 0] == 255 and inverted[0, -1] == 0


def test_multi_frame_dicom_gives_its_first_frame(tmp_path: Path):
    frames = np.stack([np.full((8, 8), v, np.uint16) for v in (100, 900)])
    frames[0, :, :4] = 0  # the first frame is half black, half lit; the second all lit
    path = write_dicom(tmp_path / "mf.dcm", frames, frames=2)
    grey = np.asarray(open_rgb(path))[..., 0]
    assert (grey[:, :4] == 0).all() and (grey[:, 4:] == 255).all()


# ---------------------------------------------------------------- ingest: a folder of all of them


def test_a_folder_of_experts_formats_is_ingested_without_patient_data(tmp_path: Path):
    folder = tmp_path / "in"
    for cls in ("cells", "scans"):
        (folder / cls).mkdir(parents=True)
    Image.fromarray(ramp16()).save(folder / "cells" / "c16.tif")
    Image.new("L", (30, 30), 40).save(folder / "cells" / "c8.tiff")
    Image.new("RGBA", (30, 30), (0, 200, 0, 128)).save(folder / "cells" / "alpha.png")
    Image.new("RGB", (30, 30), "blue").save(folder / "cells" / "w.webp")
    (folder / "cells" / "phone.heic").write_bytes(heic_bytes(np.full((30, 30, 3), 120, np.uint8)))
    write_dicom(folder / "scans" / "ct.dcm", ramp16(30, 30), centre=2500, width=2000)
    write_dicom(folder / "scans" / "xr.dicom", ramp16(30, 30))
    # a damaged file of each kind
    for name, data in {"bad.tif": (folder / "cells" / "c16.tif").read_bytes()[:60],
                       "bad.png": b"\x89PNG\r\n\x1a\n" + b"\0" * 40, "bad.webp": b"RIFF\0\0\0\0WEBPVP8 garbage",
                       "bad.heic": (folder / "cells" / "phone.heic").read_bytes()[:200]}.items():
        (folder / "cells" / name).write_bytes(data)
    whole = (folder / "scans" / "ct.dcm").read_bytes()
    (folder / "scans" / "bad.dcm").write_bytes(whole[:300])
    (folder / "scans" / "short.dcm").write_bytes(whole[:-500])  # the header whole, the pixels cut short
    (folder / "scans" / "noext").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 10)

    ds = ingest(folder, tmp_path / "ds")
    kept = sorted(r.path.rsplit("/", 1)[-1] for r in ds.records)
    assert kept == ["alpha.png", "c16.tif", "c8.tiff", "ct.dcm", "phone.heic", "w.webp", "xr.dicom"]
    reasons = {s.path.rsplit("/", 1)[-1]: s.reason for s in ds.skipped}
    assert set(reasons) == {"bad.tif", "bad.png", "bad.webp", "bad.heic", "bad.dcm", "short.dcm", "noext"}
    assert all(reason for reason in reasons.values())
    assert not any("Doe" in reason or "12345" in reason for reason in reasons.values())  # never a header value
    assert ".dcm" in reasons["noext"]  # says how to make a DICOM without extension readable

    stored = (ds.root / "dataset.json").read_text()
    assert PATIENT.split("^")[0] not in stored and "ID-12345" not in stored and "1970" not in stored
    for record in json.loads(stored)["records"]:
        assert set(record) == {"path", "label", "split", "sha256", "width", "height"}

    from tl_core.data import decode_images

    decoded = decode_images(ds, range(len(ds.records)), 16, tmp_path / "cache").numpy()
    assert decoded.shape == (7, 3, 16, 16)
    by_name = {r.path.rsplit("/", 1)[-1]: decoded[i] for i, r in enumerate(ds.records)}
    assert by_name["alpha.png"][1].min() > 200 and by_name["alpha.png"][0].max() < 160  # green on white
    ramp = by_name["c16.tif"][0, 8].astype(int)  # the centre square of the stretched 0..255 ramp
    assert 50 < ramp[0] < 90 and 165 < ramp[-1] < 205 and (np.diff(ramp) > 0).all()


def test_guards_apply_to_dicom_and_heic_before_decoding(tmp_path: Path, monkeypatch):
    path = write_dicom(tmp_path / "big.dcm", np.zeros((40, 50), np.uint16))
    decoded = []
    monkeypatch.setattr(decoder, "stretch_to_uint8", lambda *a: decoded.append(1))
    with pytest.raises(ImageRefused, match=r"too many pixels \(50x40"):
        checked_image(path, Limits(max_image_pixels=1000))
    assert not decoded  # refused on the header's Rows x Columns
    heic = tmp_path / "big.heic"
    heic.write_bytes(heic_bytes(np.zeros((40, 50, 3), np.uint8)))
    with pytest.raises(ImageRefused, match="too many pixels"):
        thumbnail_jpeg(heic, 16, Limits(max_image_pixels=1000))


def test_extension_reasons_name_what_to_do(monkeypatch):
    assert extension_reason("a/x.dcm") is None and extension_reason("a/x.HEIC") is None
    assert "not supported" in extension_reason("a/x.cr2")
    monkeypatch.setattr("tl_core.data.formats.dicom_support", lambda: False)
    assert "pydicom" in extension_reason("a/x.dcm")


def test_predict_script_explains_a_missing_reader(tmp_path: Path, monkeypatch):
    path = write_dicom(tmp_path / "x.dcm", np.zeros((8, 8), np.uint16))
    monkeypatch.setattr(decoder, "dicom_support", lambda: False)
    with pytest.raises(decoder.FormatUnavailable, match="pip install pydicom"):
        decoder.model_input(path, {"resize_size": 8, "crop_size": 8, "mean": [0, 0, 0], "std": [1, 1, 1]})


def test_garbage_is_refused_in_a_fresh_process_with_or_without_pillow_heif():
    """PIL raises KeyError for a format name it does not know: HEIF is asked for only once its opener
    is registered, and left out when pillow-heif is missing."""
    import subprocess
    import sys

    code = ("import sys; {hide}from tl_core.data.safety import checked_image, ImageRefused\n"
            "try:\n    checked_image(b'garbage' * 10)\nexcept ImageRefused as exc:\n    print(exc.check)")
    for hide in ("", "sys.modules['pillow_heif'] = None; "):
        out = subprocess.run([sys.executable, "-c", code.format(hide=hide)], capture_output=True, text=True,
                             timeout=120)
        assert out.stdout.strip() == "format", out.stderr
