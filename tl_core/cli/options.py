"""The ``train`` options that set one config field: which flag sets which field, its argparse option
(type, choices, default and help all read from the field), and the ``RunConfig`` the flags give.

``tl_core.cli.codegen`` writes a run's command from the same table, so the two cannot drift apart.
"""

from __future__ import annotations

import argparse
from typing import Any

# `train` options that set one config field: the field gives the type, choices, default and help.
# Flag -> (section, field name); a section is a RunConfig part, or "head" for the model's head.
FIELD_OPTIONS: dict[str, tuple[str, str]] = {
    "--backbone": ("model", "backbone"), "--weights-dir": ("model", "weights_dir"),
    "--head": ("head", "kind"), "--hidden": ("head", "hidden"), "--dropout": ("head", "dropout"),
    "--pool": ("head", "pool"), "--neighbours": ("head", "neighbours"),
    "--freeze": ("freeze", "mode"), "--last-n": ("freeze", "last_n"), "--unfreeze-every": ("freeze", "unfreeze_every"),
    "--probe-epochs": ("freeze", "probe_epochs"), "--train-bn": ("freeze", "train_bn"),
    "--epochs": ("train", "epochs"), "--batch-size": ("train", "batch_size"), "--lr": ("train", "lr"),
    "--optimizer": ("train", "optimizer"), "--weight-decay": ("train", "weight_decay"),
    "--schedule": ("train", "schedule"), "--label-smoothing": ("train", "label_smoothing"),
    "--patience": ("train", "early_stopping_patience"), "--monitor": ("train", "monitor"),
    "--balance": ("train", "balance"),
    "--augment": ("data", "augment"), "--val": ("data", "val_fraction"), "--test": ("data", "test_fraction"),
    "--train-fraction": ("data", "train_fraction"),
    "--seed": ("train", "seed"),  # build_config also gives it to the split
    "--device": ("train", "device"), "--workers": ("train", "num_workers"), "--nproc": ("train", "nproc"),
    # switches that turn a default-on field off
    "--random-init": ("model", "pretrained"), "--no-amp": ("train", "amp"),
    "--no-feature-cache": ("train", "feature_cache"),
    "--resplit": ("data", "keep_given_split"),
}


def option_field(section: str, name: str):
    """The dataclass field behind an option, and its resolved type (Literal aliases included)."""
    import dataclasses
    import typing

    from tl_core import config

    cls = {"data": config.DataConfig, "model": config.ModelConfig, "head": config.HeadConfig,
           "freeze": config.FreezePlan, "train": config.TrainConfig}[section]
    return next(f for f in dataclasses.fields(cls) if f.name == name), typing.get_type_hints(cls)[name]


def option_dest(flag: str) -> str:
    """The argparse attribute of ``flag`` (``--last-n`` -> ``last_n``)."""
    return flag.lstrip("-").replace("-", "_")


def add_field_option(parser: argparse.ArgumentParser, flag: str, section: str, name: str) -> None:
    """Add ``flag`` to ``parser``: a switch for a bool field, else an option with the field's default
    (and its choices, for a Literal)."""
    import typing

    from tl_core.config import LABELS

    fld, hint = option_field(section, name)
    help_text = fld.metadata["help"].replace("%", "%%")
    if hint is bool:  # a switch: giving it flips the field's default
        parser.add_argument(flag, action="store_true",
                            help=f"turns {'off' if fld.default else 'on'} (default {'on' if fld.default else 'off'}): "
                                 f"{help_text}")
        return
    kwargs: dict[str, Any] = {"default": fld.default}
    if typing.get_origin(hint) is typing.Literal:
        kwargs["choices"] = typing.get_args(hint)
        labels = LABELS.get(hint)
        if labels:
            help_text += " (" + "; ".join(f"{c}: {labels[c]}" for c in kwargs["choices"]).replace("%", "%%") + ")"
    elif (section, name) == ("train", "batch_size"):
        kwargs["type"] = _batch_size
        help_text += "; 'auto': the largest that fits on a CUDA GPU (TrainConfig.auto_batch)"
    elif hint in (int, float):
        kwargs["type"] = hint
    parser.add_argument(flag, help=help_text + " (default: %(default)s)", **kwargs)


def _batch_size(text: str) -> int | str:
    """--batch-size: a whole number, or ``auto``."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"give a whole number or 'auto', not {text!r}") from None


def class_words_option(items: list[str]) -> tuple[tuple[str, str], ...]:
    """``--class-words CLASS=WORDS`` (repeated) as ``HeadConfig.class_words``."""
    from tl_core.errors import ConfigError

    pairs = []
    for item in items:
        name, sep, words = item.partition("=")
        if not sep or not name.strip() or not words.strip():
            raise ConfigError(f"--class-words takes CLASS=WORDS (e.g. 'colts-foot=coltsfoot, yellow "
                                             f"wildflower'), not {item!r}")
        pairs.append((name.strip(), words.strip()))
    return tuple(pairs)


def build_config(args):
    """The ``RunConfig`` of a parsed ``train`` command line."""
    from tl_core.config import DataConfig, FreezePlan, HeadConfig, ModelConfig, RunConfig, TrainConfig

    values: dict[str, dict[str, Any]] = {"data": {}, "model": {}, "head": {}, "freeze": {}, "train": {}}
    for flag, (section, name) in FIELD_OPTIONS.items():
        value = getattr(args, option_dest(flag))
        fld, hint = option_field(section, name)
        values[section][name] = (value != fld.default) if hint is bool else value  # a switch flips the default
    if values["train"]["batch_size"] == "auto":
        values["train"].update(batch_size=option_field("train", "batch_size")[0].default, auto_batch=True)
    values["data"]["split_seed"] = args.seed
    values["freeze"]["groups"] = tuple(g for g in (args.groups or "").split(",") if g)
    values["freeze"]["lr_range"] = tuple(float(v) for v in args.lr_range.split(",")) if args.lr_range else None
    values["head"]["class_words"] = class_words_option(getattr(args, "class_words", None) or [])
    return RunConfig(
        data=DataConfig(source=str(args.data), **values["data"]),
        model=ModelConfig(head=HeadConfig(**values["head"]), **values["model"]),
        freeze=FreezePlan(**values["freeze"]),
        train=TrainConfig(**values["train"]),
        name=args.name or "",
    )
