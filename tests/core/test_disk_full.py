"""A full disk, at every write: nothing written earlier is lost, no temporary file stays, the
message is DiskFull's, and a run ends failed (never stuck "running") with an honest reason.

``FullDisk`` (tests/full_disk.py) stands in for a small tmpfs: below its folder, writes past the
bytes left write what fits and raise ENOSPC, as a real full disk does (a short write first, then
the error).
"""

from __future__ import annotations

import errno
import io
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.conftest import write_image_folder
from tests.full_disk import FullDisk, enospc
from tests.tiny_backbone import NAME as TINY
from tl_core import atomic
from tl_core import events as ev
from tl_core.config import DataConfig, FreezePlan, ModelConfig, RunConfig, TrainConfig
from tl_core.errors import DiskFull
from tl_core.jobs import launch as jobs
from tl_core.runs import Run, RunStore

pytestmark = pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc (Linux)")


@pytest.fixture
def disk(workspace, monkeypatch) -> FullDisk:
    return FullDisk(workspace.root, monkeypatch)


def make_config(folder: Path | str = "unused", **train) -> RunConfig:
    settings = dict(epochs=2, batch_size=8, lr=1e-2, schedule="constant")
    settings.update(train)
    return RunConfig(data=DataConfig(source=str(folder), val_fraction=0.25, augment="none"),
                     model=ModelConfig(backbone=TINY), freeze=FreezePlan(mode="feature_extractor"),
                     train=TrainConfig(**settings))


def temporary_files(root: Path) -> list[Path]:
    return [p for p in root.rglob("*") if p.name.endswith(".tmp")]


def dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def as_if_worker_died(run: Run) -> None:
    """The status a worker leaves when it could not write its end: running, in a process now gone."""
    data = json.loads((run.dir / "status.json").read_text())
    data.update(state="running", pid=dead_pid(), pid_created=None)
    atomic.write_json(run.dir / "status.json", data)


# -- the atomic writers ------------------------------------------------------------------------
def test_a_whole_file_write_keeps_the_old_file_and_says_the_disk_is_full(workspace, disk):
    target = workspace.root / "runs" / "r" / "status.json"
    atomic.write_json(target, {"state": "running"})
    disk.fill(free=5)
    with pytest.raises(DiskFull) as caught:
        atomic.write_json(target, {"state": "finished", "padding": "x" * 100})
    assert str(caught.value) == atomic.DISK_FULL_MESSAGE and caught.value.errno == errno.ENOSPC
    assert atomic.read_json(target) == {"state": "running"}
    assert temporary_files(workspace.root) == []


def test_an_event_line_is_written_whole_or_not_at_all(workspace, disk):
    run = RunStore(workspace).create(make_config())
    run.append_event(ev.Note("one"))
    before = (run.dir / "events.jsonl").read_bytes()
    disk.fill(free=10)  # the line starts to go out, then the disk is full
    with pytest.raises(DiskFull, match="disk is full"):
        run.append_event(ev.Note("two, which does not fit"))
    assert (run.dir / "events.jsonl").read_bytes() == before
    disk.make_room()
    run.append_event(ev.Note("three"))
    assert [e.message for e in run.read_events()[0]] == ["one", "three"]


def test_damaged_event_lines_are_skipped_and_do_not_swallow_the_next_one(workspace):
    run = RunStore(workspace).create(make_config())
    run.append_event(ev.Note("one"))
    with (run.dir / "events.jsonl").open("ab") as handle:
        handle.write(b'{"type": "Note", "message": "cut"}garbage\n')  # not JSON
        handle.write(b'{"type": "NoSuchEvent", "x": 1}\n')  # from a newer version
        handle.write(b'{"type": "EpochEnded", "epoch": 1}\n')  # fields missing
        handle.write(b'[1, 2]\n')  # JSON, not an event
        handle.write('{"type": "Note", "message": "h\u00e9'.encode()[:-1] + b"\n")  # cut inside a character
        handle.write(b'{"type": "Note", "mess')  # a writer that died mid-line (before whole-line writes)
    assert [e.message for e in run.read_events()[0]] == ["one"]
    run.append_event(ev.Note("two"))
    events, next_line = run.read_events()
    assert [e.message for e in events] == ["one", "two"]
    assert run.read_events(next_line) == ([], next_line)


def test_damaged_json_run_files_read_as_missing(workspace):
    run = RunStore(workspace).create(make_config())
    for name in ("status.json", "metrics.json", "eval_val.json", "classes.json", "label.json"):
        (run.dir / name).write_text('{"state": "runn', encoding="utf-8")
    (run.dir / "eval_test.json").write_text('{"accuracy": 1}', encoding="utf-8")  # JSON, not an evaluation
    assert run.status().state == "unknown"
    assert run.read_metrics() == {} and run.evaluations() == {}
    assert run.classes == [] and run.label == ""
    assert run.summary()["id"] == run.id


# -- run files -------------------------------------------------------------------------------
def test_a_checkpoint_save_on_a_full_disk_keeps_the_previous_best(workspace, disk):
    run = RunStore(workspace).create(make_config())
    run.save_checkpoint("best", {"model": {"w": torch.ones(3)}, "epoch": 1})
    disk.fill(free=100)
    with pytest.raises(DiskFull, match="disk is full"):
        run.save_checkpoint("best", {"model": {"w": torch.zeros(10_000)}, "epoch": 2})
    assert torch.equal(run.load_checkpoint("best")["model"]["w"], torch.ones(3))
    assert run.has_checkpoint("best") and temporary_files(workspace.root) == []


def test_status_writes_on_a_full_disk_keep_the_previous_status(workspace, disk):
    run = RunStore(workspace).create(make_config())
    run.mark_running(pid=os.getpid())
    disk.fill()
    with pytest.raises(DiskFull):
        run.record_epoch(1, best_epoch=1, best_val_acc=0.5)
    with pytest.raises(DiskFull):
        run.write_metrics({"best_epoch": 1})
    assert run.status().state == "running" and run.status().epoch is None
    assert run.read_metrics() == {} and temporary_files(workspace.root) == []


def test_marking_failed_on_a_full_disk_does_not_raise_and_the_run_later_reads_failed(workspace, disk):
    run = RunStore(workspace).create(make_config())
    run.mark_running(pid=os.getpid())
    disk.fill()
    failed = run.mark_failed(atomic.DISK_FULL_MESSAGE, error_type="DiskFull")  # nothing can be written
    assert failed.state == "failed"
    assert run.status().state == "running" and temporary_files(workspace.root) == []
    disk.make_room()
    as_if_worker_died(run)
    status = jobs.job_state(run)
    assert status.state == "failed" and run.status().state == "failed"
    assert status.error.startswith(jobs.DEAD_WORKER_REASON) and "disk space" in status.error
    assert "kept" not in status.error  # there is no best checkpoint: not claimed
    assert type(run.read_events()[0][-1]).__name__ == "RunFailed"


def test_the_best_checkpoint_is_said_kept_only_when_it_loads(workspace):
    store = RunStore(workspace)
    kept, damaged = store.create(make_config()), store.create(make_config())
    for run in (kept, damaged):
        run.save_checkpoint("best", {"model": {"w": torch.ones(3)}, "epoch": 2})
        run.record_epoch(2, best_epoch=2, best_val_acc=0.5)
    path = damaged.checkpoint_path("best")
    path.write_bytes(path.read_bytes()[:100])  # what a full disk left before writes were atomic
    assert kept.has_checkpoint("best") and not damaged.has_checkpoint("best")
    assert not store.create(make_config()).has_checkpoint("best")
    for run in (kept, damaged):
        as_if_worker_died(run)
    assert jobs.job_state(kept).error.endswith("The best checkpoint so far (epoch 2) is kept.")
    assert "kept" not in jobs.job_state(damaged).error


def test_on_a_full_disk_a_run_can_still_be_stopped_and_a_dead_one_deleted(workspace, disk):
    store = RunStore(workspace)
    live, dead = store.create(make_config()), store.create(make_config())
    live.mark_running(pid=os.getpid())
    as_if_worker_died(dead)
    disk.fill()
    jobs.cancel(live)  # the stop flag needs no space
    assert live.stop_requested()
    jobs.delete_run(store, dead)  # still "running" on disk (nothing can be written), but its worker is gone
    assert not dead.dir.exists() and [run.id for run in store.list()] == [live.id]


def test_creating_a_run_on_a_full_disk_leaves_no_folder(workspace, disk):
    store = RunStore(workspace)
    store.create(make_config())  # the runs folder exists
    before = sorted(p.name for p in store.root.iterdir())
    disk.fill(free=20)  # config.json does not fit
    with pytest.raises(DiskFull, match="disk is full"):
        store.create(make_config())
    assert sorted(p.name for p in store.root.iterdir()) == before


def test_start_rolls_back_when_the_launch_fails_after_the_worker_started(workspace, monkeypatch, tmp_path):
    home = tmp_path / "server"
    writes = []
    real_write_ticket = jobs.write_ticket

    def ticket_fails_the_second_time(path, run_dir, pid, created):
        writes.append(pid)
        if len(writes) == 2:  # the worker is running; its ticket's pid cannot be written
            raise atomic.disk_full(enospc())
        real_write_ticket(path, run_dir, pid, created)

    monkeypatch.setattr(jobs, "write_ticket", ticket_fails_the_second_time)
    with pytest.raises(DiskFull, match="disk is full"):
        jobs.start_job(workspace, make_config(), home=home)
    assert writes[1] is not None and not jobs.process_alive(writes[1])  # the worker was ended
    assert list(workspace.runs_dir.iterdir()) == []  # no empty or half run folder
    assert list((home / "jobs" / "queue").iterdir()) == []  # no ticket holding up the queue


def test_resume_on_a_full_disk_puts_the_run_back_as_it_was(workspace, monkeypatch, tmp_path):
    """A resume whose launch fails half-way (the worker started, its ticket cannot be written):
    the worker is ended, no ticket holds up the queue, and the run is stopped as before, with its
    folder: not 'queued' with nothing behind it, and not deleted as a failed Start's is."""
    home = tmp_path / "server"
    run = RunStore(workspace).create(make_config())
    run.mark_cancelled()
    writes = []
    real_write_ticket = jobs.write_ticket

    def ticket_fails_the_second_time(path, run_dir, pid, created):
        writes.append(pid)
        if len(writes) == 2:
            raise atomic.disk_full(enospc())
        real_write_ticket(path, run_dir, pid, created)

    monkeypatch.setattr(jobs, "write_ticket", ticket_fails_the_second_time)
    with pytest.raises(DiskFull, match="disk is full"):
        jobs.resume_job(workspace, run, home=home)
    assert writes[1] is not None and not jobs.process_alive(writes[1])  # the worker was ended
    assert list((home / "jobs" / "queue").iterdir()) == []
    assert run.dir.is_dir() and run.status().state == "cancelled"


def test_start_on_a_full_disk_leaves_no_run_folder(workspace, disk, monkeypatch):
    real_create = RunStore.create

    def create_then_fill(self, config):
        run = real_create(self, config)
        disk.fill()  # the run is created; the launch's ticket and status do not fit
        return run

    monkeypatch.setattr(RunStore, "create", create_then_fill)
    with pytest.raises(DiskFull, match="disk is full"):
        jobs.start_job(workspace, make_config(), home=workspace.root)
    assert list(workspace.runs_dir.iterdir()) == []
    assert list((workspace.root / "jobs" / "queue").iterdir()) == []


# -- the worker ------------------------------------------------------------------------------
def test_the_worker_exits_cleanly_when_even_marking_failed_fails(workspace, disk, monkeypatch):
    from tl_core.jobs import worker
    from tl_core.training import trainer as training

    run = RunStore(workspace).create(make_config())

    def train_on_a_disk_that_fills(config, run, workspace, **kw):
        disk.fill()
        raise atomic.disk_full(enospc())

    monkeypatch.setattr(training, "train", train_on_a_disk_that_fills)
    assert worker.run_job(run.dir, workspace.root, ticket=None) == 1  # no exception
    assert run.status().state == "running"  # the end could not be written ...
    disk.make_room()
    as_if_worker_died(run)
    assert jobs.job_state(run).state == "failed"  # ... so the dead-worker rule ends it


def test_the_worker_returns_even_when_its_first_write_fails(workspace, disk):
    from tl_core.jobs import worker

    run = RunStore(workspace).create(make_config())
    disk.fill()
    assert worker.run_job(run.dir, workspace.root, ticket=None) == 3
    assert run.status().state == "created" and temporary_files(workspace.root) == []


# -- caches and datasets ---------------------------------------------------------------------
def test_the_decode_cache_on_a_full_disk(workspace, disk, tmp_path):
    from tl_core.data import ingest
    from tl_core.data.cache import decode_images

    ds = ingest(write_image_folder(tmp_path / "imgs", {"red": 3, "blue": 3}))
    cache_dir = workspace.root / "cache"
    cache_dir.mkdir(parents=True)
    disk.fill()
    in_ram = decode_images(ds, range(6), 32, cache_dir)  # carries on without storing
    assert in_ram.shape == (6, 3, 32, 32) and list(cache_dir.iterdir()) == []
    disk.fill(free=1000)  # the header fits; the blocks of the memory map do not (no SIGBUS later)
    with pytest.raises(DiskFull, match="disk is full"):  # memory-mapped: it needs the disk
        decode_images(ds, range(6), 32, cache_dir, ram_budget_bytes=0)
    assert list(cache_dir.iterdir()) == []
    disk.make_room()
    np.testing.assert_array_equal(decode_images(ds, range(6), 32, cache_dir).numpy(), in_ram.numpy())
    assert len(list(cache_dir.iterdir())) == 1


def test_the_feature_store_on_a_full_disk_keeps_what_it_had(workspace, disk):
    from tl_core.model.features import FeatureStore

    store = FeatureStore(workspace.root / "features")
    assert store.save("old", torch.ones(4, 3))
    disk.fill(free=50)
    assert store.save("new", torch.zeros(400, 30)) is False
    assert torch.equal(store.load("old", 4), torch.ones(4, 3)) and store.load("new", 400) is None
    assert temporary_files(workspace.root) == []


def test_a_sample_dataset_on_a_full_disk_leaves_nothing(workspace, disk):
    from tl_core.data import create_dataset, ingest
    from tl_core.data.catalog import DatasetCatalog
    from tl_core.data.sample import make_sample_dataset

    catalog = DatasetCatalog(workspace)
    dest = catalog.new_dir("shapes")
    disk.fill(free=20_000)  # a few images fit

    def build(folder: Path):
        make_sample_dataset(folder, per_class=10)
        return ingest(folder)

    with pytest.raises(DiskFull, match="disk is full"):
        create_dataset(dest, build)
    assert not dest.exists() and catalog.list() == []


def test_an_upload_on_a_full_disk_leaves_nothing(workspace, disk, tmp_path):
    from tl_core.data import UploadedImage, create_dataset, ingest
    from tl_core.data.catalog import DatasetCatalog

    write_image_folder(tmp_path / "imgs", {"red": 4, "blue": 4})
    uploads = [UploadedImage(name=p.name, data=p.read_bytes(), label=p.parent.name)
               for p in sorted((tmp_path / "imgs").rglob("*.jpg"))]
    dest = DatasetCatalog(workspace).new_dir("uploads")
    disk.fill(free=sum(len(u.data) for u in uploads[:3]))
    with pytest.raises(DiskFull, match="disk is full"):
        create_dataset(dest, lambda folder: ingest(uploads, folder))
    assert not dest.exists()


def test_snapshots_on_a_full_disk_keep_all_or_none(workspace, disk):

    from PIL import Image

    from tl_core.data.snapshots import SnapshotTray

    def jpeg(shade: int) -> bytes:  # real photos: the tray's image guard refuses anything else
        out = io.BytesIO()
        Image.new("RGB", (8, 8), (shade, shade, shade)).save(out, "JPEG")
        return out.getvalue()

    tray = SnapshotTray(workspace)
    first = jpeg(10)
    tray.add("cat", first, ".jpg")
    new = [(jpeg(shade), ".jpg") for shade in (50, 90, 130)]
    disk.fill(free=len(new[0][0]) + 10)  # the first new image fits, its sidecar does not
    with pytest.raises(DiskFull, match="disk is full"):
        tray.add_many("cat", new)
    assert [s.path.read_bytes() for s in tray.items()] == [first]
    assert sorted(p.suffix for p in tray.dir.iterdir()) == [".jpg", ".json"]


def test_an_export_on_a_full_disk_keeps_the_previous_export(workspace, disk):
    from PIL import Image

    from tl_core.export.bundle import export_model
    from tl_core.model.registry import build_model, get_backbone

    model = build_model(TINY, 2, pretrained=False).eval()
    pre = get_backbone(TINY).preprocess
    out = workspace.root / "runs" / "r" / "export"
    photo = [Image.new("RGB", (64, 48), (90, 120, 30))]
    export_model(model, ["a", "b"], pre, out, formats=("safetensors",), check_images=photo)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    disk.fill(free=2000)  # the small files start to fit, the bundle does not
    with pytest.raises(DiskFull, match="disk is full"):
        export_model(model, ["cat", "dog"], pre, out, formats=("safetensors",), check_images=photo)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert [p.name for p in out.parent.iterdir()] == ["export"]  # no staging folder, no *.tmp


# -- a real training run ---------------------------------------------------------------------
@pytest.fixture
def tiny_folder(tmp_path: Path) -> Path:
    return write_image_folder(tmp_path / "images", {"red": 8, "green": 8, "blue": 8}, size=(40, 32))


@pytest.mark.slow
def test_a_checkpoint_save_that_meets_a_full_disk_fails_the_run_and_keeps_the_best(workspace, tiny_folder,
                                                                                   monkeypatch):
    from tl_core.training.trainer import train

    torch.set_num_threads(2)
    config = make_config(tiny_folder, epochs=3)
    run = RunStore(workspace).create(config)
    saves = []
    real_save = torch.save

    def save_until_the_disk_is_full(obj, f, *args, **kw):
        saves.append(obj.get("epoch") if isinstance(obj, dict) else None)
        if len(saves) > 2:  # epoch 1's best and last fit; the disk is full from epoch 2 on
            f.write(b"PK\x03\x04 half a checkpoint")
            raise RuntimeError("[enforce fail at inline_container.cc:603] . unexpected pos 64 vs 0: "
                               "No space left on device")  # how torch.save reports it
        return real_save(obj, f, *args, **kw)

    monkeypatch.setattr(torch, "save", save_until_the_disk_is_full)
    seen: list = []
    with pytest.raises(DiskFull) as caught:
        train(config, run, workspace, subscribers=[seen.append])
    assert str(caught.value) == atomic.DISK_FULL_MESSAGE
    status = run.status()
    assert status.state == "failed"
    assert status.error == atomic.DISK_FULL_MESSAGE + " The best checkpoint so far (epoch 1) is kept."
    assert run.load_checkpoint("best")["epoch"] == 1 and run.load_checkpoint("last")["epoch"] == 1
    assert temporary_files(run.dir) == []
    events, _ = run.read_events()
    assert type(events[-1]).__name__ == "RunFailed" and events[-1].reason == status.error
    assert type(seen[-1]).__name__ == "RunFailed"


@pytest.mark.slow
def test_a_worker_whose_disk_fills_mid_run_ends_and_the_run_reads_failed(workspace, tiny_folder, disk,
                                                                       monkeypatch):
    from tl_core.jobs import worker
    from tl_core.training.trainer import Strategy

    torch.set_num_threads(2)
    run = RunStore(workspace).create(make_config(tiny_folder, epochs=3))
    real_save = Strategy.save

    def save(self, kind: str, epoch: int) -> None:
        if epoch == 2:
            disk.fill(free=300)  # nothing more fits: checkpoint, events, status
        real_save(self, kind, epoch)

    monkeypatch.setattr(Strategy, "save", save)
    started = time.time()
    assert worker.run_job(run.dir, workspace.root, ticket=None) == 1
    assert run.status().state == "running"  # nothing could record the end
    assert run.load_checkpoint("best")["epoch"] == 1 and temporary_files(run.dir) == []
    events, _ = run.read_events()  # every line whole
    assert len(events) == len((run.dir / "events.jsonl").read_text().splitlines())
    disk.make_room()
    as_if_worker_died(run)
    status = jobs.job_state(run)
    assert status.state == "failed" and status.updated >= started
    assert status.error.endswith("The best checkpoint so far (epoch 1) is kept.")
