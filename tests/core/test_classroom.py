"""The classroom engine: sessions listing, queue order and move-to-front, deleting sessions,
shared datasets (read-only, one cache for the class), the leaderboard and display names."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tests.tiny_backbone import NAME as TINY
from tl_core.classroom import teacher as classroom
from tl_core.config import DataConfig, FreezePlan, ModelConfig, RunConfig, TrainConfig
from tl_core.data.catalog import DatasetCatalog
from tl_core.errors import ConfigError, DataError, DiskFull
from tl_core.jobs import launch as jobs
from tl_core.jobs import queue as job_queue
from tl_core.runs import RunStore
from tl_core.settings import Settings


@pytest.fixture
def home(workspace) -> Path:
    return workspace.root


def _dataset(session, tmp_path: Path, name: str = "tiny") -> str:
    from tests.conftest import write_image_folder
    from tl_core.data import ingest

    folder = write_image_folder(tmp_path / f"src-{name}-{session.root.name}", {"red": 6, "blue": 6})
    dest = DatasetCatalog(session).new_dir(name)
    ingest(folder, dest, name=name)
    return dest.name


def _config(dataset_dir: Path) -> RunConfig:
    return RunConfig(data=DataConfig(source=str(dataset_dir), dataset_dir=str(dataset_dir), val_fraction=0.25,
                                     augment="none"),
                     model=ModelConfig(backbone=TINY), freeze=FreezePlan(mode="feature_extractor"),
                     train=TrainConfig(epochs=1, batch_size=8, num_workers=0))


def _finished_run(session, dataset_dir: Path, acc: float):
    run = RunStore(session).create(_config(dataset_dir))
    run.record_dataset(dataset_dir)
    run.mark_finished(best_epoch=1, best_val_acc=acc)
    return run


# -- password, display names ---------------------------------------------------------------------
def test_teacher_password_is_checked_and_an_empty_one_opens_nothing():
    assert classroom.check_teacher_password("s3cret", Settings(teacher_password="s3cret"))
    assert not classroom.check_teacher_password("s3cre", Settings(teacher_password="s3cret"))
    assert not classroom.check_teacher_password("", Settings(teacher_password=""))
    assert not classroom.teacher_enabled(Settings())
    assert classroom.teacher_enabled(Settings(teacher_password="x"))


def test_display_name_is_kept_as_the_users_text(home):
    session = classroom.Workspace(home).for_session("student1")
    assert classroom.display_name(session) == ""
    saved = classroom.set_display_name(session, "  **Ada**  <b>L</b>\n\x07 ")
    assert saved == "**Ada** <b>L</b>"  # control characters and extra spaces go; markup stays as typed
    assert classroom.display_name(session) == "**Ada** <b>L</b>"
    with pytest.raises(ConfigError, match="at most"):
        classroom.set_display_name(session, "x" * (classroom.MAX_DISPLAY_NAME + 1))
    assert classroom.display_name(session) == "**Ada** <b>L</b>"  # the previous name is kept


# -- sessions ------------------------------------------------------------------------------------
def test_list_sessions_shows_each_sessions_datasets_runs_and_disk(home, tmp_path):
    ada = classroom.Workspace(home).for_session("ada")
    bob = classroom.Workspace(home).for_session("bob")
    ada_data = _dataset(ada, tmp_path)
    _dataset(bob, tmp_path, "birds")
    classroom.set_display_name(ada, "Ada")
    run = _finished_run(ada, DatasetCatalog(ada).path(ada_data), 0.75)
    time.sleep(0.02)
    (bob.root / "touch").write_text("newer")  # bob was active last

    sessions = classroom.list_sessions(home)
    assert [s.id for s in sessions] == ["bob", "ada"]
    by_id = {s.id: s for s in sessions}
    assert by_id["ada"].display_name == "Ada" and by_id["bob"].display_name == ""
    assert [d.id for d in by_id["ada"].datasets] == [ada_data]
    assert [d.name for d in by_id["bob"].datasets] == ["birds"]
    (row,) = by_id["ada"].runs
    assert (row.run_id, row.state, row.best_val_acc, row.backbone) == (run.id, "finished", 0.75, TINY)
    assert row.strategy == "frozen"
    assert by_id["bob"].runs == []
    assert by_id["ada"].disk_bytes > 0


def test_delete_session_runs_then_the_whole_session(home, tmp_path):
    ada = classroom.Workspace(home).for_session("ada")
    bob = classroom.Workspace(home).for_session("bob")
    folder = DatasetCatalog(ada).path(_dataset(ada, tmp_path))
    _finished_run(ada, folder, 0.5)
    _finished_run(ada, folder, 0.6)
    bob_run = _finished_run(bob, DatasetCatalog(bob).path(_dataset(bob, tmp_path)), 0.7)

    assert classroom.delete_session_runs("ada", home) == 2
    assert RunStore(ada).list() == [] and DatasetCatalog(ada).list()  # the datasets stay
    classroom.delete_session("ada", home)
    assert not (home / "sessions" / "ada").exists()
    assert [s.id for s in classroom.list_sessions(home)] == ["bob"]
    assert RunStore(bob).get(bob_run.id).state == "finished"  # another session is untouched
    with pytest.raises(ConfigError, match="no session"):
        classroom.delete_session("../bob", home)


# -- the queue -----------------------------------------------------------------------------------
@pytest.fixture
def sleepers():
    procs = []

    def start():
        proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
        procs.append(proc)
        return proc.pid

    yield start
    for proc in procs:
        proc.kill()
        proc.wait()


def test_move_to_front_puts_a_waiting_job_first(home, sleepers):
    root = jobs.jobs_root(home)
    for n, name in enumerate(("r1", "r2", "r3"), start=1):
        job_queue.write_ticket(root / "queue" / f"{1000 + n:020d}-{name}.json",
                           home / "sessions" / "ada" / "runs" / name, sleepers(), time.time())
    assert [t.run_id for t in jobs.waiting_tickets(root)] == ["r1", "r2", "r3"]

    assert classroom.move_to_front("r3", home)
    assert [t.run_id for t in jobs.waiting_tickets(root)] == ["r3", "r1", "r2"]
    assert classroom.move_to_front("r2", home)
    assert [t.run_id for t in jobs.waiting_tickets(root)] == ["r2", "r3", "r1"]
    assert not classroom.move_to_front("nope", home)
    view = classroom.queue(home)
    assert [(e.run_id, e.state, e.position, e.session_id) for e in view] == [
        ("r2", "waiting", 1, "ada"), ("r3", "waiting", 2, "ada"), ("r1", "waiting", 3, "ada")]


def test_a_worker_finds_its_ticket_after_move_to_front(home, workspace, tmp_path, sleepers):
    """The worker was given its ticket's first name; once renamed it still gets the slot first."""
    session = workspace.for_session("ada")
    run = RunStore(session).create(_config(DatasetCatalog(session).path(_dataset(session, tmp_path))))
    root = jobs.jobs_root(home)
    job_queue.write_ticket(root / "queue" / f"{1:020d}-other.json", tmp_path / "other", sleepers(), time.time())
    mine = root / "queue" / f"{2:020d}-{run.id}.json"
    job_queue.write_ticket(mine, run.dir, os.getpid(), time.time())

    assert classroom.move_to_front(run.id, home)
    assert not mine.exists()
    got = []
    waiter = threading.Thread(target=lambda: got.append(job_queue.wait_for_slot(run, mine, slots=1, poll_s=0.01)),
                              daemon=True)
    waiter.start()
    waiter.join(timeout=20)
    if not got:  # still waiting behind "other": end the wait before failing
        run.request_stop()
        waiter.join(timeout=5)
        pytest.fail("the worker did not recognise its renamed ticket")
    (slot,) = got
    try:
        assert slot is not None
        assert [t.run_id for t in jobs.waiting_tickets(root)] == ["other"]  # the renamed ticket left
    finally:
        slot.release()


def test_teacher_stops_a_students_queued_job_and_deletes_the_session(home, workspace, tmp_path, monkeypatch):
    """A real worker waits behind a busy device; the teacher sees it in the queue, stops it, and
    deleting the session stops and removes everything."""
    import fcntl

    monkeypatch.setenv(jobs.ENV_MAX_JOBS, "1")
    root = jobs.jobs_root(home)
    blocker = open(root / "slot-0.lock", "ab")
    fcntl.flock(blocker, fcntl.LOCK_EX)
    try:
        ada = workspace.for_session("ada")
        folder = DatasetCatalog(ada).path(_dataset(ada, tmp_path))
        first = jobs.start_job(ada, _config(folder))
        second = jobs.start_job(ada, _config(folder))
        assert [e.run_id for e in classroom.queue(home)] == [first, second]

        status = classroom.stop_job("ada", first, home, wait_s=60)
        assert status.state == "cancelled"
        assert [e.run_id for e in classroom.queue(home)] == [second]

        classroom.delete_session("ada", home)
        assert not (home / "sessions" / "ada").exists()
        assert classroom.queue(home) == []
    finally:
        fcntl.flock(blocker, fcntl.LOCK_UN)
        blocker.close()


# -- shared datasets -----------------------------------------------------------------------------
def test_shared_dataset_is_a_copy_outside_every_session(home, tmp_path):
    ada = classroom.Workspace(home).for_session("ada")
    own = _dataset(ada, tmp_path, "flowers")
    shared_id = classroom.share_dataset("ada", own, home)

    assert shared_id.startswith(classroom.SHARED_PREFIX)
    folder = classroom.shared_dataset_dir(shared_id, home)
    assert folder == home / "shared" / "datasets" / shared_id
    assert [e.name for e in classroom.shared_catalog(home).list()] == ["flowers"]
    assert classroom.is_shared_dataset(folder)
    # Not a dataset of any session: a student's catalog (delete, rename) cannot reach it.
    with pytest.raises(DataError):
        DatasetCatalog(classroom.Workspace(home).for_session("bob")).path(shared_id)
    assert classroom.shared_dataset_dir(own, home) is None
    assert classroom.shared_dataset_dir("../x", home) is None

    classroom.unshare_dataset(shared_id, home)
    assert classroom.shared_catalog(home).list() == []


def test_sharing_on_a_full_disk_leaves_nothing_half_made(home, tmp_path, monkeypatch):
    ada = classroom.Workspace(home).for_session("ada")
    own = _dataset(ada, tmp_path)

    def full(src, dst, **kwargs):
        Path(dst).mkdir(parents=True)
        (Path(dst) / "half.jpg").write_bytes(b"x")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(classroom.shutil, "copytree", full)
    with pytest.raises(DiskFull, match="disk is full"):
        classroom.share_dataset("ada", own, home)
    assert classroom.shared_catalog(home).list() == []
    assert not any((home / "shared" / "datasets").iterdir())
    assert not any((home / "shared" / "staging").iterdir())


def test_a_shared_dataset_is_decoded_once_for_the_class(home, tmp_path):
    from tl_core.model.registry import get_backbone
    from tl_core.training.session import prepare_data

    ada = classroom.Workspace(home).for_session("ada")
    bob = classroom.Workspace(home).for_session("bob")
    folder = classroom.shared_dataset_dir(classroom.share_dataset("ada", _dataset(ada, tmp_path), home), home)
    assert classroom.cache_dir_for(folder, ada) == classroom.cache_dir_for(folder, bob) == home / "shared" / "cache"
    own = DatasetCatalog(bob).path(_dataset(bob, tmp_path))
    assert classroom.cache_dir_for(own, bob) == bob.cache_dir

    preprocess = get_backbone(TINY).preprocess
    prepare_data(_config(folder), ada, preprocess)
    decoded = sorted((home / "shared" / "cache").glob("decoded-*.npy"))
    assert len(decoded) == 1
    stamp = decoded[0].stat().st_mtime_ns
    prepare_data(_config(folder), bob, preprocess)  # another student: the same file, not decoded again
    assert sorted((home / "shared" / "cache").glob("decoded-*.npy")) == decoded
    assert decoded[0].stat().st_mtime_ns == stamp
    assert not list(ada.cache_dir.glob("decoded-*")) and not list(bob.cache_dir.glob("decoded-*"))


# -- leaderboard ---------------------------------------------------------------------------------
def test_leaderboard_ranks_the_class_by_validation_accuracy_without_session_ids(home, tmp_path):
    ada = classroom.Workspace(home).for_session("ada-session-key")
    bob = classroom.Workspace(home).for_session("bob-session-key")
    shared_id = classroom.share_dataset("ada-session-key", _dataset(ada, tmp_path), home)
    folder = classroom.shared_dataset_dir(shared_id, home)
    classroom.set_display_name(ada, "Ada")
    _finished_run(ada, folder, 0.70)
    _finished_run(bob, folder, 0.90)
    _finished_run(bob, DatasetCatalog(bob).path(_dataset(bob, tmp_path)), 0.99)  # not on the shared data
    RunStore(ada).create(_config(folder))  # no accuracy yet: left out

    rows = classroom.leaderboard(shared_id, home)
    assert [(r.rank, r.student, r.best_val_acc) for r in rows] == [(1, classroom.NO_NAME, 0.90), (2, "Ada", 0.70)]
    assert all(r.strategy == "frozen" and r.backbone == TINY for r in rows)
    assert "session-key" not in repr(rows)

    assert not classroom.leaderboard_visible(home)
    classroom.set_leaderboard_visible(True, home)
    assert classroom.leaderboard_visible(home)
    classroom.set_leaderboard_visible(False, home)
    assert not classroom.leaderboard_visible(home)


def test_classroom_does_not_import_streamlit():
    code = "import sys, tl_core.classroom.teacher; sys.exit('streamlit' in sys.modules)"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0
