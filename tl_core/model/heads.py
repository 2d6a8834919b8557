"""The new head on top of a backbone's pooled features."""

from __future__ import annotations

import math

import torch
from torch import nn

from tl_core.config import CLASSICAL_HEADS, ZERO_SHOT_HEAD, HeadConfig
from tl_core.errors import ConfigError


def make_head(cfg: HeadConfig, in_features: int, num_classes: int) -> nn.Module:
    """features [B, in_features] -> logits [B, num_classes].

    ``linear``: one Linear. ``mlp``: Linear(hidden) + ReLU + Dropout (none at 0) + Linear (the Keras
    seed recipe's Dense(1024, relu) + Dense(N)). ``knn`` gets an empty ``KNNHead``; the other
    classical kinds (logreg, linear_svm, lda, nearest_mean) a Linear. ``tl_core.model.classical.fit_classical``
    fills either in later. ``zero_shot`` gets a Linear that ``tl_core.model.zero_shot.zero_shot_head``
    fills with the class names' text embeddings.
    """
    if num_classes < 1 or in_features < 1:
        raise ConfigError(f"A head needs at least one input feature and one class "
                          f"(got {in_features} features, {num_classes} classes).")
    if cfg.kind == "knn":
        if cfg.neighbours < 1:
            raise ConfigError(f"The k-nearest-neighbours head needs at least 1 neighbour, got {cfg.neighbours}.")
        return KNNHead(in_features, num_classes, cfg.neighbours)
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


# A class that none of an image's neighbours voted for gets this share instead of 0, so that its
# logit (the log of the share) is finite: softmax then gives about 1e-4 to it, not 0, and the
# loss of a wrong answer is about 9 instead of infinite.
VOTE_FLOOR = 1e-4


class KNNHead(nn.Module):
    """k nearest neighbours on features, as a torch module (scikit-learn's ``KNeighborsClassifier``
    with uniform votes, after its ``StandardScaler``; ``tl_core.model.classical`` fits it).

    The training images' standardised features and labels are buffers, so checkpoints, export
    (TorchScript, ONNX) and evaluation treat it like any head. An image's logits are the log of
    the share of its ``neighbours`` nearest training images (Euclidean, standardised features)
    that belong to each class: softmax of them is the vote share itself. A tie in votes goes to the
    lowest class index and, among equally distant training images, the earlier one counts, as in
    scikit-learn's brute-force search.
    """

    def __init__(self, in_features: int, num_classes: int, neighbours: int) -> None:
        super().__init__()
        self.in_features, self.num_classes, self.neighbours = in_features, num_classes, neighbours
        self.register_buffer("mean", torch.zeros(in_features))
        self.register_buffer("scale", torch.ones(in_features))
        # Empty until fitted; a checkpoint's own number of training images is taken when it loads.
        self.register_buffer("train_features", torch.zeros(0, in_features))
        self.register_buffer("train_labels", torch.zeros(0, dtype=torch.long))
        # N as a plain int, kept with the buffers: a traced export then sees a fixed k (a shape
        # read inside forward would be traced as a value and warned about).
        self._n_train = 0

    def fill(self, mean: torch.Tensor, scale: torch.Tensor, train_features: torch.Tensor,
             train_labels: torch.Tensor) -> KNNHead:
        """Keep the fitted scaler and the standardised training features [N, D] and labels [N]."""
        device = self.mean.device
        self.mean = mean.float().to(device)
        self.scale = scale.float().to(device)
        self.train_features = train_features.float().to(device)
        self.train_labels = train_labels.long().to(device)
        self._n_train = int(train_labels.shape[0])
        return self

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs) -> None:
        # The stored training set's size is the fitted run's, not this fresh module's (N = 0):
        # take the saved shape, then let the default loading copy (and check the feature width).
        for name in ("train_features", "train_labels"):
            saved, mine = state_dict.get(prefix + name), getattr(self, name)
            if isinstance(saved, torch.Tensor) and saved.dim() == mine.dim():
                setattr(self, name, torch.empty(saved.shape, dtype=mine.dtype, device=mine.device))
        self._n_train = int(self.train_labels.shape[0])
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    @property
    def votes_per_image(self) -> int:
        """k: ``neighbours``, or all the training images when there are fewer (at least 1)."""
        return max(1, min(self.neighbours, self._n_train))

    def _one_hot(self) -> torch.Tensor:
        """[N, classes]: 1 where training image n is of the class."""
        classes = torch.arange(self.num_classes, device=self.train_labels.device)
        return (self.train_labels.unsqueeze(1) == classes).float()

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        # Distances in float32 even under mixed precision: bf16 would change who is nearest.
        with torch.autocast(features.device.type, enabled=False):
            z = (features.float() - self.mean) / self.scale
            train = self.train_features
            distances = (z * z).sum(1, keepdim=True) - 2 * z @ train.T + (train * train).sum(1)
            k = self.votes_per_image
            votes = _nearest(distances, k).float() @ self._one_hot()  # [B, classes]
            logits = torch.log((votes / k).clamp_min(VOTE_FLOOR))
            if torch.is_grad_enabled() and features.requires_grad:
                logits = logits + _smooth_zero(distances, self.train_labels, self.num_classes)
        return logits


def _nearest(distances: torch.Tensor, k: int) -> torch.Tensor:
    """[B, N] bool: each row's ``k`` nearest training images; of equally distant ones at the
    boundary, the earlier ones. Written with the k-th smallest distance and a running count
    rather than a stable sort, which neither ONNX export nor ``topk`` (ties in any order) offers."""
    kth = torch.topk(distances, k, dim=1, largest=False).values[:, k - 1:k]
    closer = distances < kth
    at_kth = distances == kth
    room = k - closer.sum(1, keepdim=True)  # how many of those at the k-th distance still count
    return closer | (at_kth & (torch.cumsum(at_kth.long(), dim=1) <= room))


def _smooth_zero(distances: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """Zero in value, with the gradient of minus each class's nearest squared distance.

    Votes have no gradient, and Grad-CAM needs one: with this added to the logits, a class's
    heatmap shows what pulls the image's features towards that class's nearest training image,
    while every prediction stays the votes' own.
    """
    per_class = torch.full((distances.shape[0], num_classes), math.inf, device=distances.device)
    per_class = per_class.scatter_reduce(1, labels.expand_as(distances), distances, "amin")
    smooth = torch.where(torch.isinf(per_class), torch.zeros_like(per_class), -per_class)
    return smooth - smooth.detach()
