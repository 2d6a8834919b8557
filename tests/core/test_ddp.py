"""One run on 2 CPU processes (gloo, torchrun) through the real launcher: the same result as one
process, one event log written by rank 0 alone, and a stop in the middle that ends both ranks and
keeps a best checkpoint that loads."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import psutil
import pytest

from tests.conftest import wait_for
from tests.tiny_backbone import NAME as TINY
from tl_core.config import DataConfig, FreezePlan, ModelConfig, RunConfig, TrainConfig
from tl_core.errors import ConfigError
from tl_core.events import CheckpointSaved, EpochEnded, RunCancelled, RunFinished, RunStarted
from tl_core.jobs import launch as jobs
from tl_core.model.loading import load_model
from tl_core.runs import Run, RunStore

# Two ranks sum their shards' losses and gradients in another order than one process does, and
# gloo's all-reduce adds in float32: the results agree to rounding, not bit for bit.
REL_TOLERANCE = 1e-4
_cores = os.cpu_count()
FINAL = ("finished", "failed", "cancelled")


def ddp_config(folder: Path, nproc: int, augment: str = "none", **train_kw) -> RunConfig:
    # batch 5 over 2 ranks: shards of 3 and 2 (unequal), and a last batch of 2 (the training set is 12)
    train = dict(epochs=3, batch_size=5, lr=5e-2, schedule="cosine", num_workers=0, device="cpu", nproc=nproc)
    train.update(train_kw)
    return RunConfig(data=DataConfig(source=str(folder), val_fraction=0.25, augment=augment),
                     model=ModelConfig(backbone=TINY),
                     freeze=FreezePlan(mode="feature_extractor"), train=TrainConfig(**train))




def finished(run: Run, timeout: float = 120.0):
    status = wait_for(lambda: (s := jobs.job_state(run)).state in FINAL and s, timeout=timeout)
    assert not jobs.worker_alive(run) or wait_for(lambda: not jobs.worker_alive(run), timeout=30)
    return status


def processes_of(run: Run) -> list[psutil.Process]:
    """Live processes whose command line names the run's folder (the worker, torchrun, the ranks)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        try:
            if str(run.dir) in (proc.info["cmdline"] or []) and proc.status() != psutil.STATUS_ZOMBIE:
                found.append(proc)
        except psutil.Error:
            continue
    return found


@pytest.fixture
def folder(tmp_path):
    from tests.conftest import write_image_folder

    return write_image_folder(tmp_path / "ddp", {"red": 6, "green": 6, "blue": 6})


@pytest.fixture
def home(workspace, monkeypatch) -> Path:
    monkeypatch.setenv(jobs.ENV_MAX_JOBS, "2")  # the two runs train side by side
    # 2 gloo processes run (slowly) on a 1-core CI box too: only the guard against more ranks than cores is lifted
    monkeypatch.setattr("os.cpu_count", lambda: max(2, _cores or 1))
    return workspace.root


def test_two_gloo_processes_train_the_same_run_as_one(workspace, home, folder):
    # Separate sessions: each run computes its own backbone features (no shared feature store).
    one_ws, two_ws = workspace.for_session("one"), workspace.for_session("two")
    one = RunStore(one_ws).get(jobs.start_job(one_ws, ddp_config(folder, nproc=1)))
    two = RunStore(two_ws).get(jobs.start_job(two_ws, ddp_config(folder, nproc=2)))
    for run in (one, two):
        assert finished(run).state == "finished", (run.dir / "worker.log").read_text()

    epochs = {}
    for run in (one, two):
        events, _ = run.read_events()
        epochs[run.id] = [e for e in events if isinstance(e, EpochEnded)]
        # rank 0 alone writes the log: one start, one line per epoch, one end, one best and last per epoch
        assert [e.epoch for e in epochs[run.id]] == [1, 2, 3]
        assert sum(isinstance(e, RunStarted) for e in events) == 1
        assert sum(isinstance(e, RunFinished) for e in events) == 1
        assert sum(isinstance(e, CheckpointSaved) and e.kind == "last" for e in events) == 3
    started = next(e for e in two.read_events()[0] if isinstance(e, RunStarted))
    assert started.device == "cpu x 2 processes"

    for a, b in zip(epochs[one.id], epochs[two.id], strict=True):
        assert b.train_loss == pytest.approx(a.train_loss, rel=REL_TOLERANCE)
        assert b.val_loss == pytest.approx(a.val_loss, rel=REL_TOLERANCE)
        assert b.train_acc == pytest.approx(a.train_acc, abs=1e-9)  # a count of images: exact
        assert b.val_acc == pytest.approx(a.val_acc, abs=1e-9)
    assert epochs[one.id][-1].train_loss < epochs[one.id][0].train_loss  # it did learn something
    val_one, val_two = one.read_metrics()["val"], two.read_metrics()["val"]
    assert val_two["accuracy"] == val_one["accuracy"]
    assert val_two["loss"] == pytest.approx(val_one["loss"], rel=REL_TOLERANCE)
    assert not processes_of(two)
    assert "Traceback" not in (two.dir / "worker.log").read_text()  # no rank failed on the way


def test_a_stop_in_the_middle_ends_both_ranks_and_keeps_the_best_checkpoint(workspace, home, folder):
    run = RunStore(workspace).get(jobs.start_job(workspace, ddp_config(folder, nproc=2, epochs=400,
                                                                         batch_size=2, schedule="constant")))
    wait_for(lambda: run.has_checkpoint("best") and len(processes_of(run)) >= 4, timeout=120)
    ranks = [p for p in processes_of(run) if "tl_core.jobs.worker_rank" in p.cmdline()]
    assert run.status().pid not in {p.pid for p in ranks}  # the recorded pid stays the worker's

    status = jobs.stop(run, wait_s=60)
    assert status.state == "cancelled", (run.dir / "worker.log").read_text()
    wait_for(lambda: not processes_of(run), timeout=30)  # the worker, torchrun and both ranks
    assert all(not p.is_running() or p.status() == psutil.STATUS_ZOMBIE for p in ranks)
    # both ranks stopped after the same step: none was left waiting for the other and failed
    assert "Traceback" not in (run.dir / "worker.log").read_text()
    events, _ = run.read_events()
    assert sum(isinstance(e, RunCancelled) for e in events) == 1
    assert 1 <= (status.best_epoch or 0) < 400
    model = load_model(run, "best")
    assert model is not None


def test_nproc_is_checked_against_the_machine(workspace, folder, monkeypatch):
    monkeypatch.setattr("os.cpu_count", lambda: 2)
    with pytest.raises(ConfigError, match="3 CPU processes .* 2 cores"):
        jobs.start_job(workspace, ddp_config(folder, nproc=3))
    with pytest.raises(ConfigError, match="batch of 1 cannot be split across 2"):
        ddp_config(folder, nproc=2, batch_size=1).validate()
    assert RunStore(workspace).list() == []  # nothing was created


def test_cli_nproc_goes_into_the_config_and_is_checked_before_a_run_exists(workspace, folder, monkeypatch, capsys):
    from tl_core.cli import options
    from tl_core.cli import parser as cli

    args = cli.make_parser().parse_args(["train", str(folder), "--nproc", "2"])
    assert options.build_config(args).train.nproc == 2
    assert options.build_config(cli.make_parser().parse_args(["train", str(folder)])).train.nproc == 1
    assert RunConfig.from_dict({"data": {"source": "x"}, "train": {"epochs": 2}}).train.nproc == 1  # an old config

    monkeypatch.setattr("os.cpu_count", lambda: 2)
    code = cli.main(["--workspace", str(workspace.root), "train", str(folder), "--device", "cpu", "--nproc", "3"])
    assert code != 0
    assert "3 CPU processes" in capsys.readouterr().err
    assert RunStore(workspace).list() == []


def test_on_images_two_processes_draw_the_same_augmented_batches_as_one(workspace, home, folder):
    # The image path (no feature cache): each rank decodes and augments the whole batch as one
    # process would and trains on its slice; the backbone is frozen, so BatchNorm is in eval mode.
    from tl_core.training.trainer import train

    one_ws, two_ws = workspace.for_session("one"), workspace.for_session("two")
    config = ddp_config(folder, nproc=2, augment="light", epochs=1, feature_cache=False)
    two = RunStore(two_ws).get(jobs.start_job(two_ws, config))
    # the reference trains in this process meanwhile (test (a) launches both through the worker)
    one = RunStore(one_ws).create(dataclasses.replace(config, train=dataclasses.replace(config.train, nproc=1)))
    train(one.config, one, one_ws)
    assert finished(two).state == "finished", (two.dir / "worker.log").read_text()
    [a], [b] = ([e for e in run.read_events()[0] if isinstance(e, EpochEnded)] for run in (one, two))
    assert b.train_loss == pytest.approx(a.train_loss, rel=REL_TOLERANCE)
    assert b.val_loss == pytest.approx(a.val_loss, rel=REL_TOLERANCE)
    assert (b.train_acc, b.val_acc) == (a.train_acc, a.val_acc)


def test_a_timm_vit_fine_tunes_on_two_processes_as_on_one(workspace, home, folder):
    """A timm model through DDP: the top layer group of a ViT (random init: no weights here) trains
    on two gloo processes, and each step's loss is the one process's."""
    from tl_core.training.trainer import train

    one_ws, two_ws = workspace.for_session("one"), workspace.for_session("two")
    base = ddp_config(folder, nproc=2, epochs=2, feature_cache=False, lr=1e-2)
    config = dataclasses.replace(base, model=ModelConfig(backbone="tiny_vit", pretrained=False),
                                 freeze=FreezePlan(mode="last_n", last_n=1))
    two = RunStore(two_ws).get(jobs.start_job(two_ws, config))
    one = RunStore(one_ws).create(dataclasses.replace(config, train=dataclasses.replace(config.train, nproc=1)))
    train(one.config, one, one_ws)
    assert finished(two).state == "finished", (two.dir / "worker.log").read_text()
    a_epochs, b_epochs = ([e for e in run.read_events()[0] if isinstance(e, EpochEnded)] for run in (one, two))
    assert [e.epoch for e in b_epochs] == [1, 2]
    for a, b in zip(a_epochs, b_epochs, strict=True):
        assert b.train_loss == pytest.approx(a.train_loss, rel=REL_TOLERANCE)
        assert b.val_loss == pytest.approx(a.val_loss, rel=REL_TOLERANCE)
        assert (b.train_acc, b.val_acc) == (a.train_acc, a.val_acc)
