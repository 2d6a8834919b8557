"""A run's name: the automatic label (backbone · strategy · head · lr), a rename kept beside the
recipe, names made unique for legends, and the sentence that explains the best epoch."""

from __future__ import annotations

import json

import pytest

from tl_core import atomic
from tl_core.config import DataConfig, FreezePlan, HeadConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.errors import ConfigError
from tl_core.runs import MAX_NAME_LENGTH, RunStore, auto_label, best_epoch_note, format_lr, unique_labels


def config(**parts) -> RunConfig:
    return RunConfig(data=DataConfig(source="/photos"), **parts)


@pytest.mark.parametrize("parts, label", [
    ({}, "mobilenet_v2 · frozen · linear · lr 1e-3"),
    ({"freeze": FreezePlan(mode="last_n", last_n=2), "train": TrainConfig(lr=3e-4)},
     "mobilenet_v2 · top 2 groups · linear · lr 3e-4"),
    ({"freeze": FreezePlan(mode="last_n", last_n=1)}, "mobilenet_v2 · top 1 group · linear · lr 1e-3"),
    ({"freeze": FreezePlan(mode="full", lr_range=(1e-5, 1e-3))},
     "mobilenet_v2 · full (discriminative lr) · linear · lr 1e-5–1e-3"),
    ({"model": ModelConfig(backbone="resnet18", pretrained=False), "freeze": FreezePlan(mode="full"),
      "train": TrainConfig(lr=2.5e-3)}, "resnet18 (random init) · full · linear · lr 2.5e-3"),
    ({"model": ModelConfig(backbone="vgg16", head=HeadConfig(kind="mlp", pool="flatten")),
      "train": TrainConfig(lr=1e-4, optimizer="rmsprop")}, "vgg16 · frozen · mlp on flatten · lr 1e-4"),
    ({"model": ModelConfig(head=HeadConfig(kind="lda"))}, "mobilenet_v2 · frozen · lda"),  # no lr to speak of
    ({"model": ModelConfig(head=HeadConfig(kind="knn", neighbours=3))}, "mobilenet_v2 · frozen · knn k=3"),
    ({"model": ModelConfig(backbone="clip_vit_b32", head=HeadConfig(kind="zero_shot")), "train": TrainConfig(epochs=0)},
     "clip_vit_b32 · frozen · zero-shot (no training)"),
    ({"model": ModelConfig(backbone="clip_vit_b32", head=HeadConfig(kind="zero_shot"))},
     "clip_vit_b32 · frozen · zero_shot · lr 1e-3"),  # trained on from the words
    ({"freeze": FreezePlan(mode="groups", groups=("features.18",))}, "mobilenet_v2 · 1 chosen group · linear · lr 1e-3"),
])
def test_auto_label_says_backbone_strategy_head_and_lr(parts, label):
    assert auto_label(config(**parts)) == label


def test_format_lr_is_how_people_write_it():
    assert [format_lr(v) for v in (1e-3, 3e-4, 0.01, 2.5e-3, 1.0)] == ["1e-3", "3e-4", "1e-2", "2.5e-3", "1e0"]


def test_display_name_falls_back_from_rename_to_config_name_to_auto_label(workspace):
    store = RunStore(workspace)
    unnamed = store.create(config())
    named = store.create(config(name="baseline"))
    assert unnamed.display_name() == "mobilenet_v2 · frozen · linear · lr 1e-3"
    assert named.display_name() == "baseline"

    recipe = (named.dir / "config.json").read_bytes()
    named.rename("  **bold**   [x](http://e.com)\n")
    assert store.get(named.id).display_name() == "**bold** [x](http://e.com)"  # every reader, one line
    assert (named.dir / "config.json").read_bytes() == recipe  # the recipe is not rewritten
    assert atomic.read_json(named.dir / "label.json") == {"name": "**bold** [x](http://e.com)"}
    assert named.summary()["name"] == "**bold** [x](http://e.com)"
    assert list(named.dir.glob("*.tmp*")) == []

    named.rename("")
    assert named.display_name() == "baseline"
    with pytest.raises(ConfigError, match="at most"):
        named.rename("x" * (MAX_NAME_LENGTH + 1))


def test_a_rename_that_cannot_be_written_leaves_the_old_name(workspace, monkeypatch):
    run = RunStore(workspace).create(config(name="old"))
    run.rename("kept")

    def full_disk(path, value):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(atomic, "write_json", full_disk)
    with pytest.raises(OSError):
        run.rename("new")
    assert run.display_name() == "kept"


def test_unique_labels_tell_runs_with_the_same_name_apart(workspace):
    store = RunStore(workspace)
    first, second, other = store.create(config()), store.create(config()), store.create(config(name="b"))
    labels = unique_labels([first, second, other])
    assert labels[other.id] == "b"
    assert labels[first.id] != labels[second.id]
    assert all(label.startswith("mobilenet_v2 · frozen") for label in (labels[first.id], labels[second.id]))


def test_summary_names_the_run_and_keeps_the_id_last(workspace):
    run = RunStore(workspace).create(config(freeze=FreezePlan(mode="last_n", last_n=2)))
    summary = run.summary()
    assert summary["name"] == run.display_name() and summary["strategy"] == "top 2 groups"
    assert list(summary)[0] == "name" and list(summary)[-1] == "id" and summary["id"] == run.id


def test_an_unreadable_config_is_still_named(workspace):
    run = RunStore(workspace).create(config())
    (run.dir / "config.json").write_text("{broken", encoding="utf-8")
    assert run.id in run.display_name()
    json.dumps(run.summary())  # a list of runs still draws


HISTORY = [{"epoch": 1, "val_loss": 0.9, "val_acc": 0.6}, {"epoch": 2, "val_loss": 0.5, "val_acc": 0.7},
           {"epoch": 3, "val_loss": 0.6, "val_acc": 0.8}]


def test_best_epoch_note_when_the_loss_chose_another_epoch_than_the_accuracy_peak():
    assert best_epoch_note({"best_epoch": 2, "history": HISTORY}, "val_loss") == (
        "Best epoch 2 (lowest validation loss); validation accuracy peaked at epoch 3.")


@pytest.mark.parametrize("metrics, monitor", [
    ({"best_epoch": 3, "history": HISTORY}, "val_acc"),  # the same epoch: nothing to explain
    ({"best_epoch": 2, "history": [*HISTORY[:2], {"epoch": 3, "val_loss": 0.6, "val_acc": 0.7}]}, "val_loss"),  # tie
    ({"best_epoch": 2}, "val_loss"),  # no history (an older run)
    ({}, "val_loss"),
])
def test_no_best_epoch_note_when_there_is_nothing_to_explain(metrics, monitor):
    assert best_epoch_note(metrics, monitor) is None
