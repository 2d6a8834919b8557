"""Stratified, seeded train/val/test splits that keep a split the source already gave, and keep each
group (a patient, a site: ``ImageRecord.group``) in one split when the records have groups."""

from __future__ import annotations

import math
import warnings
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from tl_core.data.dataset import Dataset
from tl_core.errors import DataError


@dataclass(frozen=True)
class Split:
    train: list[int]  # indices into Dataset.records
    val: list[int]
    test: list[int]

    def to_dict(self) -> dict[str, Any]:
        return {"train": list(self.train), "val": list(self.val), "test": list(self.test)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Split:
        return cls(train=[int(i) for i in data["train"]], val=[int(i) for i in data["val"]],
                   test=[int(i) for i in data.get("test", [])])


def make_split(ds: Dataset, val_fraction: float = 0.2, test_fraction: float = 0.0, seed: int = 0, *,
               keep_given: bool = True) -> Split:
    """Records the source put in val/ or test/ stay there (unless ``keep_given`` is False: then
    every record is split anew); the rest is split per class.

    Without groups, written by hand rather than with scikit-learn's ``train_test_split(stratify=...)``:
    that refuses classes of one image and may leave a small class out of val, while here every class
    keeps at least one training image and, when ``val_fraction > 0``, at least one validation image.
    When any record has a group, see ``_group_split``: no group is ever carved into two splits.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError("Validation and test fractions must each be between 0 and 1 and sum to less than 1.")
    given = {"train": [], "val": [], "test": [], None: []}
    for i, r in enumerate(ds.records):
        given[r.split if keep_given and r.split in ("train", "val", "test") else None].append(i)
    pool = given["train"] + given[None]
    carve_val = val_fraction if not given["val"] else 0.0
    carve_test = test_fraction if not given["test"] else 0.0
    if any(r.group is not None for r in ds.records):
        return _group_split(ds, sorted(pool), given, carve_val, carve_test, seed)

    by_class: dict[str, list[int]] = defaultdict(list)
    for i in sorted(pool):
        by_class[ds.records[i].label].append(i)
    rng = np.random.default_rng(seed)
    train, val, test = [], list(given["val"]), list(given["test"])
    for label in ds.classes:
        members = by_class.get(label, [])
        need = 1 + (carve_val > 0) + (carve_test > 0)
        if len(members) < need:
            have = f"has {len(members)} training image(s)" if members else "has no training images"
            where = " (outside val/ and test/)" if given["val"] or given["test"] else ""
            raise DataError(f"Class '{label}' {have}{where}; it needs at least {need} to be split into "
                            f"{'train, validation and test' if need == 3 else 'train and validation' if need == 2 else 'train'}. "
                            f"Add {need - len(members)} more image(s) of '{label}'.")
        order = [members[j] for j in rng.permutation(len(members))]
        n = len(order)
        n_test = max(1, math.floor(n * carve_test + 0.5)) if carve_test > 0 else 0
        n_val = max(1, math.floor(n * carve_val + 0.5)) if carve_val > 0 else 0
        while n_test + n_val > n - 1:  # keep one for training; shrink test first, never below one
            if n_test > 1:
                n_test -= 1
            else:
                n_val -= 1
        test += order[:n_test]
        val += order[n_test:n_test + n_val]
        train += order[n_test + n_val:]
    return Split(train=sorted(train), val=sorted(val), test=sorted(test))


def has_groups(ds: Dataset) -> bool:
    return any(r.group is not None for r in ds.records)


def _group_split(ds: Dataset, pool: list[int], given: dict, carve_val: float, carve_test: float,
                 seed: int) -> Split:
    """Carve test, then val, out of ``pool`` by whole groups, stratified by label as far as the groups
    allow (scikit-learn's ``StratifiedGroupKFold``: of its folds, one that leaves every class some
    images, then the one closest to the share asked for). A record without a group is a group of its own. Guarantees: no group of the pool in two
    splits, and train (and val, test when asked for) not empty; a class may miss from val or test when
    all its images come from few groups: the health report says so."""
    keys = [ds.records[i].group if ds.records[i].group is not None else f"\0{i}" for i in range(len(ds.records))]
    groups = sorted({keys[i] for i in pool})
    need = 1 + (carve_val > 0) + (carve_test > 0)
    if len(groups) < need:
        where = " outside the given validation and test images" if given["val"] or given["test"] else ""
        raise DataError(f"The images{where} come from {len(groups)} group(s); keeping each group in one split "
                        f"needs at least {need} ({'train, validation and test' if need == 3 else 'train and validation'}). "
                        "Add images of more groups, or lower the validation or test share to 0 where you can.")
    train, val, test = list(pool), list(given["val"]), list(given["test"])
    if carve_test > 0:
        held, train = _carve_groups(ds, train, keys, carve_test, seed, keep=need - 1)
        test += held
    if carve_val > 0:
        held, train = _carve_groups(ds, train, keys, carve_val / (1 - carve_test), seed, keep=1)
        val += held
    return Split(train=sorted(train), val=sorted(val), test=sorted(test))


def _carve_groups(ds: Dataset, indices: list[int], keys: list[str], fraction: float, seed: int,
                  keep: int) -> tuple[list[int], list[int]]:
    """(held out, rest) of ``indices``: about ``fraction`` of them, by whole groups, leaving at least
    ``keep`` groups in the rest."""
    from sklearn.model_selection import StratifiedGroupKFold  # only grouped data pays for the import

    n_groups = len({keys[i] for i in indices})
    folds = max(2, min(round(1 / fraction), n_groups))
    labels = [ds.records[i].label for i in indices]
    with warnings.catch_warnings():  # "the least populated class has only n members": expected here
        warnings.simplefilter("ignore", UserWarning)
        splitter = StratifiedGroupKFold(n_splits=folds, shuffle=True, random_state=seed)
        held_parts = [held for _, held in splitter.split(np.zeros(len(indices)), labels, [keys[i] for i in indices])]
    # A fold is usable when it leaves ``keep`` groups; the one with the fewest groups always does,
    # as the caller made sure there are at least ``keep + 1``.
    usable = [part for part in held_parts
              if len(part) and n_groups - len({keys[indices[j]] for j in part}) >= keep]
    target = fraction * len(indices)
    classes = set(labels)

    def classes_left_out(part: list[int]) -> int:  # a class with all its groups held out trains on nothing
        held = set(part)
        return len(classes - {labels[j] for j in range(len(indices)) if j not in held})

    best = min(usable, key=lambda part: (classes_left_out(part), abs(len(part) - target)))
    held_set = {indices[j] for j in best}
    return sorted(held_set), [i for i in indices if i not in held_set]


def subset_per_class(train: list[int], labels: list[int], fraction: float, seed: int) -> list[int]:
    """The first ``max(1, round(n * fraction))`` of each class's training images (``n`` of them), in
    an order shuffled per class by ``seed``, whatever the fraction: so the 5% subset lies inside the
    10% one, and the data-size sweep's curve grows by adding images, never by swapping them. The
    validation and test images are not touched. ``fraction`` 1 returns ``train`` itself."""
    if fraction >= 1:
        return list(train)
    by_class: dict[int, list[int]] = defaultdict(list)
    for i in sorted(train):
        by_class[labels[i]].append(i)
    rng = np.random.default_rng(seed)
    kept: list[int] = []
    for label in sorted(by_class):
        members = by_class[label]
        order = [members[j] for j in rng.permutation(len(members))]
        kept += order[:max(1, math.floor(len(order) * fraction + 0.5))]
    return sorted(kept)
