"""Opening a project zip (``tl_core.export.project`` writes them) into a workspace, with all its checks.

``import_project`` trusts nothing in an archive: the zip guards of a dataset upload
(``tl_core.data.safety``: member names, ``..`` and absolute paths, symbolic links, size and count
caps, compression ratio), every file's checksum against the manifest, only files the manifest
lists, every image through the image guard, every checkpoint loaded with
``torch.load(weights_only=True)`` before it is accepted, and the session's limits
(``tl_core.limits``). It unpacks into a staging folder beside the workspace's folders and moves the
datasets and runs into place only once all of that passed, so a refused archive, a full disk or a
crash leaves nothing half-imported. Ids that are taken already get new ones (nothing is
overwritten), and an imported run trains, evaluates and predicts on the imported dataset.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import secrets
import shutil
import tempfile
import types
import typing
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tl_core import atomic
from tl_core import events as ev
from tl_core.data.catalog import DatasetCatalog
from tl_core.data.dataset import Dataset
from tl_core.data.safety import (
    Limits,
    Skip,
    check_archive_caps,
    check_member_name,
    checked_image,
    extension_reason,
    zip_member_is_symlink,
)
from tl_core.errors import DataError, LimitReached
from tl_core.export.project import (
    CHECKPOINTS,
    CHUNK_BYTES,
    FORMAT,
    FORMAT_VERSION,
    MANIFEST,
    RUN_FILES,
    ProgressFn,
    ProjectItem,
    ProjectSummary,
)
from tl_core.runs import ACTIVE_STATES, FINAL_STATES, Run, RunStore
from tl_core.settings import Settings, load_settings
from tl_core.workspace import Workspace, is_safe_id

MAX_MANIFEST_BYTES = 64 * 1024**2  # a manifest larger than this is refused before it is read


@dataclass
class _Plan:
    datasets: dict[str, dict[str, Any]]  # archive id -> manifest entry
    runs: dict[str, dict[str, Any]]
    files: dict[str, dict[str, Any]]  # name -> {"sha256", "size"}
    infos: dict[str, zipfile.ZipInfo]


def import_project(archive: Path | str, workspace: Workspace, *, progress: ProgressFn | None = None,
                   settings: Settings | None = None, name: str | None = None) -> ProjectSummary:
    """Add the datasets and runs of a project zip to ``workspace``; see the module docstring.
    Raises ``DataError`` for an archive refused (the message says why; nothing is added),
    ``LimitReached`` for a session limit, ``DiskFull`` for a full disk. ``name``: the archive's name
    as the user knows it (an upload's), for messages."""
    archive = Path(archive)
    name = name or archive.name
    settings = settings or load_settings()
    from tl_core.data.uploads import upload_limits
    from tl_core.limits import check_can_upload, is_session_workspace

    limits = upload_limits(settings)
    try:
        zf = zipfile.ZipFile(archive)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{name} is not a TL Studio project (not a zip file: {exc}). Choose a file made with "
                        "Download project, or `python -m tl_core project export`.") from exc
    with zf:
        plan = _plan(zf, limits, name)
        images = sum(1 for f in plan.files if f.startswith("datasets/") and extension_reason(f) is None)
        total = sum(entry["size"] for entry in plan.files.values())
        if is_session_workspace(workspace):
            _check_counts(workspace, len(plan.datasets), len(plan.runs), settings)
        check_can_upload(workspace, total, images, settings=settings)
        return _unpack(zf, plan, workspace, limits, progress, name)


def _refused(name: str, why: str) -> DataError:
    return DataError(f"{name} was refused: {why}. Nothing was imported. Open only projects made with TL Studio's "
                     "Download project (or `python -m tl_core project export`).")


def _plan(zf: zipfile.ZipFile, limits: Limits, name: str) -> _Plan:
    """The archive checked before a byte is unpacked: caps and ratio, member names and types, the
    manifest and that it lists exactly the archive's files."""
    infos = zf.infolist()
    check_archive_caps(infos, limits, name)
    members: dict[str, zipfile.ZipInfo] = {}
    for info in infos:
        try:
            rel = check_member_name(info.filename)
        except Skip as why:
            raise _refused(name, f"member {info.filename!r} has an {why}") from None
        if zip_member_is_symlink(info):
            raise _refused(name, f"member {info.filename!r} is a symbolic link")
        if info.flag_bits & 0x1:
            raise _refused(name, f"member {info.filename!r} is password-protected")
        if not info.is_dir():
            if rel in members:
                raise _refused(name, f"member {rel!r} is in it twice")
            members[rel] = info
    info = members.pop(MANIFEST, None)
    if info is None:
        raise _refused(name, f"it has no {MANIFEST} (it is not a TL Studio project)")
    if info.file_size > MAX_MANIFEST_BYTES:
        raise _refused(name, f"its {MANIFEST} is too large")
    try:
        manifest = json.loads(zf.read(info).decode("utf-8"))
    except (ValueError, zipfile.BadZipFile, OSError, EOFError) as exc:
        raise _refused(name, f"its {MANIFEST} is damaged ({exc})") from None
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT:
        raise _refused(name, f"its {MANIFEST} is not a TL Studio project's")
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise DataError(f"{name} was made by a newer TL Studio (project format {version}; this one reads "
                        f"{FORMAT_VERSION}). Update TL Studio to open it.")
    try:
        datasets = {str(d["id"]): d for d in manifest["datasets"]}
        runs = {str(r["id"]): r for r in manifest["runs"]}
        files = {str(k): {"sha256": str(v["sha256"]), "size": int(v["size"])} for k, v in manifest["files"].items()}
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise _refused(name, f"its {MANIFEST} is damaged ({type(exc).__name__}: {exc})") from None
    for item_id in [*datasets, *runs]:
        if not is_safe_id(item_id):
            raise _refused(name, f"it names a dataset or run {item_id!r}, which is not a valid id")
    for run in runs.values():
        if run.get("dataset") is not None and str(run["dataset"]) not in datasets:
            raise _refused(name, f"run {run['id']!r} names a dataset the project does not hold")
    if set(files) != set(members):
        extra, absent = sorted(set(members) - set(files)), sorted(set(files) - set(members))
        what = f"it holds {extra[0]!r}, which its list of files does not name" if extra else \
            f"{absent[0]!r} of its list of files is missing"
        raise _refused(name, what)
    for rel, info in members.items():
        kind, _, rest = rel.partition("/")
        item_id, _, inner = rest.partition("/")
        if not inner or (kind, item_id) not in {("datasets", d) for d in datasets} | {("runs", r) for r in runs}:
            raise _refused(name, f"member {rel!r} belongs to no dataset or run of the project")
        if kind == "runs" and inner not in RUN_FILES + CHECKPOINTS:
            raise _refused(name, f"member {rel!r} is not a file a run has")
        if info.file_size != files[rel]["size"]:
            raise _refused(name, f"{rel!r} does not have the size its list of files gives (damaged or altered)")
    for dataset_id in datasets:
        if f"datasets/{dataset_id}/dataset.json" not in files:
            raise _refused(name, f"dataset {dataset_id!r} has no dataset.json")
    for run_id in runs:
        if f"runs/{run_id}/config.json" not in files:
            raise _refused(name, f"run {run_id!r} has no config.json")
    return _Plan(datasets, runs, files, members)


def _check_counts(workspace: Workspace, n_datasets: int, n_runs: int, settings: Settings) -> None:
    """A session's dataset and run counts with the project's added (the disk: ``check_can_upload``)."""
    have = sum(1 for _ in workspace.datasets_dir.glob("*/dataset.json"))
    limit = settings.limit("max_datasets")
    if n_datasets and limit is not None and have + n_datasets > limit:
        raise LimitReached("max_datasets", (
            f"This project holds {n_datasets} dataset(s) and you have {have} (the limit is {limit:g}): delete "
            "datasets you no longer need on the Runs page, or ask the teacher to raise max_datasets."))
    have = len(RunStore(workspace).list())
    limit = settings.limit("max_runs")
    if n_runs and limit is not None and have + n_runs > limit:
        raise LimitReached("max_runs", (
            f"This project holds {n_runs} run(s) and you have {have} (the limit is {limit:g}): delete runs you "
            "no longer need on the Runs page, or ask the teacher to raise max_runs."))


def _unpack(zf: zipfile.ZipFile, plan: _Plan, workspace: Workspace, limits: Limits,
            progress: ProgressFn | None, name: str) -> ProjectSummary:
    datasets_dir, runs_dir = workspace.datasets_dir, workspace.runs_dir
    try:
        staging = Path(tempfile.mkdtemp(dir=workspace.root, prefix=".project-import.", suffix=".tmp"))
    except OSError as exc:
        if atomic.is_disk_full(exc):
            raise atomic.disk_full(exc) from exc
        raise
    placed: list[Path] = []
    try:
        for done, (rel, info) in enumerate(sorted(plan.infos.items()), start=1):
            _extract(zf, info, staging / rel, plan.files[rel]["sha256"], name, rel)
            if progress is not None:
                progress(done, len(plan.infos), f"Checked {done} of {len(plan.infos)} files")
        summary = ProjectSummary(files=len(plan.files), bytes=sum(f["size"] for f in plan.files.values()))
        new_dataset_ids = _check_datasets(staging, plan, limits, name, workspace, summary)
        new_run_ids = _check_runs(staging, plan, name, runs_dir, datasets_dir, new_dataset_ids, summary)
        # Everything passed: into place, one rename per folder (the staging folder is on the same disk).
        for old, new in new_dataset_ids.items():
            os.replace(staging / "datasets" / old, datasets_dir / new)
            placed.append(datasets_dir / new)
        for old, new in new_run_ids.items():
            os.replace(staging / "runs" / old, runs_dir / new)
            placed.append(runs_dir / new)
        return summary
    except BaseException as exc:
        for folder in reversed(placed):
            shutil.rmtree(folder, ignore_errors=True)
        if not isinstance(exc, atomic.DiskFull) and atomic.is_disk_full(exc):
            raise atomic.disk_full(exc) from exc
        raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _extract(zf: zipfile.ZipFile, info: zipfile.ZipInfo, target: Path, sha256: str, name: str, rel: str) -> None:
    """One member to ``target``, its checksum checked as it is written."""
    target.parent.mkdir(parents=True, exist_ok=True)
    digest, written = hashlib.sha256(), 0
    try:
        with zf.open(info) as source, open(target, "wb") as out:  # zipfile stops at the declared size, checks the CRC
            while chunk := source.read(CHUNK_BYTES):
                written += len(chunk)
                if written > info.file_size:
                    raise _refused(name, f"{rel!r} is larger than it says")
                digest.update(chunk)
                out.write(chunk)
    except NotImplementedError:
        raise _refused(name, f"{rel!r} is compressed with a method that is not supported") from None
    except (zipfile.BadZipFile, EOFError, RuntimeError) as exc:
        raise _refused(name, f"{rel!r} is damaged inside the archive ({exc})") from None
    if digest.hexdigest() != sha256:
        raise _refused(name, f"{rel!r} does not match its checksum in the project's list (damaged or altered)")


def _free_id(folder: Path, wanted: str) -> str:
    """``wanted`` when no folder of that name is in ``folder``, else ``wanted`` with a new random
    ending: an import never overwrites."""
    if not (folder / wanted).exists():
        return wanted
    stem = re.sub(r"-[0-9a-f]{6}$", "", wanted)[:50]
    while True:
        candidate = f"{stem}-{secrets.token_hex(3)}"
        if not (folder / candidate).exists():
            return candidate


def _check_datasets(staging: Path, plan: _Plan, limits: Limits, name: str, workspace: Workspace,
                    summary: ProjectSummary) -> dict[str, str]:
    """Each staged dataset loads, its records name files that are there with the checksums they
    give, and its images pass the image guard; names that are taken get " (imported)". Returns
    archive id -> new id."""
    datasets_dir = workspace.datasets_dir
    existing_names = {entry.name for entry in DatasetCatalog(workspace).list()}
    new_ids: dict[str, str] = {}
    for dataset_id in plan.datasets:
        root = staging / "datasets" / dataset_id
        try:
            ds = Dataset.load(root)
        except DataError as exc:
            raise _refused(name, f"dataset {dataset_id!r} cannot be read ({exc})") from None
        prefix = f"datasets/{dataset_id}/"
        # Undo brings a saved version back as it is: its records are checked as the current ones are.
        versions = {"dataset.json": ds}
        for member in plan.files:
            if member.startswith(f"{prefix}versions/") and member.endswith(".json"):
                rel = member[len(prefix):]
                try:
                    versions[rel] = Dataset.load_dict(root, atomic.read_json(root / rel))
                except (DataError, AttributeError) as exc:
                    raise _refused(name, f"dataset {ds.name!r}: its saved version {rel!r} cannot be read ({exc})") \
                        from None
        for document, version in versions.items():
            for record in version.records:
                if not _plain_record(record):  # the pages sort, count and plot these fields
                    raise _refused(name, f"dataset {ds.name!r} ({document}) has a record whose fields are of the "
                                         "wrong kind")
                try:
                    rel = check_member_name(record.path)
                except Skip as why:
                    raise _refused(name, f"dataset {ds.name!r} ({document}) names a file with an {why}") from None
                entry = plan.files.get(f"{prefix}{rel}")
                if entry is None or entry["sha256"] != record.sha256:
                    raise _refused(name, f"dataset {ds.name!r} ({document}): its image {rel!r} is missing or not "
                                         "the one it names")
        _check_history(root / "history.jsonl", ds.name, name)
        for member in plan.files:  # every image, those only an older version names too
            rel = member[len(prefix):]
            if member.startswith(prefix) and extension_reason(rel) is None:
                try:
                    checked_image(root / rel, limits)
                except Skip as why:
                    raise _refused(name, f"dataset {ds.name!r}: its image {rel!r} was refused ({why})") from None
        new_name = ds.name
        n = 1
        while new_name in existing_names:
            new_name = f"{ds.name} (imported{f' {n}' if n > 1 else ''})"
            n += 1
        if new_name != ds.name:
            summary.notes.append(f"A dataset called '{ds.name}' is here already: the imported one is '{new_name}'.")
            ds = dataclasses.replace(ds, name=new_name)
            ds.save()
        existing_names.add(new_name)
        new_ids[dataset_id] = _free_id(datasets_dir, dataset_id)
        summary.datasets.append(ProjectItem(new_ids[dataset_id], new_name))
    return new_ids


def _plain_record(record: Any) -> bool:
    """Whether an image record holds what the app writes: texts, sizes that are numbers, a known split."""
    texts = (record.path, record.label, record.sha256)
    return (all(isinstance(t, str) for t in texts) and record.split in (None, "train", "val", "test")
            and all(type(n) is int for n in (record.width, record.height))
            and (record.group is None or isinstance(record.group, str)))


def _check_history(path: Path, dataset_name: str, name: str) -> None:
    """Undo reads ``versions/<parent>.json`` of the history's lines: a parent that is not a number
    would name another file."""
    if not path.is_file():
        return
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            change = json.loads(line)
        except ValueError:
            continue  # a damaged line is skipped when the history is read
        if isinstance(change, dict) and any(key in change and type(change[key]) is not int
                                            for key in ("version", "parent")):
            raise _refused(name, f"dataset {dataset_name!r}: its history names a version that is not a number")


def _check_runs(staging: Path, plan: _Plan, name: str, runs_dir: Path, datasets_dir: Path,
                new_dataset_ids: dict[str, str], summary: ProjectSummary) -> dict[str, str]:
    """Each staged run's config loads and now names the imported dataset; its status belongs to no
    process of this server; every checkpoint loads with ``weights_only=True``. Returns archive id ->
    new id."""
    from tl_core.config import RunConfig
    from tl_core.errors import ConfigError

    new_ids: dict[str, str] = {}
    for run_id, entry in plan.runs.items():
        folder = staging / "runs" / run_id
        run = Run(folder)
        try:
            config = json.loads((folder / "config.json").read_text(encoding="utf-8"))
            dataset = entry.get("dataset")
            data = config.setdefault("data", {})
            if dataset is not None:
                data["dataset_dir"] = str(datasets_dir / new_dataset_ids[str(dataset)])
            elif isinstance(data, dict):  # paths of the old server: on this one they may name anyone's folder
                data.update(dataset_dir="", source="")
            loaded = RunConfig.from_dict(config)
            loaded.validate()
            if type(loaded.data.dataset_version) is not int:  # the pages and the trainer take it for a number
                raise ValueError("data.dataset_version is not a number")
        except (ValueError, TypeError, AttributeError, ConfigError) as exc:
            raise _refused(name, f"run {run_id!r} has a settings file that cannot be read ({exc})") from None
        atomic.write_json(folder / "config.json", config)
        try:
            status = run.status()
        except TypeError as exc:  # a key of the right name with a value of no use
            raise _refused(name, f"run {run_id!r} has a status file that cannot be read ({exc})") from None
        if status.state not in ("created", "unknown", *ACTIVE_STATES, *FINAL_STATES):  # the pages branch on it
            raise _refused(name, f"run {run_id!r} has a status file whose state is not one a run has")
        changes: dict[str, Any] = {"pid": None, "pid_created": None, "slot": None,
                                   "dataset_dir": config["data"].get("dataset_dir") or None}
        if status.state in ACTIVE_STATES:
            changes.update(state="failed", error="It was still training when its project was exported; "
                                                 "resume it or train it again.")
        atomic.write_json(folder / "status.json", dataclasses.replace(status, **changes).to_dict())
        classes = atomic.read_json(folder / "classes.json", default=[])
        if not (isinstance(classes, list) and all(isinstance(c, str) for c in classes)):  # the Predict page lists them
            raise _refused(name, f"run {run_id!r} has a classes.json that is not a list of class names")
        if (folder / "events.jsonl").is_file():
            _check_events(folder / "events.jsonl", run_id, name)
        for kind in ("best", "last"):
            if run.checkpoint_path(kind).is_file():
                _verify_checkpoint(run.checkpoint_path(kind), f"run {entry.get('name') or run_id!r}", kind, name)
        new_ids[run_id] = _free_id(runs_dir, run_id)
        summary.runs.append(ProjectItem(new_ids[run_id], run.display_name()))
    return new_ids


def _check_events(path: Path, run_id: str, name: str) -> None:
    """Every event of ``events.jsonl`` that its readers take (a known type; damaged lines are
    skipped) holds values of its fields' types: the pages draw curves from them, and a number that
    is text stopped the Train and Runs pages with a traceback."""
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        try:
            data = json.loads(line)
        except ValueError:
            continue
        if not isinstance(data, dict) or data.get("type") not in ev.EVENT_TYPES:
            continue
        kind = ev.EVENT_TYPES[data["type"]]
        for key, hint in typing.get_type_hints(kind).items():
            if key in data and not _fits(data[key], hint):
                raise _refused(name, f"run {run_id!r} has an event log whose {data['type']} gives {key} a value "
                                     "of the wrong kind")


def _fits(value: Any, hint: Any) -> bool:
    """Whether a JSON value is of the type ``hint`` (the event fields' plain types)."""
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if hint is str:
        return isinstance(value, str)
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_fits(v, item) for v in value)
    if origin is dict:
        return isinstance(value, dict)
    return True  # Any and the like


def _verify_checkpoint(path: Path, what: str, kind: str, name: str) -> None:
    """A checkpoint is accepted only when it loads with ``weights_only=True`` (tensors and plain
    containers: no code runs) and holds a model's weights."""
    import torch  # here: listing and exporting projects never needs it

    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
    except Exception as exc:  # noqa: BLE001 - whatever fails, the file is not a safe weights file
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _refused(name, f"the {kind} checkpoint of {what} is not a plain weights file that loads safely "
                             f"(weights_only): {first[:200]}") from None
    if not isinstance(checkpoint, dict) or not isinstance(checkpoint.get("model"), dict):
        raise _refused(name, f"the {kind} checkpoint of {what} holds no model weights")
