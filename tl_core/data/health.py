"""What is wrong with a dataset before any training: counts, imbalance, sizes, duplicates, leaks."""

from __future__ import annotations

import dataclasses
from collections import Counter, defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from tl_core.data.dataset import Dataset
from tl_core.data.formats import MULTI_PAGE_WHY
from tl_core.data.split import Split
from tl_core.errors import DataError

MIN_PER_CLASS = 2  # one image to train on and one to validate with
FEW_PER_CLASS = 10  # below this, accuracy numbers mean little
IMBALANCE_WARN = 3.0
SMALL_SIDE = 32  # pixels; smaller images carry little for a 224-pixel network


@dataclass
class HealthReport:
    num_images: int
    class_counts: dict[str, int]  # every class, empty ones included
    imbalance_ratio: float | None  # largest class / smallest class; None when a class is empty
    sizes: list[tuple[int, int]]  # (width, height) of every image, after EXIF orientation
    size_summary: dict[str, float]  # min/median/max of width and height
    skipped: list[dict[str, str]]  # {"path", "reason"}
    duplicate_groups: list[list[str]]  # paths of byte-identical images, groups of two or more
    cross_split_duplicates: list[list[str]]  # duplicate groups that sit in more than one split
    split_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> count
    # groups of near-identical images (paths), as tl_core.data.neardup found them; [] when not looked for
    near_duplicate_groups: list[list[str]] = field(default_factory=list)
    group_counts: dict[str, dict[str, int]] = field(default_factory=dict)  # split -> class -> groups in it
    cross_split_groups: dict[str, list[str]] = field(default_factory=dict)  # group -> the splits it is in
    cross_split_near_duplicates: list[list[str]] = field(default_factory=list)  # near-duplicate pairs split apart
    warnings: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["sizes"] = [list(s) for s in self.sizes]
        return d


def health_report(ds: Dataset, split: Split | None = None, *,
                  near_duplicates: list[list[str]] | None = None,
                  near_duplicate_pairs: Iterable[tuple[int, int]] = ()) -> HealthReport:
    """Everything a user should know before training. ``split`` (else the source's own split) is
    used to find duplicates and groups that leak between train, val and test and to count
    ``split_counts``; pass the split the user chose, or a leak into val goes unflagged.

    ``near_duplicates``: the groups (record paths) ``neardup.near_duplicate_groups`` found, and/or
    ``near_duplicate_pairs`` (record indices): decoding every image is the caller's choice, so it is
    not done here. They are counted, and a near-identical pair split apart is flagged as a leak
    like an exact duplicate."""
    counts = Counter(r.label for r in ds.records)
    class_counts = {c: counts.get(c, 0) for c in ds.classes}
    sizes = [(r.width, r.height) for r in ds.records]
    assigned = _split_of(ds, split)

    by_hash: dict[str, list[int]] = defaultdict(list)
    for i, r in enumerate(ds.records):
        by_hash[r.sha256].append(i)
    groups = [g for g in by_hash.values() if len(g) > 1]
    duplicate_groups = [[ds.records[i].path for i in g] for g in groups]
    cross = [[ds.records[i].path for i in g] for g in groups
             if len({assigned[i] for i in g if assigned[i] is not None}) > 1]

    split_counts: dict[str, dict[str, int]] = {}
    for i, r in enumerate(ds.records):
        if assigned[i] is not None:
            split_counts.setdefault(assigned[i], {c: 0 for c in ds.classes})[r.label] += 1
    group_counts, cross_groups = _group_leaks(ds, assigned)
    near_groups = [list(g) for g in near_duplicates or [] if len(g) > 1]
    pairs = set(near_duplicate_pairs)
    index = {r.path: i for i, r in enumerate(ds.records)}
    for group in near_groups:
        members = [index[p] for p in group if p in index]
        pairs.update((a, b) for k, a in enumerate(members) for b in members[k + 1:])
    near_apart = [[ds.records[a].path, ds.records[b].path] for a, b in sorted(pairs)
                  if assigned[a] is not None and assigned[b] is not None and assigned[a] != assigned[b]]

    errors = _trainability_errors(ds, class_counts)
    warnings: list[str] = []
    non_empty = [n for n in class_counts.values() if n > 0]
    ratio = max(non_empty) / min(non_empty) if non_empty and len(non_empty) == len(class_counts) else None
    if ratio is not None and ratio >= IMBALANCE_WARN:
        big = max(class_counts, key=class_counts.__getitem__)
        small = min(class_counts, key=class_counts.__getitem__)
        warnings.append(f"Classes are imbalanced: '{big}' has {class_counts[big]} images, '{small}' only "
                        f"{class_counts[small]} ({ratio:.1f}x). Add images to the small classes, or judge "
                        "the model by per-class accuracy rather than overall accuracy.")
    few = [c for c, n in class_counts.items() if MIN_PER_CLASS <= n < FEW_PER_CLASS]
    if few:
        warnings.append(f"Few images in {_names(few)} (fewer than {FEW_PER_CLASS}); accuracy will be noisy. "
                        "20 or more per class work better.")
    if cross_groups:
        shown = "; ".join(f"'{g}' in {' and '.join(_SHOWN_SPLIT[s] for s in splits)}"
                          for g, splits in list(cross_groups.items())[:5])
        more = f" and {len(cross_groups) - 5} more" if len(cross_groups) > 5 else ""
        warnings.append(f"{len(cross_groups)} group(s) have images in more than one split ({shown}{more}): the "
                        "model is checked on groups it trained on, so validation scores will be too optimistic. "
                        "Split again keeping each group in one split (--resplit on the command line).")
    carved_val = [i for i, a in enumerate(assigned) if a == "val"] != [i for i, r in enumerate(ds.records)
                                                                      if r.split == "val"]
    for part, shown in (("train", "training"), ("val", "validation")):
        if not group_counts or part not in split_counts or (part == "val" and not carved_val):
            continue  # a given val/ has its own warning below
        missing = [c for c in ds.classes if class_counts[c] > 0 and split_counts[part].get(c, 0) == 0]
        if missing:
            warnings.append(f"No {shown} image of {_names(missing)}: each group stays in one split, and its "
                            "groups all went elsewhere. Add images of more groups, or try another shuffle seed.")
    if near_apart:
        warnings.append(f"{len(near_apart)} pair(s) of near-identical images sit in different splits; validation "
                        "scores will be too optimistic. Remove one image of each pair.")
    if cross:
        warnings.append(f"{len(cross)} image(s) appear in more than one of train/val/test; validation scores "
                        "will be too optimistic. Remove the copies from one of the splits.")
    elif groups:
        extra = sum(len(g) - 1 for g in groups)
        warnings.append(f"{extra} duplicate image(s) found (identical files); they count twice in training.")
    same_hash_labels = [g for g in groups if len({ds.records[i].label for i in g}) > 1]
    if same_hash_labels:
        warnings.append(f"{len(same_hash_labels)} identical image(s) carry different classes; check their labels.")
    if near_groups:
        warnings.append(f"{sum(len(g) for g in near_groups)} near-identical image(s) in {len(near_groups)} group(s) (the same "
                        "photo resized, re-saved or brightened); they count several times in training. Keep one "
                        "of each group.")
    tiny = sum(1 for w, h in sizes if min(w, h) < SMALL_SIDE)
    if tiny:
        warnings.append(f"{tiny} image(s) are smaller than {SMALL_SIDE} pixels on a side; they will be upscaled "
                        "and look blurry to the network.")
    if ds.skipped:
        warnings.append(f"{len(ds.skipped)} file(s) were skipped; see the list for the reason of each.")
    if ds.notes:  # multi-page TIFFs and the like (tl_core.data.formats.page_note)
        warnings.append(f"{len(ds.notes)} file(s) hold several pages or frames (a multi-page TIFF, a multi-frame "
                        f"DICOM, an animated GIF): {MULTI_PAGE_WHY}.")
    source_val = Counter(r.label for r in ds.records if r.split == "val")  # make_split keeps these as given
    if source_val and not carved_val:  # unless the user chose to split again
        empty_val = [c for c in ds.classes if source_val[c] == 0 and class_counts[c] > 0]
        if empty_val:
            warnings.append(f"The val/ folder has no images of {_names(empty_val)}; their accuracy cannot be measured.")

    return HealthReport(
        num_images=len(ds.records),
        class_counts=class_counts,
        imbalance_ratio=ratio,
        sizes=sizes,
        size_summary=_size_summary(sizes),
        skipped=[{"path": s.path, "reason": s.reason} for s in ds.skipped],
        duplicate_groups=duplicate_groups,
        cross_split_duplicates=cross,
        split_counts=split_counts,
        near_duplicate_groups=near_groups,
        group_counts=group_counts,
        cross_split_groups=cross_groups,
        cross_split_near_duplicates=near_apart,
        warnings=warnings,
        errors=errors,
    )


def check_trainable(ds: Dataset, min_per_class: int = MIN_PER_CLASS) -> None:
    """Raise DataError, saying what to add, when no model can be trained and validated on ``ds``."""
    counts = Counter(r.label for r in ds.records)
    errors = _trainability_errors(ds, {c: counts.get(c, 0) for c in ds.classes}, min_per_class)
    if errors:
        raise DataError(" ".join(errors))


def _trainability_errors(ds: Dataset, class_counts: dict[str, int], min_per_class: int = MIN_PER_CLASS) -> list[str]:
    if not ds.records:
        return ["The dataset has no usable images. Add a folder per class with JPEG or PNG images."]
    if len(class_counts) < 2:
        only = next(iter(class_counts), "")
        return [f"The dataset needs at least two classes to learn to tell apart, but it has only one ('{only}'). "
                "Add a folder per class, each holding images of that class."]
    errors = []
    empty = [c for c, n in class_counts.items() if n == 0]
    if empty:
        errors.append(f"Class {_names(empty)} has no usable images. Add images to it or remove its folder.")
    short = {c: n for c, n in class_counts.items() if 0 < n < min_per_class}
    for c, n in short.items():
        more = min_per_class - n
        errors.append(f"Class '{c}' has only {n} image(s); add at least {more} more (each class needs "
                      f"{min_per_class}: some to train on and one to validate with).")
    return errors


_SHOWN_SPLIT = {"train": "train", "val": "validation", "test": "test"}


def _group_leaks(ds: Dataset, assigned: list[str | None]) -> tuple[dict[str, dict[str, int]], dict[str, list[str]]]:
    """(split -> class -> number of groups, group -> splits for groups in more than one split);
    both empty when no record has a group."""
    if all(r.group is None for r in ds.records):
        return {}, {}
    members: dict[tuple[str, str], set[str]] = defaultdict(set)
    splits_of: dict[str, set[str]] = defaultdict(set)
    for i, r in enumerate(ds.records):
        if r.group is None or assigned[i] is None:
            continue
        members[(assigned[i], r.label)].add(r.group)
        splits_of[r.group].add(assigned[i])
    counts = {name: {c: len(members.get((name, c), ())) for c in ds.classes}
              for name in ("train", "val", "test") if any((name, c) in members for c in ds.classes)}
    order = {"train": 0, "val": 1, "test": 2}
    cross = {g: sorted(s, key=order.__getitem__) for g, s in sorted(splits_of.items()) if len(s) > 1}
    return counts, cross


def _split_of(ds: Dataset, split: Split | None) -> list[str | None]:
    if split is None:
        return [r.split for r in ds.records]
    out: list[str | None] = [None] * len(ds.records)
    for name in ("train", "val", "test"):
        for i in getattr(split, name):
            out[i] = name
    return out


def _size_summary(sizes: list[tuple[int, int]]) -> dict[str, float]:
    if not sizes:
        return {}
    arr = np.asarray(sizes, dtype=np.float64)
    return {"min_width": float(arr[:, 0].min()), "median_width": float(np.median(arr[:, 0])),
            "max_width": float(arr[:, 0].max()), "min_height": float(arr[:, 1].min()),
            "median_height": float(np.median(arr[:, 1])), "max_height": float(arr[:, 1].max())}


def _names(classes: list[str]) -> str:
    shown = ", ".join(f"'{c}'" for c in classes[:5])
    return shown + (f" and {len(classes) - 5} more" if len(classes) > 5 else "")
