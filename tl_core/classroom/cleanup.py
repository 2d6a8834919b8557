"""Keep the caches of every workspace on the server within ``settings.cache_budget_gb``.

The caches are each workspace's ``cache/`` folder: decoded images (``decoded-*.npy``) and stored
backbone features (``features/``). Deleting one is always safe: it is computed again when needed.
Over the budget, the least recently used go first (last access or change of the file; on a
``relatime`` mount the access time moves at most once a day, which is plenty for this), and never
one of a workspace with a queued or training job, which may be reading it. Temporary files that
a write left behind (``atomic`` writes ``.<name>.*.tmp``; a process killed mid-write leaves one)
are removed once they are ``STALE_TEMP_S`` old, in any workspace. A session workspace that holds
nothing of its user's (no dataset, run, experiment or collected image: only the choices of a visit
that made nothing) goes once idle for ``EMPTY_SESSION_IDLE_S``, so that such visits do not fill
``max_sessions``.

The app's server runs ``clean`` every ``settings.cache_cleanup_minutes`` in a daemon thread
(``start_schedule``, started once per process); ``python -m tl_core cleanup`` runs it by hand.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tl_core import limits
from tl_core.jobs import launch as jobs
from tl_core.runs import RunStore
from tl_core.settings import load_settings
from tl_core.workspace import Workspace, default_home, sessions_dir

log = logging.getLogger("tl_studio.cleanup")

STALE_TEMP_S = 6 * 3600.0  # no atomic write takes this long; a younger temp file may be one in progress
RECENT_S = 120.0  # a cache file changed this recently may still be written: left alone
EMPTY_SESSION_IDLE_S = 24 * 3600.0  # an empty session workspace untouched this long is removed
_DISPOSABLE_FILES = frozenset({"choices.json"})  # what a visit that made nothing leaves behind
GB = 1024**3


@dataclass(frozen=True)
class CacheEntry:
    path: Path
    size: int
    last_used: float  # the later of the file's access and change times
    workspace: Path


@dataclass
class CleanupReport:
    removed: list[CacheEntry] = field(default_factory=list)
    kept_in_use: int = 0  # entries over the budget left alone: a job of their workspace is active, or just written
    temp_removed: list[Path] = field(default_factory=list)
    sessions_removed: list[Path] = field(default_factory=list)  # empty, idle session workspaces
    cache_bytes: int = 0  # all caches, before
    budget_bytes: int | None = None

    @property
    def freed_bytes(self) -> int:
        return sum(entry.size for entry in self.removed)

    def summary(self) -> str:
        budget = "no budget" if self.budget_bytes is None else f"budget {self.budget_bytes / GB:.1f} GB"
        line = (f"Caches: {self.cache_bytes / GB:.2f} GB ({budget}); removed {len(self.removed)} "
                f"({self.freed_bytes / GB:.2f} GB), {len(self.temp_removed)} stale temporary files, "
                f"{len(self.sessions_removed)} empty idle workspaces")
        if self.kept_in_use:
            line += f"; {self.kept_in_use} kept in use (a job of their workspace is queued or training)"
        return line + "."


def workspaces(home: Path | None = None) -> list[Workspace]:
    """The server's default workspace (the CLI's) and every session's."""
    home = Path(home or default_home())
    found = [Workspace(home)]
    sessions = sessions_dir(home)
    if sessions.is_dir():
        found += [Workspace(path) for path in sorted(sessions.iterdir()) if path.is_dir()]
    return found


def cache_entries(workspace: Workspace) -> list[CacheEntry]:
    """The files of the workspace's cache folder (without making it)."""
    folder = workspace.root / "cache"
    entries = []
    for path in _files(folder):
        if path.name.endswith(".tmp"):
            continue  # a write in progress, or a stale one: see stale_temp_files
        try:
            stat = path.stat()
        except OSError:
            continue
        entries.append(CacheEntry(path, stat.st_size, max(stat.st_atime, stat.st_mtime), workspace.root))
    return entries


def busy(workspace: Workspace) -> bool:
    """True while a run of ``workspace`` is queued or training (its worker may read the cache)."""
    if not (workspace.root / "runs").is_dir():
        return False
    return any(jobs.is_active(run) for run in RunStore(workspace).list())


def stale_temp_files(home: Path | None = None, *, older_than_s: float = STALE_TEMP_S) -> list[Path]:
    """Leftovers of interrupted atomic writes below the server's folder."""
    cutoff = time.time() - older_than_s
    stale = []
    for path in _files(Path(home or default_home())):
        if path.name.startswith(".") and path.name.endswith(".tmp"):
            try:
                if path.stat().st_mtime < cutoff:
                    stale.append(path)
            except OSError:
                continue
    return stale


def empty_sessions(home: Path | None = None, *, idle_s: float = EMPTY_SESSION_IDLE_S) -> list[Path]:
    """Session workspaces with nothing of their user's in them, untouched for ``idle_s`` seconds."""
    sessions = sessions_dir(home)
    if not sessions.is_dir():
        return []
    cutoff = time.time() - idle_s
    found = []
    for folder in sorted(path for path in sessions.iterdir() if path.is_dir()):
        try:
            newest = folder.stat().st_mtime
            empty = True
            for root, dirs, names in os.walk(folder):
                if Path(root).name == "cache" and Path(root).parent == folder:
                    dirs.clear()  # caches alone do not make a workspace worth keeping
                    continue
                newest = max([newest, Path(root).stat().st_mtime] + [(Path(root) / n).stat().st_mtime for n in names])
                if any(not (Path(root) == folder and name in _DISPOSABLE_FILES) for name in names):
                    empty = False
                    break
        except OSError:
            continue
        if empty and newest < cutoff:
            found.append(folder)
    return found


def clean(home: Path | None = None, *, budget_gb: float | None = None, dry_run: bool = False) -> CleanupReport:
    """Bring all caches within the budget (``settings.cache_budget_gb`` unless given; 0: no budget),
    least recently used first, never a busy workspace's; remove stale temporary files and empty,
    idle session workspaces."""
    home = Path(home or default_home())
    if budget_gb is None:
        budget_gb = load_settings(home).cache_budget_gb
    report = CleanupReport(budget_bytes=int(budget_gb * GB) if budget_gb else None)
    entries = [entry for ws in workspaces(home) for entry in cache_entries(ws)]
    report.cache_bytes = total = sum(entry.size for entry in entries)
    if report.budget_bytes is not None and total > report.budget_bytes:
        busy_of: dict[Path, bool] = {}
        recent = time.time() - RECENT_S
        for entry in sorted(entries, key=lambda e: e.last_used):
            if total <= report.budget_bytes:
                break
            if entry.workspace not in busy_of:
                busy_of[entry.workspace] = busy(Workspace(entry.workspace))
            if busy_of[entry.workspace] or entry.last_used > recent:
                report.kept_in_use += 1
                continue
            if not dry_run:
                try:
                    entry.path.unlink()
                except FileNotFoundError:
                    pass
                except OSError as exc:
                    log.warning("could not remove %s: %s", entry.path, exc)
                    continue
            report.removed.append(entry)
            total -= entry.size
    for path in stale_temp_files(home):
        if not dry_run:
            path.unlink(missing_ok=True)
        report.temp_removed.append(path)
    for folder in empty_sessions(home):
        if not dry_run:
            shutil.rmtree(folder, ignore_errors=True)
        report.sessions_removed.append(folder)
    if report.removed or report.temp_removed or report.sessions_removed:
        limits.forget_sizes()
    return report


def _files(folder: Path) -> Iterator[Path]:
    for root, _, names in os.walk(folder):
        for name in names:
            yield Path(root) / name


# -- the schedule ------------------------------------------------------------------------------------
_schedule_lock = threading.Lock()
_schedule: threading.Thread | None = None


def start_schedule(home: Path | None = None) -> bool:
    """Start the cleanup thread of this process unless it runs already; True when started now.
    It cleans once at once, then every ``settings.cache_cleanup_minutes`` (read each time, so a
    changed setting applies; 0 turns it off until set again)."""
    global _schedule
    with _schedule_lock:
        if _schedule is not None and _schedule.is_alive():
            return False
        _schedule = threading.Thread(target=_loop, args=(home,), name="tl-studio-cleanup", daemon=True)
        _schedule.start()
        return True


def _loop(home: Path | None) -> None:
    while True:
        minutes = 0.0
        try:
            minutes = load_settings(home).cache_cleanup_minutes
            if minutes:
                report = clean(home)
                if report.removed or report.temp_removed or report.sessions_removed:
                    log.info("%s", report.summary())
        except Exception:  # noqa: BLE001 - a bad settings file or a vanished folder must not end the thread
            log.exception("cache cleanup failed")
        time.sleep(max(minutes, 1.0) * 60)
