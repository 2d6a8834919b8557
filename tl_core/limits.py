"""The limits a teacher sets (``tl_core.settings``), checked before a step that would pass one.

Whether a run may start (it needs the model's size) is ``tl_core.jobs.limits``; the caps of an
upload and its measure, ``tl_core.data.uploads``.

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
from pathlib import Path

from tl_core.errors import LimitReached
from tl_core.runs import RunStore
from tl_core.settings import Settings, load_settings
from tl_core.workspace import Workspace, default_home, sessions_dir

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


def sessionplural(home: Path | None = None) -> int:
    try:
        return sum(1 for entry in os.scandir(sessions_dir(home)) if entry.is_dir())
    except OSError:
        return 0


# -- checks ----------------------------------------------------------------------------------------
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
                f"You have {plural(count, 'dataset')} (the limit is {number(limit)}): delete one you no longer need on "
                "the Runs page, or ask the teacher to raise max_datasets."))
    check_can_upload(workspace, upload_bytes, n_images, settings=settings, home=home)


def check_upload_size(upload_bytes: int, n_images: int, settings: Settings) -> None:
    """The per-upload caps alone (``max_upload_mb``, ``max_upload_images``): for what is looked at
    but not kept (Predict), and the first check of ``check_can_upload``."""
    limit = settings.limit("max_upload_mb")
    if limit is not None and upload_bytes > limit * MB:
        raise LimitReached("max_upload_mb", (
            f"This upload is {upload_bytes / MB:,.0f} MB (the limit is {number(limit)} MB per upload): "
            "upload fewer or smaller images at a time, or ask the teacher to raise max_upload_mb."))
    limit = settings.limit("max_upload_images")
    if limit is not None and n_images > limit:
        raise LimitReached("max_upload_images", (
            f"This upload has {plural(n_images, 'image')} (the limit is {number(limit)} per upload): upload them in "
            "smaller parts, or ask the teacher to raise max_upload_images."))


def check_can_upload(workspace: Workspace, upload_bytes: int, n_images: int, *,
                     settings: Settings | None = None, home: Path | None = None) -> None:
    """Before ``upload_bytes`` bytes and ``n_images`` images a user sent are kept: the upload caps,
    the session's disk and the server's (images collected class by class, a dataset's upload)."""
    settings = settings or load_settings(home)
    check_upload_size(upload_bytes, n_images, settings)
    if is_session_workspace(workspace, home):
        check_session_disk(workspace, upload_bytes, settings)
    # the upload is kept once as sent and once unpacked while it is read
    check_server_disk(2 * upload_bytes, settings, home, "this upload")


def check_new_session(*, settings: Settings | None = None, home: Path | None = None) -> None:
    """Before a new session workspace is made (a visitor without a link to one)."""
    settings = settings or load_settings(home)
    limit = settings.limit("max_sessions")
    count = sessionplural(home)
    if limit is not None and count >= limit:
        raise LimitReached("max_sessions", (
            f"This server already holds {count} workspaces, its limit (max_sessions is {number(limit)}), so "
            "no new one can be opened. Ask the teacher to raise max_sessions or to remove old "
            "workspaces; a link to a workspace you already have still works."))


def check_session_disk(workspace: Workspace, adding: int, settings: Settings) -> None:
    """The session's disk limit (``max_session_disk_mb``) with ``adding`` bytes more; its own caches
    are dropped first when that makes room."""
    limit = settings.limit("max_session_disk_mb")
    if limit is None:
        return
    used = session_disk_bytes(workspace)
    if used + adding > limit * MB and _drop_own_cache(workspace):
        used = session_disk_bytes(workspace)
    if used + adding > limit * MB:
        raise LimitReached("max_session_disk_mb", (
            f"Your workspace uses {used / MB:,.0f} MB of disk{_plus(adding)} (the limit is {number(limit)} MB): "
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


def check_server_disk(need: int, settings: Settings, home: Path | None, what: str) -> None:
    """The server's disk for all workspaces (``max_total_disk_gb``) and its free space
    (``min_free_disk_mb``) after ``need`` more bytes for ``what``."""
    limit = settings.limit("max_total_disk_gb")
    if limit is not None:
        used = total_disk_bytes(home)
        if used + need > limit * GB:
            raise LimitReached("max_total_disk_gb", (
                f"The server's disk for all workspaces is full ({used / GB:,.1f} GB used{_plus(need)}, "
                f"the limit is {number(limit)} GB): delete runs or datasets you no longer need, or ask the "
                "teacher (max_total_disk_gb)."))
    keep = int(settings.min_free_disk_mb * MB)
    free = free_disk_bytes(home)
    if free - need < keep:
        raise LimitReached("min_free_disk_mb", (
            f"The server's disk is full: {free / MB:,.0f} MB free, {what} needs about {need / MB:,.0f} MB "
            f"and {settings.min_free_disk_mb:,} MB are kept free (min_free_disk_mb). Delete runs or "
            "datasets you no longer need, or ask the teacher."))


def plural(n: int, word: str) -> str:
    """'1 run', '3 runs'."""
    return f"{n:,} {word}{'' if n == 1 else 's'}"


def number(value: float) -> str:
    """A limit as a person reads it: 1,000 or 2.5."""
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,}"


def _plus(adding: int) -> str:
    return f", {adding / MB:,.0f} MB more with this" if adding else ""
