"""scikit-learn heads folded into an nn.Linear (or, for knn, a KNNHead) must predict what the sklearn
pipeline predicts."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.special import softmax

from tl_core.config import CLASSICAL_HEADS
from tl_core.errors import ConfigError, DataError
from tl_core.model.classical import fit_classical, fold_into_linear, make_classical_pipeline
from tl_core.model.heads import VOTE_FLOOR, KNNHead

LINEAR_KINDS = [k for k in CLASSICAL_HEADS if k != "knn"]  # those folded into one nn.Linear


def _blobs(n_classes: int, n_per_class: int = 30, dim: int = 12, seed: int = 0):
    """Overlapping Gaussian blobs with features on very different scales (the scaler matters)."""
    rng = np.random.default_rng(seed)
    centres = rng.normal(0, 1.5, size=(n_classes, dim))
    x = np.concatenate([c + rng.normal(0, 1, size=(n_per_class, dim)) for c in centres])
    x = x * np.logspace(-2, 2, dim) + rng.normal(0, 5, size=dim)
    y = np.repeat(np.arange(n_classes), n_per_class)
    return x.astype(np.float32), y


@pytest.mark.parametrize("n_classes", [2, 4])
@pytest.mark.parametrize("kind", LINEAR_KINDS)
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


@pytest.mark.parametrize("kind", CLASSICAL_HEADS)
def test_class_without_training_examples_is_never_predicted(kind):
    x, y = _blobs(3)
    keep = y != 1
    x, y = x[keep], np.where(y[keep] == 2, 2, 0)
    head = fit_classical(kind, x, y, num_classes=3)
    far = _blobs(3, seed=2)[0] * 1000  # far from everything: large logits of either sign
    with torch.no_grad():
        predicted = head(torch.from_numpy(np.concatenate([_blobs(3, seed=2)[0], far]))).argmax(1)
    assert 1 not in predicted.tolist() and set(predicted.tolist()) <= {0, 2}


def _scaled(pipeline, x):
    return pipeline[0].transform(x)


@pytest.mark.parametrize("n_classes", [2, 3, 5])
def test_nearest_mean_is_the_nearest_prototype_and_its_probabilities_a_gaussian_posterior(n_classes):
    x, y = _blobs(n_classes, n_per_class=4)  # few images per class: what the head is for
    absent = n_classes - 1  # the last class has no training images: labels 0..n-2 of n classes
    if n_classes > 2:
        x, y = x[y != absent], y[y != absent]
    x_test = np.concatenate([_blobs(n_classes, seed=3)[0], x])
    pipeline = make_classical_pipeline("nearest_mean").fit(x, y)
    head = fit_classical("nearest_mean", x, y, n_classes)
    with torch.no_grad():
        logits = head(torch.from_numpy(x_test)).double().numpy()
    np.testing.assert_array_equal(logits.argmax(1), pipeline.predict(x_test))
    # softmax of minus the squared distances to the prototypes, divided by the temperature
    z, mu = _scaled(pipeline, x_test), pipeline[-1].centroids_
    with torch.no_grad():
        logits = fold_into_linear(pipeline, n_classes, temperature=7.0)(torch.from_numpy(x_test)).double().numpy()
    posterior = softmax(-((z[:, None, :] - mu[None]) ** 2).sum(-1) / 7.0, axis=1)
    present = [int(c) for c in pipeline[-1].classes_]
    np.testing.assert_allclose(softmax(logits, axis=1)[:, present], posterior, atol=1e-4)
    assert softmax(logits, axis=1)[:, [c for c in range(n_classes) if c not in present]].max(initial=0) < 1e-6


@pytest.mark.parametrize("shift", [0.05, 0.15, 0.3])
def test_nearest_mean_is_about_as_sure_as_it_is_right_in_many_dimensions(shift):
    """Two classes in 500 features, from overlapping to apart: an unscaled -d^2 would give ~100% to
    every answer; the leave-one-out temperature keeps the mean confidence near the accuracy."""
    rng = np.random.default_rng(0)
    x = np.concatenate([rng.normal(0, 1, (20, 500)), rng.normal(shift, 1, (20, 500))])
    y = np.repeat([0, 1], 20)
    x_test = np.concatenate([rng.normal(0, 1, (300, 500)), rng.normal(shift, 1, (300, 500))])
    head = fit_classical("nearest_mean", x, y, 2)
    with torch.no_grad():
        probs = head(torch.from_numpy(x_test).float()).softmax(1)
    accuracy = float((probs.argmax(1) == torch.from_numpy(np.repeat([0, 1], 300))).float().mean())
    assert abs(float(probs.max(1).values.mean()) - accuracy) < 0.15, (float(probs.max(1).values.mean()), accuracy)


def test_nearest_mean_with_one_image_per_class():
    x = np.array([[0.0, 0.0], [4.0, 0.0], [0.0, 4.0]], dtype=np.float32)
    y = np.array([0, 1, 2])
    head = fit_classical("nearest_mean", x, y, 3)
    with torch.no_grad():
        probs = head(torch.tensor([[3.9, 0.2], [2.0, -1.0], [0.1, 0.1]])).softmax(1)
    assert torch.isfinite(probs).all()
    assert probs[[0, 2]].argmax(1).tolist() == [1, 0]
    # (2, -1) is as far from prototype 0 as from prototype 1: half and half, prototype 2 behind
    assert abs(float(probs[1, 0] - probs[1, 1])) < 1e-4 and float(probs[1, 2]) < 0.1
    assert 0.5 < float(probs[0, 1]) < 0.99  # near prototype 1, sure of it but not 100%


@pytest.mark.parametrize("n_classes", [2, 4])
@pytest.mark.parametrize("neighbours", [1, 4, 5, 200])
def test_knn_head_votes_like_scikit_learn(n_classes, neighbours):
    x, y = _blobs(n_classes, n_per_class=6)
    x_test = np.concatenate([_blobs(n_classes, seed=4)[0], x])
    head = fit_classical("knn", x, y, n_classes, neighbours=neighbours)
    k = min(neighbours, len(y))
    pipeline = make_classical_pipeline("knn", neighbours=k).fit(x, y)
    assert isinstance(head, KNNHead) and head.votes_per_image == k
    with torch.no_grad():
        probs = head(torch.from_numpy(x_test)).double().softmax(1).numpy()
    np.testing.assert_array_equal(probs.argmax(1), pipeline.predict(x_test))
    # softmax of the logits is the share of votes (a class nobody voted for gets ~VOTE_FLOOR)
    np.testing.assert_allclose(probs, pipeline.predict_proba(x_test), atol=n_classes * VOTE_FLOOR)


def test_knn_ties_go_as_in_scikit_learn():
    # Standardising is per feature, so points placed symmetrically stay symmetric.
    x = np.array([[1, 0], [0, 1], [-1, 0], [0, -1], [1, 0], [3, 3], [-3, -3], [3, -3]], dtype=np.float64)
    y = np.array([2, 1, 0, 1, 0, 0, 2, 2])
    queries = np.array([[0, 0], [1, 0], [0.1, 0.9], [-0.9, 0.1]])
    for k in (1, 2, 3, 4, 5):
        pipeline = make_classical_pipeline("knn", neighbours=k).fit(x, y)
        head = fit_classical("knn", x, y, 3, neighbours=k)
        with torch.no_grad():
            predicted = head(torch.from_numpy(queries)).argmax(1).numpy()
        np.testing.assert_array_equal(predicted, pipeline.predict(queries), err_msg=f"k={k}")
    head = fit_classical("knn", x, y, 3, neighbours=1)
    # (1, 0) is training image 0 (class 2) and image 4 (class 0): the earlier one is the neighbour
    assert int(head(torch.tensor([[1.0, 0.0]])).argmax()) == 2
    head = fit_classical("knn", x, y, 3, neighbours=2)
    # its two neighbours, classes 2 and 0, tie 1-1: the lower class index wins
    assert int(head(torch.tensor([[1.0, 0.0]])).argmax()) == 0


def test_knn_head_survives_a_state_dict_round_trip_into_an_empty_head():
    x, y = _blobs(3, n_per_class=5)
    head = fit_classical("knn", x, y, 3, neighbours=3)
    fresh = KNNHead(x.shape[1], 3, 3)
    assert fresh.train_features.shape == (0, x.shape[1])
    fresh.load_state_dict(head.state_dict())
    x_test = torch.from_numpy(_blobs(3, seed=5)[0])
    with torch.no_grad():
        assert torch.equal(fresh(x_test), head(x_test))
    with pytest.raises(RuntimeError, match="size mismatch"):
        KNNHead(x.shape[1] + 1, 3, 3).load_state_dict(head.state_dict())


def test_knn_head_has_a_gradient_for_grad_cam_and_the_same_values():
    x, y = _blobs(3, n_per_class=5)
    head = fit_classical("knn", x, y, 3, neighbours=3)
    query = torch.from_numpy(_blobs(3, seed=6)[0][:2]).requires_grad_(True)
    logits = head(query)
    with torch.no_grad():
        assert torch.equal(logits.detach(), head(query))
    (grad,) = torch.autograd.grad(logits[0, 1], query)
    assert grad.abs().sum() > 0


def test_bad_inputs_are_user_errors():
    x, y = _blobs(2)
    with pytest.raises(ConfigError, match="logreg, linear_svm, lda, nearest_mean, knn"):
        fit_classical("random_forest", x, y, 2)
    with pytest.raises(DataError, match="two classes"):
        fit_classical("lda", x, np.zeros_like(y), 2)
    with pytest.raises(DataError, match="0..1"):
        fit_classical("lda", x, y + 1, 2)
