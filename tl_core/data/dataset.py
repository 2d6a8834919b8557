"""The dataset record types and ``dataset.json``: what an ingested dataset is, on disk and in memory."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tl_core import atomic
from tl_core.errors import DataError

DATASET_FILE = "dataset.json"
FORMAT_VERSION = 1
SPLITS = ("train", "val", "test")

ProgressFn = Callable[[int, int, str], None]  # (done, total, message)


@dataclass(frozen=True)
class UploadedImage:
    name: str  # file name as the browser sent it (never trusted as a path)
    data: bytes  # the file's bytes
    label: str  # class the user put it in


@dataclass(frozen=True)
class ImageRecord:
    path: str  # posix path relative to Dataset.root
    label: str  # class name
    split: str | None  # "train" | "val" | "test" when the source gave one, else None
    sha256: str  # of the file's bytes: finds duplicates and keys the decode cache
    width: int  # original size, after EXIF orientation
    height: int
    group: str | None = None  # a spreadsheet's group (a patient, a site): kept in one split; None = its own


@dataclass(frozen=True)
class Skipped:
    path: str  # the name as the source gave it
    reason: str  # written for the user


@dataclass(frozen=True)
class Note:
    path: str  # the name as the source gave it
    note: str  # what was done with the file, written for the user (a multi-page TIFF: its first page)


def _record_dict(record: ImageRecord) -> dict[str, Any]:
    d = dataclasses.asdict(record)
    if d["group"] is None:
        del d["group"]  # a dataset without groups reads as before, even to an older TL Studio
    return d


@dataclass
class Dataset:
    root: Path  # record paths are relative to this folder; dataset.json lives here
    name: str  # shown to the user (folder, zip or csv name)
    classes: list[str]  # sorted; includes classes whose folder held no usable image
    records: list[ImageRecord]
    skipped: list[Skipped] = field(default_factory=list)
    source: str = ""  # what it was ingested from, for the record
    version: int = 1  # 1 as imported; each fix (tl_core.data.fixes) makes a new one, an undo goes back
    notes: list[Note] = field(default_factory=list)  # files used in part (tl_core.data.formats.page_note)

    @property
    def labels(self) -> list[int]:
        """Each record's label as an index into ``classes``."""
        index = {c: i for i, c in enumerate(self.classes)}
        return [index[r.label] for r in self.records]

    def path_of(self, record: ImageRecord) -> Path:
        return self.root / record.path

    def examples(self, per_class: int, *, max_classes: int | None = None,
                 on_disk: bool = False) -> dict[str, list[ImageRecord]]:
        """The first ``per_class`` records of each class, in record order, for the first
        ``max_classes`` classes met (all by default); with ``on_disk``, only records whose file is
        still there. Classes without such a record are left out."""
        picked: dict[str, list[ImageRecord]] = {}
        for record in self.records:
            chosen = picked.get(record.label)
            if chosen is None and max_classes is not None and len(picked) >= max_classes:
                if all(len(c) >= per_class for c in picked.values()):
                    break
                continue
            if (chosen is None or len(chosen) < per_class) and (not on_disk or self.path_of(record).exists()):
                picked.setdefault(record.label, []).append(record)
        return picked

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": FORMAT_VERSION,
            "version": self.version,
            "name": self.name,
            "source": self.source,
            "classes": list(self.classes),
            "records": [_record_dict(r) for r in self.records],
            "skipped": [dataclasses.asdict(s) for s in self.skipped],
            **({"notes": [dataclasses.asdict(n) for n in self.notes]} if self.notes else {}),
        }

    def save(self) -> None:
        """Write ``root/dataset.json`` atomically, so another process can ``Dataset.load`` it."""
        atomic.write_json(self.root / DATASET_FILE, self.to_dict())

    @classmethod
    def load(cls, root: Path | str) -> Dataset:
        root = Path(root)
        path = root / DATASET_FILE
        if not path.is_file():
            raise DataError(f"No dataset found in {root} ({DATASET_FILE} is missing). Import the images again.")
        data = atomic.read_json(path)
        if data is None:
            raise DataError(f"The dataset description {path} is damaged (not JSON). Import the images again.")
        return cls.load_dict(root, data)

    @classmethod
    def load_dict(cls, root: Path | str, data: Any) -> Dataset:
        """The dataset described by ``data`` (``to_dict``'s layout), its paths relative to ``root``."""
        path = Path(root) / DATASET_FILE
        try:
            if data.get("format") != FORMAT_VERSION:
                raise ValueError(f"unknown format {data.get('format')!r}")
            records = [ImageRecord(**r) for r in data["records"]]
            classes = [str(c) for c in data["classes"]]
            known = set(classes)
            if any(r.label not in known for r in records):
                raise ValueError("a record's label is not among the classes")
            return cls(root=Path(root), name=str(data["name"]), classes=classes, records=records,
                       skipped=[Skipped(**s) for s in data.get("skipped", [])],
                       source=str(data.get("source", "")),
                       version=int(data.get("version", 1)),  # written before versions existed: 1
                       notes=[Note(**n) for n in data.get("notes", [])])
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise DataError(f"The dataset description {path} is damaged ({exc}). Import the images again.") from exc
