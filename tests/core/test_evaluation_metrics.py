"""evaluate_logits: accuracy, top-k accuracy, per-class metrics and the confusion matrix from logits."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tl_core.errors import DataError
from tl_core.evaluation.metrics import evaluate_logits


def by_hand_top_k(logits: torch.Tensor, labels: list[int], k: int) -> float:
    ranked = np.argsort(-logits.numpy(), axis=1, kind="stable")[:, :k]
    return float(np.mean([label in row for label, row in zip(labels, ranked, strict=True)]))


@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_metrics_match_a_count_by_hand(n_classes):
    gen = torch.Generator().manual_seed(n_classes)
    logits = torch.randn(40, n_classes, generator=gen)
    labels = torch.randint(0, n_classes, (40,), generator=gen).tolist()
    classes = [f"c{i}" for i in range(n_classes)]
    result = evaluate_logits(logits, labels, classes)
    k = min(3, n_classes)
    assert result.top_k == k
    assert result.top_k_accuracy == pytest.approx(by_hand_top_k(logits, labels, k))
    pred = logits.argmax(1).tolist()
    assert result.accuracy == pytest.approx(np.mean([p == t for p, t in zip(pred, labels, strict=True)]))
    cm = np.zeros((n_classes, n_classes), dtype=int)
    for t, p in zip(labels, pred, strict=True):
        cm[t, p] += 1
    assert result.confusion == cm.tolist()
    assert [row["support"] for row in result.per_class] == cm.sum(1).tolist()
    assert result.summary()[f"top{k}_accuracy"] == result.top_k_accuracy


def test_top_1_of_two_classes_is_the_accuracy():
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 0.5], [0.2, 0.1]])
    result = evaluate_logits(logits, [0, 0, 1, 0], ["a", "b"])
    assert result.top_k == 2 and result.top_k_accuracy == 1.0  # two guesses of two classes
    assert result.accuracy == 0.5


def test_a_class_missing_from_the_labels_still_has_its_row():
    logits = torch.tensor([[3.0, 0.0, 0.0, 0.0], [0.0, 0.0, 3.0, 0.0], [0.0, 2.0, 1.0, 0.0]])
    result = evaluate_logits(logits, [0, 2, 2], list("abcd"))
    assert result.top_k_accuracy == 1.0 and result.accuracy == pytest.approx(2 / 3)
    assert result.confusion == [[1, 0, 0, 0], [0, 0, 0, 0], [0, 1, 1, 0], [0, 0, 0, 0]]


def test_no_images_is_a_data_error():
    with pytest.raises(DataError, match="no images"):
        evaluate_logits(torch.zeros(0, 3), [], ["a", "b", "c"])
