"""A trained run's model, back from its checkpoint; and a model's skeleton, for its shapes only."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tl_core.model.registry import build_model
from tl_core.runs import Run

if TYPE_CHECKING:
    import torch

    from tl_core.config import HeadConfig


def load_model(run: Run, kind: str = "best", map_location: str | torch.device = "cpu"):
    """The run's TransferModel in eval mode, its weights from the ``kind`` checkpoint
    (CheckpointDamaged when the file cannot be read or does not fit the run's model)."""
    cfg = run.config
    state = run.load_checkpoint(kind, map_location=map_location)
    model = build_model(cfg.model.backbone, len(run.classes), cfg.model.head, pretrained=False)
    try:
        model.load_state_dict(state["model"])
    except (KeyError, TypeError, RuntimeError) as exc:
        raise run.damaged_checkpoint(kind, exc) from exc
    model.pretrained = cfg.model.pretrained
    return model.eval()


def skeleton_model(backbone: str, num_classes: int, head: HeadConfig):
    """An untrained model, only to count parameters per group. Read-only: never trained. Built on
    the meta device: shapes without memory, so even VGG16 with a Flatten head appears at once."""
    import torch

    with torch.device("meta"):
        return build_model(backbone, num_classes, head, pretrained=False)
