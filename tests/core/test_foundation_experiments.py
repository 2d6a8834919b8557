"""Compare, foundation models: the zero-shot strategy (offered only on an image-text backbone; the
report says what the class names alone reached) and "Which backbone?" (the same linear probe on
every backbone whose weights are here; the report's rule, tested on constructed tables)."""

from __future__ import annotations

import dataclasses

import pandas as pd
import pytest
import torch

from tests.conftest import TINY_BACKBONES, write_image_folder
from tl_core.config import DataConfig, FreezePlan, HeadConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.errors import ConfigError
from tl_core.experiments.columns import RATE_OF_FEATURES, TABLE_COLUMNS
from tl_core.experiments.plan import (
    backbones_here,
    plan_backbones,
    plan_strategies,
    start_experiment,
    start_which_backbone,
)
from tl_core.experiments.report import explain, explain_backbones, rank_swap_step
from tl_core.experiments.store import ExperimentStore
from tl_core.experiments.strategies import STRATEGIES, StrategyOptions, unavailable
from tl_core.experiments.table import experiment_table
from tl_core.model.registry import get_backbone
from tl_core.runs import RunStore

torch.set_num_threads(2)

CURATED_FOUNDATION = ("dinov2_vits14", "dinov2_vitb14", "convnextv2_nano", "efficientnetv2_s", "mobileclip_s1",
                      "clip_vit_b32", "siglip_vit_b16")  # no weights on a test machine


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


# ----------------------------------------------------------------------------- Which backbone?


def test_which_backbone_plans_one_probe_per_backbone_with_weights_here(tmp_path, all_tiny_weights):
    here, missing = backbones_here()
    assert set(TINY_BACKBONES) <= set(here)
    assert set(CURATED_FOUNDATION) <= set(missing) and "not on this machine" in missing["dinov2_vits14"]
    base = base_config(tmp_path, epochs=3)
    members = plan_backbones(base, "Which")
    assert [m.key for m in members] == here  # every one with weights here, in the registry's order
    for member in members:
        spec, config = get_backbone(member.key), member.config
        assert config.model.backbone == member.key == member.label
        assert config.name == f"Which · {member.key}"
        assert (config.freeze.mode, config.model.head.kind, config.model.head.pool) == ("feature_extractor",
                                                                                       "linear", "avg")
        assert config.model.pretrained and not config.freeze.train_bn
        assert (config.data, config.train) == (base.data, base.train)  # the same data, split, seed, budget
        assert member.series == spec.accuracy and member.x == (spec.top1 if spec.top1 > 0 else None)
    assert {m.key: m.series for m in members}["tiny_clip"] == "zero-shot"

    ticked = plan_backbones(base, "Which", ["tiny_clip", "tiny_cnn", "tiny_clip"])
    assert [m.key for m in ticked] == ["tiny_clip", "tiny_cnn"]  # once each, in the order ticked
    with pytest.raises(ConfigError, match="dinov2_vits14.*not on this machine"):
        plan_backbones(base, "Which", ["tiny_cnn", "dinov2_vits14"])
    with pytest.raises(ConfigError, match="Did you mean tiny_cnn"):
        plan_backbones(base, "Which", ["tiny_cn"])
    with pytest.raises(ConfigError, match="at least 1 epoch"):
        plan_backbones(dataclasses.replace(base, train=dataclasses.replace(base.train, epochs=0)), "Which")


def test_without_their_weights_the_tiny_foundation_backbones_are_not_offered(tmp_path):
    here, missing = backbones_here()
    assert "tiny_cnn" in here  # the session's weights folder holds tiny_cnn's only
    assert {"tiny_vit", "tiny_effnet", "tiny_clip"} <= set(missing)


@pytest.mark.slow
def test_which_backbone_end_to_end_on_the_tiny_backbones(workspace, tmp_path, all_tiny_weights):
    folder = write_image_folder(tmp_path / "images", {"red": 6, "green": 6, "blue": 6})
    experiment = start_which_backbone(workspace, base_config(folder), TINY_BACKBONES, "Which", launch=train_here)
    assert ExperimentStore(workspace).get(experiment.id) == experiment
    assert experiment.kind == "backbones" and experiment.options == {"backbones": list(TINY_BACKBONES)}
    table = experiment_table(workspace, experiment)
    assert list(table["strategy"]) == list(TINY_BACKBONES) and set(table["state"]) == {"finished"}
    assert table["best val acc"].between(0, 1).all() and (table["val images"] == 6).all()
    # a fresh workspace: each backbone computed its features, and the run recorded how fast
    assert (table["images/s of"] == RATE_OF_FEATURES).all() and (table["images/s"] > 0).all()
    sentences = explain(table, "backbones")
    best = table.loc[table["best val acc"].idxmax(), "strategy"]
    assert sentences[0].startswith("On your images") and best in sentences[0]
    assert any("computed features fastest" in s for s in sentences)
    assert any("Kornblith et al. 2019" in s and "Fang et al. 2023" in s for s in sentences)


def backbone_table(rows: list[tuple], n_val: int = 200) -> pd.DataFrame:
    """(backbone, best val acc, published %, what it measures, images/s) -> an experiment table."""
    return pd.DataFrame([{"strategy": name, "state": "finished", "final val acc": acc, "best val acc": acc,
                          "best epoch": 1, "wall time (s)": 3.0, "trainable params": 1000, "images/s": rate,
                          "images/s of": RATE_OF_FEATURES, "val images": n_val, "key": name, "run": f"r{i}",
                          "series": kind, "x": published}
                         for i, (name, acc, published, kind, rate) in enumerate(rows)], columns=TABLE_COLUMNS)


FOLLOWS = [("resnet18", 0.70, 69.8, "top-1", 900.0), ("resnet50", 0.78, 80.9, "top-1", 300.0),
           ("convnext_tiny", 0.83, 82.5, "top-1", 200.0), ("vit_b_16", 0.86, 81.1 + 4, "top-1", 80.0)]


def test_the_backbone_report_names_the_winner_speed_and_a_ranking_that_follows():
    text = " ".join(explain_backbones(backbone_table(FOLLOWS)))
    assert text.startswith("On your images, vit_b_16 reached the highest validation accuracy (86.0%), "
                           "3.0 percentage points ahead of convnext_tiny (83.0%); resnet18 was lowest (70.0%).")
    assert ("On this machine, resnet18 computed features fastest (900 images/s) and vit_b_16 slowest "
            "(80 images/s, 11.2 times slower).") in text
    assert "resnet18 ran 11.2 times as fast as vit_b_16, for 16.0 percentage points less." in text
    assert "Your ranking followed the published ImageNet accuracy closely (Spearman's rank correlation +1.00 " \
           "over 4 backbones" in text
    assert "one swap of two neighbours moves it by 0.20" in text and "a hint, not a finding" in text
    assert "Your ranking agrees with Kornblith et al. 2019" in text and "Fang et al. 2023" in text
    assert "validation set has" not in text  # 200 images: no note on chance
    assert "not of one kind" not in text and "DINOv2" not in text and "zero-shot" not in text


def test_the_backbone_report_follows_a_reversed_ranking_to_fang():
    reversed_accs = [(name, 1.5 - acc, published, kind, rate) for name, acc, published, kind, rate in FOLLOWS]
    text = " ".join(explain_backbones(backbone_table(reversed_accs)))
    assert "Your ranking ran against the published ImageNet accuracy (Spearman's rank correlation -1.00" in text
    assert "Your ranking sides with Fang et al. 2023 instead" in text
    assert "The most accurate backbone was also the fastest." in text  # resnet18 now wins


def test_the_backbone_report_marks_mixed_kinds_and_the_foundation_families():
    rows = [("resnet50", 0.80, 80.9, "top-1", 300.0), ("dinov2_vits14", 0.92, 81.1, "linear probe", None),
            ("clip_vit_b32", 0.85, 63.2, "zero-shot", 250.0)]
    text = " ".join(explain_backbones(backbone_table(rows, n_val=40)))
    assert "dinov2_vits14 reached the highest validation accuracy (92.0%), 7.0 percentage points ahead of " \
           "clip_vit_b32 (85.0%); resnet50 was lowest (80.0%)" in text
    assert "Your validation set has 40 images, so one image is 2.5%" in text
    assert "No speed for dinov2_vits14: its features came from the feature store" in text
    assert "Spearman's rank correlation +0.50 over 3 backbones" in text and "moves it by 0.50" in text
    assert "40 validation images cannot tell apart backbones less than 2.5% apart" in text
    assert "The published numbers are not of one kind (a supervised network's top-1, a self-supervised one's " \
           "linear probe, an image-text model's zero-shot accuracy; the plot marks each)" in text
    assert "DINOv2 (Oquab et al. 2023)" in text and "Radford et al. 2021" in text


def test_the_backbone_report_with_two_backbones_or_equal_numbers():
    two = " ".join(explain_backbones(backbone_table(FOLLOWS[:2])))
    assert "Of the two, resnet50 has the higher published ImageNet accuracy (80.9% against 69.8%) and it also " \
           "did better on your images; two backbones cannot show a trend." in two
    assert "Spearman" not in two
    close = " ".join(explain_backbones(backbone_table([("a", 0.800, 70.0, "top-1", 10.0),
                                                       ("b", 0.801, 75.0, "top-1", 10.0)], n_val=50)))
    assert close.startswith("On your images, all 2 backbones reached about the same validation accuracy")
    assert "on your images the two were about the same" in close
    assert "Kornblith et al. 2019 (16 ImageNet networks, 12 datasets) found" in close  # no side taken
    same_published = " ".join(explain_backbones(backbone_table([(n, acc, 1.0, "top-1", None)
                                                                for n, acc in (("a", .5), ("b", .7), ("c", .9))])))
    assert "published ImageNet accuracies are all the same" in same_published and "Spearman" not in same_published
    unpublished = backbone_table([("a", 0.5, None, "top-1", 5.0), ("b", 0.9, None, "top-1", 9.0)])
    assert "ranking" not in " ".join(explain_backbones(unpublished)).replace("no ranking", "")


def test_the_backbone_report_waits_for_two_finished_members():
    one = backbone_table(FOLLOWS[:1])
    assert explain_backbones(one) == [] and explain(one, "backbones") == []
    running = backbone_table(FOLLOWS)
    running.loc[1:, "state"] = "running"
    assert explain_backbones(running) == []


def test_the_rank_swap_step():
    assert rank_swap_step(3) == pytest.approx(0.5) and rank_swap_step(4) == pytest.approx(0.2)
    # checked against a real swap of two neighbours
    swapped = pd.Series([1, 2, 4, 3, 5]).corr(pd.Series([1, 2, 3, 4, 5]), method="spearman")
    assert 1 - swapped == pytest.approx(rank_swap_step(5))
