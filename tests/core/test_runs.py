"""The run folder's typed API: status transitions, evaluations, metrics, the dataset lookup, and
checkpoints written whole or not at all."""

from __future__ import annotations

import errno
import json
import os

import pytest
import torch

from tl_core import atomic
from tl_core import events as ev
from tl_core.config import DataConfig, RunConfig
from tl_core.evaluation.metrics import evaluate_logits
from tl_core.runs import RunStatus, RunStore


@pytest.fixture
def run(workspace):
    return RunStore(workspace).create(RunConfig(data=DataConfig(source="/photos")))


def make_eval(classes=("cat", "dog")):
    logits = torch.tensor([[2.0, 0.1], [0.2, 1.5], [1.0, 0.9]])
    return evaluate_logits(logits, [0, 1, 1], list(classes), ["a.jpg", "b.jpg", "c.jpg"])


# ----------------------------------------------------------------------------- status
def test_a_new_run_is_created_with_its_time(run):
    status = run.status()
    assert status.state == "created" and run.state == "created"
    assert status.created and status.updated and not status.active
    assert status.pid is None and status.error is None


def test_an_old_status_file_with_started_at_and_unknown_keys_is_read(run):
    (run.dir / "status.json").write_text(json.dumps(
        {"state": "running", "pid": 123, "started_at": 1700.0, "slot": 0, "gpu_name": "old key"}))
    status = run.status()
    assert status == RunStatus(state="running", pid=123, started=1700.0, slot=0)
    assert status.active
    # A file with both names (the worker wrote started_at, the trainer started later): the new name wins.
    (run.dir / "status.json").write_text(json.dumps({"state": "running", "started": 1800.0, "started_at": 1700.0}))
    assert run.status().started == 1800.0


def test_a_resume_in_another_process_is_not_taken_for_the_dead_worker(run):
    run.mark_queued(pid=999_999, pid_created=5.0)  # the app's worker, since gone
    running = run.mark_running(pid=os.getpid())  # `python -m tl_core train --resume`
    assert (running.pid, running.pid_created) == (os.getpid(), None)


def test_a_missing_status_file_reads_as_unknown(run):
    (run.dir / "status.json").unlink()
    assert run.status() == RunStatus() and run.state == "unknown"


def test_transitions_keep_what_they_do_not_change(run):
    queued = run.mark_queued(pid=None, queued_at=100.0)
    assert (queued.state, queued.pid, queued.queued_at) == ("queued", None, 100.0)
    queued = run.mark_queued(pid=os.getpid(), pid_created=5.0)
    assert (queued.pid, queued.pid_created, queued.queued_at) == (os.getpid(), 5.0, 100.0)

    running = run.mark_running(pid=os.getpid(), slot=1)
    assert running.state == "running" and running.started and running.slot == 1
    assert running.pid_created == 5.0  # the same process, so its start time still holds
    again = run.mark_running(pid=os.getpid())  # the trainer marks it too, without a slot
    assert again.slot == 1 and again.started >= running.started

    run.record_dataset(run.dir / "dataset")
    run.record_epoch(2, best_epoch=1, best_val_acc=0.75)
    status = run.status()
    assert (status.state, status.epoch, status.best_epoch, status.best_val_acc) == ("running", 2, 1, 0.75)
    assert status.dataset_dir == str(run.dir / "dataset")

    finished = run.mark_finished(best_epoch=2, best_val_acc=0.8)
    assert (finished.state, finished.best_epoch, finished.best_val_acc) == ("finished", 2, 0.8)
    assert finished.finished and finished.updated >= finished.started
    assert run.status() == finished  # what the method returns is what is on disk


def test_finished_and_cancelled_without_results_keep_the_recorded_ones(run):
    run.record_epoch(3, best_epoch=2, best_val_acc=0.6)
    assert (run.mark_cancelled().best_epoch, run.status().best_val_acc) == (2, 0.6)
    assert run.mark_finished().best_epoch == 2


def test_mark_failed_keeps_the_reason_and_logs_one_terminal_event(run):
    run.mark_running(pid=os.getpid())
    failed = run.mark_failed("The disk is full.", error_type="DiskFull")
    assert (failed.state, failed.error) == ("failed", "The disk is full.")
    run.mark_failed("Again.", error_type="WorkerDied")  # the log already ends the run
    events, _ = run.read_events()
    assert [(type(e).__name__, e.reason) for e in events] == [("RunFailed", "The disk is full.")]
    assert run.status().error == "Again."


def test_mark_failed_without_an_error_type_leaves_the_log_to_the_trainer(run):
    run.mark_failed("Could not start the training process")
    assert run.read_events()[0] == [] and run.state == "failed"


def test_a_new_start_clears_the_last_error(run):
    run.mark_failed("boom")
    assert run.mark_running(pid=os.getpid()).error is None



def test_summary_reads_the_typed_status(run):
    run.record_epoch(1, best_epoch=1, best_val_acc=0.5)
    run.mark_failed("out of memory")
    summary = run.summary()
    assert (summary["state"], summary["epoch"], summary["best_val_acc"], summary["error"]) == (
        "failed", 1, 0.5, "out of memory")
    assert summary["created"] == run.status().created


# ----------------------------------------------------------------------------- results
def test_evaluations_round_trip_by_split(run):
    assert run.read_evaluation("val") is None and run.evaluations() == {}
    result = make_eval()
    run.write_evaluation("val", result)
    assert run.read_evaluation("val") == result
    assert (run.dir / "eval_val.json").exists()  # the file name older tools read
    run.write_evaluation("test", make_eval(("a", "b")))
    assert list(run.evaluations()) == ["test", "val"]  # the most honest number first
    with pytest.raises(ValueError, match="test, val"):
        run.read_evaluation("../config")


def test_metrics_round_trip(run):
    assert run.read_metrics() == {}
    run.write_metrics({"best_epoch": 2, "history": [{"epoch": 1}, {"epoch": 2}]})
    assert run.read_metrics()["best_epoch"] == 2


def test_classes_round_trip(run):
    assert run.classes == []
    run.write_classes(("cat", "dog"))
    assert run.classes == ["cat", "dog"]


def test_dataset_dir_prefers_where_the_trainer_found_it(workspace):
    store = RunStore(workspace)
    plain = store.create(RunConfig(data=DataConfig(source="/photos")))
    assert plain.dataset_dir() is None
    named = store.create(RunConfig(data=DataConfig(source="/photos", dataset_dir="/ingested/a")))
    assert str(named.dataset_dir()) == "/ingested/a"
    named.record_dataset("/ingested/b")
    assert str(named.dataset_dir()) == "/ingested/b"


# ----------------------------------------------------------------------------- atomic writes
def test_checkpoint_round_trip_leaves_no_temp_file(run):
    path = run.save_checkpoint("best", {"model": {"w": torch.ones(2)}})
    assert torch.equal(run.load_checkpoint("best")["model"]["w"], torch.ones(2))
    assert [p.name for p in path.parent.iterdir()] == ["best.pt"]


def test_a_failed_checkpoint_save_keeps_the_old_one_and_no_temp_file(run, monkeypatch):
    path = run.save_checkpoint("best", {"model": {"w": torch.ones(2)}})

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"half a checkpoint")
        raise RuntimeError("pickling failed")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(RuntimeError, match="pickling"):
        run.save_checkpoint("best", {"model": {}})
    monkeypatch.undo()
    assert torch.equal(run.load_checkpoint("best")["model"]["w"], torch.ones(2))
    assert [p.name for p in path.parent.iterdir()] == ["best.pt"]


def test_a_full_disk_is_reported_as_such(tmp_path):
    def fill(handle):
        handle.write(b"some")
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(atomic.DiskFull, match="disk is full"):
        atomic.write_with(tmp_path / "status.json", fill)
    assert list(tmp_path.iterdir()) == []


def test_write_with_takes_a_callback(tmp_path):
    atomic.write_with(tmp_path / "a.bin", lambda handle: handle.write(b"abc"), fsync=False)
    assert (tmp_path / "a.bin").read_bytes() == b"abc"


def test_events_still_end_the_run_once(run):
    run.append_event(ev.RunFinished(best_epoch=1, metrics={}))
    run.mark_failed("late", error_type="WorkerDied")
    assert [type(e).__name__ for e in run.read_events()[0]] == ["RunFinished"]
