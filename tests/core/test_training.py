"""The trainer end to end on small synthetic folders: events, checkpoints, cache, cancel, resume,
early stopping, classical heads, and the claim that pretrained features beat random ones."""

from __future__ import annotations

import dataclasses

import pytest
import torch
from torch import nn

from tests.tiny_backbone import NAME as TINY
from tl_core import events as ev
from tl_core.config import (
    MAX_FEATURE_VIEWS,
    DataConfig,
    FreezePlan,
    HeadConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
)
from tl_core.evaluation.metrics import predict
from tl_core.runs import RunStore
from tl_core.training.trainer import train, train_step

torch.set_num_threads(2)


def config_for(folder, **train_kw) -> RunConfig:
    model = train_kw.pop("model", ModelConfig(backbone=TINY))
    freeze = train_kw.pop("freeze", FreezePlan(mode="feature_extractor"))
    augment = train_kw.pop("augment", "none")
    defaults = dict(epochs=3, batch_size=8, lr=1e-2, schedule="constant")
    defaults.update(train_kw)
    return RunConfig(data=DataConfig(source=str(folder), val_fraction=0.25, augment=augment),
                     model=model, freeze=freeze, train=TrainConfig(**defaults))


def run_training(workspace, config, **kw):
    run = RunStore(workspace).create(config)
    seen: list = []
    result = train(config, run, workspace, subscribers=[seen.append], **kw)
    return run, result, seen


def test_train_step_updates_only_trainable_parameters():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    model[0].weight.requires_grad_(False)
    frozen = model[0].weight.clone()
    trainable = model[2].weight.clone()
    opt = torch.optim.SGD([p for p in model.parameters()], lr=0.1)
    loss, correct = train_step(model, torch.randn(8, 4), torch.randint(0, 2, (8,)), opt, nn.CrossEntropyLoss())
    assert loss.ndim == 0 and 0 <= int(correct) <= 8
    assert torch.equal(model[0].weight, frozen)
    assert not torch.equal(model[2].weight, trainable)


@pytest.mark.slow
def test_feature_extractor_run_writes_a_complete_run(workspace, image_folder):
    # MobileNetV2 itself: its ImageNet features are what make 3 epochs of a linear head learn the
    # colours (the tiny test backbone's seeded features do not, reliably).
    run, result, seen = run_training(workspace, config_for(image_folder, model=ModelConfig(backbone="mobilenet_v2")))
    types = [type(e).__name__ for e in seen]
    assert types.count("RunStarted") == 1 and types[-1] == "RunFinished"
    assert types.count("EpochEnded") == 3
    started = next(e for e in seen if isinstance(e, ev.RunStarted))
    assert started.feature_cache and started.classes == ["blue", "green", "red"]
    assert started.trainable_params < started.total_params / 100
    # The run log holds the same stream the subscriber saw.
    logged, _ = run.read_events()
    assert [type(e) for e in logged] == [type(e) for e in seen]
    assert run.state == "finished"
    assert run.checkpoint_path("best").exists() and run.checkpoint_path("last").exists()
    assert result["val"]["accuracy"] >= 0.85, result["val"]
    assert run.read_evaluation("val").confusion
    # predict() on the saved run gives the right colour for a fresh image.
    from tests.conftest import COLOURS, synthetic_image

    top = predict(run, [synthetic_image(COLOURS["red"], seed=999)], top_k=2)
    assert top[0][0][0] == "red" and len(top[0]) == 2


def count_extractions(monkeypatch) -> list[int]:
    """Each call of the backbone over a set of images (one view) appends to the returned list."""
    import tl_core.training.trainer as training

    extractions: list[int] = []
    real_extract = training.extract_features

    def counting_extract(*args, **kw):
        extractions.append(1)
        return real_extract(*args, **kw)

    monkeypatch.setattr(training, "extract_features", counting_extract)
    return extractions


def extractions_at_epoch_ends(workspace, cfg, extractions) -> tuple[list[int], list]:
    at_epoch_end: list[int] = []
    seen: list = []

    def watch(event):
        seen.append(event)
        if isinstance(event, ev.EpochEnded):
            at_epoch_end.append(len(extractions))
    run = RunStore(workspace).create(cfg)
    train(cfg, run, workspace, subscribers=[watch])
    return at_epoch_end, seen


def test_cached_runs_compute_one_feature_view_per_epoch_until_all_are_cached(workspace, image_folder, monkeypatch):
    """Behaviour, not timing (the speed itself is measured by bench/run.py): epoch 1 waits for one
    augmented view of the training images and the validation set's features, each later epoch
    adds one view until MAX_FEATURE_VIEWS, then none; no epoch trains on images. (Replaces the
    test of the old eager cache, which computed every view before epoch 1.)"""
    import tl_core.training.trainer as training

    def no_image_epochs(self, epoch):
        raise AssertionError("a cached run must not train on images")

    extractions = count_extractions(monkeypatch)
    monkeypatch.setattr(training.EpochLoop, "_image_epoch", no_image_epochs)
    cfg = config_for(image_folder, epochs=MAX_FEATURE_VIEWS + 2, augment="light")
    at_epoch_end, seen = extractions_at_epoch_ends(workspace, cfg, extractions)
    assert at_epoch_end == [2, 3, 4, 5, 5, 5]  # view 1 + validation, then +1 view per epoch up to 4
    started = next(e for e in seen if isinstance(e, ev.RunStarted))
    assert started.feature_cache and started.feature_views == MAX_FEATURE_VIEWS
    # Each epoch's extraction is one progress bar, over images, from 0 to all of them.
    before_first_epoch = [e for e in seen[:seen.index(next(e for e in seen if isinstance(e, ev.EpochEnded)))]
                          if isinstance(e, ev.Progress) and e.phase == "features"]
    n_train, n_val = started.num_train, started.num_val
    assert before_first_epoch[0].done == 0 and {e.total for e in before_first_epoch} == {n_train + n_val}
    assert before_first_epoch[-1].done == n_train + n_val and before_first_epoch[-1].images_per_s > 0
    assert [e.done for e in before_first_epoch] == sorted(e.done for e in before_first_epoch)


def test_a_second_run_on_the_same_features_reuses_them_from_disk(workspace, image_folder, monkeypatch):
    """Another head and learning rate on the same images, backbone and views: no backbone pass at
    all. A different augmentation, backbone or pretrained flag computes its own features."""
    extractions = count_extractions(monkeypatch)
    first = config_for(image_folder, epochs=3, augment="light")
    assert extractions_at_epoch_ends(workspace, first, extractions)[0] == [2, 3, 4]
    extractions.clear()

    other_head = config_for(image_folder, epochs=3, augment="light", lr=3e-3,
                            model=ModelConfig(backbone=TINY, head=HeadConfig(kind="mlp")))
    at_epoch_end, seen = extractions_at_epoch_ends(workspace, other_head, extractions)
    assert at_epoch_end == [0, 0, 0]
    assert any(isinstance(e, ev.Note) and "loaded from the cache" in e.message for e in seen)
    assert not any(isinstance(e, ev.Progress) and e.phase == "features" for e in seen)

    # Epoch 4 needs a view the first run never computed: only that one is computed.
    assert extractions_at_epoch_ends(workspace, config_for(image_folder, epochs=4, augment="light"),
                                     extractions)[0] == [0, 0, 0, 1]
    extractions.clear()
    # Another augmentation: the validation features (eval view) are shared, the training views not.
    assert extractions_at_epoch_ends(workspace, config_for(image_folder, epochs=1, augment="standard"),
                                     extractions)[0] == [1]
    extractions.clear()
    for model in (ModelConfig(backbone=TINY, pretrained=False),
                  ModelConfig(backbone="mobilenet_v3_small", pretrained=False)):
        assert extractions_at_epoch_ends(workspace, config_for(image_folder, epochs=1, augment="light", model=model),
                                         extractions)[0] == [2], model
        extractions.clear()


def test_a_damaged_feature_file_is_computed_again(workspace, image_folder, monkeypatch):
    extractions = count_extractions(monkeypatch)
    cfg = config_for(image_folder, epochs=1)
    _, first = extractions_at_epoch_ends(workspace, cfg, extractions)
    files = sorted((workspace.cache_dir / "features").glob("features-*.npy"))
    assert len(files) == 2  # the training images' view and the validation set's
    sizes = [f.stat().st_size for f in files]
    files[0].write_bytes(b"not a numpy file")
    files[1].write_bytes(files[1].read_bytes()[:-100])  # cut short
    extractions.clear()
    at_epoch_end, second = extractions_at_epoch_ends(workspace, cfg, extractions)
    assert at_epoch_end == [2] and [f.stat().st_size for f in files] == sizes  # both whole again
    assert [e.val_loss for e in first if isinstance(e, ev.EpochEnded)] == \
        [e.val_loss for e in second if isinstance(e, ev.EpochEnded)]


def test_fine_tuning_trains_images_with_augmentation(workspace, image_folder):
    cfg = config_for(image_folder, epochs=1, augment="standard", feature_cache=False,
                     model=ModelConfig(backbone=TINY, pretrained=False),
                     freeze=FreezePlan(mode="last_n", last_n=1), optimizer="sgd", schedule="cosine")
    run, result, seen = run_training(workspace, cfg)
    started = next(e for e in seen if isinstance(e, ev.RunStarted))
    assert not started.feature_cache
    assert any(isinstance(e, ev.BatchEnded) for e in seen)
    assert run.summary()["pretrained"] is False


def test_cancel_keeps_the_best_checkpoint(workspace, image_folder):
    control = ev.Control()

    def stop_after_first_epoch(event):
        if isinstance(event, ev.EpochEnded) and event.epoch == 1:
            control.stop()

    cfg = config_for(image_folder, epochs=5)
    run = RunStore(workspace).create(cfg)
    result = train(cfg, run, workspace, subscribers=[stop_after_first_epoch], control=control)
    assert result["state"] == "cancelled" and run.state == "cancelled"
    events, _ = run.read_events()
    assert isinstance(events[-1], ev.RunCancelled) and events[-1].best_epoch == 1
    assert run.checkpoint_path("best").exists()
    assert run.read_evaluation("val") is not None


def test_stop_flag_file_cancels_from_another_process(workspace, image_folder):
    cfg = config_for(image_folder, epochs=5)
    run = RunStore(workspace).create(cfg)

    def request_stop(event):
        if isinstance(event, ev.EpochEnded) and event.epoch == 2:
            run.request_stop()  # what the app's Stop button does

    result = train(cfg, run, workspace, subscribers=[request_stop])
    assert result["state"] == "cancelled" and result["best_epoch"] in (1, 2)


def test_resume_continues_from_the_last_checkpoint(workspace, image_folder):
    control = ev.Control()
    cfg = config_for(image_folder, epochs=4)
    run = RunStore(workspace).create(cfg)
    train(cfg, run, workspace, subscribers=[lambda e: isinstance(e, ev.EpochEnded) and e.epoch == 2 and control.stop()],
          control=control)
    assert run.state == "cancelled"
    seen: list = []
    result = train(cfg, run, workspace, subscribers=[seen.append], resume=True)
    epochs = [e.epoch for e in seen if isinstance(e, ev.EpochEnded)]
    assert epochs == [3, 4]
    assert any(isinstance(e, ev.Note) and "Resumed after epoch 2" in e.message for e in seen)
    assert [h["epoch"] for h in result["history"]] == [1, 2, 3, 4]
    assert run.state == "finished"


def test_early_stopping_stops_when_the_metric_stalls(workspace, image_folder):
    cfg = config_for(image_folder, epochs=10, lr=1e-9, monitor="val_acc", early_stopping_patience=2)
    _, result, seen = run_training(workspace, cfg)
    assert [e.epoch for e in seen if isinstance(e, ev.EpochEnded)] == [1, 2, 3]
    assert result["stopped_early"] and result["best_epoch"] == 1


@pytest.mark.parametrize("kind", ["logreg", "linear_svm", "lda", "nearest_mean", "knn"])
def test_classical_heads_on_cached_features(workspace, image_folder, kind):
    cfg = config_for(image_folder, model=ModelConfig(backbone=TINY, head=HeadConfig(kind=kind)))
    run, result, _ = run_training(workspace, cfg)
    assert result["val"]["accuracy"] >= 0.85
    assert predict(run, [image_folder / "blue" / "0.jpg"])[0][0][0] == "blue"


def test_bad_learning_rate_fails_before_any_work(workspace, image_folder):
    from tl_core.errors import ConfigError

    with pytest.raises(ConfigError):
        run_training(workspace, config_for(image_folder, lr=0.0))


def test_single_class_dataset_fails_with_a_clear_reason(workspace, tmp_path):
    from tests.conftest import write_image_folder
    from tl_core.errors import DataError

    folder = write_image_folder(tmp_path / "one", {"red": 6})
    run = RunStore(workspace).create(config_for(folder))
    with pytest.raises(DataError, match="two classes"):
        train(run.config, run, workspace)
    assert run.state == "failed" and "two classes" in run.status().error
    events, _ = run.read_events()
    assert isinstance(events[-1], ev.RunFailed)


@pytest.mark.slow
def test_pretrained_beats_random_init_on_real_photos(workspace, tmp_path, real_photos):
    """Crops of two real photos (a cat, a coffee cup), few per class: ImageNet features separate
    them far better than the same network with random weights."""
    import numpy as np

    rng = np.random.default_rng(0)
    root = tmp_path / "photos"
    for name, photo in [("cat", real_photos["chelsea"]), ("coffee", real_photos["coffee"])]:
        (root / name).mkdir(parents=True)
        w, h = photo.size
        for i in range(14):
            s = int(min(w, h) * rng.uniform(0.35, 0.6))
            x, y = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
            crop = photo.crop((x, y, x + s, y + s)).convert("L").convert("RGB")  # no colour shortcut
            crop.resize((96, 96)).save(root / name / f"{i}.jpg")
    accs = {}
    for pretrained in (True, False):
        cfg = config_for(root, epochs=6, lr=3e-3, model=ModelConfig(backbone="mobilenet_v2", pretrained=pretrained))
        cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, val_fraction=0.5))
        _, result, _ = run_training(workspace, cfg)
        accs[pretrained] = result["val"]["accuracy"]
    assert accs[True] >= 0.9 and accs[True] > accs[False], accs


def test_out_of_memory_halves_the_batch_and_carries_on(workspace, image_folder, monkeypatch):
    import tl_core.training.trainer as training

    real_step = training.train_step

    def step_that_needs_small_batches(model, inputs, labels, *args, **kw):
        if inputs.shape[0] > 4:
            raise torch.cuda.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")
        return real_step(model, inputs, labels, *args, **kw)

    monkeypatch.setattr(training, "train_step", step_that_needs_small_batches)
    cfg = config_for(image_folder, epochs=2, batch_size=16, schedule="cosine", lr=1e-2)
    run, result, seen = run_training(workspace, cfg)
    notes = [e.message for e in seen if isinstance(e, ev.Note)]
    assert notes[:2] == ["Out of memory: retrying epoch 1 with batch size 8.",
                         "Out of memory: retrying epoch 1 with batch size 4."]
    assert run.state == "finished" and result["val"]["accuracy"] > 0.5
    # The schedule was rebuilt for the smaller batch: cosine is half-way after epoch 1 of 2,
    # not already at zero, and every batch says how many steps its epoch has.
    batches = [e for e in seen if isinstance(e, ev.BatchEnded)]
    last_of_first = [b for b in batches if b.epoch == 1][-1]
    assert 0.3e-2 < last_of_first.lr < 0.7e-2
    assert last_of_first.step == last_of_first.steps == 7  # 27 training images, batch 4
    assert [b.global_step for b in batches] == list(range(1, len(batches) + 1))


def test_out_of_memory_at_batch_one_fails_with_advice(workspace, image_folder, monkeypatch):
    import tl_core.training.trainer as training
    from tl_core.errors import TrainingOutOfMemory

    def always_oom(*args, **kw):
        raise torch.cuda.OutOfMemoryError("CUDA out of memory.")

    monkeypatch.setattr(training, "train_step", always_oom)
    run = RunStore(workspace).create(config_for(image_folder, batch_size=2))
    with pytest.raises(TrainingOutOfMemory, match="smaller backbone"):
        train(run.config, run, workspace)
    assert run.state == "failed" and "batch size" in run.status().error


def test_same_seed_same_run(workspace, image_folder, tmp_path):
    """The same run three times: features computed, features loaded from the feature store, and
    computed again in a fresh workspace: the same numbers (views are seeded per view, and a cache
    hit does not shift the run's random numbers)."""
    from tl_core.workspace import Workspace

    cfg = config_for(image_folder, epochs=3, augment="light", seed=7,
                     model=ModelConfig(backbone=TINY, head=HeadConfig(kind="mlp")))
    histories = []
    for ws in (workspace, workspace, Workspace(tmp_path / "fresh")):
        _, result, _ = run_training(ws, cfg)
        histories.append([(h["train_loss"], h["val_loss"]) for h in result["history"]])
    assert histories[0] == histories[1] == histories[2]
