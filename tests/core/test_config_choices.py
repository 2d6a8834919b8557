"""Every choice (optimiser, schedule, freeze mode, ...) is listed once, in config.py, with a label and help."""

from __future__ import annotations

import dataclasses
import typing

import pytest

from tl_core import config
from tl_core.config import DataConfig, FreezePlan, HeadConfig, ModelConfig, RunConfig, TrainConfig, choices
from tl_core.errors import ConfigError

SECTIONS = (DataConfig, HeadConfig, ModelConfig, FreezePlan, TrainConfig)


def literal_fields():
    """(class, field name, Literal alias) for every field that takes a named choice."""
    for cls in SECTIONS:
        for name, hint in typing.get_type_hints(cls).items():
            if typing.get_origin(hint) is typing.Literal:
                yield cls, name, hint


def test_every_choice_field_uses_a_named_alias_with_a_label_for_each_choice():
    aliases = {alias for _, _, alias in literal_fields()}
    assert len(aliases) == 8  # augment, head, pooling, freeze mode, optimizer, schedule, monitor, balance
    for alias in aliases:
        assert list(config.LABELS[alias]) == list(choices(alias)), alias
        assert all(label.strip() for label in config.LABELS[alias].values())


def test_every_augmentation_preset_of_the_config_builds():
    import torch

    from tl_core.data import make_augment

    batch = torch.zeros(2, 3, 40, 40, dtype=torch.uint8)
    for preset in choices(config.AugmentPreset):
        assert make_augment(preset, 32)(batch).shape == (2, 3, 32, 32), preset


def test_every_field_has_one_line_help():
    for cls in SECTIONS:
        for f in dataclasses.fields(cls):
            if f.name != "head":  # a section, not a setting
                assert f.metadata.get("help") and "\n" not in f.metadata["help"], (cls.__name__, f.name)


def test_classical_heads_are_head_choices():
    assert set(config.CLASSICAL_HEADS) <= set(choices(config.HeadKind))


def test_every_head_is_explained_in_a_sentence_or_two():
    assert list(config.HEAD_HELP) == list(choices(config.HeadKind))
    assert all(0 < text.count(". ") + 1 <= 3 for text in config.HEAD_HELP.values())


@pytest.mark.parametrize("cls, name, alias", list(literal_fields()), ids=lambda v: getattr(v, "__name__", str(v)))
def test_an_unknown_choice_is_rejected_with_the_valid_names(cls, name, alias):
    section = {DataConfig: "data", ModelConfig: "model", FreezePlan: "freeze", TrainConfig: "train"}
    base = RunConfig(data=DataConfig(source="x"))
    if cls is HeadConfig:
        cfg = dataclasses.replace(base, model=ModelConfig(head=HeadConfig(**{name: "nonsense"})))
    else:
        key = section[cls]
        cfg = dataclasses.replace(base, **{key: dataclasses.replace(getattr(base, key), **{name: "nonsense"})})
    for check in (cfg.check_choices, cfg.validate):
        with pytest.raises(ConfigError, match="nonsense") as info:
            check()
        assert all(choice in str(info.value) for choice in choices(alias))
    base.validate()  # the defaults are valid


def test_one_of_reads_as_a_sentence():
    assert config.one_of(["a"]) == "a"
    assert config.one_of(["a", "b", "c"]) == "a, b or c"
