"""The app's remembered choices: one draft RunConfig, saved with the config's own to_dict/from_dict."""

from __future__ import annotations

import json

import pytest

from tl_core.config import FreezePlan, RunConfig, TrainConfig
from tl_ui.state import AppState, default_draft

SESSION = "statetest"


def loaded(home) -> AppState:
    """A new session with the same id, as after a refresh."""
    state = AppState(session_id=SESSION)
    state.load_choices()
    return state


def choices_file(home):
    return loaded(home).workspace.root / AppState._CHOICES_FILE


def test_defaults_are_the_configs(home):
    state = loaded(home)
    assert state.draft == default_draft()
    assert state.draft.model.backbone == "mobilenet_v2" and state.draft.train == TrainConfig()
    assert not choices_file(home).exists()  # nothing written until something changes


def test_every_edit_is_saved_and_read_back(home):
    state = loaded(home)
    state.edit_draft(freeze=FreezePlan(mode="last_n", last_n=2), train={"optimizer": "sgd", "epochs": 7},
                     model={"backbone": "resnet18"}, data={"val_fraction": 0.3})
    again = loaded(home)
    assert again.draft == state.draft
    assert again.draft.freeze.last_n == 2 and again.draft.train.optimizer == "sgd"
    assert again.draft.data.val_fraction == 0.3 and again.draft.model.backbone == "resnet18"
    assert again.draft.freeze.mode == "last_n"
    assert RunConfig.from_dict(json.loads(choices_file(home).read_text())) == state.draft  # the config's format


def test_edits_before_loading_are_not_written(home):
    state = AppState(session_id=SESSION)
    state.edit_draft(train={"epochs": 3})
    assert not choices_file(home).exists()


@pytest.mark.parametrize("text", [
    "{not json",  # damaged
    json.dumps({"backbone": "resnet18", "freeze": {"mode": "sideways"}, "head": {}}),  # old layout, bad value
    json.dumps({"data": {"source": ""}, "train": {"optimizer": "lion"}}),  # a choice that is gone
    json.dumps({"data": {"source": ""}, "train": {"no_such_field": 1}}),
    json.dumps(["a", "list"]),
])
def test_a_damaged_or_old_file_falls_back_to_the_defaults(home, text):
    path = choices_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    state = loaded(home)
    assert state.draft == default_draft()
    state.edit_draft(train={"epochs": 4})  # and the next change replaces the file
    assert loaded(home).draft.train.epochs == 4


def test_the_choices_file_of_the_previous_release_is_kept(home):
    """Before the draft was a RunConfig the file was flat (nine fields): an upgrade keeps them."""
    path = choices_file(home)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({
        "backbone": "resnet18", "freeze": {"mode": "last_n", "last_n": 2, "groups": [], "unfreeze_every": 1,
                                           "train_bn": False, "lr_range": [1e-5, 1e-3]},
        "head": {"kind": "mlp", "hidden": 256, "dropout": 0.1, "pool": "avg"},
        "val_fraction": 0.3, "test_fraction": 0.1, "split_seed": 5,
        "train": {"epochs": 7, "optimizer": "sgd", "lr": 0.01}, "augment": "standard", "pretrained": False}))
    draft = loaded(home).draft
    assert (draft.model.backbone, draft.model.pretrained, draft.model.head.kind, draft.model.head.hidden) == (
        "resnet18", False, "mlp", 256)
    assert (draft.freeze.mode, draft.freeze.last_n, draft.freeze.lr_range) == ("last_n", 2, (1e-5, 1e-3))
    assert (draft.data.val_fraction, draft.data.test_fraction, draft.data.split_seed, draft.data.augment) == (
        0.3, 0.1, 5, "standard")
    assert (draft.train.epochs, draft.train.optimizer, draft.train.lr) == (7, "sgd", 0.01)
