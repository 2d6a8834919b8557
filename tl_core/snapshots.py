"""Webcam snapshots waiting to become a dataset.

Taking photos class by class is slow work, so each snapshot is written to the workspace the moment
it is taken (``<workspace>/snapshots/``): a browser refresh, a page switch or a server restart
keeps them. ``as_uploads()`` hands them to ``tl_core.data.ingest`` like any upload, which checks
them as it checks every image.
"""

from __future__ import annotations

import uuid
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from . import atomic
from .data import UploadedImage
from .workspace import Workspace

MANIFEST = "snapshots.json"


@dataclass(frozen=True)
class Snapshot:
    path: Path
    label: str


class SnapshotTray:
    """The snapshots of one workspace, in the order they were taken."""

    def __init__(self, workspace: Workspace):
        self.dir = workspace.root / "snapshots"

    def items(self) -> list[Snapshot]:
        entries = atomic.read_json(self.dir / MANIFEST, []) or []
        out = []
        for entry in entries:
            path = self.dir / str(entry.get("file", ""))
            if path.parent == self.dir and path.is_file():  # a hand-edited manifest cannot point elsewhere
                out.append(Snapshot(path, str(entry.get("label", ""))))
        return out

    def counts(self) -> Counter[str]:
        return Counter(s.label for s in self.items())

    def add(self, label: str, data: bytes, suffix: str = ".jpg") -> Snapshot:
        label = label.strip()
        if not label:
            raise ValueError("a snapshot needs a class name")
        if suffix not in (".jpg", ".jpeg", ".png", ".webp"):
            suffix = ".jpg"
        path = self.dir / f"{uuid.uuid4().hex[:12]}{suffix}"
        atomic.write_bytes(path, data)
        self._save([*self.items(), Snapshot(path, label)])
        return self.items()[-1]

    def remove_last(self, label: str | None = None) -> Snapshot | None:
        """Drop the newest snapshot (of ``label``, when given); returns it, or None when none."""
        items = self.items()
        for i in range(len(items) - 1, -1, -1):
            if label is None or items[i].label == label:
                gone = items.pop(i)
                self._save(items)
                gone.path.unlink(missing_ok=True)
                return gone
        return None

    def clear(self) -> None:
        items = self.items()
        self._save([])
        for snapshot in items:
            snapshot.path.unlink(missing_ok=True)

    def as_uploads(self) -> list[UploadedImage]:
        return [UploadedImage(name=f"{s.label}-{i:04d}{s.path.suffix}", data=s.path.read_bytes(), label=s.label)
                for i, s in enumerate(self.items())]

    def _save(self, items: list[Snapshot]) -> None:
        atomic.write_json(self.dir / MANIFEST, [{"file": s.path.name, "label": s.label} for s in items])
