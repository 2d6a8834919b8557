"""Backbone features: the body run over batches of images, and the cache a frozen-body run trains on.

When the whole backbone stays frozen, the body's features are computed once (once per augmented
view when augmentation is on) and only the head trains on them: epochs after the first then cost
a tiny fraction of the first.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
from torch import nn

from .device import autocast
from .preprocess import Normalizer

MAX_FEATURE_VIEWS = 4  # augmented views whose features are cached; epochs cycle through them


@torch.no_grad()
def extract_features(body: nn.Module, loader: Iterable, normalize: Normalizer,
                     amp_dtype: torch.dtype | None = None,
                     progress: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``body`` over a loader of (uint8 images, labels); returns float32 features and labels on CPU."""
    body.eval()
    feats, labels = [], []
    total = len(loader) if hasattr(loader, "__len__") else 0
    for i, (images, y) in enumerate(loader, start=1):
        with autocast(normalize.device, amp_dtype):
            f = body(normalize(images))
        feats.append(f.float().cpu())
        labels.append(torch.as_tensor(y))
        if progress:
            progress(i, total)
    return torch.cat(feats), torch.cat(labels)


def feature_views(augment: str, epochs: int) -> int:
    """How many augmented views of the training set a cached run computes."""
    return 1 if augment == "none" else min(epochs, MAX_FEATURE_VIEWS)


@dataclass
class FeatureCache:
    """Body features of a run's images, on CPU; empty until the run first needs them."""

    train_views: list[torch.Tensor] | None = None  # one [N_train, D] per augmented view
    val: torch.Tensor | None = None  # [N_val, D], the eval view

    def train_features(self, epoch: int) -> torch.Tensor:
        """The view epoch ``epoch`` (from 1) trains on; epochs cycle through the views."""
        return self.train_views[(epoch - 1) % len(self.train_views)]
