"""Classical classifiers (scikit-learn) on cached backbone features, folded into a torch head.

Each classifier is fitted after a ``StandardScaler``. For the linear ones both are affine, so the
pipeline's decision function is ``coef @ ((x - mean) / scale) + intercept`` = ``(coef / scale) @ x +
(intercept - coef @ (mean / scale))``: one ``nn.Linear``. Nearest class mean is linear too (see
``_prototype_scores``). k nearest neighbours is not: it becomes a ``KNNHead`` that keeps the
standardised training features. The run's model thus stays a normal TransferModel (checkpoints,
evaluation, export, Grad-CAM) whatever head trained it.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch
from sklearn.discriminant_analysis import LinearDiscriminantAnalysis
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier, NearestCentroid
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.svm import LinearSVC
from torch import nn

from tl_core.config import CLASSICAL_HEADS
from tl_core.errors import ConfigError, DataError
from tl_core.model.heads import KNNHead

# A class that had no training examples gets the mean of the other classes' logits minus this:
# below the largest of them for every input, so it is never predicted, with probability ~0.
_ABSENT_CLASS_MARGIN = 1e4


def make_classical_pipeline(kind: str, seed: int = 0, balanced: bool = False, num_classes: int = 0,
                            neighbours: int = 5) -> Pipeline:
    """``balanced`` (``TrainConfig.balance`` not "none"): class weights n / (k * n_c), or for LDA,
    which takes no weights, equal class priors. Nearest class mean needs none: each class is one
    prototype whatever its size (``RunConfig.validate`` refuses balancing for knn's votes).
    ``neighbours``: knn's k."""
    weight = "balanced" if balanced else None
    if kind == "logreg":
        clf = LogisticRegression(max_iter=2000, random_state=seed, class_weight=weight)
    elif kind == "linear_svm":
        clf = LinearSVC(max_iter=5000, random_state=seed, class_weight=weight)
    elif kind == "lda":
        clf = LinearDiscriminantAnalysis(priors=[1 / num_classes] * num_classes if balanced else None)
    elif kind == "nearest_mean":
        clf = NearestCentroid()
    elif kind == "knn":
        # Brute force: exact distances, and equally distant training images taken in training
        # order, which KNNHead's stable sort reproduces (a tree search orders ties otherwise).
        clf = KNeighborsClassifier(n_neighbors=neighbours, algorithm="brute")
    else:
        raise ConfigError(f"Unknown classical head {kind!r}. Choose one of: {', '.join(CLASSICAL_HEADS)}.")
    return make_pipeline(StandardScaler(), clf)


def _prototype_scores(clf: NearestCentroid, temperature: float | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Nearest class mean as linear scores: ``-||z - mu_k||^2 / T`` is ``(2 mu_k . z - ||mu_k||^2) / T``
    up to ``-||z||^2 / T``, the same for every class, which softmax and argmax ignore.

    Softmax then says: each ``T`` by which an image is nearer (in squared distance) to one
    prototype than to another multiplies the odds of the nearer class by e; an image halfway
    between two prototypes gets 50/50. An unscaled ``-d^2`` over hundreds of features would give
    ~100% to every answer, right or wrong. ``T`` is ``temperature`` (``prototype_temperature``), or
    without one the classes' squared radius (how far a training image typically lies from its own
    class's mean; the number of features when every class has one image).
    """
    mu = np.asarray(clf.centroids_, dtype=np.float64)
    if temperature is None:
        spread = np.asarray(clf.within_class_std_dev_, dtype=np.float64) ** 2
        temperature = float(spread.sum()) if spread.size and np.all(np.isfinite(spread)) else 0.0
        temperature = temperature if temperature > 1e-12 else float(mu.shape[1])
    return 2 * mu / temperature, -(mu * mu).sum(1) / temperature


def prototype_temperature(z: np.ndarray, y: np.ndarray, centroids: np.ndarray, classes: np.ndarray) -> float | None:
    """The ``T`` of ``_prototype_scores`` whose probabilities are the most honest on the training
    images themselves, each judged by the prototypes without it (leave one out: its own class's
    mean is then ``(n mu - z) / (n - 1)``), as temperature scaling fits one on held-out images
    (Guo et al. 2017). None when no class has two images (there is nothing to leave out)."""
    from scipy.optimize import minimize_scalar
    from scipy.special import logsumexp

    index = np.searchsorted(classes, y)
    counts = np.bincount(index, minlength=len(classes)).astype(np.float64)
    d2 = ((z[:, None, :] - centroids[None]) ** 2).sum(-1)  # [N, classes]
    keep = counts[index] >= 2
    if not keep.any():
        return None
    d2, index = d2[keep], index[keep]
    rows = np.arange(len(index))
    d2[rows, index] *= (counts[index] / (counts[index] - 1)) ** 2  # the distance to its own mean without it
    scale = float(np.median(d2)) or 1.0

    def loss(log_t: float) -> float:
        logits = -d2 / (scale * np.exp(log_t))
        return float(np.mean(logsumexp(logits, axis=1) - logits[rows, index]))

    return scale * float(np.exp(minimize_scalar(loss, bounds=(-12.0, 12.0), method="bounded").x))


def fold_into_linear(pipeline: Pipeline, num_classes: int, temperature: float | None = None) -> nn.Linear:
    """The fitted scaler + linear classifier (or nearest class mean, its logits divided by
    ``temperature``, see ``_prototype_scores``) as one ``nn.Linear(D, num_classes)`` whose argmax is
    the pipeline's prediction (class ``k`` = label index ``k``)."""
    scaler, clf = pipeline[0], pipeline[-1]
    mean = scaler.mean_ if scaler.mean_ is not None else 0.0
    scale = scaler.scale_ if scaler.scale_ is not None else 1.0
    if isinstance(clf, NearestCentroid):
        coef, intercept = _prototype_scores(clf, temperature)
    else:
        coef, intercept = clf.coef_, clf.intercept_
    coef = np.asarray(coef, dtype=np.float64) / scale
    intercept = np.asarray(intercept, dtype=np.float64) - coef @ np.broadcast_to(mean, coef.shape[1:])
    classes = [int(c) for c in clf.classes_]
    if coef.shape[0] == 1:  # binary: one score z for classes_[1]; logits [-z/2, z/2] keep softmax = sigmoid(z)
        coef = np.vstack([-coef[0] / 2, coef[0] / 2])
        intercept = np.array([-intercept[0] / 2, intercept[0] / 2])
    # Absent classes: the mean of the present classes' logits, minus a margin (never the largest).
    weight = np.broadcast_to(coef.mean(0), (num_classes, coef.shape[1])).copy()
    bias = np.full(num_classes, intercept.mean() - _ABSENT_CLASS_MARGIN)
    weight[classes] = coef
    bias[classes] = intercept
    linear = nn.Linear(coef.shape[1], num_classes)
    with torch.no_grad():
        linear.weight.copy_(torch.from_numpy(weight))
        linear.bias.copy_(torch.from_numpy(bias))
    return linear


def knn_head(pipeline: Pipeline, x: np.ndarray, y: np.ndarray, num_classes: int) -> KNNHead:
    """The fitted scaler + ``KNeighborsClassifier`` as a ``KNNHead`` that predicts what it predicts
    (it keeps the standardised training features ``x`` [N, D] and labels ``y``)."""
    scaler, clf = pipeline[0], pipeline[-1]
    head = KNNHead(x.shape[1], num_classes, clf.n_neighbors)
    mean = scaler.mean_ if scaler.mean_ is not None else np.zeros(x.shape[1])
    scale = scaler.scale_ if scaler.scale_ is not None else np.ones(x.shape[1])
    return head.fill(torch.from_numpy(np.asarray(mean)), torch.from_numpy(np.asarray(scale)),
                     torch.from_numpy(scaler.transform(x)), torch.from_numpy(np.asarray(y)))


def fit_classical(kind: str, features_train: torch.Tensor | np.ndarray, y_train: torch.Tensor | np.ndarray,
                  num_classes: int, seed: int = 0, balanced: bool = False, neighbours: int = 5) -> nn.Module:
    """Fit ``kind`` (one of ``CLASSICAL_HEADS``) on features [N, D] and labels [N] (ints in
    ``0..num_classes-1``); return the equivalent head: an ``nn.Linear(D, num_classes)``, or for
    knn a ``KNNHead`` voting with ``min(neighbours, N)`` neighbours."""
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
    pipeline = make_classical_pipeline(kind, seed, balanced, num_classes=len(np.unique(y)),
                                       neighbours=max(1, min(neighbours, len(y))))
    with warnings.catch_warnings():
        # A not-quite-converged linear model on features is still a good classifier.
        warnings.simplefilter("ignore", ConvergenceWarning)
        # Nearest class mean with one image per class (or a constant feature) warns that the
        # spread within classes is 0 or undefined; the prototypes are fine (see _prototype_scores).
        warnings.simplefilter("ignore", RuntimeWarning)
        warnings.filterwarnings("ignore", "self.within_class_std_dev_", UserWarning)
        try:
            pipeline.fit(x, y)
        except ValueError as exc:  # NearestCentroid: every feature the same in every image
            if kind != "nearest_mean":
                raise
            raise DataError(f"The {kind} head could not be fitted on these features ({exc}). "
                            "Check that the training images differ from each other.") from exc
    if kind == "knn":
        return knn_head(pipeline, x, y, num_classes)
    if kind == "nearest_mean":
        clf = pipeline[-1]
        return fold_into_linear(pipeline, num_classes, prototype_temperature(
            pipeline[0].transform(x), y, np.asarray(clf.centroids_, dtype=np.float64), clf.classes_))
    return fold_into_linear(pipeline, num_classes)
