"""Results page: metrics, per-class table, confusion matrix and comparison from a finished run."""

from __future__ import annotations

import time

from tests.app.conftest import no_exceptions


def test_no_runs_points_to_train(app):
    app.switch_page("pages/4_results.py").run()
    no_exceptions(app)
    assert any("No runs yet" in i.value for i in app.info)


def test_a_finished_run_shows_its_evaluation(app, session_workspace, tiny_dataset):
    from tl_core.config import DataConfig, RunConfig, TrainConfig
    from tl_core.data.catalog import DatasetCatalog
    from tl_core.runs import RunStore
    from tl_core.training.trainer import train

    path = str(DatasetCatalog(session_workspace).path(tiny_dataset))
    config = RunConfig(data=DataConfig(source=path, dataset_dir=path, val_fraction=0.25, augment="none"),
                       train=TrainConfig(epochs=2, batch_size=8, lr=1e-2, schedule="constant"), name="baseline")
    run = RunStore(session_workspace).create(config)
    train(config, run, session_workspace)

    app.switch_page("pages/4_results.py").run()
    no_exceptions(app)
    labels = {m.label for m in app.metric}
    assert {"Accuracy", "Macro F1", "Best epoch"} <= labels
    per_class = next(d.value for d in app.dataframe if "precision" in d.value.columns)
    assert set(per_class["class"]) == {"red", "blue"}
    assert app.multiselect(key="compare_runs").value == [run.id]
    keys = [c.proto.id for c in app.get("plotly_chart")]
    assert len(keys) >= 2  # confusion matrix + comparison
    _ = time
