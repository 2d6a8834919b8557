"""Health report, trainability checks and the stratified split."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import synthetic_image, write_image_folder
from tl_core.data import Dataset, ImageRecord, check_trainable, health_report, ingest, make_split
from tl_core.errors import DataError


def fake(counts: dict[str, int], split: str | None = None) -> Dataset:
    records = [ImageRecord(f"{c}/{i}.jpg", c, split, f"{c}{i}", 10, 10) for c, n in counts.items() for i in range(n)]
    return Dataset(Path("."), "fake", sorted(counts), records)


def test_report_counts_imbalance_sizes_and_json(image_folder: Path):
    shutil.rmtree(image_folder / "green")
    for i in range(6, 12):
        (image_folder / "blue" / f"{i}.jpg").unlink()
    (image_folder / "red" / "bad.jpg").write_text("nope")
    report = health_report(ingest(image_folder))
    assert report.class_counts == {"blue": 6, "red": 12}
    assert report.imbalance_ratio == pytest.approx(2.0)
    assert report.sizes[0] == (64, 48) and report.size_summary["median_width"] == 64
    assert report.skipped[0]["path"] == "red/bad.jpg"
    assert report.ok and any("skipped" in w for w in report.warnings)
    json.dumps(report.to_dict())


def test_single_class_is_refused(tmp_path: Path):
    ds = ingest(write_image_folder(tmp_path / "one", {"red": 5}))
    with pytest.raises(DataError, match="at least two classes.*folder per class"):
        check_trainable(ds)
    assert health_report(ds).errors


def test_empty_and_tiny_classes_are_named(tmp_path: Path):
    root = write_image_folder(tmp_path / "d", {"red": 5, "green": 1})
    (root / "blue").mkdir()
    ds = ingest(root)
    assert ds.classes == ["blue", "green", "red"]
    with pytest.raises(DataError) as info:
        check_trainable(ds)
    assert "'blue' has no usable images" in str(info.value)
    assert "'green' has only 1 image(s); add at least 1 more" in str(info.value)
    report = health_report(ds)
    assert report.imbalance_ratio is None and len(report.errors) == 2


def test_duplicates_and_cross_split_leaks(tmp_path: Path):
    root = tmp_path / "d"
    write_image_folder(root / "train", {"red": 3, "green": 3})
    for c in ("red", "green"):  # own seeds: write_image_folder would repeat the train images
        (root / "val" / c).mkdir(parents=True)
        synthetic_image((90, 90, 90), seed=500 + len(c)).save(root / "val" / c / "0.jpg")
    shutil.copy(root / "train" / "red" / "0.jpg", root / "val" / "red" / "copy.jpg")  # leak
    shutil.copy(root / "train" / "green" / "1.jpg", root / "train" / "green" / "again.jpg")  # plain duplicate
    report = health_report(ingest(root))
    assert sorted(map(sorted, report.duplicate_groups)) == [
        ["train/green/1.jpg", "train/green/again.jpg"], ["train/red/0.jpg", "val/red/copy.jpg"]]
    assert report.cross_split_duplicates == [["train/red/0.jpg", "val/red/copy.jpg"]]
    assert any("more than one of train/val/test" in w for w in report.warnings)
    assert report.split_counts["val"] == {"green": 1, "red": 2}


def test_split_is_stratified_and_seeded():
    ds = fake({"a": 50, "b": 20, "c": 3})
    s1, s2 = make_split(ds, 0.2, 0.1, seed=1), make_split(ds, 0.2, 0.1, seed=1)
    assert s1 == s2 and make_split(ds, 0.2, 0.1, seed=2) != s1
    assert sorted(s1.train + s1.val + s1.test) == list(range(73))
    count = {name: Counter(ds.records[i].label for i in getattr(s1, name)) for name in ("train", "val", "test")}
    assert count["val"] == {"a": 10, "b": 4, "c": 1} and count["test"] == {"a": 5, "b": 2, "c": 1}
    assert count["train"]["c"] == 1


def test_small_classes_still_get_validation():
    ds = fake({"a": 2, "b": 30})
    split = make_split(ds, 0.1)
    assert Counter(ds.records[i].label for i in split.val) == {"a": 1, "b": 3}
    with pytest.raises(DataError, match="'a' has 1 training image.*Add 1 more"):
        make_split(fake({"a": 1, "b": 30}), 0.2)
    assert len(make_split(fake({"a": 1, "b": 3}), 0.0).train) == 4


def test_given_split_is_kept_and_val_carved_from_train():
    given = fake({"a": 4, "b": 4}, "train")
    given.records += [ImageRecord(f"v/{c}.jpg", c, "val", f"v{c}", 10, 10) for c in "ab"]
    split = make_split(given, 0.5)
    assert split.val == [8, 9] and split.train == list(range(8)) and split.test == []
    only_train = fake({"a": 4, "b": 4}, "train")
    split = make_split(only_train, 0.25)
    assert len(split.val) == 2 and {only_train.records[i].label for i in split.val} == {"a", "b"}
    assert make_split(only_train, 0.0).val == []


def test_class_missing_from_train_is_an_error():
    ds = fake({"a": 4}, "train")
    ds.classes.append("b")
    ds.records.append(ImageRecord("v/b.jpg", "b", "val", "vb", 10, 10))
    with pytest.raises(DataError, match="'b' has no training images"):
        make_split(ds, 0.2)


def test_the_chosen_split_turns_a_duplicate_into_a_leak():
    """Without a split of its own, a duplicate is only a duplicate; once the split the user chose
    puts one copy in train and the other in validation, the report calls it a leak."""
    ds = fake({"a": 2, "b": 2})
    ds.records[1] = dataclasses.replace(ds.records[1], sha256=ds.records[0].sha256)  # a/1 is a copy of a/0
    assert health_report(ds).cross_split_duplicates == []
    split = make_split(ds, 0.5)  # two images per class: one to train, one to validate
    report = health_report(ds, split)
    assert report.cross_split_duplicates == [["a/0.jpg", "a/1.jpg"]]
    assert any("more than one of train/val/test" in w for w in report.warnings)
    assert report.split_counts == {"train": {"a": 1, "b": 1}, "val": {"a": 1, "b": 1}}


def test_an_incomplete_val_folder_is_named_with_a_chosen_split_too():
    ds = fake({"a": 4, "b": 4}, "train")
    ds.records.append(ImageRecord("v/a.jpg", "a", "val", "va", 10, 10))
    for split in (None, make_split(ds, 0.2)):
        assert any("val/ folder has no images of 'b'" in w for w in health_report(ds, split).warnings)
