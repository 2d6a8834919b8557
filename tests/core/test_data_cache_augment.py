"""Decode-once cache (in RAM and memory-mapped) and the augmentation presets."""

from __future__ import annotations

import io
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import tl_core.bundle_predict as decoder
import tl_core.data.cache as cache
from tests.conftest import write_image_folder
from tl_core.data import center_crop, decode_images, decode_square, ingest, make_augment
from tl_core.errors import ConfigError, DataError


@pytest.fixture
def dataset(image_folder: Path):
    return ingest(image_folder)


def test_decode_shape_and_reuse_without_decoding(dataset, tmp_path: Path, monkeypatch):
    calls = []
    first = decode_images(dataset, range(36), 32, tmp_path / "c", progress=lambda d, t, m: calls.append((d, t)))
    assert first.shape == (36, 3, 32, 32) and first.dtype == torch.uint8
    assert calls[-1] == (36, 36)
    assert len(list((tmp_path / "c").glob("*.npy"))) == 1 and not list((tmp_path / "c").glob(".*tmp"))

    def fail(*args, **kwargs):
        raise AssertionError("decoded again although cached")

    monkeypatch.setattr(cache, "decode_square", fail)
    again = decode_images(dataset, range(36), 32, tmp_path / "c")
    assert torch.equal(first, again)
    with pytest.raises(AssertionError):  # another size is another cache entry
        decode_images(dataset, range(36), 40, tmp_path / "c")


def test_memmap_past_ram_budget(dataset, tmp_path: Path, monkeypatch):
    in_ram = decode_images(dataset, [3, 1, 2], 24, tmp_path / "ram")
    modes = []
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: modes.append(k.get("mmap_mode")) or real_load(*a, **k))
    mapped = decode_images(dataset, [3, 1, 2], 24, tmp_path / "mm", ram_budget_bytes=1)
    assert modes == ["c"] and torch.equal(mapped, in_ram)
    mapped_again = decode_images(dataset, [3, 1, 2], 24, tmp_path / "mm", ram_budget_bytes=1)
    assert torch.equal(mapped_again, in_ram)


def test_damaged_cache_is_rebuilt(dataset, tmp_path: Path):
    decode_images(dataset, range(4), 16, tmp_path / "c")
    (npy,) = (tmp_path / "c").glob("*.npy")
    npy.write_bytes(b"garbage")
    assert decode_images(dataset, range(4), 16, tmp_path / "c").shape == (4, 3, 16, 16)


def test_missing_file_after_import_is_a_data_error(dataset, tmp_path: Path):
    (dataset.root / dataset.records[0].path).unlink()
    with pytest.raises(DataError, match="import it again"):
        decode_images(dataset, [0], 16, tmp_path / "c")
    assert not list((tmp_path / "c").iterdir())  # nothing half-written left behind


def test_workers_give_the_same_pixels(tmp_path: Path):
    ds = ingest(write_image_folder(tmp_path / "imgs", {"red": 40, "blue": 40}))
    one = decode_images(ds, range(80), 16, tmp_path / "a")
    two = decode_images(ds, range(80), 16, tmp_path / "b", workers=2)
    assert torch.equal(one, two)


def test_many_images_decode_in_a_pool_by_default(tmp_path: Path, monkeypatch):
    ds = ingest(write_image_folder(tmp_path / "imgs", {"red": 40, "blue": 40}))
    one = decode_images(ds, range(80), 16, tmp_path / "a", workers=1)
    pools = []
    real_get_context = cache.multiprocessing.get_context

    def spy(method):
        ctx = real_get_context(method)
        pools.append(method)
        return ctx

    monkeypatch.setattr(cache.multiprocessing, "get_context", spy)
    monkeypatch.setattr(cache, "_cpu_count", lambda: 2)
    monkeypatch.setattr(cache, "AUTO_WORKERS_MIN_IMAGES", 200)
    assert torch.equal(decode_images(ds, range(80), 16, tmp_path / "b"), one) and not pools  # few: no pool
    monkeypatch.setattr(cache, "AUTO_WORKERS_MIN_IMAGES", 80)
    assert torch.equal(decode_images(ds, range(80), 16, tmp_path / "c"), one) and len(pools) == 1


def test_decode_square_is_resize_shorter_side_then_centre_crop(tmp_path: Path):
    arr = np.zeros((60, 120, 3), np.uint8)
    arr[:, :30] = 255  # white left quarter: cropped away by the centre square
    arr[:, 30:90] = (0, 200, 0)
    Image.fromarray(arr).save(tmp_path / "x.png")
    out = decode_square(tmp_path / "x.png", 30)
    assert out.shape == (3, 30, 30)
    assert out[1].min() > 150 and out[0].max() < 60


def test_center_crop_and_presets():
    batch = torch.randint(0, 256, (4, 3, 40, 40), dtype=torch.uint8)
    assert torch.equal(center_crop(batch, 32), batch[:, :, 4:36, 4:36])
    assert center_crop(batch[:, :, :20, :20], 32).shape == (4, 3, 32, 32)
    assert torch.equal(make_augment("none", 32)(batch), center_crop(batch, 32))
    torch.manual_seed(0)
    for preset in ("light", "standard"):
        out = make_augment(preset, 32)(batch)
        assert out.shape == (4, 3, 32, 32) and out.dtype == torch.uint8
    same = batch[:1].repeat(8, 1, 1, 1)
    out = make_augment("standard", 32)(same)
    assert not all(torch.equal(out[0], out[i]) for i in range(1, 8))  # parameters drawn per image
    with pytest.raises(ConfigError, match="light"):
        make_augment("heavy", 32)


def _jpeg_variants(folder: Path, photo: Image.Image) -> dict[str, Path]:
    """JPEGs that take the libjpeg-turbo path (every EXIF orientation, grey, progressive, 4:4:4, big
    enough for a reduced DCT scale) and ones that must fall back to PIL (CMYK, XMP orientation, PNG)."""
    folder.mkdir()
    photo = photo.crop((0, 0, 301, 200))  # odd sizes: no accidental symmetry
    out = {}
    for orientation in range(1, 9):
        exif = Image.Exif()
        exif[0x0112] = orientation
        photo.save(out.setdefault(f"o{orientation}", folder / f"o{orientation}.jpg"), exif=exif)
    exif = Image.Exif()
    exif.endian, exif[0x0112] = "<", 6  # Intel byte order (Pillow writes Motorola's)
    photo.save(out.setdefault("o6-intel", folder / "o6-intel.jpg"), exif=exif)
    xmp = (b'<x:xmpmeta xmlns:x="adobe:ns:meta/"><rdf:RDF xmlns:rdf="http://www.w3.org/1999/02/22-rdf-syntax-ns#">'
           b'<rdf:Description xmlns:tiff="http://ns.adobe.com/tiff/1.0/" tiff:Orientation="8"/></rdf:RDF></x:xmpmeta>')
    photo.save(out.setdefault("xmp", folder / "xmp.jpg"), xmp=xmp)  # orientation only in XMP: PIL's
    photo.convert("L").save(out.setdefault("grey", folder / "grey.jpg"))
    photo.save(out.setdefault("progressive", folder / "progressive.jpg"), progressive=True)
    photo.save(out.setdefault("444", folder / "444.jpg"), subsampling=0)
    photo.resize((1210, 803)).save(out.setdefault("big", folder / "big.jpg"))
    photo.convert("CMYK").save(out.setdefault("cmyk", folder / "cmyk.jpg"))
    photo.save(out.setdefault("png", folder / "x.png"))
    return out


def test_turbo_jpeg_decode_is_pils_pixels_exactly(tmp_path: Path, real_photos):
    from tl_core.data.safety import open_rgb

    if decoder.simplejpeg is None:
        pytest.skip("simplejpeg is not installed")
    for name, path in _jpeg_variants(tmp_path / "v", real_photos["chelsea"]).items():
        for size in (64, 96, 256):
            fast = decoder.decode_jpeg_rgb(path, size)
            if name in ("cmyk", "xmp", "png"):
                assert fast is None, name
                continue
            assert fast is not None, name
            np.testing.assert_array_equal(fast, np.asarray(open_rgb(path, draft_size=size)), err_msg=f"{name} {size}")
        upload = io.BytesIO(path.read_bytes())  # an upload, as the app's evaluation passes it
        np.testing.assert_array_equal(decode_square(upload, 64), decode_square(path, 64), err_msg=name)
    rotated = np.asarray(open_rgb(tmp_path / "v" / "xmp.jpg"))
    assert rotated.shape[:2] == (301, 200)  # PIL turned it; decode_square's fallback keeps that


def test_decode_square_without_the_fast_paths_is_within_a_grey_level(tmp_path: Path, real_photos, monkeypatch):
    """What a standalone predict.py computes without simplejpeg and torch: PIL decodes the same
    pixels, and PIL's resampling differs from torch's by one grey level at most, rarely."""
    paths = _jpeg_variants(tmp_path / "v", real_photos["coffee"])
    fast = {name: decode_square(path, 96).astype(int) for name, path in paths.items()}
    monkeypatch.setattr(decoder, "simplejpeg", None)
    monkeypatch.setitem(sys.modules, "torch", None)  # "import torch" fails, as in an ONNX-only install
    assert decoder.optional_torch() is None
    for name, path in paths.items():
        plain = decode_square(path, 96)
        assert plain.shape == (3, 96, 96) and plain.dtype == np.uint8
        diff = np.abs(plain - fast[name])
        assert diff.max() <= 1 and diff.mean() < 0.02, (name, diff.mean())  # rounding only
