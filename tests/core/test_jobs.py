"""Jobs: the real worker process trains end to end; queue order; cancel; dead-worker detection."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.tiny_backbone import NAME as TINY
from tl_core.config import DataConfig, FreezePlan, ModelConfig, RunConfig, TrainConfig
from tl_core.jobs import launch as jobs
from tl_core.jobs import queue as job_queue
from tl_core.runs import RunStore

FINAL = ("finished", "failed", "cancelled")


def tiny_config(folder: Path, **train_kw) -> RunConfig:
    train = dict(epochs=2, batch_size=8, lr=1e-2, schedule="constant", num_workers=0)
    train.update(train_kw)
    return RunConfig(data=DataConfig(source=str(folder), val_fraction=0.25, augment="none"),
                     model=ModelConfig(backbone=TINY),
                     freeze=FreezePlan(mode="feature_extractor"), train=TrainConfig(**train))




@pytest.fixture
def home(workspace) -> Path:
    return workspace.root  # TL_STUDIO_HOME points here (conftest), so the queue lives below it


@pytest.fixture
def small_folder(tmp_path):
    from tests.conftest import write_image_folder

    return write_image_folder(tmp_path / "small", {"red": 6, "green": 6})


def test_worker_trains_a_real_run_end_to_end(workspace, home, small_folder):
    session = workspace.for_session("student1")
    run_id = jobs.start_job(session, tiny_config(small_folder))
    run = RunStore(session).get(run_id)
    assert run.status().state in ("queued", "running")
    assert run.status().pid

    status = wait_for(lambda: (s := jobs.job_state(run)).state in FINAL and s, timeout=180)
    log = (run.dir / "worker.log").read_text()
    assert status.state == "finished", log
    assert run.checkpoint_path("best").exists()
    events, _ = run.read_events()
    names = [type(e).__name__ for e in events]
    assert names.count("EpochEnded") == 2 and names[-1] == "RunFinished"
    assert run.read_evaluation("val").accuracy >= 0
    assert jobs.waiting_tickets(jobs.jobs_root(home)) == []  # the ticket left the queue
    assert jobs.running_jobs(home) == []  # and the slot was given back


def test_dead_worker_is_detected_and_the_run_marked_failed(workspace, small_folder):
    run = RunStore(workspace).create(tiny_config(small_folder))
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    run.mark_running(pid=sleeper.pid)
    assert jobs.job_state(run).state == "running"
    sleeper.kill()
    sleeper.wait()
    status = jobs.job_state(run)
    assert status.state == "failed"
    assert "stopped unexpectedly" in status.error
    events, _ = run.read_events()
    assert type(events[-1]).__name__ == "RunFailed"


def test_queue_is_first_in_first_out_and_cancel_leaves_it(workspace, home, small_folder, monkeypatch):
    """With one slot held by another process, two jobs wait in order; cancelling the first while
    queued ends it without training and moves the second up."""
    import fcntl

    monkeypatch.setenv(jobs.ENV_MAX_JOBS, "1")
    root = jobs.jobs_root(home)
    blocker = open(root / "slot-0.lock", "ab")  # another job is training
    fcntl.flock(blocker, fcntl.LOCK_EX)
    try:
        first = RunStore(workspace).get(jobs.start_job(workspace, tiny_config(small_folder)))
        second = RunStore(workspace).get(jobs.start_job(workspace, tiny_config(small_folder)))
        assert jobs.queue_position(first) == 1
        assert jobs.queue_position(second) == 2
        time.sleep(1.0)
        assert first.state == "queued" and second.state == "queued"

        jobs.cancel(first)
        wait_for(lambda: first.state == "cancelled", timeout=60)
        assert not first.checkpoint_path("best").exists()
        wait_for(lambda: jobs.queue_position(second) == 1, timeout=10)
        jobs.cancel(second)
        wait_for(lambda: second.state == "cancelled", timeout=60)
    finally:
        fcntl.flock(blocker, fcntl.LOCK_UN)
        blocker.close()


def test_a_ticket_of_a_dead_worker_does_not_block_the_queue(home, tmp_path):
    root = jobs.jobs_root(home)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    job_queue.write_ticket(root / "queue" / "0001-dead.json", tmp_path / "dead", sleeper.pid, time.time())
    assert len(jobs.waiting_tickets(root)) == 1
    sleeper.kill()
    sleeper.wait()
    assert jobs.waiting_tickets(root) == []


def test_jobs_module_does_not_import_streamlit():
    code = "import sys, tl_core.jobs.launch, tl_core.jobs.worker, tl_core.system; print('streamlit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])})
    assert out.stdout.strip() == "False"
