"""Imbalanced classes: class weights for the loss, per-image weights for a class-balanced sampler,
and when to suggest either (``TrainConfig.balance``).

- ``weighted_loss``: the training loss weights each image of class c by n / (k * n_c) (n training
  images, k classes that have some, n_c of class c: scikit-learn's ``class_weight="balanced"``),
  so every class adds the same total to the loss. The *validation* loss stays unweighted: it is
  the run's honest yardstick (the best epoch, early stopping, and comparable between runs with and
  without balancing); the training loss shown is the weighted one.
- ``sampler``: each epoch draws as many training images as there are, with replacement, each
  image with probability proportional to 1 / n_c of its class (torch's ``WeightedRandomSampler``,
  seeded by the run's seed and the epoch): every class is seen about equally often, the rare
  ones' images repeated, the common ones' partly left out in a given epoch.

Scikit-learn heads (logistic regression, linear SVM) fitted once on features take either choice
as ``class_weight="balanced"``; LDA as equal class priors. No torch at module level: the pages
read ``suggest_balance``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

SUGGEST_RATIO = 3.0  # largest / smallest class from which the app suggests balancing (= data.health.IMBALANCE_WARN)


def class_counts(labels: Sequence[int], num_classes: int) -> np.ndarray:
    return np.bincount(np.asarray(labels, dtype=np.int64), minlength=num_classes)[:num_classes]


def class_weights(labels: Sequence[int], num_classes: int) -> np.ndarray:
    """n / (k * n_c) per class (float32 [num_classes]); 0 for a class without training images
    (no image carries it, so it changes nothing), k counting only the classes that have some."""
    counts = class_counts(labels, num_classes).astype(np.float64)
    present = counts > 0
    weights = np.zeros(num_classes)
    weights[present] = counts.sum() / (present.sum() * counts[present])
    return weights.astype(np.float32)


def sample_weights(labels: Sequence[int], num_classes: int | None = None) -> np.ndarray:
    """Per-image weights 1 / n_c for a class-balanced sampler (float64 [len(labels)])."""
    labels = np.asarray(labels, dtype=np.int64)
    counts = class_counts(labels, int(num_classes or (labels.max() + 1 if len(labels) else 0)))
    return 1.0 / counts[labels].astype(np.float64) if len(labels) else np.zeros(0)


def imbalance_ratio(counts: Mapping[str, int] | Sequence[int]) -> float | None:
    """Largest class / smallest class; None when a class is empty or there are fewer than two."""
    values = list(counts.values()) if isinstance(counts, Mapping) else list(counts)
    if len(values) < 2 or min(values) <= 0:
        return None
    return max(values) / min(values)


def suggest_balance(counts: Mapping[str, int] | Sequence[int]) -> bool:
    """Whether the classes are imbalanced enough (ratio ``SUGGEST_RATIO`` or more, where the health
    report warns) to suggest balancing."""
    ratio = imbalance_ratio(counts)
    return ratio is not None and ratio >= SUGGEST_RATIO
