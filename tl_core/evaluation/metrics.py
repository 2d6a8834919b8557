"""Evaluation and prediction: metrics from logits, and top-k predictions for a saved run.

Images become model inputs in ``tl_core.model.preprocess``."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from PIL import Image
from sklearn.metrics import confusion_matrix, precision_recall_fscore_support, top_k_accuracy_score

from tl_core.errors import DataError
from tl_core.model.loading import load_model
from tl_core.model.preprocess import decode, model_inputs
from tl_core.runs import EvalResult  # noqa: F401 - public here too: what evaluate_logits returns


def evaluate_logits(logits: torch.Tensor, labels: Sequence[int], classes: Sequence[str],
                    paths: Sequence[str] | None = None) -> EvalResult:
    """All metrics from raw logits [N, C] and true class indices."""
    logits = logits.float().cpu()
    y = torch.as_tensor(list(labels), dtype=torch.long)
    n_classes = len(classes)
    if len(y) == 0:
        raise DataError("There are no images to evaluate on; add images or change the split.")
    probs = logits.softmax(1)
    losses = torch.nn.functional.cross_entropy(logits, y, reduction="none")
    pred = probs.argmax(1)
    k = min(3, n_classes)
    label_ids = list(range(n_classes))
    # With k >= the number of classes every image is in its top k (scikit-learn warns that it is meaningless).
    top_k_acc = (1.0 if k >= n_classes
                 else float(top_k_accuracy_score(y.numpy(), probs.numpy(), k=k, labels=label_ids)))
    precision, recall, f1, support = precision_recall_fscore_support(
        y.numpy(), pred.numpy(), labels=label_ids, zero_division=0)
    per_class = [{"class": c, "precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
                 for c, p, r, f, s in zip(classes, precision, recall, f1, support, strict=False)]
    cm = confusion_matrix(y.numpy(), pred.numpy(), labels=label_ids)
    paths = list(paths) if paths is not None else [str(i) for i in range(len(y))]
    predictions = [
        {"path": paths[i], "true": int(y[i]), "pred": int(pred[i]), "true_label": classes[int(y[i])],
         "pred_label": classes[int(pred[i])], "confidence": float(probs[i, pred[i]]),
         "loss": float(losses[i]), "probs": [round(float(p), 6) for p in probs[i]]}
        for i in range(len(y))
    ]
    return EvalResult(classes=list(classes), accuracy=float((pred == y).float().mean()),
                      loss=float(losses.mean()), top_k=k, top_k_accuracy=top_k_acc,
                      per_class=per_class, confusion=cm.tolist(), predictions=predictions)


@torch.no_grad()
def predict_tensors(model: torch.nn.Module, images_uint8: torch.Tensor, preprocess, device: str | torch.device = "cpu",
                    batch_size: int = 64) -> torch.Tensor:
    """Logits for uint8 images [N,3,S,S] already resized to ``preprocess.resize_size``."""
    device = torch.device(device)
    model = model.to(device).eval()
    out = []
    for start in range(0, len(images_uint8), batch_size):
        batch = torch.as_tensor(images_uint8[start:start + batch_size]).clone()
        out.append(model(model_inputs(batch, preprocess, device)).float().cpu())
    return torch.cat(out) if out else torch.zeros(0)


def predict(run, images: Sequence[Image.Image | Path | str | bytes], top_k: int = 3,
            device: str | torch.device = "cpu", model: torch.nn.Module | None = None) -> list[list[tuple[str, float]]]:
    """Top-k (label, probability) for each image, with the run's best checkpoint."""
    from tl_core.model.registry import get_backbone

    pre = get_backbone(run.config.model.backbone).preprocess
    model = model if model is not None else load_model(run, "best")
    classes = run.classes
    probs = predict_tensors(model, decode(images, pre), pre, device).softmax(1)
    k = min(top_k, len(classes))
    values, indices = probs.topk(k, dim=1)
    return [[(classes[int(i)], float(v)) for v, i in zip(vs, ids, strict=False)] for vs, ids in zip(values, indices, strict=False)]
