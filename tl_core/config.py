"""Typed, frozen configs. A run saves its ``RunConfig`` as JSON and can be re-run from it alone."""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from tl_core.errors import ConfigError

# The one list of each choice. The CLI's --choices, the pages' option lists and the error messages
# read them from here (``choices(Optimizer)``); the engine's registries must have the same keys.
AugmentPreset = Literal["none", "light", "standard"]
FreezeMode = Literal["feature_extractor", "last_n", "full", "gradual", "groups", "lp_ft"]
HeadKind = Literal["linear", "mlp", "logreg", "linear_svm", "lda", "nearest_mean", "knn", "zero_shot"]
Pooling = Literal["avg", "flatten"]
Optimizer = Literal["adamw", "sgd", "rmsprop", "rmsprop_keras"]  # each one described in OPTIMIZERS below
Schedule = Literal["cosine", "onecycle", "step", "constant"]
Monitor = Literal["val_loss", "val_acc"]
Balance = Literal["none", "weighted_loss", "sampler"]  # for imbalanced classes, see tl_core.training.balance
CLASSICAL_HEADS = ("logreg", "linear_svm", "lda", "nearest_mean", "knn")  # scikit-learn classifiers on cached features
ZERO_SHOT_HEAD = "zero_shot"  # image-text backbones: a linear head made from the class names' text embeddings

# What each choice means, in words for people (page labels, CLI help). A test checks that every
# choice has one.
AUGMENT_LABELS: dict[str, str] = {
    "none": "no augmentation: the centre crop, as at evaluation",
    "light": "random crops of 70-100% of the image and left-right flips",
    "standard": "random crops of 50-100%, flips, rotations up to 15 degrees and colour jitter"}
FREEZE_MODE_LABELS: dict[str, str] = {
    "feature_extractor": "Feature extractor (backbone frozen)", "last_n": "Fine-tune the top N groups",
    "full": "Full fine-tuning", "gradual": "Gradual unfreezing", "groups": "Choose groups myself",
    "lp_ft": "Linear probe, then fine-tune everything (LP-FT)"}
HEAD_LABELS: dict[str, str] = {
    "linear": "Linear layer", "mlp": "Small MLP (one hidden layer)", "logreg": "Logistic regression",
    "linear_svm": "Linear SVM", "lda": "Linear discriminant analysis",
    "nearest_mean": "Nearest class mean (class prototypes)", "knn": "k nearest neighbours",
    "zero_shot": "Zero-shot from the class names (image-text backbones; 0 epochs = no training images)"}
# What each head does and when it helps, in a sentence or two for a student (the Model page).
HEAD_HELP: dict[str, str] = {
    "linear": "One new layer: for each class, a weighted sum of the backbone's features, learnt over the "
              "epochs by gradient descent.",
    "mlp": "Two new layers: they can combine features in ways one layer cannot, but need more images not to "
           "overfit.",
    "logreg": "A linear classifier that scikit-learn fits in one go on the frozen features: no epochs, no "
              "learning rate to choose.",
    "linear_svm": "A linear classifier that puts each boundary as far as it can from the nearest images of the "
                  "classes on either side; fitted in one go.",
    "lda": "Sees each class as a cloud of features, all clouds of the same shape, and draws the boundaries "
           "where they meet; fitted in one go, steady with few images.",
    "nearest_mean": "Each class becomes one prototype, the average of its images' features; a new image gets "
                    "the class of the nearest prototype. Nothing to train, and it works with very few images "
                    "per class (even one), whatever the classes' sizes.",
    "knn": "A new image gets the class most common among the k training images whose features are nearest to "
           "its own. It learns nothing and remembers every training image: good with very few images per "
           "class, slower and bigger with many.",
    "zero_shot": "No training images at all: an image-text model (CLIP, SigLIP) compares each image with the "
                 "words of each class name and picks the closest (Radford et al. 2021). Good words matter "
                 "('cls_03' tells it nothing); with epochs, a linear layer trains on from this start.",
}
POOLING_LABELS: dict[str, str] = {"avg": "global average pooling", "flatten": "Keras-style Flatten"}


@dataclass(frozen=True)
class OptimizerSpec:
    label: str  # what it is, in words for people
    torch_class: str  # its class in torch.optim, built with (param groups, lr=, weight_decay=, **options)
    options: tuple[tuple[str, Any], ...] = ()  # further keyword arguments


# Adding an optimiser is its name in ``Optimizer`` and its line here (tests/core/test_optim.py
# checks the two agree and that each one builds and steps).
OPTIMIZERS: dict[str, OptimizerSpec] = {
    "adamw": OptimizerSpec("AdamW, a safe default", "AdamW"),
    "sgd": OptimizerSpec("SGD with Nesterov momentum 0.9", "SGD", (("momentum", 0.9), ("nesterov", True))),
    "rmsprop": OptimizerSpec("RMSprop (PyTorch defaults: alpha 0.99, eps 1e-8)", "RMSprop"),
    # Keras 2's RMSprop (the classic recipe's): rho 0.9, epsilon K.epsilon() = 1e-7, added to sqrt(v)
    # as PyTorch does, so torch's RMSprop with these two values is the same update. (Keras 3 and
    # tf.keras' optimizer_v2 add epsilon inside the square root, sqrt(v + eps): a different update.)
    "rmsprop_keras": OptimizerSpec("RMSprop (Keras defaults: rho 0.9, epsilon 1e-7)", "RMSprop",
                                   (("alpha", 0.9), ("eps", 1e-7))),
}
OPTIMIZER_LABELS: dict[str, str] = {name: spec.label for name, spec in OPTIMIZERS.items()}
SCHEDULE_LABELS: dict[str, str] = {
    "cosine": "cosine decay to zero", "onecycle": "one-cycle: warm up, then anneal",
    "step": "x0.1 after each third of the run", "constant": "the same learning rate throughout"}
MONITOR_LABELS: dict[str, str] = {"val_loss": "validation loss (lower is better)",
                                  "val_acc": "validation accuracy (higher is better)"}
BALANCE_LABELS: dict[str, str] = {
    "none": "as they are: each image counts once",
    "weighted_loss": "weighted loss: a mistake on a rare class costs more",
    "sampler": "balanced sampling: rare classes' images are drawn more often"}
LABELS: dict[Any, dict[str, str]] = {AugmentPreset: AUGMENT_LABELS, FreezeMode: FREEZE_MODE_LABELS, HeadKind: HEAD_LABELS, Pooling: POOLING_LABELS,
                                     Optimizer: OPTIMIZER_LABELS, Schedule: SCHEDULE_LABELS, Monitor: MONITOR_LABELS,
                                     Balance: BALANCE_LABELS}


def choices(alias: Any) -> tuple[str, ...]:
    """The names a Literal alias above allows, in the order pages and the CLI show them."""
    return typing.get_args(alias)


def one_of(names: typing.Iterable[str]) -> str:
    """``a, b or c``: the valid names for an error message."""
    names = list(names)
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


def check_choice(what: str, value: str, alias: Any) -> None:
    """Raise ConfigError naming the valid choices when ``value`` is not one of ``alias``'s."""
    if value not in choices(alias):
        raise ConfigError(f"Unknown {what} '{value}'; choose {one_of(choices(alias))}.")


# A frozen-body run caches its training features once per augmented view (tl_core.model.features);
# the count is here, below the model, so that the disk estimate of a run (tl_core.jobs.limits) needs
# no torch.
MAX_FEATURE_VIEWS = 4  # augmented views whose features are cached; epochs cycle through them


def feature_views(augment: str, epochs: int) -> int:
    """How many augmented views of the training set a cached run computes."""
    return 1 if augment == "none" else min(epochs, MAX_FEATURE_VIEWS)


def _help(text: str) -> dict[str, str]:
    """Field metadata: the one-line help the CLI shows for the field's option."""
    return {"help": text}


@dataclass(frozen=True)
class DataConfig:
    source: str = field(metadata=_help("folder, zip or CSV the dataset was ingested from (for the record)"))
    dataset_dir: str = field(default="", metadata=_help(
        "ingested dataset folder holding dataset.json ('' = ingest `source`)"))
    val_fraction: float = field(default=0.2, metadata=_help(
        "share of each class held out for validation (if no val/ split)"))
    test_fraction: float = field(default=0.0, metadata=_help(
        "share of each class held out for a final test (if no test/)"))
    split_seed: int = field(default=0, metadata=_help("seed of the stratified split"))
    keep_given_split: bool = field(default=True, metadata=_help(
        "keep the train/val/test the source gave (off: split everything again, each group in one split)"))
    train_fraction: float = field(default=1.0, metadata=_help(
        "share of each class's training images used (the validation and test sets stay whole)"))
    augment: AugmentPreset = field(default="light", metadata=_help("augmentation preset applied to training images"))
    dataset_version: int = field(default=0, metadata=_help(
        "version of the dataset at dataset_dir when the run started (fixes make new ones; 0 = not recorded)"))


@dataclass(frozen=True)
class HeadConfig:
    kind: HeadKind = field(default="linear", metadata=_help(
        "the new last layer, or a scikit-learn classifier fitted on frozen features"))
    hidden: int = field(default=1024, metadata=_help("MLP hidden width (the seed recipe's Dense(1024))"))
    dropout: float = field(default=0.2, metadata=_help("dropout before the last layer of the MLP head"))
    pool: Pooling = field(default="avg", metadata=_help("VGG only: global average pool or Keras-style Flatten"))
    class_words: tuple[tuple[str, str], ...] = field(default=(), metadata=_help(
        "zero_shot: (class, its words) pairs for the prompts, several words comma-separated; a class "
        "not listed uses its own name"))
    neighbours: int = field(default=5, metadata=_help(
        "knn head: how many of the most similar training images vote (fewer when there are fewer)"))


@dataclass(frozen=True)
class ModelConfig:
    backbone: str = field(default="mobilenet_v2", metadata=_help(
        "registry name, see `python -m tl_core backbones` (mobilenet_v2's weights ship with TL Studio)"))
    pretrained: bool = field(default=True, metadata=_help(
        "start from pretrained weights (off = random init, for comparison; labelled everywhere)"))
    weights_dir: str | None = field(default=None, metadata=_help(
        "extra folder to look for torchvision .pth weight files (also TL_STUDIO_WEIGHTS)"))
    head: HeadConfig = field(default_factory=HeadConfig)


@dataclass(frozen=True)
class FreezePlan:
    mode: FreezeMode = field(default="feature_extractor", metadata=_help(
        "which layer groups train, see tl_core.model.freeze"))
    last_n: int = field(default=1, metadata=_help("last_n: how many body groups (counted from the head) train"))
    groups: tuple[str, ...] = field(default=(), metadata=_help("groups: names of the body groups that train"))
    unfreeze_every: int = field(default=1, metadata=_help(
        "gradual: one more group becomes trainable every K epochs"))
    probe_epochs: int = field(default=1, metadata=_help(
        "lp_ft: the first K epochs train the head alone (a linear probe), then every group trains"))
    train_bn: bool = field(default=False, metadata=_help(
        "BatchNorm in frozen groups still updates its statistics"))
    lr_range: tuple[float, float] | None = field(default=None, metadata=_help(
        "discriminative learning rates (low, high) spread over the groups"))


@dataclass(frozen=True)
class TrainConfig:
    epochs: int = field(default=10, metadata=_help("passes over the training set"))
    batch_size: int = field(default=32, metadata=_help("images per step (halved automatically on out-of-memory)"))
    auto_batch: bool = field(default=False, metadata=_help(
        "CUDA: the largest power of two that fits, measured once per backbone and GPU (batch_size on CPU)"))
    lr: float = field(default=1e-3, metadata=_help("peak learning rate (the head's, with discriminative lrs)"))
    optimizer: Optimizer = field(default="adamw", metadata=_help("optimiser, see tl_core.model.optim"))
    weight_decay: float = field(default=1e-4, metadata=_help("L2 penalty (decoupled for AdamW)"))
    schedule: Schedule = field(default="cosine", metadata=_help(
        "how the learning rate changes, stepped once per batch"))
    label_smoothing: float = field(default=0.0, metadata=_help("0.1 helps on noisy labels"))
    balance: Balance = field(default="none", metadata=_help(
        "imbalanced classes: weight the training loss by n/(k*n_class), or draw training images class-balanced"))
    early_stopping_patience: int = field(default=0, metadata=_help(
        "stop after this many epochs without improvement; 0 = off"))
    monitor: Monitor = field(default="val_loss", metadata=_help("metric for the best checkpoint and early stopping"))
    seed: int = field(default=0, metadata=_help("seeds python, numpy and torch for reproducible runs"))
    device: str = field(default="auto", metadata=_help("auto (cuda > mps > cpu), cuda, cuda:1, mps, cpu"))
    amp: bool = field(default=True, metadata=_help("mixed precision (bf16/fp16) on CUDA; ignored on CPU"))
    feature_cache: bool = field(default=True, metadata=_help(
        "frozen backbone: compute features once, train the head on them"))
    num_workers: int = field(default=0, metadata=_help(
        "data-loader worker processes (0 = in the training process)"))
    nproc: int = field(default=1, metadata=_help(
        "processes training this run together (one per GPU; on CPU, up to the cores); "
        "the batch size stays the total per step, split across them, so results match 1 process"))


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
            head = dict(model.get("head", {}))
            head["class_words"] = tuple((str(c), str(w)) for c, w in head.get("class_words", ()))
            model["head"] = HeadConfig(**head)
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

    def check_choices(self) -> None:
        """Raise ConfigError when a named choice (optimizer, schedule, ...) is not one of the valid names."""
        for what, value, alias in (("augmentation preset", self.data.augment, AugmentPreset),
                                   ("head", self.model.head.kind, HeadKind), ("pooling", self.model.head.pool, Pooling),
                                   ("freeze mode", self.freeze.mode, FreezeMode),
                                   ("optimizer", self.train.optimizer, Optimizer),
                                   ("schedule", self.train.schedule, Schedule), ("monitor", self.train.monitor, Monitor),
                                   ("class balancing", self.train.balance, Balance)):
            check_choice(what, value, alias)

    def validate(self) -> None:
        """Raise ConfigError for values no training can use; the message says what to change."""
        self.check_choices()
        t = self.train
        if t.epochs < 1 and not (t.epochs == 0 and self.model.head.kind == ZERO_SHOT_HEAD):
            raise ConfigError("Epochs must be at least 1 (0 only with the zero-shot head: no training at all).")
        if t.batch_size < 1:
            raise ConfigError("Batch size must be at least 1.")
        if not (0 < t.lr < 10):
            raise ConfigError(f"Learning rate {t.lr} is out of range; try 1e-3 for a head, 1e-4 to fine-tune.")
        if t.nproc < 1:
            raise ConfigError("The number of processes (nproc) must be at least 1.")
        if t.nproc > t.batch_size:
            raise ConfigError(f"A batch of {t.batch_size} cannot be split across {t.nproc} processes: "
                              f"use a batch size of at least {t.nproc}, or fewer processes.")
        if t.nproc > 1 and self.model.head.kind in CLASSICAL_HEADS:
            raise ConfigError("Classical heads are fitted once, in one process: set the number of "
                              "processes (nproc) to 1, or choose a linear or MLP head.")
        if not (0 <= t.label_smoothing < 1):
            raise ConfigError("Label smoothing must be in [0, 1).")
        d = self.data
        if not (0 <= d.val_fraction < 1 and 0 <= d.test_fraction < 1 and d.val_fraction + d.test_fraction < 1):
            raise ConfigError("Validation and test fractions must each be in [0, 1) and sum to less than 1.")
        if not (0 < d.train_fraction <= 1):
            raise ConfigError(f"The share of training images used must be above 0 and at most 1 (1 = all); "
                              f"got {d.train_fraction}.")
        f = self.freeze
        if f.lr_range is not None and not (0 < f.lr_range[0] <= f.lr_range[1]):
            raise ConfigError("Discriminative learning rates need 0 < low <= high.")
        if f.mode == "last_n" and f.last_n < 0:
            raise ConfigError("last_n must be 0 or more.")
        if f.unfreeze_every < 1:
            raise ConfigError("Gradual unfreezing needs unfreeze_every >= 1 epoch.")
        if f.mode == "lp_ft" and f.probe_epochs < 1:
            raise ConfigError("LP-FT needs probe_epochs >= 1 (the head's epochs before everything trains); "
                              "for no probe at all, choose full fine-tuning.")
        if self.model.head.kind in CLASSICAL_HEADS and f.mode != "feature_extractor":
            raise ConfigError(f"Classical heads ({', '.join(CLASSICAL_HEADS)}) train on frozen features: "
                              "use the feature-extractor freezing plan.")
        if self.model.head.kind == "knn":
            if self.model.head.neighbours < 1:
                raise ConfigError(f"The k-nearest-neighbours head needs at least 1 neighbour, "
                                  f"got {self.model.head.neighbours}.")
            if t.balance != "none":  # its votes take no class weights, and sampling has no meaning for it
                raise ConfigError("A k-nearest-neighbours head counts votes and takes no class weights: set class "
                                  "balancing to none, or choose nearest class mean (each class one prototype, "
                                  "whatever its size) or logistic regression.")
