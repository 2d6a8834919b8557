"""TensorBoard and MLflow trackers: a tiny real training is read back from TensorBoard's event file
and from a local MLflow file store; a tracker that fails leaves a note and the run finishes."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.tiny_backbone import NAME as TINY
from tl_core import events as ev
from tl_core.config import DataConfig, FreezePlan, ModelConfig, RunConfig, TrainConfig
from tl_core.runs import RunStore
from tl_core.training import trackers
from tl_core.training.trainer import train

pytest.importorskip("tensorboard", reason="tensorboard is not installed (pip install -r requirements-dev.txt)")
pytest.importorskip("mlflow", reason="mlflow is not installed (pip install -r requirements-dev.txt)")

torch.set_num_threads(2)
EPOCHS = 2


def _config(folder: Path) -> RunConfig:
    return RunConfig(data=DataConfig(source=str(folder), val_fraction=0.25, augment="none"),
                     model=ModelConfig(backbone=TINY), freeze=FreezePlan(mode="feature_extractor"),
                     train=TrainConfig(epochs=EPOCHS, batch_size=8, lr=1e-2, schedule="constant", num_workers=0))


@pytest.fixture
def tracked_run(workspace, tmp_path, monkeypatch):
    """One tiny run trained with both trackers on (MLflow into a file store in tmp_path)."""
    from tests.conftest import write_image_folder

    folder = write_image_folder(tmp_path / "small", {"red": 6, "green": 6})
    store = tmp_path / "mlruns"
    monkeypatch.setenv(trackers.ENV_MLFLOW_URI, store.as_uri())
    monkeypatch.setenv(trackers.ENV_MLFLOW_EXPERIMENT, "tl-test")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps file: stores for tests like this
    config = _config(folder)
    run = RunStore(workspace).create(config)
    train(config, run, workspace)
    return run, store.as_uri()


def test_a_run_is_in_tensorboard_and_mlflow(tracked_run, tmp_path):
    from mlflow.tracking import MlflowClient
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    run, uri = tracked_run
    assert run.state == "finished"
    notes = [e.message for e in run.read_events()[0] if isinstance(e, ev.Note)]
    assert not any("logging stopped" in n for n in notes), notes

    # TensorBoard: the event file beside the run log, one scalar per epoch for each tag
    board = EventAccumulator(str(run.tensorboard_dir))
    board.Reload()
    tags = set(board.Tags()["scalars"])
    assert {"loss/train", "loss/val", "accuracy/train", "accuracy/val", "lr"} <= tags
    assert [s.step for s in board.Scalars("accuracy/val")] == list(range(1, EPOCHS + 1))
    epochs = [e for e in run.read_events()[0] if isinstance(e, ev.EpochEnded)]
    assert [s.value for s in board.Scalars("loss/train")] == pytest.approx([e.train_loss for e in epochs])

    # MLflow: params = the config, metrics per epoch with the epoch as step, the best checkpoint
    client = MlflowClient(tracking_uri=uri)
    mlflow_run = client.get_run(run.tracking()["mlflow_run_id"])
    assert mlflow_run.info.status == "FINISHED"
    assert client.get_experiment(mlflow_run.info.experiment_id).name == "tl-test"
    assert mlflow_run.data.tags["tl_studio.run_id"] == run.id
    params = mlflow_run.data.params
    assert params["model.backbone"] == TINY and params["train.epochs"] == str(EPOCHS)
    history = client.get_metric_history(mlflow_run.info.run_id, "val_acc")
    assert sorted(m.step for m in history) == list(range(1, EPOCHS + 1))
    assert [m.value for m in sorted(history, key=lambda m: m.step)] == pytest.approx([e.val_acc for e in epochs])
    artifacts = [a.path for a in client.list_artifacts(mlflow_run.info.run_id, "checkpoints")]
    assert artifacts == ["checkpoints/best.pt"]

    # An export adds the bundle to the same MLflow run (export_bundle calls log_export)
    bundle = tmp_path / "bundle"
    bundle.mkdir()
    (bundle / "labels.json").write_text('["green", "red"]')
    assert trackers.log_export(run, bundle) is None
    assert [a.path for a in client.list_artifacts(mlflow_run.info.run_id, "export")] == ["export/labels.json"]


def test_a_failing_tracker_leaves_a_note_and_never_raises(workspace, image_folder):
    run = RunStore(workspace).create(_config(image_folder))
    tracker = trackers.MLflowTracker(run, "no-such-scheme://nowhere")
    started = ev.RunStarted(run_id=run.id, device="cpu", classes=["a", "b"], num_train=4, num_val=2, epochs=1,
                            steps_per_epoch=1, trainable_params=1, total_params=2, feature_cache=False)
    tracker(started)  # must not raise
    tracker(ev.EpochEnded(1, 0.5, 0.5, 0.5, 0.5, 1e-3, 1.0, 1))
    assert tracker.failed
    notes = [e.message for e in run.read_events()[0] if isinstance(e, ev.Note)]
    assert len(notes) == 1 and notes[0].startswith("MLflow logging stopped") and "training goes on" in notes[0]
    assert "mlflow_run_id" not in run.tracking()


def test_no_tracker_without_its_setting(workspace, image_folder, monkeypatch):
    monkeypatch.delenv(trackers.ENV_MLFLOW_URI, raising=False)
    run = RunStore(workspace).create(_config(image_folder))
    kinds = {type(t) for t in trackers.for_run(run)}
    assert kinds == {trackers.TensorBoardTracker}
    monkeypatch.setenv(trackers.ENV_MLFLOW_URI, "file:///tmp/unused")
    assert {type(t) for t in trackers.for_run(run)} == {trackers.TensorBoardTracker, trackers.MLflowTracker}


def test_flatten_names_nested_keys_with_dots():
    assert dict(trackers.flatten({"a": {"b": 1, "c": {"d": [1, 2]}}, "e": None})) == \
        {"a.b": "1", "a.c.d": "[1, 2]", "e": "None"}
