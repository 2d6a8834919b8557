"""Fixes to a dataset's records, each one a new version that can be undone and is kept in the
dataset's history: move images to another class, remove images, drop exact or near duplicates.

A fix never deletes an image file: it changes ``dataset.json``'s records only (a removed image
is dropped from the records, its file stays, so an undo brings it back). A version is therefore
just a copy of ``dataset.json``. Below the dataset folder:

    versions/<N>.json    dataset.json as version N was (written when N is made or left)
    history.jsonl        one line per change, undos too: version, parent, when, what, reason, counts

Version numbers only grow (an undo returns to an older number; the next fix gets a new one), so a
run that records "version 3" (``DataConfig.dataset_version``) always names the same records.
``dataset.json`` is written last and is the commit point: on a failure before it (a full disk:
``DiskFull``) the history line and the new version file are taken back and the dataset is as it
was. Decode caches and feature stores are keyed by image content and stay valid.

A dataset the teacher shared with the class is read-only for students: every fix refuses it
unless the caller passes ``as_teacher=True``.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import json
import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tl_core import atomic
from tl_core.data.dataset import DATASET_FILE, Dataset, ImageRecord
from tl_core.errors import DataError, DiskFull, NothingToUndo
from tl_core.workspace import is_shared_dataset

VERSIONS_DIR = "versions"
HISTORY_FILE = "history.jsonl"
_LOCK_FILE = ".fixes.lock"


@dataclass(frozen=True)
class Change:
    version: int  # the version this change made current
    parent: int  # the version it was made from (for an undo: the version undone)
    when: float  # unix time
    what: str  # "relabel", "remove", "drop_exact_duplicates", "drop_near_duplicates", "merge" or "undo"
    reason: str  # why, in the user's or the caller's words ("" when none was given)
    counts: dict[str, int] = field(default_factory=dict)  # e.g. {"moved": 2} or {"removed": 5}
    paths: list[str] = field(default_factory=list)  # the record paths it touched
    summary: str = ""  # one sentence for the user: "Moved 2 images to 'cat'."

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


# ----------------------------------------------------------------------------- the fixes
def relabel(ds_root: Path, paths: Sequence[str], new_label: str, *, reason: str,
            as_teacher: bool = False) -> Dataset:
    """Move the images at ``paths`` (record paths) to class ``new_label`` (one of the dataset's
    classes). Images already in that class are left as they are; when none moves, nothing changes
    and no version is made."""
    with _editing(ds_root, as_teacher) as ds:
        if new_label not in ds.classes:
            raise DataError(f"There is no class '{new_label}' in this dataset; choose one of "
                            f"{', '.join(repr(c) for c in ds.classes)}.")
        wanted = _known(ds, paths)
        moved = [r.path for r in ds.records if r.path in wanted and r.label != new_label]
        if not moved:
            return ds
        records = [dataclasses.replace(r, label=new_label) if r.path in wanted else r for r in ds.records]
        return _commit(ds, records, "relabel", reason, {"moved": len(moved)}, moved,
                       f"Moved {_images(len(moved))} to '{new_label}'.")


def remove(ds_root: Path, paths: Sequence[str], *, reason: str, as_teacher: bool = False) -> Dataset:
    """Drop the images at ``paths`` from the dataset (their files stay, for an undo)."""
    with _editing(ds_root, as_teacher) as ds:
        wanted = _known(ds, paths)
        if not wanted:
            return ds
        records = [r for r in ds.records if r.path not in wanted]
        removed = [r.path for r in ds.records if r.path in wanted]
        return _commit(ds, records, "remove", reason, {"removed": len(removed)}, removed,
                       f"Removed {_images(len(removed))} from the dataset.")


def drop_exact_duplicates(ds_root: Path, *, reason: str = "identical files", as_teacher: bool = False) -> Dataset:
    """Keep the first record of each group of byte-identical images (same sha256), drop the rest.
    Nothing changes when there is no duplicate."""
    with _editing(ds_root, as_teacher) as ds:
        seen: set[str] = set()
        records, dropped = [], []
        for r in ds.records:
            if r.sha256 in seen:
                dropped.append(r.path)
            else:
                seen.add(r.sha256)
                records.append(r)
        if not dropped:
            return ds
        return _commit(ds, records, "drop_exact_duplicates", reason, {"removed": len(dropped)}, dropped,
                       f"Dropped {_images(len(dropped))} identical to one kept.")


def drop_near_duplicates(ds_root: Path, groups: Sequence[Sequence[str]], *,
                         reason: str = "near-duplicates", as_teacher: bool = False) -> Dataset:
    """For each group of near-identical images (record paths, e.g. ``neardup.near_duplicate_groups``),
    keep the first and drop the others, all in one version."""
    with _editing(ds_root, as_teacher) as ds:
        present = {r.path for r in ds.records}
        drop: set[str] = set()
        fixed = 0
        for group in groups:  # paths removed since the groups were found are passed over
            members = [p for p in dict.fromkeys(group) if p in present]
            fixed += len(members) > 1
            drop.update(members[1:])
        dropped = [r.path for r in ds.records if r.path in drop]
        if not dropped:
            return ds
        records = [r for r in ds.records if r.path not in drop]
        return _commit(ds, records, "drop_near_duplicates", reason, {"removed": len(dropped), "groups": fixed},
                       dropped, f"Dropped {_images(len(dropped))} near-identical to one kept, in "
                                f"{fixed} group(s).")


def merge(ds_root: Path, paths: Sequence[str], *, keep: str, label: str | None = None,
          reason: str = "near-duplicates merged", as_teacher: bool = False) -> Dataset:
    """Merge a group of near-duplicates into one image: keep ``keep`` (moved to class ``label``
    when given, e.g. when the copies disagreed), drop the other ``paths``; one version."""
    with _editing(ds_root, as_teacher) as ds:
        wanted = _known(ds, [*paths, keep])
        if label is not None and label not in ds.classes:
            raise DataError(f"There is no class '{label}' in this dataset; choose one of "
                            f"{', '.join(repr(c) for c in ds.classes)}.")
        dropped = [r.path for r in ds.records if r.path in wanted and r.path != keep]
        records = [dataclasses.replace(r, label=label) if r.path == keep and label is not None else r
                   for r in ds.records if r.path not in wanted or r.path == keep]
        if not dropped and records == ds.records:
            return ds
        to = f" as '{label}'" if label is not None else ""
        return _commit(ds, records, "merge", reason, {"removed": len(dropped)}, [keep, *dropped],
                       f"Merged {_images(len(dropped) + 1)} into one{to}.")


def undo(ds_root: Path, *, as_teacher: bool = False, expected: int | None = None) -> Dataset:
    """Bring back the version the current one was made from. ``NothingToUndo`` when the current
    version is the dataset as imported (or its history is gone). ``expected``: the version the
    user saw when asking (an Undo button's); a DataError when the dataset has moved on since (a
    double click, another tab), so that one click never undoes two changes."""
    with _editing(ds_root, as_teacher) as ds:
        if expected is not None and ds.version != expected:
            raise DataError(f"'{ds.name}' changed since this Undo was shown (it is at version {ds.version} now, "
                            f"not {expected}), so nothing was undone. Look at its history again.")
        made = _made_by(ds.root, ds.version)
        if made is None:
            raise NothingToUndo(f"Nothing to undo: '{ds.name}' is as it was imported (version {ds.version}).")
        previous = _version_file(ds.root, made.parent)
        data = atomic.read_json(previous)
        if data is None:
            raise NothingToUndo(f"Version {made.parent} of '{ds.name}' is no longer on disk, so the last change "
                                "cannot be undone. Fix the dataset again by hand, or import it again.")
        old = Dataset.load_dict(ds.root, data)
        change = Change(version=old.version, parent=ds.version, when=time.time(), what="undo", reason="",
                        counts={"records": len(old.records)}, paths=[],
                        summary=f"Undid: {made.summary or made.what}")
        _write(ds.root, old, change, new_version_file=False)
        return old


def history(ds_root: Path) -> list[Change]:
    """Every change of the dataset, oldest first (undos included); [] for one never fixed."""
    lines: list[Change] = []
    path = Path(ds_root) / HISTORY_FILE
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return []
    names = {f.name for f in dataclasses.fields(Change)}
    for line in text.splitlines():
        with contextlib.suppress(ValueError, TypeError):  # a damaged line is skipped, the rest stays readable
            data = json.loads(line)
            lines.append(Change(**{k: v for k, v in data.items() if k in names}))
    return lines


def can_undo(ds_root: Path) -> Change | None:
    """The change an ``undo`` would take back, or None."""
    ds = Dataset.load(ds_root)
    return _made_by(ds.root, ds.version)


def at_version(ds_root: Path | str, version: int) -> Dataset | None:
    """The dataset as ``version`` was (the current one when it is that version); None when that
    version is no longer on disk. A run trains on the version it recorded when it was started."""
    ds = Dataset.load(ds_root)
    if version == ds.version:
        return ds
    data = atomic.read_json(_version_file(ds.root, version))
    return Dataset.load_dict(ds.root, data) if data is not None else None


def check_editable(ds_root: Path, *, as_teacher: bool = False) -> None:
    """DataError when fixes are refused here: a dataset the teacher shared, for a student."""
    if is_shared_dataset(ds_root) and not as_teacher:
        raise DataError("The teacher shared this dataset with the class: it is read-only for students. "
                        "To fix images, add your own copy of the images on the Data page, or ask the teacher.")


# ----------------------------------------------------------------------------- internals
@contextlib.contextmanager
def _editing(ds_root: Path, as_teacher: bool) -> Iterator[Dataset]:
    """The dataset, loaded under a lock so two fixes at once (two clicks, two tabs) do not make the
    same version number or lose each other's change."""
    root = Path(ds_root)
    check_editable(root, as_teacher=as_teacher)
    if not (root / DATASET_FILE).is_file():
        Dataset.load(root)  # its DataError says what is missing
    try:
        fd = os.open(root / _LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        if atomic.is_disk_full(exc):
            raise atomic.disk_full(exc) from exc
        raise
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield Dataset.load(root)
    finally:
        os.close(fd)  # releases the lock


def _known(ds: Dataset, paths: Sequence[str]) -> set[str]:
    wanted = set(paths)
    missing = wanted - {r.path for r in ds.records}
    if missing:
        shown = ", ".join(sorted(missing)[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DataError(f"{shown} is not in '{ds.name}' (any more): it may have been removed already. "
                        "Reload the page to see the dataset as it is now.")
    return wanted


def _commit(ds: Dataset, records: list[ImageRecord], what: str, reason: str, counts: dict[str, int],
            paths: list[str], summary: str) -> Dataset:
    version = max([ds.version, *(c.version for c in history(ds.root)), *_stored_versions(ds.root)]) + 1
    new = dataclasses.replace(ds, records=records, version=version)
    change = Change(version=version, parent=ds.version, when=time.time(), what=what, reason=reason,
                    counts=counts, paths=paths, summary=summary)
    if not _version_file(ds.root, ds.version).exists():  # the one before the first fix: as imported
        atomic.write_json(_version_file(ds.root, ds.version), ds.to_dict())
    _write(ds.root, new, change, new_version_file=True)
    return new


def _write(root: Path, new: Dataset, change: Change, *, new_version_file: bool) -> None:
    """Version file, history line, then dataset.json (the commit point); on any failure the first
    two are taken back, so the dataset and its history stay as they were."""
    history_path = root / HISTORY_FILE
    version_path = _version_file(root, new.version)
    size = history_path.stat().st_size if history_path.exists() else 0
    try:
        if new_version_file:
            atomic.write_json(version_path, new.to_dict())
        atomic.append_line(history_path, json.dumps(change.to_dict(), sort_keys=True))
        new.save()
    except BaseException as exc:
        with contextlib.suppress(OSError):  # shortening a file needs no free space
            if history_path.exists():
                os.truncate(history_path, size)
        if new_version_file:
            version_path.unlink(missing_ok=True)
        if not isinstance(exc, DiskFull) and atomic.is_disk_full(exc):
            raise atomic.disk_full(exc) from exc
        raise


def _made_by(root: Path, version: int) -> Change | None:
    """The fix that made ``version`` (the last one, if it was made twice), or None for the first."""
    for change in reversed(history(root)):
        if change.version == version and change.what != "undo":
            return change
    return None


def _version_file(root: Path, version: int) -> Path:
    return Path(root) / VERSIONS_DIR / f"{version}.json"


def _stored_versions(root: Path) -> list[int]:
    folder = Path(root) / VERSIONS_DIR
    return [int(p.stem) for p in folder.glob("*.json") if p.stem.isdigit()] if folder.is_dir() else []


def _images(n: int) -> str:
    return f"{n} image" + ("" if n == 1 else "s")
