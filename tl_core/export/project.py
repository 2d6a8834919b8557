"""Projects you can take home: a workspace's datasets and runs as one zip, opened again on another
TL Studio (a fresh workspace, a classroom server). This module writes the archive and holds the facts
of its format that reading it needs too; ``tl_core.export.project_import`` opens one.

The archive holds ``tl_studio_project.json`` (the manifest: format version, app version, the
datasets and runs inside, the sha256 and size of every file) and, below ``datasets/<id>/``, each
dataset's ``dataset.json``, its images (those its records, and its saved versions' records, name)
and its version history when it has one; below ``runs/<id>/``, each run's config, status, events,
metrics, evaluations, classes, name and best checkpoint (the last one too when small). Caches,
export bundles and worker logs stay behind: they are made again or belong to the old server.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tl_core import __version__, atomic
from tl_core.data.catalog import DatasetCatalog
from tl_core.data.dataset import Dataset
from tl_core.data.safety import Skip, check_member_name
from tl_core.errors import DataError
from tl_core.runs import Run, RunStore
from tl_core.workspace import Workspace

FORMAT = "tl-studio-project"
FORMAT_VERSION = 1
MANIFEST = "tl_studio_project.json"
RUN_FILES = ("config.json", "status.json", "events.jsonl", "classes.json", "metrics.json", "eval_val.json",
             "eval_test.json", "label.json")
CHECKPOINTS = ("checkpoints/best.pt", "checkpoints/last.pt")
LAST_CHECKPOINT_MAX_BYTES = 16 * 1024**2  # "last" (optimiser state too) travels only when this small
CHUNK_BYTES = 1024**2  # what one read or write of a file copies into or out of the archive

ProgressFn = Callable[[int, int, str], None]  # (done, total, message)


@dataclass(frozen=True)
class ProjectItem:
    id: str  # folder name: under datasets/ or runs/ of the workspace (after import: the new one)
    name: str  # what the user calls it


@dataclass
class ProjectSummary:
    """What an export packed or an import added."""

    datasets: list[ProjectItem] = field(default_factory=list)
    runs: list[ProjectItem] = field(default_factory=list)
    files: int = 0
    bytes: int = 0
    notes: list[str] = field(default_factory=list)  # what was left out or renamed, written for the user

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def export_project(workspace: Workspace, out_path: Path | str, *, datasets: Sequence[str] | None = None,
                   runs: Sequence[str] | None = None, progress: ProgressFn | None = None) -> ProjectSummary:
    """Write the project zip to ``out_path`` (whole or nothing: a full disk raises ``DiskFull`` and
    leaves no file). With neither ``datasets`` nor ``runs``: everything in the workspace; else the
    named datasets and runs (ids), plus the dataset each chosen run trained on. A run still queued
    or training is left out (said in ``notes``)."""
    store, catalog = RunStore(workspace), DatasetCatalog(workspace)
    everything = datasets is None and runs is None
    summary = ProjectSummary()
    chosen_runs: list[Run] = []
    for run in store.list() if everything else [store.get(run_id) for run_id in runs or ()]:
        if run.status().active:
            summary.notes.append(f"Run '{run.display_name()}' is still queued or training and was left out; "
                                 "download the project again once it has ended.")
        else:
            chosen_runs.append(run)
    folders: dict[Path, str] = {}  # dataset folder -> its id in the archive
    for dataset_id in [entry.id for entry in catalog.list()] if everything else list(datasets or ()):
        folders[catalog.path(dataset_id).resolve()] = ""
    run_dataset: dict[str, Path | None] = {}
    for run in chosen_runs:
        folder = run.dataset_dir()
        if folder is not None and (folder / "dataset.json").is_file():
            folders.setdefault(folder.resolve(), "")
            run_dataset[run.id] = folder.resolve()
        else:
            run_dataset[run.id] = None
            summary.notes.append(f"The dataset of run '{run.display_name()}' is no longer on this server; "
                                 "the run comes without it.")
    taken: set[str] = set()
    for folder in folders:
        folders[folder] = _archive_id(folder.name, taken)

    files: list[tuple[str, Path]] = []  # (name in the archive, file)
    ds_entries = []
    for folder, dataset_id in folders.items():
        ds = Dataset.load(folder)
        names, missing = _dataset_files(folder)
        if missing:
            summary.notes.append(f"{missing} image file(s) of dataset '{ds.name}' are missing on disk and were left out.")
        files += [(f"datasets/{dataset_id}/{name}", folder / name) for name in names]
        ds_entries.append({"id": dataset_id, "name": ds.name, "images": len(ds.records), "classes": len(ds.classes)})
        summary.datasets.append(ProjectItem(dataset_id, ds.name))
    run_entries = []
    for run in chosen_runs:
        names = [name for name in RUN_FILES if (run.dir / name).is_file()]
        best, last = run.checkpoint_path("best"), run.checkpoint_path("last")
        if best.is_file():
            names.append(CHECKPOINTS[0])
        if last.is_file() and last.stat().st_size <= LAST_CHECKPOINT_MAX_BYTES:
            names.append(CHECKPOINTS[1])
        files += [(f"runs/{run.id}/{name}", run.dir / name) for name in names]
        dataset = run_dataset[run.id]
        run_entries.append({"id": run.id, "name": run.display_name(),
                            "dataset": folders[dataset] if dataset is not None else None})
        summary.runs.append(ProjectItem(run.id, run.display_name()))
    if not files:
        raise DataError("There is nothing to put into a project yet: add a dataset on the Data page or train a run.")

    entries: dict[str, dict[str, Any]] = {}
    with atomic.replacing(Path(out_path)) as tmp, zipfile.ZipFile(tmp, "w", allowZip64=True) as zf:
        for done, (name, path) in enumerate(files, start=1):
            entries[name] = _pack(zf, name, path)
            if progress is not None:
                progress(done, len(files), f"Packed {done} of {len(files)} files")
        manifest = {"format": FORMAT, "format_version": FORMAT_VERSION, "app": "TL Studio", "app_version": __version__,
                    "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "datasets": ds_entries,
                    "runs": run_entries, "files": entries}
        zf.writestr(MANIFEST, json.dumps(manifest, indent=2, sort_keys=True), zipfile.ZIP_DEFLATED)
    summary.files = len(entries)
    summary.bytes = sum(entry["size"] for entry in entries.values())
    return summary


def _archive_id(name: str, taken: set[str]) -> str:
    base = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:50] or "dataset"
    candidate, n = base, 2
    while candidate in taken:
        candidate, n = f"{base}-{n}", n + 1
    taken.add(candidate)
    return candidate


def _dataset_files(root: Path) -> tuple[list[str], int]:
    """(files of the dataset at ``root`` to pack, relative posix paths; images named by a record but
    missing). The description, its saved versions and history, and the images any of them names:
    never other files of the folder (a dataset used in place may sit in a folder of other things)."""
    names = {"dataset.json"}
    documents = [root / "dataset.json"]
    if (root / "history.jsonl").is_file():
        names.add("history.jsonl")
    if (root / "versions").is_dir():
        for path in sorted((root / "versions").glob("*.json")):
            names.add(f"versions/{path.name}")
            documents.append(path)
    missing: set[str] = set()
    for document in documents:
        data = atomic.read_json(document, default={})
        for record in data.get("records", []) if isinstance(data, dict) else []:
            try:
                rel = check_member_name(str(record.get("path", "")))
            except Skip:
                continue
            (names if (root / rel).is_file() else missing).add(rel)
    return sorted(names), len(missing - names)


def _pack(zf: zipfile.ZipFile, name: str, path: Path) -> dict[str, Any]:
    """Copy ``path`` into the archive as ``name``; its sha256 and size as read."""
    size = path.stat().st_size
    info = zipfile.ZipInfo(name, date_time=time.localtime()[:6])
    # JSON shrinks a lot; images and checkpoints hardly: stored, they pack (and unpack) at disk speed
    info.compress_type = zipfile.ZIP_DEFLATED if path.suffix in (".json", ".jsonl") else zipfile.ZIP_STORED
    digest, written = hashlib.sha256(), 0
    with open(path, "rb") as source, zf.open(info, "w", force_zip64=size > 1024**3) as out:
        while chunk := source.read(CHUNK_BYTES):
            digest.update(chunk)
            out.write(chunk)
            written += len(chunk)
    return {"sha256": digest.hexdigest(), "size": written}
