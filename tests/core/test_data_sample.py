"""The generated shapes sample and the sets carried by installed packages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from tl_core.data import check_trainable, health_report, ingest, make_split
from tl_core.data.sample import SHAPES, make_package_sample, make_sample_dataset, package_samples
from tl_core.errors import DataError


def test_shapes_sample_is_a_deterministic_trainable_image_folder(tmp_path: Path):
    a = make_sample_dataset(tmp_path / "a", per_class=4, seed=7)
    b = make_sample_dataset(tmp_path / "b", per_class=4, seed=7)
    c = make_sample_dataset(tmp_path / "c", per_class=4, seed=8)
    files = sorted(p.relative_to(a) for p in a.rglob("*.jpg"))
    assert len(files) == 16 and sorted(p.name for p in a.iterdir()) == sorted(SHAPES)
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert (a / files[0]).read_bytes() != (c / files[0]).read_bytes()
    with Image.open(a / files[0]) as im:
        assert im.size == (128, 128) and im.mode == "RGB"
        assert np.asarray(im).std() > 20  # colourful, not a flat field
    ds = ingest(a)
    check_trainable(ds)
    assert health_report(ds).ok and len(make_split(ds).val) == 4


def test_package_samples(tmp_path: Path):
    names = dict(package_samples())
    assert "digits" in names
    root = make_package_sample("digits", tmp_path / "digits", per_class=3)
    ds = ingest(root)
    assert ds.classes == [str(i) for i in range(10)] and len(ds.records) == 30
    assert {(r.width, r.height) for r in ds.records} == {(64, 64)}
    photos = ingest(make_package_sample("sklearn_photos", tmp_path / "photos", per_class=3))
    assert len(photos.classes) == 2 and len(photos.records) == 6
    with pytest.raises(DataError, match="digits"):
        make_package_sample("mnist", tmp_path / "x")


def test_a_cached_sample_is_drawn_once_and_copied_the_same(tmp_path, monkeypatch):
    import tl_core.data.sample as sample

    drawn = []
    real = sample._shape_image
    monkeypatch.setattr(sample, "_shape_image", lambda *a: drawn.append(a) or real(*a))
    cache = tmp_path / "cache"
    first = make_sample_dataset(tmp_path / "first", per_class=3, cache_dir=cache)
    assert len(drawn) == 3 * len(SHAPES)
    second = make_sample_dataset(tmp_path / "second", per_class=3, cache_dir=cache)
    assert len(drawn) == 3 * len(SHAPES)  # copied, not drawn again
    plain = make_sample_dataset(tmp_path / "plain", per_class=3)
    for folder in (first, second):
        files = sorted(p.relative_to(folder) for p in folder.rglob("*.jpg"))
        assert files == sorted(p.relative_to(plain) for p in plain.rglob("*.jpg"))
        assert all((folder / f).read_bytes() == (plain / f).read_bytes() for f in files)
    assert [p.name for p in cache.iterdir()] == [f"shapes-v{sample.SAMPLE_VERSION}-3-0"]  # no scratch left
