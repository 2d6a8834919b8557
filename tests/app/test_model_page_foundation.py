"""Model page: the timm and open_clip families in the backbone table (library, kind, what the
published accuracy measures, weights on disk), any timm name, and the zero-shot head (class words,
similar texts, 0 epochs on the Train page)."""

from __future__ import annotations

import pytest

from tests.app.conftest import no_exceptions


@pytest.fixture
def tiny_clip_weights(tmp_path, monkeypatch):
    """tiny_clip's "pretrained" weights in a TL_STUDIO_WEIGHTS folder of this test (job workers
    inherit the variable); the backbone table re-reads the weights column."""
    from tests.tiny_foundation import save_weights
    from tl_ui.models import backbone_table

    path = save_weights("tiny_clip", tmp_path / "weights")
    monkeypatch.setenv("TL_STUDIO_WEIGHTS", str(path.parent))
    backbone_table.clear()
    yield path
    backbone_table.clear()


def table_with(at, column: str):
    """The first dataframe on the page that has ``column``, or None."""
    return next((d.value for d in at.dataframe if column in d.value.columns), None)


def draft_of(workspace):
    from tl_core.config import RunConfig
    from tl_core.runs import read_draft

    return RunConfig.from_dict(read_draft(workspace))


def save_zero_shot_draft(workspace, backbone: str = "tiny_clip") -> None:
    from tl_core.config import DataConfig, HeadConfig, ModelConfig, RunConfig
    from tl_core.runs import save_draft

    save_draft(workspace, RunConfig(data=DataConfig(source=""),
                                    model=ModelConfig(backbone=backbone, head=HeadConfig(kind="zero_shot"))).to_dict())


def test_the_table_shows_each_library_and_what_its_accuracy_measures(app, tiny_clip_weights):
    app.switch_page("pages/2_model.py").run()
    no_exceptions(app)
    table = table_with(app, "library").set_index("name")
    assert table.loc["mobilenet_v2", "library"] == "torchvision"
    assert table.loc["mobilenet_v2", "accuracy"] == "ImageNet top-1 71.9%"
    dino = table.loc["dinov2_vits14"]
    assert (dino["library"], dino["kind"]) == ("timm", "self-supervised")
    assert dino["accuracy"] == "ImageNet linear probe 81.1% (Oquab et al. 2023, DINOv2)"
    clip = table.loc["clip_vit_b32"]
    assert (clip["library"], clip["kind"]) == ("open_clip", "image-text")
    assert clip["accuracy"].startswith("ImageNet zero-shot 63.2% (Radford et al. 2021")
    # offline: DINOv2's weights are not here, and the table says where they come from
    assert not dino["weights here"] and dino["get them"].startswith("https://huggingface.co/timm/")
    here = table.loc["tiny_clip"]
    assert here["weights here"] and here["on disk (MB)"] > 0 and here["get them"] == ""
    assert any("three kinds" in e.label.lower() for e in app.expander)


def test_speeds_measured_here_are_shown(app, home):
    from tl_core.model.speeds import BackboneSpeed, write_speeds
    from tl_ui.models import backbone_table

    backbone_table.clear()
    app.switch_page("pages/2_model.py").run()
    assert any("bench/backbones.py --save" in c.value for c in app.caption)  # nothing measured: how to
    write_speeds(home, [BackboneSpeed("tiny_vit", 123.0, 456.0, 0.97, "test CPU, 2 threads", "2026-12-08")])
    backbone_table.clear()
    app.run()
    no_exceptions(app)
    table = table_with(app, "library").set_index("name")
    assert (table.loc["tiny_vit", "images/s here"], table.loc["tiny_vit", "peak memory (MB)"]) == (123.0, 456.0)
    assert table["images/s here"].isna().sum() == len(table) - 1
    assert any("measured on this machine (test CPU, 2 threads, 2026-12-08)" in c.value for c in app.caption)
    backbone_table.clear()


def test_a_timm_name_that_builds_becomes_the_backbone(app, session_workspace):
    app.switch_page("pages/2_model.py").run()
    app.text_input(key="timm_name").input("test_convnext")
    app.button(key="timm_check").click().run()
    no_exceptions(app)
    assert any("it is now the chosen backbone" in s.value for s in app.success)
    assert app.selectbox(key="backbone_pick").value == "timm/test_convnext"
    assert draft_of(session_workspace).model.backbone == "timm/test_convnext"
    assert "timm/test_convnext" in list(table_with(app, "library")["name"])
    assert any("parameters will train" in m.value for m in app.markdown)  # its layer groups are drawn


def test_an_unknown_timm_name_shows_close_matches(app, session_workspace):
    app.switch_page("pages/2_model.py").run()
    app.text_input(key="timm_name").input("convnext_tinny")
    app.button(key="timm_check").click().run()
    no_exceptions(app)
    assert any("Not added" in e.value for e in app.error)
    detail = next(t.value for t in app.text if "convnext_tinny" in t.value)
    assert "Close matches" in detail and "convnext_tiny" in detail  # as text: the typed name is never Markdown
    assert app.selectbox(key="backbone_pick").value == "mobilenet_v2"


def test_zero_shot_is_offered_only_for_image_text_backbones(app):
    from tl_core.config import HEAD_LABELS

    app.switch_page("pages/2_model.py").run()
    app.selectbox(key="backbone_pick").set_value("tiny_vit").run()
    no_exceptions(app)
    assert HEAD_LABELS["zero_shot"] not in app.selectbox(key="head_kind").options
    app.selectbox(key="backbone_pick").set_value("tiny_clip").run()
    no_exceptions(app)
    assert HEAD_LABELS["zero_shot"] in app.selectbox(key="head_kind").options
    app.selectbox(key="head_kind").set_value("zero_shot").run()
    no_exceptions(app)
    assert any("Radford et al. 2021" in m.value for m in app.markdown)
    assert any("cls_03" in c.value for c in app.caption)

    app.selectbox(key="backbone_pick").set_value("tiny_vit").run()  # no text tower: back to a head it has
    no_exceptions(app)
    assert app.selectbox(key="head_kind").value != "zero_shot"


def test_edited_class_words_land_in_the_draft(app, tiny_dataset, session_workspace):
    from tl_ui.zero_shot_views import words_key

    save_zero_shot_draft(session_workspace)
    app.query_params["dataset"] = tiny_dataset
    app.switch_page("pages/2_model.py").run()
    no_exceptions(app)
    assert app.text_input(key=words_key("blue")).value == "blue"  # the folder name, as words
    assert [t.value for t in app.text if t.value in ("red", "blue")] == ["blue", "red"]  # the names as text
    app.text_input(key=words_key("red")).input("ripe tomato ,  red ball,").run()
    no_exceptions(app)
    head = draft_of(session_workspace).model.head
    assert (head.kind, head.class_words) == ("zero_shot", (("red", "ripe tomato, red ball"),))

    app.text_input(key=words_key("blue")).input("cls_03").run()  # a code, not a word
    assert any("numbers" in w.value for w in app.warning)
    assert "blue" in [t.value for t in app.text]


def test_classes_whose_texts_are_the_same_are_named(app, tiny_dataset, session_workspace, tiny_clip_weights):
    from tl_ui.zero_shot_views import words_key

    save_zero_shot_draft(session_workspace)
    app.query_params["dataset"] = tiny_dataset
    app.switch_page("pages/2_model.py").run()
    app.text_input(key=words_key("red")).input("ball")
    app.text_input(key=words_key("blue")).input("ball")
    app.button(key="similar_check").click().run()
    no_exceptions(app)
    assert any("nearly the same" in w.value for w in app.warning)
    pairs = table_with(app, "and class")
    assert {pairs.iloc[0]["class"], pairs.iloc[0]["and class"]} == {"red", "blue"}

    app.text_input(key=words_key("blue")).input("sky").run()  # the words changed: the old answer is not shown
    no_exceptions(app)
    assert table_with(app, "and class") is None
    assert any("check again" in c.value for c in app.caption)


def test_zero_epochs_start_a_pure_zero_shot_run(app, tiny_dataset, session_workspace, tiny_clip_weights):
    from tests.app.test_train_page import follow
    from tl_core.runs import RunStore

    save_zero_shot_draft(session_workspace)
    app.query_params["dataset"] = tiny_dataset
    app.switch_page("pages/3_train.py").run()
    no_exceptions(app)
    epochs = app.number_input(key="epochs")
    assert epochs.min == 0 and "pure zero-shot" in epochs.help
    epochs.set_value(0)
    app.button(key="start").click().run()
    no_exceptions(app)
    run = RunStore(session_workspace).get(app.query_params["run"])
    assert (run.config.train.epochs, run.config.model.head.kind) == (0, "zero_shot")
    assert follow(app, ("finished", "failed")) == "finished"


def test_other_heads_need_an_epoch(app, tiny_dataset, tiny_draft):
    app.query_params["dataset"] = tiny_dataset
    app.switch_page("pages/3_train.py").run()
    no_exceptions(app)
    assert app.number_input(key="epochs").min == 1
