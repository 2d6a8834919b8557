"""Typed, frozen configs. A run saves its ``RunConfig`` as JSON and can be re-run from it alone."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal

from .errors import ConfigError

AugmentPreset = Literal["none", "light", "standard"]
FreezeMode = Literal["feature_extractor", "last_n", "groups", "full", "gradual"]
HeadKind = Literal["linear", "mlp", "logreg", "linear_svm", "lda"]
CLASSICAL_HEADS = ("logreg", "linear_svm", "lda")  # scikit-learn classifiers on cached features


@dataclass(frozen=True)
class DataConfig:
    source: str  # folder, zip or CSV the dataset was ingested from (for the record)
    dataset_dir: str = ""  # ingested dataset folder holding dataset.json ("" = ingest `source`)
    val_fraction: float = 0.2  # share of each class held out for validation (if no val/ split)
    test_fraction: float = 0.0  # share of each class held out for a final test (if no test/)
    split_seed: int = 0  # seed of the stratified split
    augment: AugmentPreset = "light"  # augmentation preset applied to training images


@dataclass(frozen=True)
class HeadConfig:
    kind: HeadKind = "linear"  # linear | mlp | logreg | linear_svm | lda
    hidden: int = 1024  # MLP hidden width (the seed recipe's Dense(1024))
    dropout: float = 0.2  # dropout before the last layer of the MLP head
    pool: Literal["avg", "flatten"] = "avg"  # VGG only: global average pool or Keras-style Flatten


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = "mobilenet_v2"  # registry name, see `python -m tl_core backbones`
    pretrained: bool = True  # False = random init, only when asked; labelled everywhere
    weights_dir: str | None = None  # extra folder to look for .pth files (also TL_STUDIO_WEIGHTS)
    head: HeadConfig = field(default_factory=HeadConfig)


@dataclass(frozen=True)
class FreezePlan:
    mode: FreezeMode = "feature_extractor"  # which layer groups train, see tl_core.freeze
    last_n: int = 1  # last_n: how many body groups (counted from the head) train
    groups: tuple[str, ...] = ()  # groups: names of the body groups that train
    unfreeze_every: int = 1  # gradual: one more group becomes trainable every K epochs
    train_bn: bool = False  # True = BatchNorm in frozen groups still updates its statistics
    lr_range: tuple[float, float] | None = None  # discriminative lrs (low, high) over groups


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = 10  # passes over the training set
    batch_size: int = 32  # images per step (halved automatically on out-of-memory)
    lr: float = 1e-3  # peak learning rate (the head's, with discriminative lrs)
    optimizer: Literal["adamw", "sgd", "rmsprop"] = "adamw"
    weight_decay: float = 1e-4  # L2 penalty (decoupled for AdamW)
    schedule: Literal["cosine", "onecycle", "step", "constant"] = "cosine"
    label_smoothing: float = 0.0  # 0.1 helps on noisy labels
    early_stopping_patience: int = 0  # stop after this many epochs without improvement; 0 = off
    monitor: Literal["val_loss", "val_acc"] = "val_loss"  # metric for best checkpoint/early stop
    seed: int = 0  # seeds python, numpy and torch for reproducible runs
    device: str = "auto"  # auto (cuda > mps > cpu), cuda, cuda:1, mps, cpu
    amp: bool = True  # mixed precision (bf16/fp16) on CUDA; ignored on CPU
    feature_cache: bool = True  # frozen backbone: compute features once, train the head on them
    num_workers: int = 0  # data-loader worker processes (0 = in the training process)


@dataclass(frozen=True)
class RunConfig:
    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    freeze: FreezePlan = field(default_factory=FreezePlan)
    train: TrainConfig = field(default_factory=TrainConfig)
    name: str = ""  # a label the user chose; the run id is separate

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunConfig:
        try:
            model = dict(data.get("model", {}))
            model["head"] = HeadConfig(**model.get("head", {}))
            freeze = dict(data.get("freeze", {}))
            freeze["groups"] = tuple(freeze.get("groups", ()))
            if freeze.get("lr_range") is not None:
                freeze["lr_range"] = tuple(freeze["lr_range"])
            return cls(
                data=DataConfig(**data["data"]),
                model=ModelConfig(**model),
                freeze=FreezePlan(**freeze),
                train=TrainConfig(**data.get("train", {})),
                name=data.get("name", ""),
            )
        except (KeyError, TypeError) as exc:
            raise ConfigError(f"This run configuration is not valid ({exc}). "
                              "Re-create it from the app or the CLI.") from exc

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        return cls.from_dict(json.loads(text))

    def validate(self) -> None:
        """Raise ConfigError for values no training can use; the message says what to change."""
        t = self.train
        if t.epochs < 1:
            raise ConfigError("Epochs must be at least 1.")
        if t.batch_size < 1:
            raise ConfigError("Batch size must be at least 1.")
        if not (0 < t.lr < 10):
            raise ConfigError(f"Learning rate {t.lr} is out of range; try 1e-3 for a head, 1e-4 to fine-tune.")
        if not (0 <= t.label_smoothing < 1):
            raise ConfigError("Label smoothing must be in [0, 1).")
        d = self.data
        if not (0 <= d.val_fraction < 1 and 0 <= d.test_fraction < 1 and d.val_fraction + d.test_fraction < 1):
            raise ConfigError("Validation and test fractions must each be in [0, 1) and sum to less than 1.")
        f = self.freeze
        if f.lr_range is not None and not (0 < f.lr_range[0] <= f.lr_range[1]):
            raise ConfigError("Discriminative learning rates need 0 < low <= high.")
        if f.mode == "last_n" and f.last_n < 0:
            raise ConfigError("last_n must be 0 or more.")
        if f.unfreeze_every < 1:
            raise ConfigError("Gradual unfreezing needs unfreeze_every >= 1 epoch.")
        if self.model.head.kind in CLASSICAL_HEADS and f.mode != "feature_extractor":
            raise ConfigError("Classical heads (logreg, linear_svm, lda) train on frozen features: "
                              "use the feature-extractor freezing plan.")
