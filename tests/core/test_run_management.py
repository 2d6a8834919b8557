"""Managing runs through the engine: resume a stopped run with a real worker, re-run a saved
config, stop and delete a run that is training, delete a dataset only when no live run uses it,
and the CLI's `train --config` and `stop`."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from tests.core.test_jobs import FINAL, tiny_config, wait_for
from tests.tiny_backbone import NAME as TINY
from tl_core import events as ev
from tl_core.cli.parser import main
from tl_core.config import RunConfig
from tl_core.data.catalog import DatasetCatalog
from tl_core.errors import DataError, JobError
from tl_core.jobs import launch as jobs
from tl_core.runs import RunStore
from tl_core.training.trainer import train


@pytest.fixture
def small_folder(tmp_path):
    from tests.conftest import write_image_folder

    return write_image_folder(tmp_path / "small", {"red": 6, "green": 6})


def stopped_after_one_epoch(workspace, folder, epochs: int = 3):
    """A run trained in this process and stopped after its first epoch (as Stop in the app does)."""
    config = tiny_config(folder, epochs=epochs)
    run = RunStore(workspace).create(config)
    train(config, run, workspace, subscribers=[lambda e: isinstance(e, ev.EpochEnded) and run.request_stop()])
    assert run.state == "cancelled" and run.checkpoint_path("last").exists()
    return run


def test_resume_job_trains_a_stopped_run_on_in_a_worker(workspace, small_folder):
    run = stopped_after_one_epoch(workspace, small_folder)
    jobs.resume_job(workspace, run)
    assert not run.stop_requested()  # the old Stop does not end the resumed run
    status = wait_for(lambda: (s := jobs.job_state(run)).state in FINAL and s, timeout=180)
    assert status.state == "finished", run.worker_log_path.read_text()
    assert [h["epoch"] for h in run.read_metrics()["history"]] == [1, 2, 3]
    events, _ = run.read_events()
    assert [e.epoch for e in events if isinstance(e, ev.EpochEnded)] == [1, 2, 3]  # epoch 1 not trained twice
    assert any(isinstance(e, ev.Note) and "Resumed after epoch 1" in e.message for e in events)
    with pytest.raises(JobError, match="finished all its epochs"):
        jobs.resume_job(workspace, run)


def test_resume_job_refuses_a_run_that_is_training(workspace, small_folder):
    run = RunStore(workspace).create(tiny_config(small_folder))
    run.mark_running(pid=os.getpid())
    with pytest.raises(JobError, match="still running"):
        jobs.resume_job(workspace, run)


def test_rerun_trains_the_exact_saved_config_as_a_new_run(workspace, small_folder, monkeypatch):
    run = RunStore(workspace).create(tiny_config(small_folder))
    started = []
    monkeypatch.setattr(jobs, "_launch", lambda ws, new, home, resume: started.append((new, resume)))
    new_id = jobs.rerun(workspace, run)
    assert new_id != run.id and started[0][0].id == new_id and started[0][1] is False
    assert (RunStore(workspace).get(new_id).dir / "config.json").read_bytes() == (run.dir / "config.json").read_bytes()


def test_rerun_says_when_the_dataset_is_gone(workspace, tmp_path):
    run = RunStore(workspace).create(tiny_config(tmp_path / "deleted"))
    with pytest.raises(DataError, match="is gone"):
        jobs.rerun(workspace, run)


def long_job(workspace, folder) -> tuple:
    """A job started for many epochs, returned once it trains."""
    run_id = jobs.start_job(workspace, tiny_config(folder, epochs=500))
    run = RunStore(workspace).get(run_id)
    wait_for(lambda: run.status().epoch, timeout=180)  # its first epoch is done: it trains
    return run, run.status().pid


def test_delete_stops_a_training_run_first(workspace, small_folder):
    run, pid = long_job(workspace, small_folder)
    store = RunStore(workspace)
    with pytest.raises(JobError, match="stop it first"):
        store.delete(run.id)  # the store alone never pulls a folder from under a worker
    jobs.delete_run(store, run, grace_s=30)
    assert not run.dir.exists()
    assert not jobs.process_alive(pid)
    assert jobs.running_jobs() == []


def test_cli_stop_ends_a_training_run_and_keeps_its_best_checkpoint(workspace, small_folder, capsys):
    run, pid = long_job(workspace, small_folder)
    assert main(["--workspace", str(workspace.root), "stop", run.id, "--wait", "60"]) == 0
    out = capsys.readouterr().out
    assert run.state == "cancelled" and "cancelled" in out and run.display_name() in out
    assert run.checkpoint_path("best").exists()
    wait_for(lambda: not jobs.process_alive(pid), timeout=30)
    assert main(["--workspace", str(workspace.root), "stop", run.id]) == 0
    assert "nothing to stop" in capsys.readouterr().out


def test_a_dataset_is_not_deleted_while_a_run_trains_on_it(workspace, small_folder):
    from tl_core.data import ingest

    catalog = DatasetCatalog(workspace)
    dest = catalog.new_dir("colours")
    ingest(small_folder, dest)
    config = tiny_config(small_folder)
    config = RunConfig.from_dict({**config.to_dict(), "data": {**config.to_dict()["data"], "dataset_dir": str(dest),
                                                               "source": str(dest)}})
    live, done = RunStore(workspace).create(config), RunStore(workspace).create(config)
    done.mark_finished()
    sleeper = subprocess.Popen(["sleep", "60"])
    try:
        live.mark_running(pid=sleeper.pid, pid_created=jobs.process_create_time(sleeper.pid))
        assert {r.id for r in catalog.runs_using(dest.name)} == {live.id, done.id}
        with pytest.raises(DataError, match="still train on this dataset"):
            catalog.delete(dest.name, is_active=jobs.is_active)
        assert dest.exists()
    finally:
        sleeper.kill()
        sleeper.wait()
    jobs.job_state(live)  # its worker is gone: marked failed, no longer in the way
    catalog.delete(dest.name, is_active=jobs.is_active)
    assert not dest.exists()


def test_cli_train_config_reproduces_a_saved_run_and_flags_override_only_what_is_given(
        workspace, small_folder, capsys):
    ws = ["--workspace", str(workspace.root)]
    assert main([*ws, "train", str(small_folder), "--backbone", TINY, "--epochs", "1", "--augment", "none",
                 "--lr", "0.01", "--batch-size", "8", "--freeze", "last_n", "--last-n", "2", "--seed", "3"]) == 0
    first = RunStore(workspace).get(capsys.readouterr().out.strip().splitlines()[-1])

    assert main([*ws, "train", "--config", str(first.dir / "config.json")]) == 0
    again = RunStore(workspace).get(capsys.readouterr().out.strip().splitlines()[-1])
    assert again.id != first.id and again.config == first.config and again.state == "finished"
    assert main([*ws, "train", "--config", first.id]) == 0  # the id, as README and `runs` give it
    by_id = RunStore(workspace).get(capsys.readouterr().out.strip().splitlines()[-1])
    assert by_id.id not in (first.id, again.id) and by_id.config == first.config

    # an option given overrides, even at its default value; the others stay as saved
    assert main([*ws, "train", "--config", str(first.dir), "--lr", "0.001", "--name", "lower lr"]) == 0
    third = RunStore(workspace).get(capsys.readouterr().out.strip().splitlines()[-1])
    expected = json.loads(first.config.to_json())
    expected["train"]["lr"], expected["name"] = 0.001, "lower lr"
    assert json.loads(third.config.to_json()) == expected

    assert main([*ws, "runs"]) == 0
    listing = capsys.readouterr().out
    assert "lower lr" in listing and f"{TINY} · top 2 groups · linear · lr 1e-2" in listing
    assert listing.splitlines()[0].split()[:2] == ["run", "state"]  # names first, ids as a column
    assert main([*ws, "train", "--config", str(workspace.root / "nope.json")]) == 2
    assert "Cannot read the config" in capsys.readouterr().err


def test_delete_never_ends_a_process_the_run_did_not_start_as_its_worker(workspace, small_folder):
    """A run trained in this process (CLI, tests) records this pid without a start time: deleting
    it once finished removes the folder and leaves every process alone; a live one is refused."""
    store = RunStore(workspace)
    done = store.create(tiny_config(small_folder))
    done.mark_running(pid=os.getpid())
    done.mark_finished()
    jobs.delete_run(store, done, grace_s=0.1)
    assert not done.dir.exists()

    live = store.create(tiny_config(small_folder))
    live.mark_running(pid=os.getpid())  # no start time recorded: not ours to end
    with pytest.raises(JobError, match="still stopping"):
        jobs.delete_run(store, live, grace_s=0.2)
    assert live.dir.exists() and live.stop_requested()
