"""The teacher's view of a classroom server: every session's work, the shared queue, shared
datasets, display names and the leaderboard.

Layout below the server-wide home (``Workspace.default().root``):

    <home>/sessions/<id>/            one browser link's workspace (its id is the link's key)
    <home>/sessions/<id>/profile.json    the student's display name (their own text)
    <home>/shared/datasets/<id>/     datasets the teacher shared: read-only for students
    <home>/shared/cache/             their decoded images and features, made once for the class
    <home>/shared/classroom.json     the teacher's switches (leaderboard visible to students)

The shared area is itself a ``Workspace`` (``shared_workspace``), so a shared dataset is listed,
loaded and cached by the same code as a session's own. Nothing here ever returns a session id to
a student: the leaderboard names people by their display name only.
"""

from __future__ import annotations

import hmac
import os
import re
import secrets
import shutil
import time
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from tl_core import atomic
from tl_core.data.catalog import DatasetCatalog, DatasetEntry
from tl_core.errors import ConfigError, DataError, DiskFull, JobError, RunNotFound
from tl_core.jobs import launch as jobs
from tl_core.limits import tree_usage
from tl_core.runs import Run, RunStatus, RunStore, strategy_label
from tl_core.settings import Settings, load_settings
from tl_core.workspace import (  # noqa: F401 - is_shared_dataset, cache_dir_for: public here too
    Workspace,
    cache_dir_for,
    is_safe_id,
    is_shared_dataset,
    sessions_dir,
)

PROFILE_FILE = "profile.json"
CLASSROOM_FILE = "classroom.json"
MAX_DISPLAY_NAME = 40
SHARED_PREFIX = "shared-"  # a shared dataset's id starts so; a session's own ids are name slugs
NO_NAME = "(no name)"  # how the teacher's and the leaderboard's lists show a student without one


def _home(home: Path | None) -> Path:
    return Path(home) if home is not None else Workspace.default().root


# -- the teacher password ---------------------------------------------------------------------
def teacher_enabled(settings: Settings | None = None) -> bool:
    """True when the server has a teacher password (else there is no teacher page at all)."""
    return bool((settings or load_settings()).teacher_password)


def check_teacher_password(given: str, settings: Settings | None = None) -> bool:
    """Whether ``given`` is the teacher password, compared in constant time. Always False when
    no password is set (an empty password never opens anything)."""
    expected = (settings or load_settings()).teacher_password
    if not expected:
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))


# -- display names ----------------------------------------------------------------------------
def clean_display_name(name: str) -> str:
    """A name as typed, with control characters dropped and spaces collapsed. ConfigError when it
    is too long. It stays the user's text: callers show it with st.text or in a table, never Markdown."""
    text = "".join(ch for ch in str(name) if unicodedata.category(ch)[0] != "C" or ch == " ")
    text = re.sub(r"\s+", " ", text).strip()
    if len(text) > MAX_DISPLAY_NAME:
        raise ConfigError(f"A display name can have at most {MAX_DISPLAY_NAME} characters; "
                          f"this one has {len(text)}. Use a shorter one.")
    return text


def display_name(workspace: Workspace) -> str:
    """The name the session's user gave themselves, or "" when none."""
    data = atomic.read_json(workspace.root / PROFILE_FILE, default={})
    value = data.get("display_name", "") if isinstance(data, dict) else ""
    return value if isinstance(value, str) else ""


def set_display_name(workspace: Workspace, name: str) -> str:
    """Save the session's display name (whole or not at all); returns it as saved ("" clears it)."""
    cleaned = clean_display_name(name)
    atomic.write_json(workspace.root / PROFILE_FILE, {"display_name": cleaned})
    return cleaned


# -- sessions ---------------------------------------------------------------------------------
@dataclass(frozen=True)
class RunRow:
    run_id: str
    name: str  # the run's display name (user text)
    state: str
    best_val_acc: float | None
    backbone: str
    strategy: str
    epoch: int | None
    dataset_dir: Path | None  # the ingested dataset it trained on


@dataclass(frozen=True)
class SessionInfo:
    id: str
    display_name: str  # user text; "" when none
    last_active: float  # newest modification time of anything in the workspace
    disk_bytes: int  # the workspace's size on disk, caches included
    datasets: list[DatasetEntry] = field(default_factory=list)
    runs: list[RunRow] = field(default_factory=list)

    @property
    def active_runs(self) -> int:
        return sum(run.state in ("queued", "running") for run in self.runs)


def session_workspace(session_id: str, home: Path | None = None) -> Workspace:
    """The workspace of an existing session. ConfigError for a malformed or unknown id."""
    if not is_safe_id(session_id) or not (sessions_dir(home) / session_id).is_dir():
        raise ConfigError(f"There is no session '{session_id}' on this server; reload the Teacher page.")
    return Workspace(_home(home)).for_session(session_id)


def run_row(run: Run) -> RunRow:
    status = jobs.job_state(run)  # marks a run whose worker died as failed
    try:
        config = run.config
        backbone, strategy = config.model.backbone, strategy_label(config)
    except (OSError, ValueError):
        backbone, strategy = "?", "?"
    try:
        dataset = run.dataset_dir()
    except (OSError, ValueError):
        dataset = None
    return RunRow(run.id, run.display_name(), status.state, status.best_val_acc, backbone, strategy,
                  status.epoch, dataset)


def session_info(session_id: str, home: Path | None = None) -> SessionInfo:
    workspace = session_workspace(session_id, home)
    size, newest = tree_usage(workspace.root)  # the bytes the disk limits count, so the two agree
    runs = [run_row(run) for run in RunStore(workspace).list()]
    return SessionInfo(session_id, display_name(workspace), newest, size,
                       DatasetCatalog(workspace).list(), runs)


def list_sessions(home: Path | None = None) -> list[SessionInfo]:
    """Every session workspace on the server, most recently active first."""
    folder = sessions_dir(home)
    if not folder.is_dir():
        return []
    found = []
    for path in folder.iterdir():
        if path.is_dir() and is_safe_id(path.name):
            try:
                found.append(session_info(path.name, home))
            except (ConfigError, OSError):
                continue  # deleted while we listed
    return sorted(found, key=lambda s: s.last_active, reverse=True)


def find_run(session_id: str, run_id: str, home: Path | None = None) -> Run:
    return RunStore(session_workspace(session_id, home)).get(run_id)


def delete_session_runs(session_id: str, home: Path | None = None) -> int:
    """Delete every run of a session, stopping its queued or training jobs first; returns how many."""
    store = RunStore(session_workspace(session_id, home))
    runs = store.list()
    for run in runs:
        jobs.delete_run(store, run)
    return len(runs)


def delete_session(session_id: str, home: Path | None = None) -> None:
    """Delete a whole session: its jobs are stopped and its runs deleted first, then its folder
    (datasets, caches, display name). Its link then opens an empty workspace."""
    workspace = session_workspace(session_id, home)
    delete_session_runs(session_id, home)
    shutil.rmtree(workspace.root)


# -- the queue --------------------------------------------------------------------------------
@dataclass(frozen=True)
class QueueEntry:
    run_id: str
    session_id: str | None  # None: a run outside the sessions folder (the CLI's)
    display_name: str  # the session's display name (user text)
    run_name: str  # the run's display name (user text)
    state: str  # "running" or "waiting"
    position: int | None  # 1 = next to start; None while running


def _session_of(run_dir: Path, home: Path) -> str | None:
    try:
        relative = run_dir.resolve().relative_to(sessions_dir(home).resolve())
    except ValueError:
        return None
    return relative.parts[0] if relative.parts else None


def _entry(run_dir: Path, home: Path, state: str, position: int | None) -> QueueEntry:
    session = _session_of(run_dir, home)
    person = display_name(Workspace(sessions_dir(home) / session)) if session else ""
    run_name = Run(run_dir).display_name() if (run_dir / "config.json").exists() else run_dir.name
    return QueueEntry(run_dir.name, session, person, run_name, state, position)


def queue(home: Path | None = None) -> list[QueueEntry]:
    """The server's jobs: those training now, then those waiting, next first."""
    root = _home(home)
    entries = []
    for job in jobs.running_jobs(root):
        info = atomic.read_json(jobs.jobs_root(root) / f"slot-{job['slot']}.json") or {}
        if info.get("run_dir"):
            entries.append(_entry(Path(info["run_dir"]), root, "running", None))
    for position, ticket in enumerate(jobs.waiting_tickets(jobs.jobs_root(root)), start=1):
        entries.append(_entry(Path(ticket.run_dir), root, "waiting", position))
    return entries


def move_to_front(run_id: str, home: Path | None = None) -> bool:
    """Put a waiting job first in the queue (its ticket is renamed so that it sorts first: the queue
    is FIFO by ticket name). False when the run is not waiting (it started, or was stopped)."""
    queue_dir = jobs.jobs_root(_home(home)) / "queue"
    waiting = jobs.waiting_tickets(queue_dir.parent)
    mine = [t for t in waiting if t.run_id == run_id and t.pid is not None]  # pid: fully launched
    if not mine:
        return False
    ticket = mine[0]
    if waiting[0].path == ticket.path:
        return True
    first = min(int(t.path.name.split("-", 1)[0]) for t in waiting)
    target = queue_dir / f"{max(first - 1, 0):020d}-{run_id}.json"
    try:
        os.rename(ticket.path, target)  # one rename: the worker finds its ticket by its run folder
    except FileNotFoundError:
        return False  # it left the queue just now
    return True


def stop_job(session_id: str, run_id: str, home: Path | None = None, *, wait_s: float = 5.0) -> RunStatus:
    """Stop a student's queued or training job (the best checkpoint so far is kept)."""
    run = find_run(session_id, run_id, home)
    if not jobs.job_state(run).active:
        raise JobError(f"Run '{run.display_name()}' is not queued or training any more.")
    return jobs.stop(run, wait_s=wait_s)


# -- shared datasets --------------------------------------------------------------------------
def shared_workspace(home: Path | None = None) -> Workspace:
    """The class's shared area: its ``datasets_dir`` holds the shared datasets, its ``cache_dir``
    their decoded images and features."""
    return Workspace(_home(home) / "shared")


def shared_catalog(home: Path | None = None) -> DatasetCatalog:
    return DatasetCatalog(shared_workspace(home))


def shared_dataset_dir(dataset_id: str, home: Path | None = None) -> Path | None:
    """Folder of a shared dataset, or None when there is none by that id."""
    if not dataset_id.startswith(SHARED_PREFIX) or not is_safe_id(dataset_id):
        return None
    path = shared_workspace(home).datasets_dir / dataset_id
    return path if (path / "dataset.json").exists() else None


def new_shared_dir(name: str, home: Path | None = None) -> Path:
    """A fresh folder for a shared dataset the teacher uploads (ingest into it with
    ``data.create_dataset``)."""
    slug = re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-")[:40] or "dataset"
    path = shared_workspace(home).datasets_dir / f"{SHARED_PREFIX}{slug}-{secrets.token_hex(3)}"
    path.mkdir(parents=True)
    return path


def share_dataset(session_id: str, dataset_id: str, home: Path | None = None) -> str:
    """Copy one of a session's datasets into the shared area; returns the shared id. Whole or
    nothing: on failure (a full disk: DiskFull) the half copy is removed."""
    source = DatasetCatalog(session_workspace(session_id, home)).path(dataset_id)
    name = DatasetCatalog(session_workspace(session_id, home)).load(dataset_id).name
    target = new_shared_dir(name, home)
    target.rmdir()
    # Copied outside datasets/ first, so the catalog never lists a half copy.
    partial = shared_workspace(home).root / "staging" / target.name
    partial.parent.mkdir(parents=True, exist_ok=True)
    try:
        shutil.copytree(source, partial, ignore=shutil.ignore_patterns(".*.tmp"))
        os.rename(partial, target)
    except BaseException as exc:
        shutil.rmtree(partial, ignore_errors=True)
        if atomic.is_disk_full(exc):
            raise DiskFull("Could not share the dataset: the disk is full. Free some space (delete old "
                           "runs or sessions) and try again.") from exc
        raise
    return target.name


def runs_on_dataset(dataset_dir: Path, home: Path | None = None) -> list[tuple[SessionInfo, RunRow]]:
    """Every session's runs that trained (or train) on ``dataset_dir``."""
    folder = Path(dataset_dir).resolve()
    found = []
    for session in list_sessions(home):
        for run in session.runs:
            if run.dataset_dir is not None and run.dataset_dir.resolve() == folder:
                found.append((session, run))
    return found


def unshare_dataset(dataset_id: str, home: Path | None = None) -> None:
    """Remove a shared dataset and its place in the shared cache. Refused (DataError) while a
    student's run queued or training on it is alive."""
    folder = shared_dataset_dir(dataset_id, home)
    if folder is None:
        raise DataError(f"There is no shared dataset '{dataset_id}'; reload the Teacher page.")
    busy = [run for _, run in runs_on_dataset(folder, home) if run.state in ("queued", "running")]
    if busy:
        raise DataError(f"{len(busy)} run(s) still train on this dataset; stop them in the queue first.")
    shutil.rmtree(folder)


# -- the leaderboard --------------------------------------------------------------------------
def classroom_settings(home: Path | None = None) -> dict:
    data = atomic.read_json(shared_workspace(home).root / CLASSROOM_FILE, default={})
    return data if isinstance(data, dict) else {}


def leaderboard_visible(home: Path | None = None) -> bool:
    return bool(classroom_settings(home).get("leaderboard_visible", False))


def set_leaderboard_visible(visible: bool, home: Path | None = None) -> None:
    settings = classroom_settings(home)
    settings["leaderboard_visible"] = bool(visible)
    settings["updated"] = time.time()
    atomic.write_json(shared_workspace(home).root / CLASSROOM_FILE, settings)


@dataclass(frozen=True)
class LeaderboardRow:
    rank: int
    student: str  # display name (user text) or NO_NAME; never the session id
    run: str  # the run's display name (user text)
    best_val_acc: float
    strategy: str
    backbone: str
    state: str


def leaderboard(dataset_id: str, home: Path | None = None) -> list[LeaderboardRow]:
    """The class's runs on a shared dataset, best validation accuracy first (runs without one yet
    are left out). Rows carry display names, never session ids."""
    folder = shared_dataset_dir(dataset_id, home)
    if folder is None:
        raise RunNotFound(f"There is no shared dataset '{dataset_id}'; ask the teacher to share it again.")
    scored = [(s, r) for s, r in runs_on_dataset(folder, home) if r.best_val_acc is not None]
    scored.sort(key=lambda pair: pair[1].best_val_acc, reverse=True)
    return [LeaderboardRow(rank, session.display_name or NO_NAME, run.name, float(run.best_val_acc),
                           run.strategy, run.backbone, run.state)
            for rank, (session, run) in enumerate(scored, start=1)]
