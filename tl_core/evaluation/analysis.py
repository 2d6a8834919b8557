"""Error analysis over per-image predictions: confusion-matrix cells, top losses, calibration,
a decision threshold for two classes, per-class metrics, and a 2-D map of the embeddings.

Predictions are ``EvalResult.predictions`` (a list of dicts), a DataFrame of the same columns, or
``predictions.csv`` read back: ``path, true, pred, confidence, loss, probs`` (+ ``true_label``,
``pred_label``). ``true``/``pred`` are class indices.

The map's features come from a run's backbone (``backbone_features``: the fine-tuned body, or the
same backbone with its ImageNet weights); ``body_was_frozen`` says whether the two are the same.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pandas as pd
from sklearn.metrics import accuracy_score, confusion_matrix, precision_recall_fscore_support

from tl_core.errors import DataError

if TYPE_CHECKING:
    from tl_core.runs import Run

Predictions = pd.DataFrame | Sequence[dict[str, Any]]
REQUIRED = ("path", "true", "pred")


def predictions_frame(preds: Predictions) -> pd.DataFrame:
    """The predictions as a DataFrame (a copy), with ``probs`` as lists even when read from CSV."""
    df = pd.DataFrame(list(preds)) if not isinstance(preds, pd.DataFrame) else preds.copy()
    missing = [c for c in REQUIRED if c not in df.columns]
    if missing:
        raise DataError(f"These predictions lack the columns {missing}; evaluate the run again.")
    if "probs" in df.columns and len(df) and isinstance(df["probs"].iloc[0], str):
        df["probs"] = df["probs"].map(json.loads)
    return df


def _as_index(value: int | str, df: pd.DataFrame, column: str, classes: Sequence[str] | None) -> int:
    """A class given by index or by name -> index."""
    if isinstance(value, (int, np.integer)):
        return int(value)
    if classes is not None:
        if value not in classes:
            raise DataError(f"Unknown class '{value}'. Classes: {', '.join(classes)}.")
        return list(classes).index(value)
    labels = df[[column, f"{column}_label"]].drop_duplicates() if f"{column}_label" in df.columns else None
    if labels is None:
        raise DataError(f"Class '{value}' given by name, but the predictions have no label names.")
    match = labels[labels[f"{column}_label"] == value]
    return int(match[column].iloc[0]) if len(match) else -1


def confusion(preds: Predictions, num_classes: int) -> np.ndarray:
    """Counts [true, predicted], the same cells that ``cell_images`` lists."""
    df = predictions_frame(preds)
    if df.empty:  # scikit-learn refuses an empty input; no images is an all-zero matrix
        return np.zeros((num_classes, num_classes), dtype=np.int64)
    return confusion_matrix(df["true"].to_numpy(int), df["pred"].to_numpy(int), labels=list(range(num_classes)))


def cell_images(preds: Predictions, true_label: int | str, pred_label: int | str,
                classes: Sequence[str] | None = None) -> pd.DataFrame:
    """Exactly the images of one confusion-matrix cell (row ``true_label``, column ``pred_label``),
    classes by index or name, the most confident first (for mistakes: the most surprising)."""
    df = predictions_frame(preds)
    t = _as_index(true_label, df, "true", classes)
    p = _as_index(pred_label, df, "pred", classes)
    cell = df[(df["true"] == t) & (df["pred"] == p)]
    if "confidence" in cell.columns:
        cell = cell.sort_values("confidence", ascending=False, kind="stable")
    return cell.reset_index(drop=True)


def top_losses(preds: Predictions, k: int = 16) -> pd.DataFrame:
    """The ``k`` images with the highest loss, highest first: mislabelled or hard images."""
    df = predictions_frame(preds)
    if "loss" not in df.columns:
        raise DataError("These predictions have no per-image loss; evaluate the run again.")
    return df.sort_values("loss", ascending=False, kind="stable").head(k).reset_index(drop=True)


@dataclass(frozen=True)
class Reliability:
    bins: pd.DataFrame  # lower, upper, confidence (mean), accuracy, count; one row per bin
    ece: float  # expected calibration error: sum over bins of count/N * |accuracy - confidence|
    mce: float  # maximum calibration error over the non-empty bins


def reliability(probs: np.ndarray | Sequence[Sequence[float]], labels: Sequence[int],
                n_bins: int = 10) -> Reliability:
    """Reliability diagram data from probabilities [N, C] and true class indices.

    Confidence is the top probability; bins are equal-width over [0, 1], right-closed, so a
    confidence of exactly 1.0 lands in the last bin. Empty bins have NaN confidence/accuracy.
    """
    probs = np.asarray(probs, dtype=np.float64)
    labels = np.asarray(labels, dtype=np.int64)
    if probs.ndim != 2 or len(probs) != len(labels):
        raise ValueError(f"probs must be [N, C] with N = len(labels); got {probs.shape} and {len(labels)}")
    # Not sklearn.calibration.calibration_curve: it drops empty bins and gives no counts, both of which
    # the diagram and the ECE need.
    confidence = probs.max(1)
    correct = (probs.argmax(1) == labels).astype(np.float64)
    edges = np.round(np.linspace(0.0, 1.0, n_bins + 1), 12)  # 0.6, not 0.6000000000000001
    which = np.clip(np.searchsorted(edges, confidence, side="left") - 1, 0, n_bins - 1)
    rows, ece, mce = [], 0.0, 0.0
    for b in range(n_bins):
        mask = which == b
        count = int(mask.sum())
        conf = float(confidence[mask].mean()) if count else float("nan")
        acc = float(correct[mask].mean()) if count else float("nan")
        if count:
            gap = abs(acc - conf)
            ece += count / len(labels) * gap
            mce = max(mce, gap)
        rows.append({"lower": edges[b], "upper": edges[b + 1], "confidence": conf, "accuracy": acc, "count": count})
    return Reliability(pd.DataFrame(rows), float(ece), float(mce))


@dataclass(frozen=True)
class ThresholdConfusion:
    threshold: float
    tp: int
    fp: int
    tn: int
    fn: int
    precision: float  # 0 when nothing is predicted positive
    recall: float  # 0 when there are no positives
    f1: float
    accuracy: float

    @property
    def matrix(self) -> np.ndarray:
        """[[tn, fp], [fn, tp]]: rows true negative/positive, columns predicted, like sklearn."""
        return np.array([[self.tn, self.fp], [self.fn, self.tp]])


def threshold_confusion(probs_pos: Sequence[float], labels: Sequence[int], threshold: float = 0.5) -> ThresholdConfusion:
    """Two classes: call an image positive when its positive-class probability >= ``threshold``.
    ``labels`` are 1 for the positive class, 0 for the other."""
    p = np.asarray(probs_pos, dtype=np.float64)
    y = np.asarray(labels, dtype=np.int64)
    if not set(np.unique(y)) <= {0, 1}:
        raise ValueError("threshold_confusion needs labels of 0 (negative) and 1 (positive)")
    if not len(y):  # scikit-learn refuses an empty input
        return ThresholdConfusion(float(threshold), 0, 0, 0, 0, 0.0, 0.0, 0.0, 0.0)
    pred = (p >= threshold).astype(np.int64)
    tn, fp, fn, tp = (int(n) for n in confusion_matrix(y, pred, labels=[0, 1]).ravel())
    precision, recall, f1, _ = precision_recall_fscore_support(y, pred, labels=[1], zero_division=0)
    return ThresholdConfusion(float(threshold), tp, fp, tn, fn, float(precision[0]), float(recall[0]),
                              float(f1[0]), float(accuracy_score(y, pred)))


def per_class_metrics(labels: Sequence[int], preds: Sequence[int], classes: Sequence[str]) -> pd.DataFrame:
    """Precision, recall, F1 and support per class (scikit-learn; 0 where undefined)."""
    precision, recall, f1, support = precision_recall_fscore_support(
        np.asarray(labels), np.asarray(preds), labels=list(range(len(classes))), zero_division=0)
    return pd.DataFrame({"class": list(classes), "precision": precision, "recall": recall,
                         "f1": f1, "support": support.astype(int)})


def embedding_map(features: np.ndarray, method: Literal["pca", "tsne"] = "pca", seed: int = 0) -> np.ndarray:
    """[N, D] features -> [N, 2] coordinates for a scatter plot (scikit-learn PCA or t-SNE).

    t-SNE's perplexity must be below N: it is clamped to (N - 1) / 3 for small sets. t-SNE takes
    tens of seconds on a CPU for a thousand points; PCA is instant.
    """
    if len(features) == 0:
        return np.zeros((0, 2), np.float32)
    x = np.asarray(features, dtype=np.float32).reshape(len(features), -1)
    n = len(x)
    if n < 3:  # too few points for either method to mean anything; keep them apart
        return np.column_stack([np.arange(n), np.zeros(n)]).astype(np.float32)
    if method == "pca":
        from sklearn.decomposition import PCA

        coords = PCA(n_components=2, random_state=seed).fit_transform(x) if x.shape[1] >= 2 else \
            np.column_stack([x[:, 0], np.zeros(n)])
    elif method == "tsne":
        from sklearn.manifold import TSNE

        perplexity = float(min(30.0, max(1.0, (n - 1) / 3)))
        init = "pca" if x.shape[1] >= 2 else "random"
        # Exact gradients are faster than Barnes-Hut on a few hundred points.
        coords = TSNE(n_components=2, perplexity=perplexity, init=init, random_state=seed,
                      method="exact" if n <= 200 else "barnes_hut").fit_transform(x)
    else:
        raise ValueError(f"unknown method {method!r}: use 'pca' or 'tsne'")
    return np.asarray(coords, dtype=np.float32)


def image_features(model, images_uint8, preprocess, device: str = "cpu", batch_size: int = 64) -> np.ndarray:
    """Body features [N, D] of uint8 images [N,3,S,S] (S = ``preprocess.resize_size``), seen as at
    evaluation (centre crop, normalised). A thin wrapper over ``tl_core.model.features.extract_features``."""
    import torch

    from tl_core.model.features import extract_features
    from tl_core.model.preprocess import Normalizer, eval_view, make_loader

    device = torch.device(device)
    model = model.to(device).eval()
    n = len(images_uint8)
    loader = make_loader(images_uint8, list(range(n)), [0] * n, eval_view(preprocess), batch_size, shuffle=False)
    features, _ = extract_features(model.body, loader, Normalizer.for_preprocess(preprocess, device))
    return features.numpy()


def backbone_features(run: Run, which: Literal["before", "after"], root: Path | str,
                      paths: Sequence[str]) -> np.ndarray:
    """Backbone features [N, D] of the images ``paths`` (relative to ``root``): ``which`` = "after"
    (the run's body) or "before" (the same backbone with its pretrained weights)."""
    from tl_core.model.preprocess import decode
    from tl_core.model.registry import build_model, get_backbone

    cfg = run.config
    if which == "after":
        from tl_core.model.loading import load_model  # here: it imports torch

        model = load_model(run, "best")
    else:
        model = build_model(cfg.model.backbone, max(len(run.classes), 2), cfg.model.head, pretrained=True)
    preprocess = get_backbone(cfg.model.backbone).preprocess
    images = decode([Path(root) / p for p in paths], preprocess)
    return image_features(model, images, preprocess)


def body_was_frozen(run: Run) -> bool:
    """Whether the run's backbone stayed frozen through all its epochs (a feature extractor): its
    features are then the ImageNet ones, before and after, and one map shows both."""
    from tl_core.model.freeze import body_frozen_throughout
    from tl_core.model.loading import skeleton_model

    cfg = run.config
    model_groups = list(skeleton_model(cfg.model.backbone, max(len(run.classes), 2), cfg.model.head).group_names)
    return body_frozen_throughout(cfg.freeze, model_groups, cfg.train.epochs)
