"""Export page: formats explained, the bundle built with its parity checks shown as badges, the
model card previewed, and a zip download that holds model.onnx and predict.py."""

from __future__ import annotations

import io
import zipfile

from tests.app.conftest import no_exceptions


def test_no_trained_run_points_to_train(app):
    app.switch_page("pages/6_export.py").run()
    no_exceptions(app)
    assert any("No trained model yet" in i.value for i in app.info)


def test_export_builds_a_checked_bundle_and_offers_the_zip(app, trained_run):  # noqa: F811
    app.switch_page("pages/6_export.py").run()
    no_exceptions(app)
    assert app.selectbox(key="export_run").value == trained_run.id
    text = " ".join(m.value for m in app.markdown)
    assert "**ONNX**" in text and "**TorchScript**" in text and "**safetensors**" in text
    assert not app.get("download_button")  # nothing exported yet

    app.button(key="export_go").click().run(timeout=300)
    no_exceptions(app)
    assert any("same answers" in s.value for s in app.success)
    badges = " ".join(m.value for m in app.markdown if ":green-badge" in m.value or ":red-badge" in m.value)
    assert badges.count("passed") >= 4 and "failed" not in badges  # 2 formats x (tolerance, same labels)
    diffs = [m for m in app.metric if m.label == "Max difference"]
    assert len(diffs) == 2 and all(float(m.value) < 1e-4 for m in diffs)

    button = app.get("download_button")[0]
    from tl_ui.export_views import bundle_zip, last_report

    folder = trained_run.dir / "export"  # the button serves bundle_zip(folder, stamp)
    names = zipfile.ZipFile(io.BytesIO(bundle_zip(str(folder), last_report(folder)["stamp"]))).namelist()
    assert {"export/model.onnx", "export/predict.py", "export/model_torchscript.pt", "export/MODEL_CARD.md",
            "export/labels.json"} <= set(names)
    assert "export/model.safetensors" not in names  # not ticked by default
    assert button.proto.label == "Download the bundle (.zip)"

    # A refresh (a new session on the same URL) still shows the last export.
    from streamlit.testing.v1 import AppTest

    fresh = AppTest.from_file(app._script_path, default_timeout=60)  # noqa: SLF001
    fresh.query_params.update(app.query_params)
    fresh.switch_page("pages/6_export.py").run()
    no_exceptions(fresh)
    assert fresh.get("download_button")
    assert any("Model card" in e.proto.label for e in fresh.expander)
