"""Model page: the timm and open_clip families in the backbone table (library, kind, what the
published accuracy measures, weights on disk), and any timm name."""

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


def test_the_table_shows_each_library_and_what_its_accuracy_measures(app, tiny_clip_weights):
    app.switch_page("pages/2_model.py").run()
    no_exceptions(app)
    table = table_with(app, "library").set_index("name")
    assert table.loc["mobilenet_v2", "library"] == "torchvision"
    assert table.loc["mobilenet_v2", "accuracy"] == "ImageNet top-1 71.9%"
    dino = table.loc["dinov2_vits14"]
    assert (dino["library"], dino["kind"]) == ("timm", "self-supervised (no labels)")
    assert dino["accuracy"] == "ImageNet linear probe 81.1% (Oquab et al. 2023, DINOv2)"
    clip = table.loc["clip_vit_b32"]
    assert (clip["library"], clip["kind"]) == ("open_clip", "image-text (classifies from words)")
    assert clip["accuracy"].startswith("ImageNet zero-shot 63.2% (Radford et al. 2021")
    # offline: DINOv2's weights are not here, and the table says where they come from
    assert not dino["weights here"] and dino["get them"].startswith("https://huggingface.co/timm/")
    here = table.loc["tiny_clip"]
    assert here["weights here"] and here["on disk (MB)"] > 0 and here["get them"] == ""
    assert any("three kinds" in e.label.lower() for e in app.expander)


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
