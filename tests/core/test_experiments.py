"""Experiments: a strategy comparison's members share data, split, seed and budget and differ only
where their strategy says; the file round-trips; the table reads finished runs; the explanation
follows the numbers."""

from __future__ import annotations

import dataclasses
import sys

import pandas as pd
import pytest
import torch

from tests.tiny_backbone import NAME as TINY
from tl_core.config import DataConfig, FreezePlan, HeadConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.errors import ConfigError, ExperimentNotFound
from tl_core.experiments.columns import TABLE_COLUMNS
from tl_core.experiments.plan import plan_strategies, start_experiment
from tl_core.experiments.report import explain
from tl_core.experiments.store import ExperimentStore
from tl_core.experiments.strategies import STRATEGIES, StrategyOptions, unavailable
from tl_core.experiments.table import experiment_table
from tl_core.runs import RunStore

torch.set_num_threads(2)


def base_config(folder, **train_kw) -> RunConfig:
    train = dict(epochs=8, batch_size=8, lr=1e-2, schedule="constant", seed=3)
    train.update(train_kw)
    return RunConfig(data=DataConfig(source=str(folder), val_fraction=0.25, split_seed=5, augment="none"),
                     model=ModelConfig(backbone=TINY, head=HeadConfig(kind="mlp", hidden=64)),
                     freeze=FreezePlan(train_bn=True), train=TrainConfig(**train), name="ignored")


def create_only(workspace, config) -> str:
    """A launcher that creates the run and starts nothing."""
    return RunStore(workspace).create(config).id


def train_here(workspace, config) -> str:
    """A launcher that trains the run in this process (no worker)."""
    from tl_core.training.trainer import train

    run = RunStore(workspace).create(config)
    train(config, run, workspace)
    return run.id


def flat(d: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in d.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_engine_module_has_no_streamlit():
    import subprocess

    code = ("import sys, tl_core.experiments.plan, tl_core.experiments.report, tl_core.experiments.store, "
            "tl_core.experiments.strategies, tl_core.experiments.table, tl_core.experiments.columns; print('streamlit' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() \
        == "False"


# What each strategy changes in a base config with an MLP head, the feature-extractor plan (last_n=1,
# probe_epochs=1, no lr_range, BatchNorm statistics updated) and pretrained weights; everything else
# must be the base's. A probe keeps the backbone as pretrained, BatchNorm statistics too.
PROBE = {"model.head.kind", "freeze.train_bn"}
EXPECTED_CHANGES = {
    "linear_probe": PROBE,
    "logreg": PROBE,
    "linear_svm": PROBE,
    "lda": PROBE,
    "nearest_mean": PROBE,
    "top_n": {"model.head.kind", "freeze.mode", "freeze.last_n"},
    "top_n_discriminative": {"model.head.kind", "freeze.mode", "freeze.last_n", "freeze.lr_range"},
    "lp_ft": {"model.head.kind", "freeze.mode", "freeze.probe_epochs"},
    "full_finetune": {"model.head.kind", "freeze.mode"},
    "random_init": {"model.head.kind", "freeze.mode", "model.pretrained"},
    "zero_shot": PROBE | {"train.epochs"},  # on an image-text backbone
}


def test_every_strategy_is_listed_with_what_it_changes():
    assert set(STRATEGIES) == set(EXPECTED_CHANGES)
    for strategy in STRATEGIES.values():
        assert strategy.label and strategy.explanation and "\n" not in strategy.explanation


def test_each_member_differs_from_the_base_only_where_its_strategy_says(tmp_path):
    base = base_config(tmp_path)
    offered = [k for k in STRATEGIES if k not in unavailable(base)]
    assert offered == [k for k in STRATEGIES if k != "zero_shot"]  # tiny_cnn sees images only
    members = plan_strategies(base, offered, StrategyOptions(top_n=3), "Cats")
    assert [m.key for m in members] == offered
    clip = dataclasses.replace(base, model=dataclasses.replace(base.model, backbone="tiny_clip"))
    members += plan_strategies(clip, ["zero_shot"], StrategyOptions(top_n=3), "Cats")
    for member in members:
        before = flat((clip if member.key == "zero_shot" else base).to_dict())
        after = flat(member.config.to_dict())
        changed = {k for k in before if before[k] != after[k]} - {"name"}
        assert changed == EXPECTED_CHANGES[member.key], member.key
        assert member.config.name == f"Cats · {member.label}"
    by_key = {m.key: m.config for m in members}
    assert by_key["top_n"].freeze.last_n == 3 and "top 3" in STRATEGIES["top_n"].label_for(StrategyOptions(3))
    assert by_key["top_n_discriminative"].freeze.lr_range == pytest.approx((1e-4, 1e-2))
    assert by_key["lp_ft"].freeze.probe_epochs == 2  # a quarter of 8 epochs
    assert by_key["linear_probe"].model.head.kind == "linear" and by_key["logreg"].model.head.kind == "logreg"
    assert by_key["nearest_mean"].model.head.kind == "nearest_mean"
    assert by_key["random_init"].model.pretrained is False and by_key["random_init"].freeze.mode == "full"
    frozen = {"linear_probe", "logreg", "linear_svm", "lda", "nearest_mean", "zero_shot"}
    assert all(c.freeze.train_bn is (k not in frozen) for k, c in by_key.items())  # the base's, but in probes


def test_every_member_trains_on_the_same_split_seed_backbone_and_budget(workspace, image_folder):
    from tl_core.model.registry import get_backbone
    from tl_core.training.session import prepare_data

    base = base_config(image_folder)
    # every strategy tiny_cnn is offered (zero-shot, on image-text backbones, trains no epoch)
    members = plan_strategies(base, [k for k in STRATEGIES if k not in unavailable(base)], StrategyOptions(), "Same")
    for m in members:
        c = m.config
        assert (c.data, c.train, c.model.backbone) == (base.data, base.train, base.model.backbone)
    preprocess = get_backbone(TINY).preprocess
    splits = {(tuple(d.train), tuple(d.val), tuple(d.test))
              for d in (prepare_data(m.config, workspace, preprocess) for m in members)}
    assert len(splits) == 1
    train_idx, val_idx, _ = splits.pop()
    assert val_idx and train_idx and not set(train_idx) & set(val_idx)


def test_planning_refuses_what_cannot_run(tmp_path):
    base = base_config(tmp_path)
    with pytest.raises(ConfigError, match="Unknown strategy"):
        plan_strategies(base, ["linear_probe", "nope"], StrategyOptions(), "x")
    with pytest.raises(ConfigError, match="at least one"):
        plan_strategies(base, [], StrategyOptions(), "x")
    with pytest.raises(ConfigError, match="2 epochs"):
        plan_strategies(base_config(tmp_path, epochs=1), ["lp_ft"], StrategyOptions(), "x")
    with pytest.raises(ConfigError, match="N of at least 1"):
        plan_strategies(base, ["top_n"], StrategyOptions(top_n=0), "x")


def test_the_experiment_file_round_trips_and_lists_normal_runs(workspace, image_folder):
    base = base_config(image_folder)
    experiment = start_experiment(workspace, base, ["full_finetune", "linear_probe", "random_init"], "  My   test ",
                                  top_n=2, launch=create_only)
    assert experiment.name == "My test"
    assert [m.key for m in experiment.members] == ["linear_probe", "full_finetune", "random_init"]
    store = ExperimentStore(workspace)
    assert (workspace.root / "experiments" / experiment.id / "experiment.json").exists()
    assert store.get(experiment.id) == experiment
    assert [e.id for e in store.list()] == [experiment.id]
    runs = RunStore(workspace)
    for member in experiment.members:
        run = runs.get(member.run_id)
        assert run.config == member.config
        assert run.display_name() == f"My test · {member.label}"
    with pytest.raises(ExperimentNotFound):
        store.get("nope")
    with pytest.raises(ExperimentNotFound):
        store.get("../etc")


def test_a_launch_failing_part_way_leaves_a_file_listing_the_runs_that_started(workspace, image_folder):
    calls = []

    def flaky(ws, config):
        if calls:
            raise ConfigError("the second one fails")
        calls.append(config)
        return create_only(ws, config)

    with pytest.raises(ConfigError):
        start_experiment(workspace, base_config(image_folder), ["linear_probe", "full_finetune"], "x", launch=flaky)
    [saved] = ExperimentStore(workspace).list()
    assert [bool(m.run_id) for m in saved.members] == [True, False]


@pytest.mark.slow
def test_lp_ft_trains_the_head_alone_then_every_layer(workspace, image_folder):
    """A real run: epoch 1 trains only the head (the body's weights stay), epoch 2 every parameter."""
    from tl_core import events as ev
    from tl_core.training.trainer import train

    base = base_config(image_folder, epochs=2, lr=1e-3)
    [member] = plan_strategies(base, ["lp_ft"], StrategyOptions(), "lpft")
    assert member.config.freeze.probe_epochs == 1
    run = RunStore(workspace).create(member.config)
    seen: list = []
    train(member.config, run, workspace, subscribers=[seen.append])
    epochs = [e for e in seen if isinstance(e, ev.EpochEnded)]
    started = next(e for e in seen if isinstance(e, ev.RunStarted))
    assert not started.feature_cache  # the body trains later: no cached features
    assert epochs[0].trainable_params < started.total_params / 100  # the head alone
    assert epochs[1].trainable_params == started.total_params  # then everything


@pytest.mark.slow
def test_the_table_reads_finished_members_and_explain_uses_their_numbers(workspace, image_folder):
    base = base_config(image_folder, epochs=2)
    experiment = start_experiment(workspace, base, ["linear_probe", "logreg", "random_init"], "Colours",
                                  launch=train_here)
    table = experiment_table(workspace, experiment)
    assert list(table.columns) == TABLE_COLUMNS
    assert list(table["strategy"]) == ["linear probe", "logistic regression on features", "random init (no transfer)"]
    assert list(table["state"]) == ["finished"] * 3
    assert table["best val acc"].between(0, 1).all() and table["final val acc"].between(0, 1).all()
    assert (table["best val acc"] >= table["final val acc"]).all()
    assert (table["wall time (s)"] >= 0).all() and (table["val images"] == 9).all()
    rows = table.set_index("key")
    assert rows.loc["random_init", "trainable params"] > 100 * rows.loc["linear_probe", "trainable params"]
    assert rows.loc["random_init", "images/s of"] == "training steps" and rows.loc["random_init", "images/s"] > 0
    assert rows.loc["linear_probe", "images/s of"] == "backbone feature extraction"
    assert rows.loc["logreg", "best epoch"] == 1
    sentences = explain(table)
    best = rows["best val acc"].idxmax()
    assert sentences and (rows.loc[best, "strategy"] in sentences[0] or "about the same" in sentences[0])
    assert any("Kornblith et al. 2019" in s for s in sentences)


def test_the_nearest_class_mean_strategy_fits_prototypes_beside_the_probe(workspace, image_folder):
    base = base_config(image_folder, epochs=3)
    experiment = start_experiment(workspace, base, ["linear_probe", "nearest_mean"], "Prototypes",
                                  launch=train_here)
    table = experiment_table(workspace, experiment).set_index("key")
    assert list(table["state"]) == ["finished"] * 2
    assert table.loc["nearest_mean", "strategy"] == "nearest class mean on features"
    assert table.loc["nearest_mean", "best epoch"] == 1  # fitted once
    assert table.loc["nearest_mean", "best val acc"] >= 0.8
    run = RunStore(workspace).get(table.loc["nearest_mean", "run"])
    assert run.config.model.head.kind == "nearest_mean" and run.config.freeze.mode == "feature_extractor"
    assert any("Snell et al. 2017" in s for s in explain(table.reset_index()))


def test_explain_puts_the_nearest_class_mean_beside_the_probe():
    said = " ".join(explain(fake_table({"linear_probe": 0.80, "nearest_mean": 0.90})))
    assert "The nearest class mean (90.0%), which learns nothing but each class's average features, beat the " \
           "trained linear probe (80.0%)" in said
    assert "nearest class mean on features 90.0%" in said  # with the other heads on the same features
    assert "Wang et al. 2019" in said
    assert "trailed" in " ".join(explain(fake_table({"linear_probe": 0.90, "nearest_mean": 0.80})))


def fake_table(accs: dict[str, float], n_val: int = 100, state: str = "finished") -> pd.DataFrame:
    rows = [{"strategy": STRATEGIES[k].label_for(StrategyOptions()), "state": state, "final val acc": acc,
             "best val acc": acc, "best epoch": 3, "wall time (s)": 10.0 + i, "trainable params": 1000,
             "images/s": 50.0, "images/s of": "training steps", "val images": n_val, "key": k, "run": f"r{i}"}
            for i, (k, acc) in enumerate(accs.items())]
    return pd.DataFrame(rows, columns=TABLE_COLUMNS)


def test_explain_says_pretrained_won_only_when_it_did():
    won = " ".join(explain(fake_table({"full_finetune": 0.90, "random_init": 0.60})))
    assert "pretrained weights (full fine-tune, 90.0%) beat the same network from random initialisation (60.0%) " \
           "by 30.0 percentage points" in won
    assert "He et al. 2019" in won
    lost = " ".join(explain(fake_table({"full_finetune": 0.60, "random_init": 0.90})))
    assert "random initialisation (90.0%) beat pretrained weights" in lost
    assert "Starting from pretrained weights" not in lost
    tied = " ".join(explain(fake_table({"full_finetune": 0.80, "random_init": 0.795})))
    assert "about the same" in tied and "beat" not in tied.split("Studies")[0]


def test_explain_follows_probe_versus_fine_tune_and_lp_ft():
    ft_won = " ".join(explain(fake_table({"linear_probe": 0.80, "lp_ft": 0.95, "full_finetune": 0.90})))
    assert "Fine-tuning everything (90.0%) beat the linear probe (80.0%)" in ft_won
    assert "LP-FT (95.0%) beat plain fine-tuning (90.0%)" in ft_won and "Kumar et al. 2022" in ft_won
    assert ft_won.startswith("On your images, LP-FT")
    probe_won = " ".join(explain(fake_table({"linear_probe": 0.95, "lp_ft": 0.80, "full_finetune": 0.90})))
    assert "The linear probe (95.0%) beat fine-tuning everything (90.0%)" in probe_won
    assert "Fine-tuning everything (90.0%) beat" not in probe_won
    assert "LP-FT (80.0%) trailed plain fine-tuning" in probe_won


def test_explain_counts_one_validation_image_as_chance():
    sentences = explain(fake_table({"linear_probe": 0.90, "full_finetune": 0.95}, n_val=20))  # one image = 5%
    assert "about the same" in sentences[0]
    assert any("20 images, so one image is 5.0%" in s for s in sentences)


def test_explain_waits_for_two_finished_members():
    assert explain(fake_table({"linear_probe": 0.9})) == []
    assert explain(fake_table({"linear_probe": 0.9, "full_finetune": 0.8}, state="running")) == []
    unfinished = fake_table({"linear_probe": 0.9, "full_finetune": 0.8})
    unfinished.loc[1, "state"] = "running"
    assert explain(unfinished) == []


def test_the_table_marks_a_deleted_member(workspace, image_folder):
    experiment = start_experiment(workspace, base_config(image_folder), ["linear_probe", "full_finetune"], "x",
                                  launch=create_only)
    RunStore(workspace).delete(experiment.members[0].run_id)
    table = experiment_table(workspace, experiment)
    assert list(table["state"]) == ["deleted", "created"]
    assert table["best val acc"].isna().all()


def test_member_names_fit_a_run_name(tmp_path):
    from tl_core.runs import MAX_NAME_LENGTH

    base = base_config(tmp_path)
    [member] = plan_strategies(base, ["random_init"], StrategyOptions(), "n" * 300)
    assert len(member.config.name) <= MAX_NAME_LENGTH and member.config.name.endswith("· random init (no transfer)")
    assert dataclasses.replace(member.config, name="").to_dict()["name"] == ""


# ----------------------------------------------------------------------------------------------
# Data-size sweep and freeze depth
# ----------------------------------------------------------------------------------------------
def test_the_training_subset_is_stratified_nested_and_keeps_validation(workspace, tmp_path):
    from tests.conftest import write_image_folder
    from tl_core.model.registry import get_backbone
    from tl_core.training.session import prepare_data

    folder = write_image_folder(tmp_path / "uneven", {"red": 30, "green": 12, "blue": 5})
    base = base_config(folder)
    preprocess = get_backbone(TINY).preprocess
    data = {f: prepare_data(dataclasses.replace(base, data=dataclasses.replace(base.data, train_fraction=f)),
                            workspace, preprocess) for f in (0.05, 0.1, 0.25, 0.5, 1.0)}
    full = data[1.0]
    previous: set[int] = set()
    for fraction, d in data.items():
        assert (d.val, d.test) == (full.val, full.test)  # validation unchanged
        assert set(d.train) <= set(full.train) and previous <= set(d.train)  # nested
        previous = set(d.train)
        per_class = {c: sum(1 for i in d.train if d.labels[i] == c) for c in range(3)}
        whole = {c: sum(1 for i in full.train if full.labels[i] == c) for c in range(3)}
        for c in range(3):  # stratified: each class keeps its share, and at least one image
            assert per_class[c] == max(1, int(whole[c] * fraction + 0.5))
    assert len(data[0.05].train) == 3  # one image per class


def test_a_fraction_outside_zero_to_one_is_refused(tmp_path):
    for bad in (0.0, -0.1, 1.5):
        config = base_config(tmp_path)
        with pytest.raises(ConfigError, match="above 0 and at most 1"):
            dataclasses.replace(config, data=dataclasses.replace(config.data, train_fraction=bad)).validate()


def test_sweep_members_differ_only_in_train_fraction_and_strategy(tmp_path):
    from tl_core.experiments.plan import DATA_FRACTIONS, DEFAULT_SWEEP_STRATEGIES, plan_data_size

    base = base_config(tmp_path)
    members = plan_data_size(base, DEFAULT_SWEEP_STRATEGIES, StrategyOptions(), "Sweep")
    assert len(members) == 3 * len(DATA_FRACTIONS)
    strategies = {m.key: m for m in plan_strategies(base, DEFAULT_SWEEP_STRATEGIES, StrategyOptions(), "Sweep")}
    for member in members:
        key, _, share = member.key.rpartition("@")
        assert member.series == strategies[key].label
        assert member.config.data.train_fraction == float(share)
        expected = dataclasses.replace(strategies[key].config, name=member.config.name,
                                       data=dataclasses.replace(base.data, train_fraction=float(share)))
        assert member.config == expected
    assert [m.config.data.train_fraction for m in members[:5]] == list(DATA_FRACTIONS)
    with pytest.raises(ConfigError, match="at most 100%"):
        plan_data_size(base, ["linear_probe"], StrategyOptions(), "x", fractions=[0.5, 2.0])


def test_freeze_depth_members_go_from_full_fine_tune_to_probe(tmp_path):
    from tl_core.experiments.plan import plan_freeze_depth
    from tl_core.model.registry import body_group_names

    base = base_config(tmp_path)
    groups = len(body_group_names(TINY))
    members = plan_freeze_depth(base, "Depth")
    one = [m for m in members if m.key.startswith("one_lr@")]
    spread = [m for m in members if m.key.startswith("discriminative@")]
    assert [m.config.freeze.last_n for m in one] == list(range(groups, -1, -1))
    assert [m.x for m in one] == [float(k) for k in range(groups + 1)]
    assert [m.config.freeze.last_n for m in spread] == list(range(groups, 0, -1))
    assert all(m.config.freeze.lr_range == pytest.approx((1e-4, 1e-2)) for m in spread)
    before = flat(base.to_dict())
    for m in members:
        changed = {k for k, v in flat(m.config.to_dict()).items() if before[k] != v} - {"name"}
        assert changed <= {"model.head.kind", "freeze.mode", "freeze.last_n", "freeze.lr_range"}, m.key
    assert len(plan_freeze_depth(base, "Depth", discriminative=False)) == groups + 1


def test_sweep_explanations_follow_the_numbers():
    from tl_core.experiments.report import explain

    def row(key, series, acc, per_class=None, x=None):
        return {"strategy": key, "state": "finished", "final val acc": acc, "best val acc": acc, "best epoch": 1,
                "val images": 100, "images per class": per_class, "key": key, "series": series, "x": x}

    sweep = pd.DataFrame([row("linear_probe@0.05", "linear probe", 0.80, 2), row("random_init@0.05", "random", 0.30, 2),
                          row("linear_probe@1", "linear probe", 0.95, 40), row("random_init@1", "random", 0.85, 40)],
                         columns=TABLE_COLUMNS)
    text = " ".join(explain(sweep, "data_size"))
    assert "helped most with about 2 images per class" in text and "50.0 percentage points" in text
    assert "He et al. 2019" in text
    depth = pd.DataFrame([row("one_lr@0", "one", 0.90, x=0), row("one_lr@3", "one", 0.95, x=3),
                          row("one_lr@5", "one", 0.80, x=5)], columns=TABLE_COLUMNS)
    text = " ".join(explain(depth, "freeze_depth"))
    assert "with 3 groups frozen" in text and "(95.0%)" in text and "Yosinski et al. 2014" in text


@pytest.mark.slow
def test_a_two_member_sweep_trains_on_its_share_of_the_images(workspace, image_folder):
    from tl_core.experiments.plan import start_data_size

    base = base_config(image_folder, epochs=1)
    experiment = start_data_size(workspace, base, ["linear_probe"], "Tiny", fractions=[0.25, 1.0], launch=train_here)
    assert ExperimentStore(workspace).get(experiment.id) == experiment
    table = experiment_table(workspace, experiment)
    assert list(table["state"]) == ["finished", "finished"]
    assert list(table["train images"]) == [6, 27] and list(table["images per class"]) == [2, 9]
    assert (table["val images"] == 9).all() and table["best val acc"].between(0, 1).all()
    assert explain(table, "data_size")


@pytest.mark.slow
def test_a_sweeps_frozen_members_compute_backbone_features_once(workspace, image_folder, monkeypatch):
    """Every share of a frozen strategy trains on rows of the full training set's stored features:
    the backbone sees each training image once per view and each validation image once, for all
    shares and both frozen strategies together (before, each share computed its own features)."""
    import time

    import tl_core.training.trainer as training
    from tl_core.experiments.plan import start_data_size

    images_through_backbone: list[int] = []
    real_extract = training.extract_features

    def counting_extract(body, loader, *args, **kw):
        feats, labels = real_extract(body, loader, *args, **kw)
        images_through_backbone.append(len(labels))
        return feats, labels

    monkeypatch.setattr(training, "extract_features", counting_extract)
    base = base_config(image_folder, epochs=2)
    base = dataclasses.replace(base, data=dataclasses.replace(base.data, augment="light"))
    started = time.perf_counter()
    experiment = start_data_size(workspace, base, ["linear_probe", "logreg"], "Frozen", fractions=[0.25, 0.5, 1.0],
                                 launch=train_here)
    seconds = time.perf_counter() - started
    table = experiment_table(workspace, experiment)
    assert list(table["state"]) == ["finished"] * 6
    n_train, n_val = 27, 9
    # Per share, what computing each share's own features would cost: (2 light views + the eval view
    # of logreg) of the share's images, plus validation once per store key (it is shared already).
    own = sum(table["train images"]) // 2 * 3 + n_val
    print(f"\nsweep of 6 frozen members: {sum(images_through_backbone)} images through the backbone "
          f"(each share computing its own: {own}), {seconds:.1f} s")
    # Two light views for the linear probe, the eval view for logreg: all over the full training set.
    assert sum(images_through_backbone) == 3 * n_train + n_val
    assert sorted(images_through_backbone) == sorted([n_train, n_val, n_train, n_train])
    assert list(table["train images"]) == [6, 15, 27] * 2  # each member still trained on its share


@pytest.mark.slow
def test_a_share_trains_the_same_whether_or_not_the_full_run_stored_its_features(workspace, image_folder, tmp_path):
    """A share's features are rows of the whole training set's, computed or loaded: the same run
    alone in a fresh workspace and after the full run gives the same numbers."""
    from tl_core.training.trainer import train
    from tl_core.workspace import Workspace

    full = base_config(image_folder, epochs=2)
    full = dataclasses.replace(full, data=dataclasses.replace(full.data, augment="light"),
                               freeze=FreezePlan(mode="feature_extractor"))
    share = dataclasses.replace(full, data=dataclasses.replace(full.data, train_fraction=0.5))

    def history(ws, config) -> list[tuple[float, float]]:
        result = train(config, RunStore(ws).create(config), ws)
        return [(h["train_loss"], h["val_loss"]) for h in result["history"]]

    alone = history(Workspace(tmp_path / "fresh"), share)
    history(workspace, full)
    assert history(workspace, share) == alone
