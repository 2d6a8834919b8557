"""Compare, foundation models: the zero-shot strategy (offered only on an image-text backbone; the
report says what the class names alone reached)."""

from __future__ import annotations

import pandas as pd
import pytest
import torch

from tests.conftest import write_image_folder
from tl_core.config import DataConfig, FreezePlan, HeadConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.errors import ConfigError
from tl_core.experiments.columns import RATE_OF_FEATURES, TABLE_COLUMNS
from tl_core.experiments.plan import plan_strategies, start_experiment
from tl_core.experiments.report import explain
from tl_core.experiments.strategies import STRATEGIES, StrategyOptions, unavailable
from tl_core.experiments.table import experiment_table
from tl_core.runs import RunStore

torch.set_num_threads(2)


def base_config(folder, backbone: str = "tiny_cnn", epochs: int = 1) -> RunConfig:
    return RunConfig(data=DataConfig(source=str(folder), val_fraction=0.25, split_seed=5, augment="none"),
                     model=ModelConfig(backbone=backbone, head=HeadConfig(kind="mlp", hidden=64, pool="flatten",
                                                                          class_words=(("red", "crimson"),))),
                     freeze=FreezePlan(mode="full", train_bn=True),
                     train=TrainConfig(epochs=epochs, batch_size=8, lr=1e-2, schedule="constant", seed=3),
                     name="ignored")


def train_here(workspace, config) -> str:
    """A launcher that trains the run in this process (no worker)."""
    from tl_core.training.trainer import train

    run = RunStore(workspace).create(config)
    train(config, run, workspace)
    return run.id


# ----------------------------------------------------------------------------- zero-shot


def test_zero_shot_is_offered_only_on_an_image_text_backbone(tmp_path):
    image_only = base_config(tmp_path)
    why = unavailable(image_only)
    assert list(why) == ["zero_shot"] and "tiny_cnn sees images only" in why["zero_shot"]
    assert "image-text" in why["zero_shot"]
    with pytest.raises(ConfigError, match="image-text backbone"):
        plan_strategies(image_only, ["linear_probe", "zero_shot"], StrategyOptions(), "x")

    clip = base_config(tmp_path, backbone="tiny_clip", epochs=5)
    assert unavailable(clip) == {}
    [member] = plan_strategies(clip, ["zero_shot"], StrategyOptions(), "x")
    config = member.config
    assert member.label == "zero-shot (no training images)"
    assert config.model.head.kind == "zero_shot" and config.train.epochs == 0
    assert config.freeze.mode == "feature_extractor"
    assert config.model.head.class_words == (("red", "crimson"),)  # the user's words go into the prompts
    # nothing else changes: data, seed, learning rate
    assert (config.data, config.train.seed, config.train.lr) == (clip.data, clip.train.seed, clip.train.lr)


def strategy_table(accs: dict[str, float], n_val: int = 100) -> pd.DataFrame:
    rows = [{"strategy": STRATEGIES[k].label_for(StrategyOptions()), "state": "finished", "final val acc": acc,
             "best val acc": acc, "best epoch": 1, "wall time (s)": 5.0 + i, "trainable params": 0,
             "images/s": None, "images/s of": RATE_OF_FEATURES, "val images": n_val, "key": k, "run": f"r{i}"}
            for i, (k, acc) in enumerate(accs.items())]
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def test_the_report_says_what_the_class_names_alone_reached():
    helped = " ".join(explain(strategy_table({"zero_shot": 0.60, "linear_probe": 0.85, "logreg": 0.80})))
    assert ("The class names alone (zero-shot, no training image) reached 60.0%; your training images added "
            "25.0 percentage points (linear probe, 85.0%).") in helped
    assert "Radford et al. 2021" in helped
    same = " ".join(explain(strategy_table({"zero_shot": 0.80, "linear_probe": 0.805})))
    assert "reached 80.0%, about the same as linear probe trained on your images (80.5%)" in same
    words_won = " ".join(explain(strategy_table({"zero_shot": 0.90, "linear_probe": 0.70})))
    assert "reached 90.0%, 20.0 percentage points more than linear probe trained on your images" in words_won
    assert "class names alone" not in " ".join(explain(strategy_table({"linear_probe": 0.9, "logreg": 0.8})))


@pytest.mark.slow
def test_zero_shot_and_a_probe_on_a_tiny_clip_end_to_end(workspace, tmp_path, all_tiny_weights):
    folder = write_image_folder(tmp_path / "images", {"red": 6, "green": 6, "blue": 6})
    experiment = start_experiment(workspace, base_config(folder, backbone="tiny_clip"), ["zero_shot", "linear_probe"],
                                  "Words", launch=train_here)
    table = experiment_table(workspace, experiment).set_index("key")
    assert list(table["state"]) == ["finished", "finished"]
    assert table.loc["zero_shot", "trainable params"] == 0 and table["best val acc"].between(0, 1).all()
    assert "The class names alone (zero-shot, no training image) reached" in " ".join(
        explain(table.reset_index()))
