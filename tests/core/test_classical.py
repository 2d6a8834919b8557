"""scikit-learn heads folded into an nn.Linear must predict what the sklearn pipeline predicts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import softmax

from tl_core.config import CLASSICAL_HEADS
from tl_core.errors import ConfigError, DataError
from tl_core.model.classical import fit_classical, fold_into_linear, make_classical_pipeline


def _blobs(n_classes: int, n_per_class: int = 30, dim: int = 12, seed: int = 0):
    """Overlapping Gaussian blobs with features on very different scales (the scaler matters)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.5, size=(n_classes, dim))
    x = np.concatenate([c + rng.normal(0, 1, size=(n_per_class, dim)) for c in centres])
    x = x * np.logspace(-2, 2, dim) + rng.normal(0, 5, size=dim)
    y = np.repeat(np.arange(n_classes), n_per_class)
    return x.astype(np.float32), y


@pytest.mark.parametrize("n_classes", [2, 4])
@pytest.mark.parametrize("kind", CLASSICAL_HEADS)
def test_folded_linear_predicts_like_the_pipeline(kind, n_classes):
    x, y = _blobs(n_classes)
    x_test, _ = _blobs(n_classes, seed=1)
    pipeline = make_classical_pipeline(kind).fit(x, y)
    linear = fold_into_linear(pipeline, n_classes)
    assert (linear.in_features, linear.out_features) == (x.shape[1], n_classes)
    with torch.no_grad():
        logits = linear(torch.from_numpy(x_test)).double().numpy()
    np.testing.assert_array_equal(logits.argmax(1), pipeline.predict(x_test))
    if kind == "logreg":  # the folded logits are the model's own: softmax = predict_proba
        np.testing.assert_allclose(softmax(logits, axis=1), pipeline.predict_proba(x_test), atol=1e-4)

    head = fit_classical(kind, torch.from_numpy(x), torch.from_numpy(y), n_classes)
    with torch.no_grad():
        assert torch.equal(head(torch.from_numpy(x_test)).argmax(1), torch.from_numpy(pipeline.predict(x_test)))


def test_class_without_training_examples_is_never_predicted():
    x, y = _blobs(3)
    keep = y != 1
    x, y = x[keep], np.where(y[keep] == 2, 2, 0)
    head = fit_classical("logreg", x, y, num_classes=3)
    with torch.no_grad():
        predicted = head(torch.from_numpy(_blobs(3, seed=2)[0])).argmax(1)
    assert 1 not in predicted.tolist() and set(predicted.tolist()) <= {0, 2}


def test_bad_inputs_are_user_errors():
    x, y = _blobs(2)
    with pytest.raises(ConfigError, match="logreg, linear_svm, lda"):
        fit_classical("random_forest", x, y, 2)
    with pytest.raises(DataError, match="two classes"):
        fit_classical("lda", x, np.zeros_like(y), 2)
    with pytest.raises(DataError, match="0..1"):
        fit_classical("lda", x, y + 1, 2)
