"""Backbone features and the cache a frozen-body run trains on (tl_core.features)."""

from __future__ import annotations

import torch
from torch import nn

from tl_core.features import MAX_FEATURE_VIEWS, FeatureCache, extract_features, feature_views
from tl_core.preprocess import Normalizer


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
    views = [torch.full((1, 1), float(i)) for i in range(3)]
    cache = FeatureCache(train_views=views)
    assert [float(cache.train_features(epoch)) for epoch in range(1, 6)] == [0, 1, 2, 0, 1]
