"""The datasets of one workspace: ``workspace.datasets_dir/<id>/dataset.json``.

Ids are short, URL-safe and unique, so the app can keep the current one in the URL.
"""

from __future__ import annotations

import re
import secrets
import shutil
from dataclasses import dataclass
from pathlib import Path

from .errors import DataError
from .workspace import Workspace, is_safe_id


@dataclass(frozen=True)
class DatasetEntry:
    id: str
    name: str
    num_images: int
    num_classes: int
    path: Path


class DatasetCatalog:
    def __init__(self, workspace: Workspace) -> None:
        self.root = workspace.datasets_dir

    def new_dir(self, name: str) -> Path:
        """A fresh folder for a dataset called ``name`` (its id: a slug of the name + random)."""
        slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:40] or "dataset"
        path = self.root / f"{slug}-{secrets.token_hex(3)}"
        path.mkdir(parents=True)
        return path

    def list(self) -> list[DatasetEntry]:
        """Datasets that finished ingesting, newest first."""
        entries = []
        for meta in sorted(self.root.glob("*/dataset.json"), key=lambda p: p.stat().st_mtime, reverse=True):
            try:
                ds = self.load(meta.parent.name)
            except DataError:
                continue
            entries.append(DatasetEntry(meta.parent.name, ds.name, len(ds.records), len(ds.classes), ds.root))
        return entries

    def path(self, dataset_id: str) -> Path:
        if not is_safe_id(dataset_id) or not (self.root / dataset_id / "dataset.json").exists():
            raise DataError(f"There is no dataset '{dataset_id}' here; add one on the Data page.")
        return self.root / dataset_id

    def load(self, dataset_id: str):
        from .data import Dataset

        return Dataset.load(self.path(dataset_id))

    def delete(self, dataset_id: str) -> None:
        shutil.rmtree(self.path(dataset_id))
