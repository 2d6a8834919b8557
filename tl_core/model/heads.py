"""The new head on top of a backbone's pooled features."""

from __future__ import annotations

from torch import nn

from tl_core.config import CLASSICAL_HEADS, ZERO_SHOT_HEAD, HeadConfig
from tl_core.errors import ConfigError


def make_head(cfg: HeadConfig, in_features: int, num_classes: int) -> nn.Module:
    """features [B, in_features] -> logits [B, num_classes].

    ``linear``: one Linear. ``mlp``: Linear(hidden) + ReLU + Dropout (none at 0) + Linear (the Keras
    seed recipe's Dense(1024, relu) + Dense(N)). Classical kinds (logreg, linear_svm, lda) get a Linear
    whose weights ``tl_core.model.classical.fit_classical`` fills in later; ``zero_shot`` one that
    ``tl_core.model.zero_shot.zero_shot_head`` fills with the class names' text embeddings.
    """
    if num_classes < 1 or in_features < 1:
        raise ConfigError(f"A head needs at least one input feature and one class "
                          f"(got {in_features} features, {num_classes} classes).")
    if cfg.kind in ("linear", ZERO_SHOT_HEAD) or cfg.kind in CLASSICAL_HEADS:
        return nn.Linear(in_features, num_classes)
    if cfg.kind == "mlp":
        if cfg.hidden < 1:
            raise ConfigError(f"The MLP head's hidden width must be at least 1, got {cfg.hidden}.")
        if not 0 <= cfg.dropout < 1:
            raise ConfigError(f"Head dropout must be in [0, 1), got {cfg.dropout}.")
        # Dropout 0 (the Keras recipe) is no layer at all; an Identity keeps the last Linear at
        # index 3, so checkpoints saved with Dropout(0.0) still load.
        return nn.Sequential(
            nn.Linear(in_features, cfg.hidden),
            nn.ReLU(inplace=True),
            nn.Dropout(cfg.dropout) if cfg.dropout > 0 else nn.Identity(),
            nn.Linear(cfg.hidden, num_classes),
        )
    raise ConfigError(f"Unknown head kind {cfg.kind!r}. Choose one of: linear, mlp, "
                      f"{', '.join(CLASSICAL_HEADS)}, {ZERO_SHOT_HEAD}.")
