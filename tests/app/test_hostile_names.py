"""User text is text: hostile class, file, dataset and run names on every page are never
interpreted as Markdown or HTML (no link, no image, no bold, no code, no tag)."""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest

from tests.app.conftest import SESSION, no_exceptions

pytestmark = pytest.mark.slow

CLASSES = ["![t](http://h/p.png)", "[Log in](http://h/x)", "<b>x</b>", "**bold**", "`code`"]
DATASET_NAME = "[Log in](http://h/d) **data** <i>d</i>"
RUN_NAME = "![t](http://h/r.png) <b>run</b> `r`"
FILE_STEMS = ["**bold**", "[Log in](x)", "`code`", "<i>f<i>"]  # no "/" in a file name

# Raw pieces that only a Markdown or HTML renderer would turn into something else.
MARKUP = ["](http://h/", "<b>", "<i>", "**bold**", "**data**", "`code`", "`r`", "[Log in]"]
HTML_NAMES = ["<b>x</b>", "<i>d</i>", "<b>run</b>", "<i>f<i>"]  # the app's own hover text has <b>
PAGES = ["pages/1_data.py", "pages/2_model.py", "pages/3_train.py", "pages/8_compare.py", "pages/4_results.py",
         "pages/5_predict.py", "pages/6_export.py", "pages/7_runs.py"]
# Elements whose text Streamlit shows as it is: the raw name is fine there.
TEXT_ELEMENTS = {"text", "code", "dataframe", "json"}
# Fields shown as plain text in elements whose other fields (label, help) are Markdown: the options of
# a selectbox or multiselect are (a radio's are not), and the values typed into inputs.
PLAIN_FIELDS = ("options", "default", "raw_value", "raw_values", "value", "placeholder")
PLAIN_OPTIONS = {"selectbox", "multiselect", "text_input", "text_area"}

_TRAINED: dict[str, Path] = {}


def _hostile_workspace(root: Path) -> tuple[str, str]:
    """A dataset whose class, file and dataset names are hostile, and a run trained on it (1 epoch)."""
    from tests.conftest import synthetic_image
    from tests.tiny_backbone import NAME as TINY
    from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from tl_core.data import UploadedImage, ingest
    from tl_core.data.catalog import DatasetCatalog
    from tl_core.runs import RunStore
    from tl_core.training.trainer import train
    from tl_core.workspace import Workspace

    workspace = Workspace(root).for_session(SESSION)
    uploads = []
    for c, label in enumerate(CLASSES):
        for i in range(4):
            buf = io.BytesIO()
            synthetic_image((50 * c, 200 - 40 * c, 90), seed=10 * c + i, size=(40, 32)).save(buf, "PNG")
            uploads.append(UploadedImage(f"{FILE_STEMS[i]} {c}.png", buf.getvalue(), label))
    dest = DatasetCatalog(workspace).new_dir("hostile")
    ds = ingest(uploads, dest, name=DATASET_NAME)
    assert sorted(ds.classes) == sorted(CLASSES) and ds.name == DATASET_NAME
    config = RunConfig(data=DataConfig(source=str(dest), dataset_dir=str(dest), val_fraction=0.4, augment="none"),
                       model=ModelConfig(backbone=TINY), train=TrainConfig(epochs=1, batch_size=8, lr=1e-2, schedule="constant"), name=RUN_NAME)
    run = RunStore(workspace).create(config)
    train(config, run, workspace)
    assert run.state == "finished"
    return dest.name, run.id


@pytest.fixture
def hostile(home, tmp_path_factory):
    """(dataset id, run id) in the test's server home: trained once per session, then copied."""
    if "root" not in _TRAINED:
        root = tmp_path_factory.mktemp("hostile")
        _TRAINED["ids"] = _hostile_workspace(root)
        _TRAINED["root"] = root
    shutil.copytree(_TRAINED["root"], home, dirs_exist_ok=True, symlinks=True)
    return _TRAINED["ids"]


def _interpreted(kind: str, proto_text: str) -> list[str]:
    """The markup pieces found raw in an element's proto (its text as Streamlit will render it)."""
    if kind in TEXT_ELEMENTS:
        return []
    if kind == "plotly_chart":  # Plotly renders <b>, <i>, <a> in every label: those must be &lt;..&gt;
        return [piece for piece in HTML_NAMES if piece in _plotly_strings(proto_text)]
    return [piece for piece in MARKUP if piece in proto_text]


def _plotly_strings(proto_text: str) -> str:
    spec = proto_text.split("spec: ", 1)[1] if "spec: " in proto_text else proto_text
    try:
        decoded = json.loads(json.loads(spec.split("\n", 1)[0]))
    except ValueError:
        return proto_text
    return json.dumps(decoded, ensure_ascii=False)


def _walk(node):
    yield node
    for child in getattr(node, "children", {}).values():
        yield from _walk(child)


def _findings(at) -> list[tuple[str, str, list[str]]]:
    found = []
    for root in (at.main, at.sidebar):
        for node in _walk(root):
            proto = getattr(node, "proto", None)
            if proto is None:
                continue
            kind = node.type
            if kind in PLAIN_OPTIONS:
                proto = type(proto).FromString(proto.SerializeToString())
                for name in PLAIN_FIELDS:
                    if name in proto.DESCRIPTOR.fields_by_name:
                        proto.ClearField(name)
            pieces = _interpreted(kind, str(proto))
            if pieces:
                found.append((kind, str(proto)[:300], pieces))
    return found


@pytest.mark.parametrize("page", PAGES)
def test_hostile_names_are_never_interpreted_on_any_page(app, hostile, page):
    dataset_id, run_id = hostile
    app.query_params.update(dataset=dataset_id, run=run_id)
    app.switch_page(page).run()
    no_exceptions(app)
    shown = " ".join(str(t.value) for t in app.text) + " ".join(str(c.value) for c in app.code)
    assert any(name in shown for name in [*CLASSES, DATASET_NAME, RUN_NAME]), "no hostile name shown at all"
    assert _findings(app) == []
