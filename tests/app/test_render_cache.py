"""Server-wide render caches (tl_ui/render_cache.py and its users): what every student's copy of
the same images shows is made once per server, and anything that changes what is shown misses."""

from __future__ import annotations

import io
import shutil
import threading

import plotly.graph_objects as go
import pytest
from PIL import Image

from tl_core import data as tl_data
from tl_core import events as ev
from tl_core.config import DataConfig, RunConfig
from tl_core.errors import TLError
from tl_core.runs import RunStore
from tl_ui import health_charts, models, widgets
from tl_ui.charts import RunCurves
from tl_ui.render_cache import SharedFigures, dataset_key


@pytest.fixture
def two_copies(image_folder, tmp_path):
    """The same images ingested twice, under different folders and names (two students' samples)."""
    first = tl_data.ingest(image_folder, tmp_path / "a", name="mine")
    second = tl_data.ingest(shutil.copytree(image_folder, tmp_path / "other"), tmp_path / "b", name="theirs")
    return first, second


def test_shared_figures_build_once_per_key_and_drop_the_least_recently_used():
    table = SharedFigures(max_entries=2)
    built = []

    def build(name):
        def make():
            built.append(name)
            return go.Figure(layout={"title": name})
        return make

    first = table.get(("chart", 1), build("one"))
    assert table.get(("chart", 1), build("one again")) is first
    table.get(("chart", 2), build("two"))
    table.get(("chart", 1), build("one, used"))  # 1 is now the most recently used
    table.get(("chart", 3), build("three"))  # evicts 2
    assert len(table) == 2
    table.get(("chart", 2), build("two again"))
    assert built == ["one", "two", "three", "two again"]


def test_sessions_missing_the_same_figure_at_once_build_it_once():
    table = SharedFigures()
    release, built, got = threading.Event(), [], []

    def build():
        built.append(1)
        release.wait(5)
        return go.Figure()

    threads = [threading.Thread(target=lambda: got.append(table.get("same", build))) for _ in range(2)]
    for thread in threads:
        thread.start()
    threads[1].join(0.3)
    assert threads[1].is_alive() and len(built) == 1  # the second waits for the first's figure
    release.set()
    for thread in threads:
        thread.join(5)
    assert len(built) == 1 and got[0] is got[1]


def test_dataset_key_is_the_content_not_the_folder_or_name(two_copies, image_folder, tmp_path):
    first, second = two_copies
    assert first.root != second.root and first.name != second.name
    assert dataset_key(first) == dataset_key(second)
    Image.new("RGB", (64, 48), (1, 2, 3)).save(image_folder / "red" / "0.jpg")  # one image changed
    changed = tl_data.ingest(image_folder, tmp_path / "c")
    assert dataset_key(changed) != dataset_key(first)


def test_health_charts_are_shared_between_copies_and_follow_the_numbers(two_copies):
    first, second = two_copies
    report_a, report_b = tl_data.health_report(first), tl_data.health_report(second)
    assert health_charts.class_bar(report_a) is health_charts.class_bar(report_b)
    assert health_charts.size_histogram(report_a) is health_charts.size_histogram(report_b)
    fewer = tl_data.health_report(tl_data.Dataset(first.root, "x", first.classes, first.records[1:]))
    figure = health_charts.class_bar(fewer)
    assert figure is not health_charts.class_bar(report_a)
    assert health_charts.size_histogram(fewer) is not health_charts.size_histogram(report_a)
    assert list(figure.data[0].y) == [fewer.class_counts[c] for c in first.classes]


def test_thumbnails_by_content_read_each_image_once(two_copies, monkeypatch):
    first, second = two_copies
    made = []
    real = widgets.thumbnail_jpeg
    monkeypatch.setattr(widgets, "thumbnail_jpeg", lambda source, size: made.append(source) or real(source, size))
    widgets.thumbnail_of_content.clear()
    records = first.records[:3]
    for ds in (first, second):  # the second copy has the same files under other paths
        shown = widgets.thumbnails([ds.path_of(r) for r in records], digests=[r.sha256 for r in records])
        assert all(Image.open(io.BytesIO(t)).format == "JPEG" for t in shown)
    assert len(made) == 3


def test_augmentation_preview_is_cached_by_content_as_jpegs_of_the_shown_width(two_copies, monkeypatch):
    from tl_core.model import preprocess

    first, second = two_copies
    decoded = []
    real = preprocess.decode
    monkeypatch.setattr(preprocess, "decode", lambda images, p: decoded.append(len(images)) or real(images, p))
    models._augment_preview.clear()
    views = models.augment_preview(str(first.root), "light", "mobilenet_v2", width=110)
    assert len(views) == len(first.classes) * 4
    assert {Image.open(io.BytesIO(v)).size for v in views} == {(110, 110)}
    assert models.augment_preview(str(second.root), "light", "mobilenet_v2", width=110) == views
    assert decoded == [len(first.classes)]  # the second student's copy did not decode again
    models.augment_preview(str(first.root), "none", "mobilenet_v2", width=110)
    assert len(decoded) == 2  # another augmentation is another preview


def test_live_curves_reuse_a_figure_until_new_events_arrive(workspace):
    run = RunStore(workspace).create(RunConfig(data=DataConfig(source="x")))
    curves = RunCurves(run.id)
    curves.update(run)
    empty = curves.figure("loss")
    curves.update(run)  # nothing new (a queued run)
    assert curves.figure("loss") is empty
    run.append_event(ev.BatchEnded(epoch=1, step=1, steps=2, global_step=1, loss=0.7, accuracy=0.5, lr=1e-3,
                                   images_per_s=10.0, time=1.0))
    curves.update(run)
    drawn = curves.figure("loss")
    assert drawn is not empty and list(drawn.data[0].y) == [0.7]
    assert curves.figure("accuracy") is not drawn


def test_runs_not_trained_yet_share_their_empty_charts(workspace):
    from tl_ui.charts import comparison_figure

    store = RunStore(workspace)
    queued = [RunCurves(store.create(RunConfig(data=DataConfig(source="x"))).id) for _ in range(2)]
    assert queued[0].figure("loss") is queued[1].figure("loss")
    assert comparison_figure({"mine": queued[0]}) is comparison_figure({"mine": queued[1]})
    trained = RunCurves("t")
    trained.epochs.append({"epoch": 1, "val_acc": 0.75})
    figure = comparison_figure({"mine": trained})
    assert figure is not comparison_figure({"mine": queued[0]})
    assert list(figure.data[0].y) == [0.75]


def test_the_sidebar_reads_a_dataset_once_per_version(two_copies, monkeypatch):
    from tl_ui import sidebar

    first, _ = two_copies
    loads = []
    real = tl_data.Dataset.load
    monkeypatch.setattr(sidebar.Dataset, "load", lambda folder: loads.append(folder) or real(folder))
    sidebar._summary.cache_clear()
    assert sidebar.dataset_summary(first.root) == ("mine", len(first.records), len(first.classes))
    assert sidebar.dataset_summary(first.root) == ("mine", len(first.records), len(first.classes))
    assert len(loads) == 1
    first.name = "renamed, longer"
    first.save()  # a rename rewrites dataset.json: read again
    assert sidebar.dataset_summary(first.root)[0] == "renamed, longer"
    shutil.rmtree(first.root)
    with pytest.raises(TLError):
        sidebar.dataset_summary(first.root)
