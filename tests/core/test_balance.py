"""Imbalanced classes (TrainConfig.balance): the class weights, the class-balanced draw, the
suggestion's threshold, and runs that train with each choice and record it."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pytest
import torch

from tests.conftest import write_image_folder
from tests.tiny_backbone import NAME as TINY
from tl_core.config import BALANCE_LABELS, Balance, DataConfig, ModelConfig, RunConfig, TrainConfig, choices
from tl_core.data.health import IMBALANCE_WARN
from tl_core.errors import ConfigError
from tl_core.model.preprocess import make_loader
from tl_core.runs import RunStore
from tl_core.training.balance import (
    SUGGEST_RATIO,
    class_weights,
    imbalance_ratio,
    sample_weights,
    suggest_balance,
)
from tl_core.training.trainer import train

torch.set_num_threads(2)


def test_class_weights_are_n_over_k_times_n_c():
    labels = [0] * 6 + [1] * 2 + [2] * 4
    np.testing.assert_allclose(class_weights(labels, 3), [12 / 18, 12 / 6, 12 / 12], rtol=1e-6)
    # each class adds the same total weight: n_c * w_c = n / k
    counts = np.bincount(labels)
    np.testing.assert_allclose(counts * class_weights(labels, 3), [4, 4, 4], rtol=1e-6)
    # a class with no training image weighs nothing and does not count in k
    np.testing.assert_allclose(class_weights([0, 0, 0, 1], 3), [4 / 6, 4 / 2, 0.0], rtol=1e-6)


def test_sample_weights_give_each_class_the_same_total():
    labels = [0] * 9 + [1] * 3
    weights = sample_weights(labels, 2)
    assert weights.shape == (12,)
    assert weights[:9].sum() == pytest.approx(weights[9:].sum())


def test_a_balanced_loader_draws_classes_evenly_with_the_same_epoch_length_and_seed():
    labels = [0] * 90 + [1] * 10
    images = torch.zeros(100, 3, 4, 4, dtype=torch.uint8)

    def drawn(seed: int) -> list[int]:
        loader = make_loader(images, list(range(100)), labels, lambda x: x, 10, shuffle=True, seed=seed,
                             weights=sample_weights(labels, 2).tolist())
        return [int(y) for _, batch in loader for y in batch]

    first = drawn(3)
    assert len(first) == 100  # an epoch is as long as without balancing
    share = Counter(first)[1] / len(first)
    assert 0.35 < share < 0.65  # about half, where a shuffle gives exactly 10%
    assert drawn(3) == first and drawn(4) != first  # seeded


def test_the_suggestion_starts_where_the_health_report_warns():
    assert SUGGEST_RATIO == IMBALANCE_WARN
    assert imbalance_ratio({"a": 30, "b": 10}) == 3.0 and suggest_balance({"a": 30, "b": 10})
    assert not suggest_balance({"a": 29, "b": 10})
    assert imbalance_ratio({"a": 3, "b": 0}) is None and not suggest_balance([5])


def test_the_choice_is_checked_labelled_and_old_configs_load_as_none():
    assert set(choices(Balance)) == set(BALANCE_LABELS) == {"none", "weighted_loss", "sampler"}
    old = json.loads(RunConfig(data=DataConfig(source="x")).to_json())
    del old["train"]["balance"]  # a run saved before the field existed
    assert RunConfig.from_dict(old).train.balance == "none"
    with pytest.raises(ConfigError, match="class balancing .*weighted_loss"):
        RunConfig(data=DataConfig(source="x"), train=TrainConfig(balance="oversample")).validate()


@pytest.mark.slow
def test_runs_train_with_each_choice_and_save_it(workspace, tmp_path):
    """Cached features (the frozen-body path) without and with the weighted loss, and the image
    path with the sampler: 1 epoch each on an imbalanced folder (red 12 : blue 3). With the same
    seed, each gives a different training loss (the balancing is applied), and the saved config
    says which. (The cached path's balanced draw is the same rule as the loader's, tested above.)"""
    folder = write_image_folder(tmp_path / "imbalanced", {"red": 12, "blue": 3}, size=(32, 24))
    losses = {}
    for balance, cache in (("none", True), ("weighted_loss", True), ("sampler", False)):
        config = RunConfig(data=DataConfig(source=str(folder), val_fraction=0.34, augment="none"),
                           model=ModelConfig(backbone=TINY), train=TrainConfig(epochs=1, batch_size=4, lr=1e-2, schedule="constant",
                                             balance=balance, feature_cache=cache))
        run = RunStore(workspace).create(config)
        result = train(config, run, workspace)
        assert run.status().state == "finished"
        assert json.loads((run.dir / "config.json").read_text())["train"]["balance"] == balance
        assert RunStore(workspace).get(run.id).config.train.balance == balance
        losses[balance, cache] = result["history"][0]["train_loss"]
    assert len({round(v, 6) for v in losses.values()}) == 3, losses


def test_the_command_and_the_script_carry_the_choice():
    from types import SimpleNamespace

    from tests.core.test_codegen import parse_command
    from tl_core.cli.codegen import cli_command, standalone_script

    config = RunConfig(data=DataConfig(source="data/"), train=TrainConfig(balance="weighted_loss"))
    assert "--balance weighted_loss" in cli_command(config)
    assert parse_command(cli_command(config)) == config
    script = standalone_script(config, ["a", "b", "c"])
    assert 'BALANCE = "weighted_loss"' in script
    # The script's class weights are the engine's.
    start = script.index("def class_weights(")
    namespace = {"np": np, "torch": torch}
    exec(script[start:script.index("\n\n\n", start)], namespace)  # noqa: S102 - our own generated code
    labels = [0] * 6 + [1] * 2 + [2] * 4
    loader = SimpleNamespace(dataset=SimpleNamespace(dataset=SimpleNamespace(targets=labels),
                                                     indices=list(range(len(labels)))))
    np.testing.assert_allclose(namespace["class_weights"](loader, 3).numpy(), class_weights(labels, 3), rtol=1e-6)
