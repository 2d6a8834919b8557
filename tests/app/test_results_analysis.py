"""Results page error analysis: a confusion cell's gallery, hardest images, Grad-CAM, per-class bars,
calibration, the two-class threshold and the feature map, on a real tiny run."""

from __future__ import annotations

import base64
import json

import numpy as np
import pandas as pd

from tests.app.conftest import no_exceptions
from tl_core.evaluation import analysis
from tl_ui.analysis_views import cell_from_selection, confusion_click_figure, default_cell

CLASSES = ["cat", "dog", "fox"]


def _predictions() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    rows = []
    for i in range(60):
        true, pred = int(rng.integers(0, 3)), int(rng.integers(0, 3))
        probs = np.full(3, 0.1)
        probs[pred] = 0.8
        rows.append({"path": f"x/{i}.jpg", "true": true, "pred": pred, "true_label": CLASSES[true],
                     "pred_label": CLASSES[pred], "confidence": float(rng.uniform(0.4, 1)), "loss": 1.0,
                     "probs": probs.tolist()})
    return pd.DataFrame(rows)


def test_a_click_on_each_cell_selects_exactly_that_cells_images():
    frame = _predictions()
    matrix = analysis.confusion(frame, 3)
    fig = confusion_click_figure(matrix, CLASSES)
    markers = fig.data[1]  # the clickable layer over the heatmap
    for point_index, data in enumerate(markers.customdata):
        # What st.plotly_chart(on_select="rerun") returns for a click on this marker.
        event = {"selection": {"points": [{"point_index": point_index, "curve_number": 1,
                                           "x": markers.x[point_index], "y": markers.y[point_index]}]}}
        true, pred = cell_from_selection(event, CLASSES)
        assert cell_from_selection({"selection": {"points": [{"point_index": point_index}]}}, CLASSES) == (true, pred)
        assert (CLASSES[true], CLASSES[pred]) == (markers.y[point_index], markers.x[point_index])
        rows = analysis.cell_images(frame, true, pred)
        expected = frame[(frame["true"] == true) & (frame["pred"] == pred)]
        assert sorted(rows["path"]) == sorted(expected["path"])
        assert len(rows) == matrix[true, pred] == data[2]
    assert cell_from_selection({"selection": {"points": []}}, CLASSES) is None
    assert cell_from_selection(None, CLASSES) is None


def test_default_cell_is_the_most_frequent_mistake():
    assert default_cell([[5, 0, 1], [3, 4, 0], [0, 0, 2]]) == (1, 0)
    assert default_cell([[5, 0], [0, 4]]) == (0, 0)


def _images(at) -> list:
    """(caption list) of every st.image element on the page."""
    return [list(el.captions) for el in at.get("image")]


def test_results_page_error_analysis(app, trained_run):  # noqa: F811 - fixture
    app.switch_page("pages/4_results.py").run()
    no_exceptions(app)
    assert any(s.value == "Error analysis" for s in app.subheader)
    key = f"ea_{trained_run.id}"
    evaluation = trained_run.read_evaluation("val")
    frame = analysis.predictions_frame(evaluation.predictions)
    classes = evaluation.classes

    # Choosing a cell (what a click does) shows exactly that cell's images, with labels and confidence.
    for true in range(len(classes)):
        app.selectbox(key=f"{key}_cm_true").set_value(true)
        app.selectbox(key=f"{key}_cm_pred").set_value(true).run()
        no_exceptions(app)
        expected = frame[(frame["true"] == true) & (frame["pred"] == true)]
        galleries = _images(app)
        cell_gallery = galleries[0]
        assert len(cell_gallery) == len(expected)
        assert all(f"true {classes[true]}, predicted {classes[true]}" in c for c in cell_gallery)
        names = sorted(c.split(":")[0][2:] for c in cell_gallery)
        assert names == sorted(p.split("/")[-1] for p in expected["path"])

    # Two classes: the threshold slider moves the matrix; at 1.0 almost nothing is called positive.
    recall_before = next(m.value for m in app.metric if m.label == "Recall")
    app.slider(key=f"{key}_thr_value").set_value(1.0).run()
    no_exceptions(app)
    recall_after = next(m.value for m in app.metric if m.label == "Recall")
    assert recall_before == "100%" and recall_after != recall_before
    assert any(m.label == "Calibration error (ECE)" for m in app.metric)

    # Grad-CAM overlays instead of thumbnails, at a chosen stage.
    app.toggle(key=f"{key}_cam_on").set_value(True).run()
    no_exceptions(app)
    stage_box = app.selectbox(key=f"{key}_cam_stage")
    assert len(stage_box.options) >= 2
    stage_box.set_value(stage_box.options[0]).run()
    no_exceptions(app)
    assert _images(app)[0]

    # The feature map: the body was frozen, so one map and a note that says so.
    charts_before = len(app.get("plotly_chart"))
    app.button(key=f"{key}_emb_go").click().run()
    no_exceptions(app)
    assert len(app.get("plotly_chart")) == charts_before + 1
    assert any("backbone was frozen" in i.value for i in app.info)
    app.radio(key=f"{key}_emb_method").set_value("tsne")
    app.radio(key=f"{key}_emb_colour").set_value("outcome").run()
    no_exceptions(app)
    assert len(app.get("plotly_chart")) == charts_before + 1

    # The images drawn on the map, each a JPEG at its own dot.
    def map_spec() -> dict:
        specs = [json.loads(chart.proto.spec) for chart in app.get("plotly_chart")]
        return next(spec for spec in specs if "Backbone features" in json.dumps(spec["layout"].get("title")))

    assert not map_spec()["layout"].get("images")
    app.toggle(key=f"{key}_emb_pictures").set_value(True).run()
    no_exceptions(app)
    spec = map_spec()
    pictures = spec["layout"]["images"]
    dot_xy = {(round(x, 4), round(y, 4)) for trace in spec["data"]
              for x, y in zip(_values(trace["x"]), _values(trace["y"]), strict=True)}
    assert len(pictures) == len(dot_xy) > 0
    assert all(p["source"].startswith("data:image/jpeg;base64,") for p in pictures)
    assert {(round(p["x"], 4), round(p["y"], 4)) for p in pictures} == dot_xy


def _values(array) -> list[float]:
    """A plotly JSON array: a plain list, or numpy's typed-array encoding {dtype, bdata}."""
    if isinstance(array, dict):
        return np.frombuffer(base64.b64decode(array["bdata"]), dtype=array["dtype"]).tolist()
    return list(array)


def test_points_picked_on_the_feature_map_are_found_by_position():
    from tl_ui.analysis_views import rows_of_selection

    placed = pd.DataFrame({"x": [0.0, 1.0, 2.5, -3.0], "y": [0.0, 1.0, -1.0, 4.0]})
    event = {"selection": {"points": [{"x": 2.5000001, "y": -1.0, "curve_number": 1, "point_index": 0},
                                      {"x": -3.0, "y": 4.0, "curve_number": 0, "point_index": 1}]}}
    assert rows_of_selection(event, placed) == [2, 3]
    assert rows_of_selection({"selection": {"points": []}}, placed) == []
    assert rows_of_selection(None, placed) == []


def test_pictures_on_a_big_map_keep_every_dot_in_view_and_every_class_pictured():
    import plotly.graph_objects as go

    from tl_ui.analysis_views import add_thumbnails, pictured_rows

    rng = np.random.default_rng(0)
    labels = ["cat"] * 450 + ["dog"] * 100 + ["fox"] * 50  # the map's first rows are all cats
    xy = rng.normal(size=(600, 2)) * 10
    rows = pictured_rows(labels, 200)
    assert len(rows) == len(set(rows)) == 200
    picked = [labels[r] for r in rows]
    assert picked.count("fox") == 50 and picked.count("dog") == 75 and picked.count("cat") == 75
    assert pictured_rows(labels[:30], 200) == list(range(30))  # fewer dots than pictures: all of them

    fig = add_thumbnails(go.Figure(go.Scatter(x=xy[:, 0], y=xy[:, 1])), xy, {r: b"jpeg" for r in rows})
    assert len(fig.layout.images) == 200
    assert {(im.x, im.y) for im in fig.layout.images} == {tuple(map(float, xy[r])) for r in rows}
    (x0, x1), (y0, y1) = fig.layout.xaxis.range, fig.layout.yaxis.range
    assert x0 < xy[:, 0].min() and x1 > xy[:, 0].max() and y0 < xy[:, 1].min() and y1 > xy[:, 1].max()
