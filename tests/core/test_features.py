"""Backbone features and the cache a frozen-body run trains on (tl_core.model.features)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from tl_core.config import MAX_FEATURE_VIEWS, feature_views
from tl_core.model.features import (
    EVAL_VIEW,
    EvalBatches,
    FeatureCache,
    FeatureStore,
    FeatureView,
    extract_features,
    feature_key,
    model_fingerprint,
    train_feature_view,
)
from tl_core.model.preprocess import Normalizer
from tl_core.model.registry import get_backbone


def test_extract_features_runs_the_body_on_normalised_images_in_eval_mode():
    body = nn.Sequential(nn.Flatten(), nn.Dropout(0.9))
    normalize = Normalizer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), torch.device("cpu"))
    images = torch.randint(0, 256, (5, 3, 2, 2), dtype=torch.uint8)
    loader = [(images[:3], torch.tensor([0, 1, 2])), (images[3:], torch.tensor([3, 4]))]
    seen: list[tuple[int, int]] = []
    feats, labels = extract_features(body, loader, normalize, progress=lambda done, total: seen.append((done, total)))
    assert not body.training  # dropout off: the features are deterministic
    assert torch.equal(feats, normalize(images).flatten(1)) and labels.tolist() == [0, 1, 2, 3, 4]
    assert seen == [(1, 2), (2, 2)]


def test_epochs_cycle_through_the_cached_views():
    assert feature_views("none", 10) == 1
    assert feature_views("light", 2) == 2 and feature_views("standard", 50) == MAX_FEATURE_VIEWS
    cache = FeatureCache(n_views=3)
    assert [cache.view_of(epoch) for epoch in range(1, 8)] == [0, 1, 2, 0, 1, 2, 0]
    cache.train_views = {i: torch.full((1, 1), float(i)) for i in range(3)}
    assert [float(cache.train_features(epoch)) for epoch in range(1, 6)] == [0, 1, 2, 0, 1]


def test_each_view_has_its_own_seed_and_view_zero_keeps_the_runs_seed():
    assert train_feature_view("none", 3, seed=5) == EVAL_VIEW
    views = [train_feature_view("light", i, seed=5) for i in range(MAX_FEATURE_VIEWS)]
    assert views[0].torch_seed() == 5
    assert len({v.torch_seed() for v in views}) == MAX_FEATURE_VIEWS
    assert FeatureView("light", 1, 6).torch_seed() != views[1].torch_seed()
    assert views[1].torch_seed() == FeatureView("light", 1, 5).torch_seed()  # the same whenever asked


def test_the_feature_key_changes_with_everything_that_changes_the_features():
    import dataclasses

    from tl_core.model.registry import get_backbone

    pre = get_backbone("mobilenet_v2").preprocess
    other_pre = dataclasses.replace(pre, crop_size=pre.crop_size - 32)
    base = dict(model="m", preprocess=pre, image_ids=["a", "b", "c"], view=FeatureView("light", 0, 0), numerics="cpu")
    key = feature_key(**base)
    assert key == feature_key(**base)
    for change in [dict(model="m2"), dict(preprocess=other_pre), dict(image_ids=["a", "c", "b"]),
                   dict(image_ids=["a", "b"]), dict(view=FeatureView("light", 1, 0)),
                   dict(view=FeatureView("light", 0, 1)), dict(view=FeatureView("standard", 0, 0)),
                   dict(view=EVAL_VIEW), dict(numerics="cuda")]:
        assert feature_key(**{**base, **change}) != key, change


def test_the_model_fingerprint_tells_weights_pooling_and_pretraining_apart():
    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(3, 4, 1), nn.AdaptiveAvgPool2d(1))
    same = nn.Sequential(nn.Conv2d(3, 4, 1), nn.AdaptiveAvgPool2d(1))
    same.load_state_dict(body.state_dict())
    fp = model_fingerprint("net", True, body)
    assert fp == model_fingerprint("net", True, same)
    assert fp != model_fingerprint("net", False, same)
    assert fp != model_fingerprint("net", True, nn.Sequential(same[0], nn.AdaptiveMaxPool2d(1)))
    with torch.no_grad():
        same[0].weight[0, 0, 0, 0] += 1e-6
    assert fp != model_fingerprint("net", True, same)


def test_the_feature_store_round_trips_and_drops_damaged_files(tmp_path):
    store = FeatureStore(tmp_path / "features")
    feats = torch.randn(5, 7)
    assert store.load("k", 5) is None
    assert store.save("k", feats)
    assert torch.equal(store.load("k", 5), feats)
    assert store.load("k", 6) is None and not store.path("k").exists()  # wrong shape: dropped
    store.save("k", feats)
    store.path("k").write_bytes(store.path("k").read_bytes()[:-8])  # cut short
    assert store.load("k", 5) is None and not store.path("k").exists()
    assert list(store.folder.iterdir()) == []  # no temporary files left behind


def test_a_full_disk_does_not_fail_the_store(tmp_path, monkeypatch):
    import errno

    def no_space(*args, **kw):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(np, "save", no_space)
    store = FeatureStore(tmp_path / "features")
    assert store.save("k", torch.randn(2, 3)) is False
    assert list(store.folder.iterdir()) == []


# ---------------------------------------------------------------------------------------------
# timm and open_clip bodies: their features, and the store a second frozen run reads
# ---------------------------------------------------------------------------------------------
FOUNDATION = ["tiny_vit", "tiny_effnet", "tiny_clip"]


@pytest.mark.parametrize("backbone", FOUNDATION)
def test_timm_and_open_clip_bodies_give_the_same_features_batched_and_alone(backbone):
    from tl_core.model.preprocess import eval_view
    from tl_core.model.registry import build_model

    torch.manual_seed(0)
    spec = get_backbone(backbone)
    body = build_model(backbone, 2, pretrained=False).body
    pre = spec.preprocess
    images = torch.randint(0, 256, (5, 3, pre.resize_size, pre.resize_size), dtype=torch.uint8)
    normalize = Normalizer.for_preprocess(pre, torch.device("cpu"))
    fingerprint = model_fingerprint(backbone, False, body)
    loader = EvalBatches(images, range(5), [0] * 5, eval_view(pre), batch_size=2)
    feats, _ = extract_features(body, loader, normalize)
    assert feats.shape == (5, spec.feature_dim) and feats.dtype == torch.float32
    with torch.no_grad():
        one_by_one = torch.cat([body(normalize(eval_view(pre)(images[i:i + 1]))) for i in range(5)])
    torch.testing.assert_close(feats, one_by_one, atol=1e-4, rtol=1e-4)
    assert model_fingerprint(backbone, False, body) == fingerprint  # channels-last changed no weight


@pytest.mark.parametrize("backbone", FOUNDATION)
def test_a_second_frozen_run_on_a_timm_or_open_clip_backbone_reads_the_stored_features(
        backbone, workspace, image_folder, tmp_path, monkeypatch):
    import tl_core.training.trainer as training
    from tests.tiny_foundation import save_weights
    from tl_core import events as ev
    from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from tl_core.model.weights_lookup import ENV_WEIGHTS
    from tl_core.runs import RunStore

    monkeypatch.setenv(ENV_WEIGHTS, str(save_weights(backbone, tmp_path / "weights").parent))  # "pretrained"
    extractions: list[int] = []
    real_extract = training.extract_features
    monkeypatch.setattr(training, "extract_features", lambda *a, **kw: extractions.append(1) or real_extract(*a, **kw))

    def train_with(lr: float) -> list:
        config = RunConfig(data=DataConfig(source=str(image_folder), val_fraction=0.25),
                           model=ModelConfig(backbone=backbone),
                           train=TrainConfig(epochs=1, batch_size=8, lr=lr, schedule="constant"))
        seen: list = []
        training.train(config, RunStore(workspace).create(config), workspace, subscribers=[seen.append])
        return seen

    first = train_with(1e-2)
    assert len(extractions) == 2  # the training images and the validation images
    files = sorted((workspace.cache_dir / "features").glob("features-*.npy"))
    assert len(files) == 2 and np.load(files[0]).shape[1] == get_backbone(backbone).feature_dim
    extractions.clear()
    second = train_with(3e-2)
    assert extractions == [] and any(isinstance(e, ev.Note) and "loaded from the cache" in e.message for e in second)
    assert any(isinstance(e, ev.EpochEnded) for e in first + second)
