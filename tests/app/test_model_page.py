"""Model page: backbone table, freezing presets and the live parameter count."""

from __future__ import annotations

import io
import re

import pytest

from tests.app.conftest import no_exceptions


def trainable_line(at) -> tuple[int, int]:
    line = next(m.value for m in at.markdown if "parameters will train" in m.value)
    numbers = [int(n.replace(",", "")) for n in re.findall(r"[\d,]{2,}", line)]
    return numbers[0], numbers[1]


def test_defaults_are_mobilenet_v2_as_a_feature_extractor(app):
    app.switch_page("pages/2_model.py").run()
    no_exceptions(app)
    assert app.selectbox(key="backbone_pick").value == "mobilenet_v2"
    assert app.radio(key="freeze_mode").value == "feature_extractor"
    table = app.dataframe[0].value  # the backbone table
    assert "mobilenet_v2" in list(table["name"])
    assert bool(table.set_index("name").loc["mobilenet_v2", "weights here"])  # bundled weights
    trainable, total = trainable_line(app)
    assert 0 < trainable < total / 100  # only the head


def test_presets_change_what_trains(app):
    app.switch_page("pages/2_model.py").run()
    head_only, total = trainable_line(app)
    app.radio(key="freeze_mode").set_value("last_n").run()
    no_exceptions(app)
    top_one, _ = trainable_line(app)
    app.radio(key="freeze_mode").set_value("full").run()
    everything, total_again = trainable_line(app)
    assert head_only < top_one < everything == total == total_again


def test_classical_head_with_fine_tuning_warns(app):
    app.switch_page("pages/2_model.py").run()
    app.radio(key="freeze_mode").set_value("full").run()
    app.selectbox(key="head_kind").set_value("logreg").run()
    no_exceptions(app)
    assert any("Feature extractor" in w.value for w in app.warning)


def test_nearest_mean_and_knn_are_offered_and_explained(app, session_workspace):
    from tl_core.config import HEAD_HELP, HEAD_LABELS, RunConfig
    from tl_core.runs import read_draft

    app.switch_page("pages/2_model.py").run()
    options = list(app.selectbox(key="head_kind").options)
    assert HEAD_LABELS["nearest_mean"] in options and HEAD_LABELS["knn"] in options

    app.selectbox(key="head_kind").set_value("nearest_mean").run()
    no_exceptions(app)
    assert any(HEAD_HELP["nearest_mean"] == c.value for c in app.caption)
    assert "knn_neighbours" not in [n.key for n in app.number_input]
    assert RunConfig.from_dict(read_draft(session_workspace)).model.head.kind == "nearest_mean"
    assert not any("Feature extractor" in w.value or "balancing" in w.value for w in app.warning)

    app.selectbox(key="head_kind").set_value("knn").run()
    assert any(HEAD_HELP["knn"] == c.value for c in app.caption)
    app.number_input(key="knn_neighbours").set_value(3).run()
    no_exceptions(app)
    head = RunConfig.from_dict(read_draft(session_workspace)).model.head
    assert (head.kind, head.neighbours) == ("knn", 3)
    line = next(m.value for m in app.markdown if "parameters will train" in m.value)
    assert line.startswith("**0 of ")  # a knn head has no weights: it keeps the training images' features


def test_knn_with_class_balancing_warns(app, session_workspace):
    from tl_core.config import DataConfig, RunConfig, TrainConfig
    from tl_core.runs import save_draft

    save_draft(session_workspace, RunConfig(data=DataConfig(source=""), train=TrainConfig(balance="sampler")).to_dict())
    app.switch_page("pages/2_model.py").run()
    app.selectbox(key="head_kind").set_value("knn").run()
    no_exceptions(app)
    assert any("no class balancing" in w.value for w in app.warning)


def test_model_choices_come_back_after_a_refresh(home):
    """A refresh is a new script session with the same URL: the choices are read back from disk."""
    from streamlit.testing.v1 import AppTest

    from tests.app.conftest import REPO, SESSION

    first = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    first.query_params["s"] = SESSION
    first.switch_page("pages/2_model.py").run()
    first.radio(key="freeze_mode").set_value("full").run()
    no_exceptions(first)

    refreshed = AppTest.from_file(str(REPO / "app.py"), default_timeout=60)
    refreshed.query_params["s"] = SESSION
    refreshed.switch_page("pages/2_model.py").run()
    no_exceptions(refreshed)
    assert refreshed.radio(key="freeze_mode").value == "full"


def test_option_lists_are_the_configs_choices(app):
    from tl_core.config import FREEZE_MODE_LABELS, HEAD_LABELS, FreezeMode, HeadKind, choices

    app.switch_page("pages/2_model.py").run()
    no_exceptions(app)
    assert list(app.radio(key="freeze_mode").options) == [FREEZE_MODE_LABELS[m] for m in choices(FreezeMode)]
    # mobilenet_v2 has no text tower: every head but the zero-shot one (tests/app/test_model_page_foundation.py)
    assert list(app.selectbox(key="head_kind").options) == [HEAD_LABELS[k] for k in choices(HeadKind)
                                                            if k != "zero_shot"]


# ----------------------------------------------------------------------------- recipes and weights
@pytest.fixture
def no_vgg_weights(tmp_path, monkeypatch):
    """An empty torch hub cache and no weights folder: only the bundled mobilenet_v2 is here."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch_home"))
    monkeypatch.delenv("TL_STUDIO_WEIGHTS", raising=False)
    monkeypatch.setenv("TL_STUDIO_OFFLINE", "1")
    from tl_ui.models import backbone_table

    backbone_table.clear()
    yield tmp_path / "torch_home" / "hub" / "checkpoints"
    backbone_table.clear()


def test_classic_recipe_sets_the_model_and_the_train_page(app, tiny_dataset, no_vgg_weights):
    app.query_params["dataset"] = tiny_dataset
    app.switch_page("pages/2_model.py").run()
    no_exceptions(app)
    assert app.selectbox(key="recipe_pick").value == "classic"
    assert any("vgg16-397923af.pth" in w.value and "Add pretrained weights" in w.value for w in app.warning)
    assert not any("follow this recipe" in s.value for s in app.success)

    app.button(key="recipe_apply").click().run()
    no_exceptions(app)
    assert app.selectbox(key="backbone_pick").value == "vgg16"
    assert app.radio(key="freeze_mode").value == "feature_extractor"
    assert app.selectbox(key="head_kind").value == "mlp"
    assert app.radio(key="head_pool").value == "flatten" and not app.radio(key="head_pool").disabled
    assert (app.number_input(key="mlp_hidden").value, app.slider(key="mlp_dropout").value) == (1024, 0.0)
    assert any("follow this recipe on vgg16" in s.value for s in app.success)
    trainable, _ = trainable_line(app)
    assert trainable == 25088 * 1024 + 1024 + 1024 * 2 + 2  # Dense(1024) + Dense(2) on the flattened map

    app.switch_page("pages/3_train.py").run()
    no_exceptions(app)
    assert app.number_input(key="epochs").value == 10
    assert app.select_slider(key="batch_size").value == 32
    assert app.select_slider(key="lr").value == 1e-4
    assert app.selectbox(key="optimizer").value == "rmsprop_keras"
    assert app.selectbox(key="schedule").value == "constant"
    assert app.select_slider(key="weight_decay").value == 0.0
    assert app.slider(key="label_smoothing").value == 0.0
    assert app.number_input(key="patience").value == 0
    assert app.radio(key="augment").value == "none"


def test_recipe_on_a_backbone_whose_weights_are_here(app, no_vgg_weights):
    """VGG16's weights missing: the recipe says how to add them (upload or folder) and offers itself
    on the backbone whose weights are here."""
    app.switch_page("pages/2_model.py").run()
    warning = next(w.value for w in app.warning if "vgg16-397923af.pth" in w.value)
    assert "upload it" in warning and "folder on this server" in warning
    assert app.button(key="recipe_apply_fallback").label == "Use this recipe with mobilenet_v2"
    app.button(key="recipe_apply_fallback").click().run()
    no_exceptions(app)
    assert app.selectbox(key="backbone_pick").value == "mobilenet_v2"
    assert app.selectbox(key="head_kind").value == "mlp"
    pool = app.radio(key="head_pool")
    assert pool.value == "avg" and pool.disabled
    assert any("Flatten is VGG's" in c.value for c in app.caption)
    assert any("average pooling instead of Flatten" in c.value for c in app.caption)
    assert any("follow this recipe on mobilenet_v2" in s.value for s in app.success)


class Upload(io.BytesIO):
    """What st.file_uploader hands the page: a file object with a name."""

    def __init__(self, name: str, data: bytes) -> None:
        super().__init__(data)
        self.name = name


def _fake_uploader(monkeypatch, upload: Upload) -> None:
    import streamlit as st

    real_uploader = st.file_uploader

    def fake_uploader(label, *args, key=None, **kwargs):
        real_uploader(label, *args, key=key, **kwargs)  # AppTest cannot upload files
        return upload if key == "weights_upload" else None

    monkeypatch.setattr(st, "file_uploader", fake_uploader)


def test_a_bad_weights_file_is_refused_with_the_check_named(app, no_vgg_weights, monkeypatch):
    _fake_uploader(monkeypatch, Upload("resnet18-f37072fd.pth", b"not resnet18's weights"))
    app.switch_page("pages/2_model.py").run()
    app.button(key="weights_add").click().run()
    no_exceptions(app)
    assert any("the **hash** check failed" in e.value for e in app.error)
    assert any("resnet18-f37072fd.pth" in t.value and "sha256" in t.value for t in app.text)
    assert not no_vgg_weights.exists() or not any(no_vgg_weights.iterdir())
    table = app.dataframe[0].value.set_index("name")
    assert not bool(table.loc["resnet18", "weights here"])


def test_an_uploaded_file_that_passes_is_listed_at_once(app, no_vgg_weights, monkeypatch, tmp_path):
    """Through a backbone whose expected name carries the fake file's hash (a real one cannot be forged)."""
    import dataclasses
    import hashlib

    import torch
    import torchvision.models as tvm

    from tl_core.model import registry as backbones

    data = io.BytesIO()
    torch.save(tvm.mobilenet_v3_small(weights=None).state_dict(), data)
    name = f"mobilenet_v3_small-{hashlib.sha256(data.getvalue()).hexdigest()[:8]}.pth"
    spec = backbones.get_backbone("mobilenet_v3_small")
    spec = dataclasses.replace(spec, weights=dataclasses.replace(spec.weights, filename=name))
    monkeypatch.setitem(backbones._REGISTRY, "mobilenet_v3_small", spec)
    _fake_uploader(monkeypatch, Upload(name, data.getvalue()))

    app.switch_page("pages/2_model.py").run()
    assert not bool(app.dataframe[0].value.set_index("name").loc["mobilenet_v3_small", "weights here"])
    app.button(key="weights_add").click().run()
    no_exceptions(app)
    assert any("all four checks passed" in s.value for s in app.success)
    assert (no_vgg_weights / name).is_file()
    assert bool(app.dataframe[0].value.set_index("name").loc["mobilenet_v3_small", "weights here"])


def test_a_folder_of_weights_is_checked_file_by_file(app, no_vgg_weights, tmp_path):
    import shutil

    from tl_core.model.weights_lookup import bundled_weights_path

    bundled_name = "mobilenet_v2-b0353104.pth"
    folder = tmp_path / "usb stick"
    folder.mkdir()
    shutil.copy(bundled_weights_path(bundled_name), folder / bundled_name)
    shutil.copy(bundled_weights_path(bundled_name), folder / "resnet18-f37072fd.pth")  # not resnet18's
    (folder / "notes.txt").write_text("**not markdown**")

    app.switch_page("pages/2_model.py").run()
    app.button(key="weights_add_folder").click().run()
    no_exceptions(app)
    assert any("Type the folder" in e.value for e in app.error)

    app.text_input(key="weights_folder").input(str(folder))
    app.button(key="weights_add_folder").click().run()
    no_exceptions(app)
    assert any("1 of 2 weights files added, 1 refused; 1 other files skipped." in e.value for e in app.error)
    lines = [t.value for t in app.text]
    assert f"added: {bundled_name}" in lines
    assert any(line.startswith("refused (hash check failed):") and "resnet18-f37072fd.pth" in line for line in lines)
    assert any(line.startswith("skipped: notes.txt") for line in lines)  # file names as text, not Markdown
    assert sorted(p.name for p in no_vgg_weights.iterdir()) == [bundled_name]  # only the good file, no temp file
    assert not bool(app.dataframe[0].value.set_index("name").loc["resnet18", "weights here"])

    app.text_input(key="weights_folder").input(str(tmp_path / "no such folder"))
    app.button(key="weights_add_folder").click().run()
    no_exceptions(app)
    assert any("No weights added" in e.value for e in app.error)
    assert any("no folder" in t.value for t in app.text)


def test_on_a_classroom_server_only_the_teacher_names_a_server_folder(app, monkeypatch):
    """A folder path reads the server's disk: with a teacher password set, students get no folder
    box (the upload stays); the teacher, unlocked in this browser session, gets it."""
    monkeypatch.setenv("TL_STUDIO_TEACHER_PASSWORD", "chalk and cheese")
    app.switch_page("pages/2_model.py").run()
    no_exceptions(app)
    assert not [t for t in app.text_input if t.key == "weights_folder"]
    assert any("The teacher can also add" in c.value for c in app.caption)
    assert [b for b in app.button if b.key == "weights_add"]  # the checked upload is everyone's

    app.session_state["tl_studio_state"].teacher_unlocked = True
    app.run()
    no_exceptions(app)
    assert [t for t in app.text_input if t.key == "weights_folder"]
