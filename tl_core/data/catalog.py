"""The datasets of one workspace: ``workspace.datasets_dir/<id>/dataset.json``.

Ids are short, URL-safe and unique, so the app can keep the current one in the URL.
"""

from __future__ import annotations

import re
import secrets
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tl_core.errors import DataError
from tl_core.runs import Run, RunStore
from tl_core.workspace import Workspace, is_safe_id


@dataclass(frozen=True)
class DatasetEntry:
    id: str
    name: str
    num_images: int
    num_classes: int
    path: Path


class DatasetCatalog:
    def __init__(self, workspace: Workspace) -> None:
        self.workspace = workspace
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
        from tl_core.data.dataset import Dataset

        return Dataset.load(self.path(dataset_id))

    def runs_using(self, dataset_id: str) -> list[Run]:
        """The workspace's runs that trained (or train) on this dataset, newest first."""
        folder = self.path(dataset_id).resolve()
        found = []
        for run in RunStore(self.workspace).list():
            try:
                used = run.dataset_dir()
            except (OSError, ValueError):
                continue  # a run whose config cannot be read uses nothing we can tell
            if used is not None and used.resolve() == folder:
                found.append(run)
        return found

    def delete(self, dataset_id: str, *, is_active: Callable[[Run], bool] | None = None) -> None:
        """Remove the dataset. Refused (DataError) while a run queued or training on it is alive:
        stop that run first. Finished runs keep their results, but cannot show its images again.
        Pass ``is_active=jobs.is_active``: it looks at the worker, so a run whose worker died is not
        in the way (the data wing cannot import jobs); without it, the status file decides."""
        alive = is_active or (lambda run: run.status().active)
        active = [run for run in self.runs_using(dataset_id) if alive(run)]
        if active:
            names = ", ".join(f"'{run.display_name()}'" for run in active)
            raise DataError(f"Runs {names} still train on this dataset; stop them first (Stop on the "
                            f"Train page, or `python -m tl_core stop RUN`), then delete it.")
        shutil.rmtree(self.path(dataset_id))
