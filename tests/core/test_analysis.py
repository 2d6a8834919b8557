"""Error analysis: galleries, top losses, calibration, thresholds, per-class metrics, embedding maps."""

from __future__ import annotations

import json
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import confusion_matrix

from tl_core.errors import DataError
from tl_core.evaluation.analysis import (
    cell_images,
    confusion,
    embedding_map,
    image_features,
    per_class_metrics,
    predictions_frame,
    reliability,
    threshold_confusion,
    top_losses,
)

CLASSES = ["cat", "dog", "fox"]


def fake_predictions(n: int = 60, seed: int = 0) -> list[dict]:
    """Predictions shaped like ``EvalResult.predictions``."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 3)) * 2
    true = rng.integers(0, 3, n)
    logits[np.arange(n), true] += 1.5  # mostly right, some mistakes in every row
    probs = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
    pred = probs.argmax(1)
    return [{"path": f"{CLASSES[t]}/{i}.jpg", "true": int(t), "pred": int(p), "true_label": CLASSES[t],
             "pred_label": CLASSES[p], "confidence": float(probs[i, p]), "loss": float(-np.log(probs[i, t])),
             "probs": [round(float(v), 6) for v in probs[i]]}
            for i, (t, p) in enumerate(zip(true, pred, strict=True))]


def test_the_gallery_of_a_clicked_cell_shows_exactly_its_images():
    preds = fake_predictions()
    cm = confusion(preds, 3)
    sk = confusion_matrix([p["true"] for p in preds], [p["pred"] for p in preds], labels=[0, 1, 2])
    np.testing.assert_array_equal(cm, sk)
    seen = []
    for t in range(3):
        for p in range(3):
            cell = cell_images(preds, t, p)
            expected = {r["path"] for r in preds if r["true"] == t and r["pred"] == p}
            assert set(cell["path"]) == expected and len(cell) == cm[t, p]
            assert (cell["true"] == t).all() and (cell["pred"] == p).all()
            assert list(cell["confidence"]) == sorted(cell["confidence"], reverse=True)
            seen += list(cell["path"])
    assert sorted(seen) == sorted(r["path"] for r in preds)  # every image in exactly one cell
    by_name = cell_images(preds, "dog", "cat", classes=CLASSES)
    assert list(by_name["path"]) == list(cell_images(preds, 1, 0)["path"])
    assert list(cell_images(pd.DataFrame(preds), "dog", "cat")["path"]) == list(by_name["path"])
    with pytest.raises(DataError, match="Unknown class 'wolf'"):
        cell_images(preds, "wolf", "cat", classes=CLASSES)


def test_predictions_read_back_from_csv_have_list_probs(tmp_path):
    preds = fake_predictions(5)
    frame = pd.DataFrame(preds)
    frame["probs"] = frame["probs"].map(json.dumps)
    frame.to_csv(tmp_path / "predictions.csv", index=False)
    back = predictions_frame(pd.read_csv(tmp_path / "predictions.csv"))
    assert back["probs"].iloc[0] == preds[0]["probs"]
    with pytest.raises(DataError, match="lack the columns"):
        predictions_frame([{"path": "a.jpg"}])


def test_top_losses_are_the_k_worst_images_worst_first():
    preds = fake_predictions()
    top = top_losses(preds, k=5)
    losses = sorted((p["loss"] for p in preds), reverse=True)
    assert list(top["loss"]) == losses[:5]
    assert len(top_losses(preds, k=500)) == len(preds)


def test_reliability_bins_and_ece_by_hand():
    probs = np.array([[0.95, 0.05], [0.9, 0.1], [0.6, 0.4], [0.55, 0.45], [0.3, 0.7], [0.0, 1.0]])
    labels = np.array([0, 1, 0, 1, 1, 1])
    rel = reliability(probs, labels, n_bins=10)
    bins = rel.bins.set_index("upper")
    assert int(rel.bins["count"].sum()) == 6 and len(rel.bins) == 10
    # (0.5, 0.6]: conf 0.55 and 0.6, one right; (0.6, 0.7]: 0.7 right; (0.8, 0.9]: 0.9 wrong;
    # (0.9, 1.0]: 0.95 right and 1.0 right (a confidence of exactly 1 is in the last bin).
    assert bins.loc[0.6, "count"] == 2 and bins.loc[0.6, "accuracy"] == 0.5
    assert bins.loc[0.6, "confidence"] == pytest.approx(0.575)
    assert bins.loc[1.0, "count"] == 2 and bins.loc[1.0, "accuracy"] == 1.0
    expected = (2 * abs(0.5 - 0.575) + abs(1 - 0.7) + abs(0 - 0.9) + 2 * abs(1 - 0.975)) / 6
    assert rel.ece == pytest.approx(expected)
    assert rel.mce == pytest.approx(0.9)
    assert np.isnan(bins.loc[0.1, "accuracy"])


def test_perfectly_calibrated_predictions_have_small_ece():
    rng = np.random.default_rng(0)
    p1 = rng.uniform(0, 1, 20000)
    labels = (rng.uniform(0, 1, 20000) < p1).astype(int)
    assert reliability(np.column_stack([1 - p1, p1]), labels).ece < 0.02


def test_threshold_confusion_counts_match_sklearn():
    rng = np.random.default_rng(1)
    p = rng.uniform(size=200)
    y = (rng.uniform(size=200) < p).astype(int)
    for threshold in (0.1, 0.5, 0.9):
        tc = threshold_confusion(p, y, threshold)
        np.testing.assert_array_equal(tc.matrix, confusion_matrix(y, (p >= threshold).astype(int)))
        assert tc.tp + tc.fp + tc.tn + tc.fn == 200
    assert threshold_confusion(p, y, 0.0).recall == 1.0
    nothing = threshold_confusion(p, y, 1.01)
    assert nothing.tp == nothing.fp == 0 and nothing.precision == 0 and nothing.f1 == 0
    with pytest.raises(ValueError):
        threshold_confusion(p, y * 2, 0.5)


def test_per_class_metrics_match_the_definitions():
    y = [0, 0, 0, 1, 1, 2]
    p = [0, 0, 1, 1, 1, 1]
    table = per_class_metrics(y, p, CLASSES).set_index("class")
    assert table.loc["cat", "precision"] == 1.0 and table.loc["cat", "recall"] == pytest.approx(2 / 3)
    assert table.loc["dog", "precision"] == pytest.approx(0.5) and table.loc["dog", "recall"] == 1.0
    assert table.loc["fox", "f1"] == 0.0 and table.loc["fox", "support"] == 1


@pytest.mark.parametrize("method", ["pca", "tsne"])
def test_embedding_map_separates_clusters_and_handles_tiny_sets(method):
    rng = np.random.default_rng(0)
    a = rng.normal(0, 0.1, size=(15, 8))
    b = rng.normal(0, 0.1, size=(15, 8)) + 3
    coords = embedding_map(np.vstack([a, b]), method=method, seed=0)
    assert coords.shape == (30, 2) and np.isfinite(coords).all()
    ca, cb = coords[:15], coords[15:]
    gap = np.linalg.norm(ca.mean(0) - cb.mean(0))
    assert gap > 3 * max(ca.std(0).max(), cb.std(0).max())
    np.testing.assert_allclose(coords, embedding_map(np.vstack([a, b]), method=method, seed=0))
    for n in (0, 1, 2, 4):  # t-SNE's perplexity is clamped below N
        assert embedding_map(rng.normal(size=(n, 5)), method=method).shape == (n, 2)


def test_image_features_are_the_bodys_output_on_the_centre_crop():
    torch.manual_seed(0)
    body = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten())
    model = torch.nn.Module()
    model.body = body
    pre = SimpleNamespace(resize_size=20, crop_size=16, mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25))
    images = torch.randint(0, 256, (5, 3, 20, 20), dtype=torch.uint8)
    feats = image_features(model, images, pre, batch_size=2)
    x = (images[:, :, 2:18, 2:18].float() / 255 - 0.5) / 0.25
    with torch.no_grad():
        np.testing.assert_allclose(feats, body(x).numpy(), atol=1e-5)


def test_backbone_features_of_a_timm_vit_run_before_and_after(trained_vit_run_dir, tiny_vit_weights_dir,
                                                              monkeypatch):
    """The feature map's numbers for a DINOv2-style ViT (class token ++ mean patch token): a
    frozen body's features are the pretrained ones, before and after training."""
    from tl_core.evaluation.analysis import backbone_features, body_was_frozen
    from tl_core.model.registry import get_backbone
    from tl_core.model.weights_lookup import ENV_WEIGHTS
    from tl_core.runs import Run

    monkeypatch.setenv(ENV_WEIGHTS, str(tiny_vit_weights_dir))  # "before" loads the pretrained weights

    run = Run(trained_vit_run_dir)
    root = run.dataset_dir()
    paths = sorted(str(p.relative_to(root)) for p in root.rglob("*.jpg"))[:6]
    before = backbone_features(run, "before", root, paths)
    after = backbone_features(run, "after", root, paths)
    assert before.shape == after.shape == (6, get_backbone("tiny_vit").feature_dim)
    assert body_was_frozen(run)
    np.testing.assert_allclose(before, after, atol=1e-5)
    assert embedding_map(after, method="pca").shape == (6, 2)
