"""Data page, Spreadsheet tab: the column mapper guesses the columns, previews the rows, lists the rows
that do not resolve with the reason, adds the dataset; a patient in two splits is flagged and the fix
splits again with each patient in one split."""

from __future__ import annotations

import io
import zipfile

from tests.app.conftest import no_exceptions
from tests.conftest import COLOURS, synthetic_image


class Upload:
    """What st.file_uploader hands the page: a name, an id and the bytes (AppTest cannot upload)."""

    def __init__(self, name: str, data: bytes) -> None:
        self.name, self._data, self.file_id = name, data, name

    def getvalue(self) -> bytes:
        return self._data


def sheet_zip() -> bytes:
    rows = ["file,finding,patient,split"]
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as zf:
        for p in range(6):
            label = "lesion" if p % 2 else "normal"
            for k in range(3):
                buf = io.BytesIO()
                synthetic_image(COLOURS["red" if p % 2 else "blue"], seed=10 * p + k, size=(32, 32)).save(buf, "JPEG")
                zf.writestr(f"scans/p{p}_{k}.jpg", buf.getvalue())
                # patient P1's last scan is put in val while the others are in train: a leak
                split = "val" if p == 4 or (p == 1 and k == 2) else "test" if p == 5 else "train"
                patient = "<b>P1</b>" if p == 1 else f"P{p}"  # a name a user typed: shown as text, never as HTML
                rows.append(f"scans/p{p}_{k}.jpg,{label},{patient},{split}")
        rows.append("scans/gone.jpg,normal,P9,train")
        zf.writestr("study/labels.csv", "\n".join(rows) + "\n")
    return out.getvalue()


def table_with(at, column: str):
    """The one st.dataframe with ``column`` (AppTest does not find dataframes by key)."""
    found = [d.value for d in at.dataframe if column in d.value.columns]
    assert len(found) == 1, [list(d.value.columns) for d in at.dataframe]
    return found[0]


def _uploads(monkeypatch, files) -> None:
    import streamlit as st

    real = st.file_uploader

    def fake(label, *args, key=None, **kwargs):
        real(label, *args, key=key, **kwargs)
        return files if key == "sheet_upload" else None

    monkeypatch.setattr(st, "file_uploader", fake)


def test_mapper_adds_the_sheet_and_the_group_leak_is_fixed(app, monkeypatch):
    _uploads(monkeypatch, [Upload("study.zip", sheet_zip())])
    app.run()
    no_exceptions(app)
    assert [app.selectbox(key=f"sheet_col_{c}").value for c in ("image", "label", "group", "split")] == \
        ["file", "finding", "patient", "split"]
    assert len(table_with(app, "finding")) == 10  # the preview
    bad = table_with(app, "why")
    assert bad["why"].tolist() == ["file not found"] and bad["row"].tolist() == ["labels.csv row 20"]

    app.selectbox(key="sheet_col_group").set_value("(none)").run()  # a mapping the user changes is used
    assert "from" not in " ".join(c.value for c in app.caption if "rows name an image" in c.value)
    app.selectbox(key="sheet_col_group").set_value("patient").run()
    app.button(key="add_sheet").click().run()
    no_exceptions(app)
    assert {m.label: m.value for m in app.metric}["Images"] == "18"
    warnings = " ".join(t.value for t in app.text)
    assert "'<b>P1</b>' in train and validation" in warnings
    assert not [m for m in app.markdown if "P1" in m.value]
    assert app.slider[0].disabled and app.slider[1].disabled  # its own validation and test images are kept
    assert "own test images; they are kept as given, so the test share is not used" in app.info[0].value

    app.button(key="fix_group_leak").click().run()
    no_exceptions(app)
    assert "more than one split" not in " ".join(t.value for t in app.text)
    assert app.session_state["tl_studio_state"].draft.data.keep_given_split is False  # what the Train page uses
    assert not app.slider[0].disabled and not app.slider[1].disabled  # every image is split by the shares
    assert not [b for b in app.button if b.key == "fix_group_leak"]
    groups = table_with(app, "lesion")  # groups per class and split
    assert groups["split"].tolist() == ["train", "validation"] and groups["lesion"].sum() == 3


def test_reruns_of_the_mapper_reuse_the_staged_upload(app, monkeypatch, session_workspace):
    """Each choice in the mapper reruns the tab: the upload is written to disk once per set of files,
    not once per rerun, and a new set replaces the one before."""
    from tl_core.data.uploads import STAGED_DIR

    _uploads(monkeypatch, [Upload("study.zip", sheet_zip())])
    app.run()
    staged = session_workspace.cache_dir / STAGED_DIR
    (first,) = staged.glob("*/images.zip")
    written = first.stat().st_mtime_ns
    app.selectbox(key="sheet_col_group").set_value("(none)").run()
    no_exceptions(app)
    assert [p.stat().st_mtime_ns for p in staged.glob("*/images.zip")] == [written]

    _uploads(monkeypatch, [Upload("other.zip", sheet_zip())])
    app.run()
    no_exceptions(app)
    (second,) = staged.glob("*/images.zip")
    assert second.parent != first.parent and not first.exists()
