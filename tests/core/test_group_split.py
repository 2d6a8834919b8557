"""Group-aware splits (tl_core/data/split.py) and the leaks the health report flags on the split
the user chose (tl_core/data/health.py)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from tl_core.data import Dataset, ImageRecord, health_report, make_split
from tl_core.errors import DataError


def grouped(tmp_path: Path, groups: dict[str, tuple[str, int]], split_of: dict[str, str] | None = None,
            ungrouped: int = 0) -> Dataset:
    """``groups``: group -> (label, images); every record of a group gets ``split_of[group]``."""
    records = []
    for g, (label, n) in groups.items():
        for k in range(n):
            records.append(ImageRecord(path=f"{g}/{k}.jpg", label=label, split=(split_of or {}).get(g),
                                       sha256=f"{g}-{k}", width=64, height=64, group=g))
    for k in range(ungrouped):
        records.append(ImageRecord(path=f"solo/{k}.jpg", label="a" if k % 2 else "b", split=None,
                                   sha256=f"solo-{k}", width=64, height=64))
    return Dataset(root=tmp_path, name="g", classes=sorted({r.label for r in records}), records=records)


def splits_of_groups(ds: Dataset, split) -> dict[str, set[str]]:
    where: dict[str, set[str]] = {}
    for name in ("train", "val", "test"):
        for i in getattr(split, name):
            where.setdefault(ds.records[i].group or f"solo{i}", set()).add(name)
    return where


@pytest.mark.parametrize("val,test", [(0.2, 0.0), (0.25, 0.15), (0.5, 0.3)])
def test_no_group_is_in_two_splits_for_many_seeds(tmp_path: Path, val: float, test: float):
    rng = np.random.default_rng(7)
    for seed in range(25):
        n_groups = int(rng.integers(3, 25))
        ds = grouped(tmp_path, {f"p{g}": (str(rng.choice(["a", "b", "c"])), int(rng.integers(1, 6)))
                                for g in range(n_groups)}, ungrouped=int(rng.integers(0, 4)))
        split = make_split(ds, val, test, seed=seed)
        assert sorted(split.train + split.val + split.test) == list(range(len(ds.records)))
        assert all(len(s) == 1 for s in splits_of_groups(ds, split).values()), seed
        assert split.train and split.val and (split.test or test == 0)
        assert seed > 2 or make_split(ds, val, test, seed=seed) == split  # the same seed, the same split


def test_the_split_is_stratified_where_the_groups_allow(tmp_path: Path):
    ds = grouped(tmp_path, {f"p{g}": ("a" if g % 2 else "b", 3) for g in range(20)})
    split = make_split(ds, 0.2, 0.0, seed=3)
    val_labels = [ds.records[i].label for i in split.val]
    assert val_labels.count("a") == val_labels.count("b") == 6  # two patients of each class of ten
    report = health_report(ds, split)
    assert report.group_counts["val"] == {"a": 2, "b": 2} and report.group_counts["train"] == {"a": 8, "b": 8}
    assert report.cross_split_groups == {}


def test_a_class_whose_images_all_come_from_one_group_is_named(tmp_path: Path):
    ds = grouped(tmp_path, {**{f"p{g}": ("a" if g % 2 else "b", 2) for g in range(6)}, "solo": ("c", 4)})
    for seed in range(3):
        split = make_split(ds, 0.3, 0.0, seed=seed)
        assert any(ds.records[i].label == "c" for i in split.train)  # the fold that keeps 'c' in training
        warned = [w for w in health_report(ds, split).warnings if w.startswith("No ")]
        assert warned == ["No validation image of 'c': each group stays in one split, and its groups all went "
                          "elsewhere. Add images of more groups, or try another shuffle seed."]


def test_too_few_groups_say_what_to_do(tmp_path: Path):
    ds = grouped(tmp_path, {"p1": ("a", 4), "p2": ("b", 4)})
    with pytest.raises(DataError, match="2 group.*at least 3"):
        make_split(ds, 0.2, 0.2)
    assert make_split(ds, 0.2, 0.0).val  # two groups: one to train on, one to validate with


def test_a_given_split_that_leaks_a_group_is_flagged_and_splitting_again_fixes_it(tmp_path: Path):
    groups = {f"p{g}": ("a" if g % 2 else "b", 3) for g in range(8)}
    given = {f"p{g}": "train" for g in range(8)} | {"p6": "val", "p7": "val"}
    ds = grouped(tmp_path, groups, given)
    leaky = [ImageRecord(**{**r.__dict__, "split": "val"}) if r.path == "p1/0.jpg" else r for r in ds.records]
    ds = Dataset(root=tmp_path, name="g", classes=ds.classes, records=leaky)

    kept = make_split(ds, 0.2, 0.0)  # the source's split, as given
    report = health_report(ds, kept)
    assert report.cross_split_groups == {"p1": ["train", "val"]}
    assert any("'p1' in train and validation" in w for w in report.warnings)

    assert health_report(ds).cross_split_groups == {"p1": ["train", "val"]}  # no split: the source's
    fixed = make_split(ds, 0.2, 0.0, keep_given=False)
    assert health_report(ds, fixed).cross_split_groups == {}
    assert not any("more than one split" in w for w in health_report(ds, fixed).warnings)


def test_exact_and_near_duplicates_across_the_chosen_split_are_flagged(tmp_path: Path):
    ds = grouped(tmp_path, {f"p{g}": ("a" if g % 2 else "b", 2) for g in range(6)})
    twin = ds.records[0]
    ds.records.append(ImageRecord(path="copy.jpg", label=twin.label, split=None, sha256=twin.sha256,
                                  width=64, height=64, group="p9"))
    split = make_split(ds, 0.3, 0.0, seed=1)
    copy = len(ds.records) - 1
    first_in_train = 0 in split.train
    if (copy in split.train) == first_in_train:  # make sure the copy sits in the other split
        split = type(split)(train=sorted(set(split.train) ^ {copy}), val=sorted(set(split.val) ^ {copy}), test=[])
    assert health_report(ds, split).cross_split_duplicates == [["p0/0.jpg", "copy.jpg"]]
    train_one, val_one = split.train[0], split.val[0]
    near = health_report(ds, split, near_duplicate_pairs=[(train_one, val_one), (split.train[0], split.train[1])])
    assert near.cross_split_near_duplicates == [[ds.records[train_one].path, ds.records[val_one].path]]
    assert any("near-identical" in w for w in near.warnings)
    # the same through the groups the near-duplicate search returns (paths): the Data page's way
    paths = [ds.records[i].path for i in (train_one, val_one, split.train[1])]
    grouped_near = health_report(ds, split, near_duplicates=[paths])
    assert grouped_near.near_duplicate_groups == [paths]
    assert sorted(map(sorted, grouped_near.cross_split_near_duplicates)) == sorted(
        sorted([ds.records[t].path, ds.records[val_one].path]) for t in (train_one, split.train[1]))


def test_without_groups_the_split_is_the_per_class_one(tmp_path: Path):
    ds = grouped(tmp_path, {}, ungrouped=10)
    split = make_split(ds, 0.2, 0.0, seed=0)
    assert health_report(ds, split).group_counts == {}
    assert {ds.records[i].label for i in split.val} == {"a", "b"}  # at least one of each class, as before


def test_splitting_again_without_groups_ignores_the_given_val(tmp_path: Path):
    ds = grouped(tmp_path, {}, ungrouped=12)
    given = [ImageRecord(**{**r.__dict__, "split": "val" if k < 2 else "train"}) for k, r in enumerate(ds.records)]
    ds = Dataset(root=tmp_path, name="g", classes=ds.classes, records=given)
    assert make_split(ds, 0.5, 0.0).val == [0, 1]  # kept as given
    again = make_split(ds, 0.5, 0.0, keep_given=False)
    assert len(again.val) == 6 and again.val != [0, 1]
