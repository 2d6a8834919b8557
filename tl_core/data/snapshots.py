"""Images gathered class by class (uploads and webcam photos) waiting to become a dataset.

Collecting photos class by class is slow work, so each image is written to the workspace the
moment it arrives (``<workspace>/snapshots/``): a browser refresh, a page switch or a server
restart keeps them. Each image has its own small JSON sidecar with its class, so two browser tabs
of the same session can add images at once without losing any (there is no shared list to
rewrite). Every image passes the image guard before it is written (``checked_image``: a
decompression bomb or a non-image is refused at the door). ``as_uploads()`` hands them to
``tl_core.data.ingest``, which decodes and checks each image as it checks every upload;
``remove()`` then drops exactly the ones the dataset took.
"""

from __future__ import annotations

import json
import re
import time
import uuid
from collections import Counter
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tl_core import atomic
from tl_core.data.dataset import Dataset, UploadedImage
from tl_core.data.safety import Limits, checked_image
from tl_core.workspace import Workspace

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff", ".heic", ".heif", ".dcm")  # formats.py
_ID = re.compile(r"^[0-9]{19}-[0-9a-f]{8}$")  # nanosecond time (sorts by arrival), then a random part


@dataclass(frozen=True)
class Snapshot:
    id: str
    path: Path  # the image
    label: str

    @property
    def upload_name(self) -> str:
        """The name it travels under into ingest: its id, never the class (a class may be any text)."""
        return f"{self.id}{self.path.suffix}"


class SnapshotTray:
    """The images of one workspace waiting to become a dataset, in the order they arrived."""

    def __init__(self, workspace: Workspace):
        self.dir = workspace.root / "snapshots"

    def items(self) -> list[Snapshot]:
        if not self.dir.is_dir():
            return []
        out = []
        for sidecar in sorted(self.dir.glob("*.json")):
            snapshot = self._read(sidecar)
            if snapshot is not None:
                out.append(snapshot)
        return out

    def counts(self) -> Counter[str]:
        return Counter(s.label for s in self.items())

    def add(self, label: str, data: bytes, suffix: str = ".jpg", limits: Limits | None = None) -> Snapshot:
        return self.add_many(label, [(data, suffix)], limits)[0]

    def add_many(self, label: str, images: Iterable[tuple[bytes, str]], limits: Limits | None = None) -> list[Snapshot]:
        """Keep ``(bytes, suffix)`` images as class ``label``, all or none. Each one passes the image
        guard (``checked_image``: file size, format, pixel count) before anything is written; one that
        fails raises ``ImageRefused``, and a full disk raises ``DiskFull``: then none of them is kept.
        The image is written first and its sidecar last, so a reader never finds a sidecar without
        its image."""
        label = label.strip()
        if not label:
            raise ValueError("an image needs a class name")
        images = list(images)
        for data, _ in images:
            checked_image(data, limits)
        added: list[Snapshot] = []
        path: Path | None = None
        try:
            for data, suffix in images:
                suffix = suffix.lower() if suffix.lower() in IMAGE_SUFFIXES else ".jpg"
                snapshot_id = f"{time.time_ns():019d}-{uuid.uuid4().hex[:8]}"
                path = self.dir / f"{snapshot_id}{suffix}"
                atomic.write_bytes(path, data, fsync=False)
                atomic.write_bytes(self.dir / f"{snapshot_id}.json",
                                   json.dumps({"label": label, "image": path.name}).encode("utf-8"), fsync=False)
                added.append(Snapshot(snapshot_id, path, label))
                path = None
        except BaseException:
            if path is not None:
                path.unlink(missing_ok=True)  # the image whose sidecar failed
            self.remove(added)
            raise
        return added

    def remove(self, snapshots: Sequence[Snapshot]) -> None:
        for snapshot in snapshots:
            (self.dir / f"{snapshot.id}.json").unlink(missing_ok=True)  # the sidecar first: gone from the list
            snapshot.path.unlink(missing_ok=True)

    def remove_last(self, label: str | None = None) -> Snapshot | None:
        """Drop the newest image (of ``label``, when given); returns it, or None when there is none."""
        items = [s for s in self.items() if label is None or s.label == label]
        if not items:
            return None
        self.remove(items[-1:])
        return items[-1]

    def clear(self) -> None:
        self.remove(self.items())

    def as_uploads(self, snapshots: Sequence[Snapshot] | None = None) -> list[UploadedImage]:
        snapshots = self.items() if snapshots is None else snapshots
        return [UploadedImage(name=s.upload_name, data=s.path.read_bytes(), label=s.label) for s in snapshots]

    @staticmethod
    def taken_by(dataset: Dataset, snapshots: Sequence[Snapshot]) -> list[Snapshot]:
        """The snapshots that ``dataset`` (ingested from ``as_uploads(snapshots)``) accepted: all
        but those it skipped, which stay in the tray for the user to see."""
        skipped = {s.path for s in dataset.skipped}
        return [s for s in snapshots if s.upload_name not in skipped]

    def _read(self, sidecar: Path) -> Snapshot | None:
        """A sidecar's snapshot, or None when it is damaged, foreign or its image is missing (a
        hand edit or a half-finished write must not break the page, nor point outside the tray)."""
        if not _ID.match(sidecar.stem):
            return None
        try:
            entry = json.loads(sidecar.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if not isinstance(entry, dict) or not isinstance(entry.get("label"), str) or not entry["label"].strip():
            return None
        image = self.dir / str(entry.get("image", ""))
        if image.parent != self.dir or image.stem != sidecar.stem or image.suffix not in IMAGE_SUFFIXES:
            return None
        if not image.is_file():
            return None
        return Snapshot(sidecar.stem, image, entry["label"].strip())
