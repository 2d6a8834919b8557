"""Stratified, seeded train/val/test splits that keep a split the source already gave."""

from __future__ import annotations

import math
from collections import defaultdict
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..errors import DataError
from .dataset import Dataset


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


def make_split(ds: Dataset, val_fraction: float = 0.2, test_fraction: float = 0.0, seed: int = 0) -> Split:
    """Records the source put in val/ or test/ stay there; the rest is split per class.

    Written by hand rather than with scikit-learn's ``train_test_split(stratify=...)``: that refuses
    classes of one image and may leave a small class out of val, while here every class keeps at
    least one training image and, when ``val_fraction > 0``, at least one validation image.
    """
    if not (0 <= val_fraction < 1 and 0 <= test_fraction < 1 and val_fraction + test_fraction < 1):
        raise DataError("Validation and test fractions must each be between 0 and 1 and sum to less than 1.")
    given = {"train": [], "val": [], "test": [], None: []}
    for i, r in enumerate(ds.records):
        given[r.split if r.split in ("train", "val", "test") else None].append(i)
    pool = given["train"] + given[None]
    carve_val = val_fraction if not given["val"] else 0.0
    carve_test = test_fraction if not given["test"] else 0.0

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
