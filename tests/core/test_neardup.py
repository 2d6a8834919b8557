"""Near-duplicate search (tl_core.data.neardup): a photo resized, re-compressed or brightened is
grouped with its original, different photos are not, exact copies are left to the health report,
hashes are cached by content, and the health report counts the groups."""

from __future__ import annotations

from pathlib import Path

import pytest
from PIL import ImageEnhance

from tests.conftest import write_image_folder
from tl_core.data import health_report, ingest, neardup


@pytest.fixture
def ds(tmp_path: Path, real_photos):
    src = write_image_folder(tmp_path / "src", {"red": 3, "green": 3}, size=(48, 48))
    cat, coffee = real_photos["chelsea"], real_photos["coffee"]
    (src / "cats").mkdir()
    cat.save(src / "cats" / "a_original.jpg", quality=95)
    cat.resize((cat.width // 3, cat.height // 3)).save(src / "cats" / "b_small.jpg", quality=90)
    ImageEnhance.Brightness(cat).enhance(1.1).save(src / "cats" / "c_bright.jpg", quality=40)
    coffee.save(src / "cats" / "d_coffee.jpg", quality=95)
    (src / "cats" / "e_exact.jpg").write_bytes((src / "red" / "0.jpg").read_bytes())  # an exact copy
    return ingest(src, tmp_path / "ds")


def _index(ds, name: str) -> int:
    return next(i for i, r in enumerate(ds.records) if r.path.endswith(name))


def test_copies_of_one_photo_form_one_group(ds, tmp_path: Path):
    calls = []
    groups = neardup.near_duplicate_groups(ds, cache_dir=tmp_path / "cache",
                                           progress=lambda done, total, msg: calls.append((done, total)))
    assert groups == [["images/cats/a_original.jpg", "images/cats/b_small.jpg", "images/cats/c_bright.jpg"]]
    assert calls[-1] == (len(ds.records), len(ds.records))


def test_pairs_for_the_leak_check_and_exact_copies(ds):
    a, b, c = (_index(ds, n) for n in ("a_original.jpg", "b_small.jpg", "c_bright.jpg"))
    assert neardup.near_duplicate_pairs(ds) == sorted([(a, b), (a, c), (b, c)])
    exact = tuple(sorted((_index(ds, "e_exact.jpg"), _index(ds, "red/0.jpg"))))
    assert exact in neardup.near_duplicate_pairs(ds, include_exact=True)
    assert neardup.near_duplicate_pairs(ds, threshold=-1) == []  # nothing is closer than 0 bits


def test_group_pairs_is_a_union_find():
    assert neardup.group_pairs([(5, 7), (1, 2), (2, 9), (7, 8)]) == [[1, 2, 9], [5, 7, 8]]
    assert neardup.group_pairs([]) == []


def test_hashes_are_cached_by_content(ds, tmp_path: Path, monkeypatch):
    cache = tmp_path / "cache"
    first = neardup.image_hashes(ds, cache_dir=cache)
    assert (cache / neardup.HASH_FILE).exists()

    def no_decoding(path):
        raise AssertionError("decoded again")
    monkeypatch.setattr(neardup, "_hash_file", no_decoding)
    assert neardup.image_hashes(ds, cache_dir=cache) == first


def test_an_unreadable_image_is_passed_over(ds):
    (ds.root / ds.records[_index(ds, "b_small.jpg")].path).write_bytes(b"not an image")
    assert neardup.near_duplicate_groups(ds) == [["images/cats/a_original.jpg", "images/cats/c_bright.jpg"]]


def test_health_report_counts_near_duplicate_groups(ds):
    groups = neardup.near_duplicate_groups(ds)
    report = health_report(ds, near_duplicates=groups)
    assert report.near_duplicate_groups == groups
    assert any("3 near-identical image(s) in 1 group" in w for w in report.warnings)
    assert health_report(ds).near_duplicate_groups == []  # not looked for: nothing claimed
