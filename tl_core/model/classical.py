"""Classical classifiers (scikit-learn) on cached backbone features, folded into a linear head.

Each classifier is fitted after a ``StandardScaler``. Both are affine, so the pipeline's decision
function is ``coef @ ((x - mean) / scale) + intercept`` = ``(coef / scale) @ x + (intercept -
coef @ (mean / scale))``: one ``nn.Linear``. The run's model thus stays a normal TransferModel
(checkpoints, evaluation, export) whatever head trained it.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from torch import nn

from tl_core.config import CLASSICAL_HEADS
from tl_core.errors import ConfigError, DataError

# Logit of a class that had no training examples: never predicted.
_ABSENT_CLASS_LOGIT = -1e4


def make_classical_pipeline(kind: str, seed: int = 0, balanced: bool = False, num_classes: int = 0) -> Pipeline:
    """``balanced`` (``TrainConfig.balance`` not "none"): class weights n / (k * n_c), or for LDA,
    which takes no weights, equal class priors."""
    weight = "balanced" if balanced else None
    if kind == "logreg":
        clf = LogisticRegression(max_iter=2000, random_state=seed, class_weight=weight)
    elif kind == "linear_svm":
        clf = LinearSVC(max_iter=5000, random_state=seed, class_weight=weight)
    elif kind == "lda":
        clf = LinearDiscriminantAnalysis(priors=[1 / num_classes] * num_classes if balanced else None)
    else:
        raise ConfigError(f"Unknown classical head {kind!r}. Choose one of: {', '.join(CLASSICAL_HEADS)}.")
    return make_pipeline(StandardScaler(), clf)


def fold_into_linear(pipeline: Pipeline, num_classes: int) -> nn.Linear:
    """The fitted scaler + linear classifier as one ``nn.Linear(D, num_classes)`` whose argmax is
    the pipeline's prediction (class ``k`` = label index ``k``)."""
    scaler, clf = pipeline[0], pipeline[-1]
    mean = scaler.mean_ if scaler.mean_ is not None else 0.0
    scale = scaler.scale_ if scaler.scale_ is not None else 1.0
    coef = np.asarray(clf.coef_, dtype=np.float64) / scale
    intercept = np.asarray(clf.intercept_, dtype=np.float64) - coef @ np.broadcast_to(mean, coef.shape[1:])
    classes = [int(c) for c in clf.classes_]
    if coef.shape[0] == 1:  # binary: one score z for classes_[1]; logits [-z/2, z/2] keep softmax = sigmoid(z)
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    weight = np.zeros((num_classes, coef.shape[1]))
    bias = np.full(num_classes, _ABSENT_CLASS_LOGIT)
    weight[classes] = coef
    bias[classes] = intercept
    linear = nn.Linear(coef.shape[1], num_classes)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(weight))
        linear.bias.copy_(torch.from_numpy(bias))
    return linear


def fit_classical(kind: str, features_train: torch.Tensor | np.ndarray, y_train: torch.Tensor | np.ndarray,
                  num_classes: int, seed: int = 0, balanced: bool = False) -> nn.Linear:
    """Fit ``kind`` (logreg | linear_svm | lda) on features [N, D] and labels [N] (ints in
    ``0..num_classes-1``); return the equivalent ``nn.Linear(D, num_classes)`` head."""
    x = features_train.detach().cpu().numpy() if isinstance(features_train, torch.Tensor) else np.asarray(features_train)
    y = y_train.detach().cpu().numpy() if isinstance(y_train, torch.Tensor) else np.asarray(y_train)
    x = x.astype(np.float64, copy=False)
    y = y.astype(np.int64, copy=False)
    if x.ndim != 2 or len(x) != len(y):
        raise DataError(f"Expected features [N, D] and N labels, got {tuple(x.shape)} and {len(y)}.")
    if len(np.unique(y)) < 2:
        raise DataError("A classical head needs training images of at least two classes.")
    if y.min() < 0 or y.max() >= num_classes:
        raise DataError(f"Labels must be in 0..{num_classes - 1}.")
    pipeline = make_classical_pipeline(kind, seed, balanced, num_classes=len(np.unique(y)))
    with warnings.catch_warnings():
        # A not-quite-converged linear model on features is still a good classifier.
        warnings.simplefilter("ignore", ConvergenceWarning)
        pipeline.fit(x, y)
    return fold_into_linear(pipeline, num_classes)
