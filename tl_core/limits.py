"""The limits a teacher sets (``tl_core.settings``), checked before a step that would pass one.

Each check raises ``LimitReached`` naming the setting, with a message that says what to do. The
per-session limits (jobs, runs, datasets, a session's disk) apply to the app's session workspaces
(``<home>/sessions/<id>``); the CLI works in the default workspace, where only the upload caps
and the disk (free space, total for the server) are checked. Disk usage is measured by walking the
folders, remembered for ``DISK_CACHE_S`` seconds so that a page load of a class stays cheap.
"""

from __future__ import annotations

import os
import shutil
import threading
import time
import zipfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import LimitReached
from .runs import Run, RunStore
from .settings import Settings, load_settings
from .workspace import Workspace, default_home, sessions_dir

if TYPE_CHECKING:
    from .config import RunConfig
    from .data import Limits

MB = 1024**2
GB = 1024**3
DISK_CACHE_S = 5.0  # how long a measured folder size is reused

_sizes: dict[str, tuple[float, int]] = {}
_sizes_lock = threading.Lock()


# -- disk usage ----------------------------------------------------------------------------------
def folder_bytes(path: Path, *, max_age_s: float = DISK_CACHE_S) -> int:
    """Bytes of the files below ``path`` (0 when it does not exist), measured at most every
    ``max_age_s`` seconds."""
    key = str(Path(path).absolute())
    now = time.monotonic()
    with _sizes_lock:
        cached = _sizes.get(key)
    if cached is not None and now - cached[0] < max_age_s:
        return cached[1]
    size, _ = tree_usage(Path(key))
    with _sizes_lock:
        _sizes[key] = (now, size)
    return size


def forget_sizes() -> None:
    """Measure again on the next call (after a deletion that should show at once)."""
    with _sizes_lock:
        _sizes.clear()


def tree_usage(path: Path) -> tuple[int, float]:
    """Bytes of the files below ``path`` and the newest modification time among them (0, 0.0
    when it does not exist); links are not followed. Uncached: ``folder_bytes`` caches the bytes."""
    total, newest = 0, 0.0
    stack = [path]
    while stack:
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    try:
                        if entry.is_dir(follow_symlinks=False):
                            stack.append(Path(entry.path))
                        elif entry.is_file(follow_symlinks=False):
                            info = entry.stat(follow_symlinks=False)
                            total += info.st_size
                            newest = max(newest, info.st_mtime)
                    except OSError:  # removed while we looked
                        continue
        except OSError:
            continue
    return total, newest


def session_disk_bytes(workspace: Workspace) -> int:
    """Disk used by one workspace: datasets, runs, caches."""
    return folder_bytes(workspace.root)


def total_disk_bytes(home: Path | None = None) -> int:
    """Disk used by the whole server's folder (every session, the queue, downloads)."""
    return folder_bytes(home or default_home())


def free_disk_bytes(path: Path | None = None) -> int:
    """Free bytes on the disk holding ``path`` (default: the server's folder)."""
    path = Path(path or default_home())
    while not path.exists() and path != path.parent:
        path = path.parent
    return shutil.disk_usage(path).free


def is_session_workspace(workspace: Workspace, home: Path | None = None) -> bool:
    """True for an app session's workspace, where the per-session limits apply."""
    return workspace.root.absolute().parent == sessions_dir(home).absolute()


def session_count(home: Path | None = None) -> int:
    try:
        return sum(1 for entry in os.scandir(sessions_dir(home)) if entry.is_dir())
    except OSError:
        return 0


# -- checks ----------------------------------------------------------------------------------------
def check_can_start(workspace: Workspace, config: RunConfig | None = None, *, new_runs: int = 1,
                    count_active: bool = True, is_active: Callable[[Run], bool] | None = None,
                    settings: Settings | None = None, home: Path | None = None) -> None:
    """Before a job is queued: the session's active jobs, runs and disk, the server's disk, and free
    space for what the run will write (``estimate_run_bytes``).

    ``new_runs``: runs made for it (0 when one resumes; an experiment's member count when it is
    checked once for all its runs). ``count_active=False`` skips the active-jobs limit (a member of
    an experiment checked as a whole: an experiment is one click and counts as one job).
    ``is_active`` tells a queued or training run (``jobs.is_active``, which also notices a dead
    worker; default: the state the run's folder records)."""
    settings = settings or load_settings(home)
    if is_session_workspace(workspace, home):
        active_now = is_active or (lambda run: run.status().active)
        runs = RunStore(workspace).list()
        limit = settings.limit("max_active_jobs")
        if count_active and limit is not None:
            active = sum(1 for run in runs if active_now(run))
            if active >= limit:
                raise LimitReached("max_active_jobs", (
                    f"You have {_count(active, 'job')} queued or training (the limit is {_n(limit)}): wait for one to "
                    "finish or stop it on the Runs page."))
        limit = settings.limit("max_runs")
        if new_runs and limit is not None and len(runs) + new_runs > limit:
            more = f" and this makes {new_runs} more" if new_runs > 1 else ""
            raise LimitReached("max_runs", (
                f"You have {_count(len(runs), 'run')}{more} (the limit is {_n(limit)}): delete runs you no longer need "
                "on the Runs page, or ask the teacher to raise max_runs."))
        _check_session_disk(workspace, 0, settings)
    need = estimate_run_bytes(config) * max(new_runs, 1) if config is not None else 0
    _check_server_disk(need, settings, home, "this run" if new_runs <= 1 else f"these {new_runs} runs")


def check_can_add_dataset(workspace: Workspace, upload_bytes: int = 0, n_images: int = 0, *,
                          settings: Settings | None = None, home: Path | None = None) -> None:
    """Before a dataset is made from an upload of ``upload_bytes`` bytes and ``n_images`` images
    (0 and 0 for one made on the server, such as the sample): ``check_can_upload`` and the
    session's dataset count."""
    settings = settings or load_settings(home)
    if is_session_workspace(workspace, home):
        limit = settings.limit("max_datasets")
        count = sum(1 for _ in workspace.datasets_dir.glob("*/dataset.json"))
        if limit is not None and count >= limit:
            raise LimitReached("max_datasets", (
                f"You have {_count(count, 'dataset')} (the limit is {_n(limit)}): delete one you no longer need on "
                "the Runs page, or ask the teacher to raise max_datasets."))
    check_can_upload(workspace, upload_bytes, n_images, settings=settings, home=home)


def check_upload_size(upload_bytes: int, n_images: int, settings: Settings) -> None:
    """The per-upload caps alone (``max_upload_mb``, ``max_upload_images``): for what is looked at
    but not kept (Predict), and the first check of ``check_can_upload``."""
    limit = settings.limit("max_upload_mb")
    if limit is not None and upload_bytes > limit * MB:
        raise LimitReached("max_upload_mb", (
            f"This upload is {upload_bytes / MB:,.0f} MB (the limit is {_n(limit)} MB per upload): "
            "upload fewer or smaller images at a time, or ask the teacher to raise max_upload_mb."))
    limit = settings.limit("max_upload_images")
    if limit is not None and n_images > limit:
        raise LimitReached("max_upload_images", (
            f"This upload has {_count(n_images, 'image')} (the limit is {_n(limit)} per upload): upload them in "
            "smaller parts, or ask the teacher to raise max_upload_images."))


def check_can_upload(workspace: Workspace, upload_bytes: int, n_images: int, *,
                     settings: Settings | None = None, home: Path | None = None) -> None:
    """Before ``upload_bytes`` bytes and ``n_images`` images a user sent are kept: the upload caps,
    the session's disk and the server's (images collected class by class, a dataset's upload)."""
    settings = settings or load_settings(home)
    check_upload_size(upload_bytes, n_images, settings)
    if is_session_workspace(workspace, home):
        _check_session_disk(workspace, upload_bytes, settings)
    # the upload is kept once as sent and once unpacked while it is read
    _check_server_disk(2 * upload_bytes, settings, home, "this upload")


def check_new_session(*, settings: Settings | None = None, home: Path | None = None) -> None:
    """Before a new session workspace is made (a visitor without a link to one)."""
    settings = settings or load_settings(home)
    limit = settings.limit("max_sessions")
    count = session_count(home)
    if limit is not None and count >= limit:
        raise LimitReached("max_sessions", (
            f"This server already holds {count} workspaces, its limit (max_sessions is {_n(limit)}), so "
            "no new one can be opened. Ask the teacher to raise max_sessions or to remove old "
            "workspaces; a link to a workspace you already have still works."))


def _check_session_disk(workspace: Workspace, adding: int, settings: Settings) -> None:
    limit = settings.limit("max_session_disk_mb")
    if limit is None:
        return
    used = session_disk_bytes(workspace)
    if used + adding > limit * MB and _drop_own_cache(workspace):
        used = session_disk_bytes(workspace)
    if used + adding > limit * MB:
        raise LimitReached("max_session_disk_mb", (
            f"Your workspace uses {used / MB:,.0f} MB of disk{_plus(adding)} (the limit is {_n(limit)} MB): "
            "delete runs or datasets you no longer need on the Runs page, or ask the teacher to raise "
            "max_session_disk_mb."))


def _drop_own_cache(workspace: Workspace) -> bool:
    """Over its disk limit, a workspace gives up its own caches first (computed again when needed),
    unless one of its runs is queued or training and may read them. True when some were deleted."""
    cache = workspace.root / "cache"
    if not cache.is_dir() or any(run.status().active for run in RunStore(workspace).list()):
        return False
    shutil.rmtree(cache, ignore_errors=True)
    forget_sizes()
    return True


def _check_server_disk(need: int, settings: Settings, home: Path | None, what: str) -> None:
    limit = settings.limit("max_total_disk_gb")
    if limit is not None:
        used = total_disk_bytes(home)
        if used + need > limit * GB:
            raise LimitReached("max_total_disk_gb", (
                f"The server's disk for all workspaces is full ({used / GB:,.1f} GB used{_plus(need)}, "
                f"the limit is {_n(limit)} GB): delete runs or datasets you no longer need, or ask the "
                "teacher (max_total_disk_gb)."))
    keep = int(settings.min_free_disk_mb * MB)
    free = free_disk_bytes(home)
    if free - need < keep:
        raise LimitReached("min_free_disk_mb", (
            f"The server's disk is full: {free / MB:,.0f} MB free, {what} needs about {need / MB:,.0f} MB "
            f"and {settings.min_free_disk_mb:,} MB are kept free (min_free_disk_mb). Delete runs or "
            "datasets you no longer need, or ask the teacher."))


def _count(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def _n(value: float) -> str:
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,}"


def _plus(adding: int) -> str:
    return f", {adding / MB:,.0f} MB more with this" if adding else ""


# -- what a step needs -----------------------------------------------------------------------------
def estimate_run_bytes(config: RunConfig) -> int:
    """About what a run writes: its checkpoints (best and last: model size x2), the decoded images
    and, for a frozen backbone, the stored features. Rough on purpose: it guards the free space."""
    from .backbones import get_backbone
    from .errors import ConfigError
    from .features import feature_views

    try:
        spec = get_backbone(config.model.backbone)
    except ConfigError:
        return 0
    need = 2 * 4 * spec.num_params
    images = _dataset_images(config.data.dataset_dir)
    need += images * 3 * spec.preprocess.resize_size ** 2  # the uint8 decode cache (at most this size)
    if config.freeze.mode == "feature_extractor":
        need += images * spec.feature_dim * 4 * feature_views(config.data.augment, config.train.epochs)
    return need


def _dataset_images(dataset_dir: str) -> int:
    if not dataset_dir:
        return 0
    from .atomic import read_json

    try:
        data = read_json(Path(dataset_dir) / "dataset.json") or {}
    except (OSError, ValueError):
        return 0
    records = data.get("records") if isinstance(data, dict) else None
    return len(records) if isinstance(records, list) else 0


# -- uploads ------------------------------------------------------------------------------------------
def measure_upload(source: Any) -> tuple[int, int]:
    """(bytes, images) of what a user uploads: a zip's path, a folder, or a list of
    ``UploadedImage``. Images are counted by their names (cheap: nothing is decoded)."""
    from .data.safety import extension_reason, is_junk

    def is_image(name: str) -> bool:
        return not is_junk(name) and extension_reason(name) is None

    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            files = [p for p in path.rglob("*") if p.is_file()]
            return (sum(p.stat().st_size for p in files),
                    sum(1 for p in files if is_image(p.relative_to(path).as_posix())))
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [i.filename for i in archive.infolist() if not i.is_dir()]
            return path.stat().st_size, sum(1 for name in names if is_image(name))
        return (path.stat().st_size if path.exists() else 0), 0
    if isinstance(source, Sequence):
        return sum(len(getattr(item, "data", b"")) for item in source), len(source)
    return 0, 0


def check_dataset_source(workspace: Workspace, source: Any, *, settings: Settings | None = None,
                         home: Path | None = None) -> None:
    """``check_can_add_dataset`` for an upload as ``measure_upload`` takes it."""
    upload_bytes, n_images = measure_upload(source)
    check_can_add_dataset(workspace, upload_bytes, n_images, settings=settings, home=home)


def upload_limits(settings: Settings | None = None) -> Limits:
    """The ingest caps for a dataset upload, from the settings: each file at most ``max_upload_mb``
    (``safety.upload_limits``, the caps of one image), and a backstop behind ``check_dataset_source``
    for what only unpacking shows (images compress little, so twice the upload caps is generous)."""
    import dataclasses

    from .data import Limits
    from .data.safety import upload_limits as image_limits

    settings = settings or load_settings()
    default = Limits()
    max_bytes = settings.limit("max_upload_mb")
    max_images = settings.limit("max_upload_images")
    return dataclasses.replace(
        image_limits(settings),
        max_total_bytes=min(default.max_total_bytes, int(2 * max_bytes * MB)) if max_bytes else default.max_total_bytes,
        max_files=min(default.max_files, int(2 * max_images)) if max_images else default.max_files)
