"""Configs round-trip through JSON, events through dicts, and run folders stay consistent."""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import torch

from tl_core import events as ev
from tl_core.config import DataConfig, FreezePlan, HeadConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.errors import ConfigError, JobError, RunNotFound
from tl_core.runs import RunStore


def make_config(**train) -> RunConfig:
    return RunConfig(data=DataConfig(source="/data"), model=ModelConfig(head=HeadConfig(kind="mlp", hidden=8)),
                     freeze=FreezePlan(mode="groups", groups=("layer4",), lr_range=(1e-5, 1e-3)),
                     train=TrainConfig(**train))


def test_engine_does_not_import_streamlit():
    import subprocess
    import sys

    code = "import sys, tl_core.cli.parser, tl_core.training.trainer, tl_core.runs, tl_core.evaluation.metrics; print('streamlit' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def test_config_json_round_trip_is_exact():
    cfg = make_config(epochs=3, optimizer="sgd")
    again = RunConfig.from_json(cfg.to_json())
    assert again == cfg
    assert isinstance(again.freeze.groups, tuple) and isinstance(again.freeze.lr_range, tuple)


@pytest.mark.parametrize("train, words", [
    ({"epochs": 0}, "Epochs"), ({"batch_size": 0}, "Batch size"), ({"lr": -1.0}, "Learning rate"),
])
def test_invalid_config_says_what_to_change(train, words):
    with pytest.raises(ConfigError, match=words):
        make_config(**train).validate()


def test_classical_head_needs_frozen_backbone():
    cfg = RunConfig(data=DataConfig(source="x"), model=ModelConfig(head=HeadConfig(kind="lda")),
                    freeze=FreezePlan(mode="full"))
    with pytest.raises(ConfigError, match="feature-extractor"):
        cfg.validate()


@pytest.mark.parametrize("kind", ["nearest_mean", "knn"])
@pytest.mark.parametrize("change, words", [
    ({"freeze": FreezePlan(mode="last_n")}, "feature-extractor"),
    ({"train": TrainConfig(nproc=2)}, "nproc"),
])
def test_prototype_and_neighbour_heads_are_refused_where_they_cannot_fit(kind, change, words):
    cfg = RunConfig(data=DataConfig(source="x"), model=ModelConfig(head=HeadConfig(kind=kind)), **change)
    with pytest.raises(ConfigError, match=words):
        cfg.validate()


def test_knn_needs_a_neighbour_and_takes_no_class_balancing():
    knn = RunConfig(data=DataConfig(source="x"), model=ModelConfig(head=HeadConfig(kind="knn")))
    knn.validate()
    with pytest.raises(ConfigError, match="at least 1 neighbour"):
        dataclasses.replace(knn, model=ModelConfig(head=HeadConfig(kind="knn", neighbours=0))).validate()
    with pytest.raises(ConfigError, match="class balancing to none"):
        dataclasses.replace(knn, train=TrainConfig(balance="weighted_loss")).validate()
    # nearest class mean is balanced by construction: one prototype per class
    dataclasses.replace(knn, model=ModelConfig(head=HeadConfig(kind="nearest_mean")),
                        train=TrainConfig(balance="sampler")).validate()
    assert RunConfig.from_json(knn.to_json()) == knn
    old = knn.to_dict()
    del old["model"]["head"]["neighbours"]  # a config saved before the field existed
    assert RunConfig.from_dict(old).model.head.neighbours == 5


def test_broken_config_json_is_a_config_error():
    with pytest.raises(ConfigError):
        RunConfig.from_dict({"model": {}})


def test_events_round_trip():
    event = ev.EpochEnded(epoch=2, train_loss=0.5, train_acc=0.8, val_loss=0.6, val_acc=0.7, lr=1e-3,
                          seconds=1.5, trainable_params=10)
    assert ev.from_dict(json.loads(json.dumps(ev.to_dict(event)))) == event


def test_control_polls_a_flag():
    flag = {"stop": False}
    control = ev.Control(poll=lambda: flag["stop"])
    assert not control.should_stop
    flag["stop"] = True
    assert control.should_stop


def test_run_store_create_list_get_delete(workspace):
    store = RunStore(workspace)
    run = store.create(make_config())
    assert run.state == "created"
    assert [r.id for r in store.list()] == [run.id]
    assert store.get(run.id).config == make_config()
    run.mark_running(pid=os.getpid())
    run.record_epoch(1, best_epoch=1, best_val_acc=0.5)
    with pytest.raises(JobError, match="stop it"):
        store.delete(run.id)
    run.mark_finished()
    store.delete(run.id)
    assert store.list() == []
    with pytest.raises(RunNotFound, match="tl_core runs"):
        store.get(run.id)
    with pytest.raises(RunNotFound):
        store.get("../../etc")


def test_event_log_ignores_a_partial_last_line(workspace):
    run = RunStore(workspace).create(make_config())
    run.append_event(ev.Note("one"))
    run.append_event(ev.Note("two"))
    with (run.dir / "events.jsonl").open("a") as handle:
        handle.write('{"type": "Note", "mess')  # a writer in the middle of a line
    events, next_line = run.read_events()
    assert [e.message for e in events] == ["one", "two"] and next_line == 2
    more, next_line = run.read_events(next_line)
    assert more == [] and next_line == 2


def test_checkpoints_load_with_weights_only(workspace):
    run = RunStore(workspace).create(make_config())
    run.save_checkpoint("best", {"model": {"w": torch.ones(2)}, "epoch": 1})
    assert run.load_checkpoint("best")["epoch"] == 1
    with pytest.raises(RunNotFound, match="no last checkpoint"):
        run.load_checkpoint("last")


def test_stop_flag(workspace):
    run = RunStore(workspace).create(make_config())
    assert not run.stop_requested()
    run.request_stop()
    assert run.stop_requested()
