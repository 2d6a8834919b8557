"""Compare page: pick strategies, one click queues one run each; the view overlays their curves,
tables them and explains them once they have finished."""

from __future__ import annotations

import json

import pytest

from tests.app.conftest import no_exceptions
from tests.tiny_backbone import NAME as TINY

PICKED = ["linear_probe", "logreg", "full_finetune"]
LABELS = ["linear probe", "logistic regression on features", "full fine-tune"]


@pytest.fixture
def no_workers(monkeypatch):
    """jobs.start_job creates the run but starts no worker process (the test trains it itself)."""
    from tl_core.jobs import launch as jobs
    from tl_core.runs import RunStore

    monkeypatch.setattr(jobs, "start_job", lambda workspace, config, **kw: RunStore(workspace).create(config).id)


@pytest.fixture
def short_draft(session_workspace):
    """The session's saved settings: 2 short epochs of the tiny test backbone, so the members train
    in a fraction of a second."""
    from tests.tiny_backbone import save_tiny_draft
    from tl_core.config import DataConfig, TrainConfig

    save_tiny_draft(session_workspace, data=DataConfig(source="", val_fraction=0.25, augment="none"),
                    train=TrainConfig(epochs=2, batch_size=8, lr=1e-2, schedule="constant"))


def chart_traces(app) -> dict[str, list[str]]:
    """Chart key (the user key, without Streamlit's id prefix) -> the names of its lines."""
    return {c.proto.id.rsplit("-", 1)[-1]: [t.get("name") for t in json.loads(c.proto.spec)["data"]]
            for c in app.get("plotly_chart")}


def test_without_a_dataset_compare_is_disabled(app):
    app.switch_page("pages/8_compare.py").run()
    no_exceptions(app)
    assert any("choose a dataset" in i.value for i in app.info)
    assert app.button(key="compare").disabled


def test_compare_starts_one_run_per_strategy_with_its_config(app, tiny_dataset, session_workspace, no_workers,
                                                             short_draft):
    from tl_core.experiments.store import ExperimentStore
    from tl_core.runs import RunStore

    app.query_params["dataset"] = tiny_dataset
    app.switch_page("pages/8_compare.py").run()
    no_exceptions(app)
    app.multiselect(key="strategies").set_value(PICKED).run()
    app.text_input(key="experiment_name").set_value("Colours <b>bold</b>").run()
    app.button(key="compare").click().run()
    no_exceptions(app)

    experiment_id = app.query_params["experiment"]
    experiment = ExperimentStore(session_workspace).get(experiment_id)
    runs = {r.id: r for r in RunStore(session_workspace).list()}
    assert len(runs) == 3 and set(runs) == {m.run_id for m in experiment.members}
    configs = {m.key: runs[m.run_id].config for m in experiment.members}
    assert configs["linear_probe"].freeze.mode == "feature_extractor"
    assert configs["linear_probe"].model.head.kind == "linear"
    assert configs["logreg"].model.head.kind == "logreg"
    assert configs["full_finetune"].freeze.mode == "full"
    assert {c.data.dataset_dir for c in configs.values()} == {str(session_workspace.datasets_dir / tiny_dataset)}
    assert {(c.train.epochs, c.train.seed, c.model.backbone) for c in configs.values()} == {(2, 0, TINY)}
    assert sorted(r.display_name() for r in runs.values()) == sorted(f"Colours <b>bold</b> · {label}"
                                                                      for label in LABELS)
    # The name is shown as text, never through Markdown.
    assert "Colours <b>bold</b>" in [t.value for t in app.text]
    assert not any("<b>" in m.value for m in app.markdown)
    table = app.dataframe[0].value
    assert list(table["strategy"]) == LABELS and set(table["state"]) == {"created"}


def test_nearest_class_mean_is_a_strategy_to_pick(app, tiny_dataset, session_workspace, no_workers, short_draft):
    from tl_core.runs import RunStore

    app.query_params["dataset"] = tiny_dataset
    app.switch_page("pages/8_compare.py").run()
    assert "nearest class mean on features" in app.multiselect(key="strategies").options
    assert any("nearest class mean on features" in m.value and "few images per class" in m.value
               for m in app.markdown)
    app.multiselect(key="strategies").set_value(["linear_probe", "nearest_mean"]).run()
    app.button(key="compare").click().run()
    no_exceptions(app)
    heads = sorted(r.config.model.head.kind for r in RunStore(session_workspace).list())
    assert heads == ["linear", "nearest_mean"]


@pytest.mark.slow
def test_the_view_overlays_labelled_curves_tables_and_explains_finished_members(
        app, tiny_dataset, session_workspace, no_workers, short_draft):
    from streamlit.testing.v1 import AppTest

    from tests.app.conftest import REPO, SESSION
    from tl_core.runs import RunStore
    from tl_core.training.trainer import train

    app.query_params["dataset"] = tiny_dataset
    app.switch_page("pages/8_compare.py").run()
    app.multiselect(key="strategies").set_value(PICKED).run()
    app.button(key="compare").click().run()
    no_exceptions(app)
    experiment_id = app.query_params["experiment"]
    for run in RunStore(session_workspace).list():
        train(run.config, run, session_workspace)  # in this process, as a worker would

    # A fresh session (a refresh) comes back to the experiment from the URL.
    fresh = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    fresh.query_params["s"] = SESSION
    fresh.query_params["experiment"] = experiment_id
    fresh.switch_page("pages/8_compare.py").run()
    no_exceptions(fresh)
    traces = chart_traces(fresh)
    assert sorted(traces) == sorted(f"experiment_{c}" for c in ("val_acc", "val_loss", "train_loss"))
    assert sorted(traces["experiment_val_acc"]) == sorted(LABELS)
    table = fresh.dataframe[0].value
    assert list(table["strategy"]) == LABELS and set(table["state"]) == {"finished"}
    assert table["best val acc"].notna().all()
    assert any(h.value == "What this shows" for h in fresh.subheader)
    assert any("On your images" in m.value for m in fresh.markdown)


def test_the_data_size_sweep_starts_one_run_per_strategy_and_share(app, tiny_dataset, session_workspace, no_workers,
                                                                   short_draft):
    from tl_core.experiments.store import ExperimentStore
    from tl_core.runs import RunStore

    app.query_params["dataset"] = tiny_dataset
    app.switch_page("pages/8_compare.py").run()
    app.radio(key="experiment_kind").set_value("data_size").run()
    no_exceptions(app)
    app.multiselect(key="sweep_strategies").set_value(["linear_probe", "random_init"]).run()
    app.multiselect(key="fractions").set_value([0.1, 1.0]).run()
    app.button(key="compare").click().run()
    no_exceptions(app)
    experiment = ExperimentStore(session_workspace).get(app.query_params["experiment"])
    assert experiment.kind == "data_size"
    runs = {r.id: r for r in RunStore(session_workspace).list()}
    got = sorted((m.key, runs[m.run_id].config.data.train_fraction) for m in experiment.members)
    assert got == [("linear_probe@0.1", 0.1), ("linear_probe@1", 1.0), ("random_init@0.1", 0.1),
                   ("random_init@1", 1.0)]


@pytest.mark.slow
def test_the_sweep_view_draws_accuracy_against_images_per_class(app, tiny_dataset, session_workspace, no_workers,
                                                                short_draft):
    from tl_core.runs import RunStore
    from tl_core.training.trainer import train

    app.query_params["dataset"] = tiny_dataset
    app.switch_page("pages/8_compare.py").run()
    app.radio(key="experiment_kind").set_value("data_size").run()
    app.multiselect(key="sweep_strategies").set_value(["linear_probe"]).run()
    app.multiselect(key="fractions").set_value([0.5, 1.0]).run()
    app.button(key="compare").click().run()
    no_exceptions(app)
    for run in RunStore(session_workspace).list():
        train(run.config, run, session_workspace)
    app.run()
    no_exceptions(app)
    [chart] = [c for c in app.get("plotly_chart") if c.proto.id.endswith("experiment_sweep")]
    spec = json.loads(chart.proto.spec)
    assert [t["name"] for t in spec["data"]] == ["linear probe"] and len(spec["data"][0]["x"]) == 2
    assert spec["layout"]["xaxis"]["type"] == "log"
    table = app.dataframe[0].value
    assert "images per class" in table.columns and set(table["state"]) == {"finished"}


def test_freeze_depth_starts_one_run_per_number_of_frozen_groups(app, tiny_dataset, session_workspace, no_workers,
                                                                  short_draft):
    from tl_core.experiments.store import ExperimentStore
    from tl_core.model.registry import body_group_names
    from tl_core.runs import RunStore

    app.query_params["dataset"] = tiny_dataset
    app.switch_page("pages/8_compare.py").run()
    app.radio(key="experiment_kind").set_value("freeze_depth").run()
    no_exceptions(app)
    app.checkbox(key="discriminative").uncheck().run()
    app.button(key="compare").click().run()
    no_exceptions(app)
    experiment = ExperimentStore(session_workspace).get(app.query_params["experiment"])
    assert experiment.kind == "freeze_depth"
    groups = len(body_group_names(TINY))
    runs = {r.id: r for r in RunStore(session_workspace).list()}
    plans = sorted((runs[m.run_id].config.freeze.mode, runs[m.run_id].config.freeze.last_n, m.x)
                   for m in experiment.members)
    # k frozen groups, 0 (a full fine-tune) ... all (a linear probe): the top G - k train.
    assert plans == sorted(("last_n", groups - k, k) for k in range(groups + 1))
    assert {runs[m.run_id].config.freeze.lr_range for m in experiment.members} == {None}


def test_zero_shot_is_offered_only_for_an_image_text_backbone(app, tiny_dataset, session_workspace, short_draft):
    app.query_params["dataset"] = tiny_dataset
    app.switch_page("pages/8_compare.py").run()
    no_exceptions(app)
    assert "zero_shot" not in app.multiselect(key="strategies").options
    assert any("Not offered: zero-shot (no training images). tiny_cnn sees images only" in c.value
               for c in app.caption)

    from streamlit.testing.v1 import AppTest

    from tests.app.conftest import REPO, SESSION
    from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from tl_core.runs import save_draft

    # the Model page picked an image-text backbone
    save_draft(session_workspace, RunConfig(data=DataConfig(source=""), model=ModelConfig(backbone="tiny_clip"),
                                            train=TrainConfig(epochs=1)).to_dict())
    clip = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    clip.query_params["s"] = SESSION
    clip.query_params["dataset"] = tiny_dataset
    clip.switch_page("pages/8_compare.py").run()
    no_exceptions(clip)
    strategies = clip.multiselect(key="strategies")
    assert "zero-shot (no training images)" in strategies.options and "zero_shot" in strategies.value
    assert not any("Not offered" in c.value for c in clip.caption)


def test_which_backbone_offers_the_backbones_with_weights_here(app, tiny_dataset, session_workspace, no_workers,
                                                               short_draft, all_tiny_weights):
    from tests.conftest import TINY_BACKBONES
    from tl_core.experiments.store import ExperimentStore
    from tl_core.runs import RunStore

    app.query_params["dataset"] = tiny_dataset
    app.switch_page("pages/8_compare.py").run()
    app.radio(key="experiment_kind").set_value("backbones").run()
    no_exceptions(app)
    assert set(TINY_BACKBONES) <= set(app.multiselect(key="backbones").options)
    assert any(c.value.startswith("Not offered, their weights are not on this machine:") and "dinov2\\_vits14" in c.value
               for c in app.caption)
    app.multiselect(key="backbones").set_value(["tiny_cnn", "tiny_vit"]).run()
    app.button(key="compare").click().run()
    no_exceptions(app)
    experiment = ExperimentStore(session_workspace).get(app.query_params["experiment"])
    runs = {r.id: r for r in RunStore(session_workspace).list()}
    assert experiment.kind == "backbones"
    assert sorted(runs[m.run_id].config.model.backbone for m in experiment.members) == ["tiny_cnn", "tiny_vit"]
    assert {runs[m.run_id].config.model.head.kind for m in experiment.members} == {"linear"}


@pytest.mark.slow
def test_which_backbone_plots_two_finished_members(app, tiny_dataset, session_workspace, no_workers, short_draft,
                                                   all_tiny_weights):
    from tl_core.runs import RunStore
    from tl_core.training.trainer import train

    app.query_params["dataset"] = tiny_dataset
    app.switch_page("pages/8_compare.py").run()
    app.radio(key="experiment_kind").set_value("backbones").run()
    app.multiselect(key="backbones").set_value(["tiny_cnn", "tiny_vit"]).run()
    app.button(key="compare").click().run()
    for run in RunStore(session_workspace).list():
        train(run.config, run, session_workspace)  # in this process, as a worker would
    app.run()
    no_exceptions(app)
    charts = {c.proto.id.rsplit("-", 1)[-1]: json.loads(c.proto.spec) for c in app.get("plotly_chart")}
    speed = [text for trace in charts["experiment_backbone_speed"]["data"] for text in trace["text"]]
    assert sorted(speed) == ["tiny_cnn", "tiny_vit"]
    # tiny_cnn publishes no accuracy: only tiny_vit has a point against the published one
    assert [t for trace in charts["experiment_backbone_published"]["data"] for t in trace["text"]] == ["tiny_vit"]
    assert charts["experiment_backbone_speed"]["layout"]["xaxis"]["type"] == "log"
    table = app.dataframe[0].value
    assert sorted(table["backbone"]) == ["tiny_cnn", "tiny_vit"] and set(table["state"]) == {"finished"}
    assert "published ImageNet acc (%)" in table.columns
    assert any(h.value == "What this shows" for h in app.subheader)
    assert any("On your images" in m.value and "computed features fastest" in m.value for m in app.markdown)
