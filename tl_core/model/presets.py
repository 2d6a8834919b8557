"""Recipes from the literature as data: each sets a whole training recipe on top of a base config.

A preset replaces the model, the freezing plan, the recipe's training settings and the
augmentation; it keeps what says how and where to run (the dataset and split, seed, device, mixed
precision, feature cache, data-loader workers, the checkpoint metric, the run's name). The app's
Model page and the CLI's ``train --preset`` apply the same functions.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from tl_core.config import FreezePlan, HeadConfig, HeadKind, ModelConfig, Pooling, RunConfig
from tl_core.errors import ConfigError
from tl_core.model.registry import get_backbone


@dataclass(frozen=True)
class Preset:
    key: str  # short name: the CLI's --preset value and the page's widget value
    title: str  # what the app shows
    description: str  # what the recipe sets, in words
    reference: str  # where the recipe comes from, to cite
    backbone: str  # the backbone the recipe was written for
    build: Callable[[RunConfig, str], RunConfig]  # (base config, backbone) -> the recipe's config

    def apply(self, base: RunConfig, backbone: str | None = None) -> RunConfig:
        """``base`` with this recipe, on its own backbone or on ``backbone``."""
        return self.build(base, backbone or self.backbone)

    def on_other_backbone(self, backbone: str) -> str:
        """One sentence on what changes when the recipe runs on ``backbone`` ('' when nothing does)."""
        if _pool_for(backbone) == _pool_for(self.backbone):
            return ""
        return (f"On {backbone} the recipe uses global average pooling instead of Flatten (Flatten of a "
                "7×7×512 map is VGG's); the head, optimiser, schedule, epochs and batch size stay the same.")


def _pool_for(backbone: str) -> Pooling:
    """Keras' Flatten applies to VGG's 7×7×512 map; the other backbones end in a global average pool."""
    return "flatten" if get_backbone(backbone).family == "vgg" else "avg"


def _frozen_model(base: RunConfig, backbone: str, head: HeadConfig) -> dict:
    return {"model": ModelConfig(backbone=backbone, pretrained=True, weights_dir=base.model.weights_dir, head=head),
            "freeze": FreezePlan(mode="feature_extractor"),
            "data": dataclasses.replace(base.data, augment="none")}


def classic_recipe(base: RunConfig, backbone: str = "vgg16") -> RunConfig:
    """VGG16 frozen, Flatten, Dense(1024, relu), Dense(N) + softmax (in the loss), RMSprop with Keras'
    defaults (rho 0.9, epsilon 1e-7) at a constant 1e-4, 10 epochs of 32 images, no dropout, weight decay, label smoothing, augmentation
    or early stopping."""
    head = HeadConfig(kind="mlp", hidden=1024, dropout=0.0, pool=_pool_for(backbone))
    train = dataclasses.replace(base.train, epochs=10, batch_size=32, lr=1e-4, optimizer="rmsprop_keras",
                                weight_decay=0.0, schedule="constant", label_smoothing=0.0,
                                early_stopping_patience=0)
    return dataclasses.replace(base, train=train, **_frozen_model(base, backbone, head))


def deep_features_recipe(kind: HeadKind) -> Callable[[RunConfig, str], RunConfig]:
    """The frozen backbone's features (VGG: flattened, the same as the classic recipe's, so cached
    once for both) and a scikit-learn classifier ``kind`` fitted on them."""
    def build(base: RunConfig, backbone: str = "vgg16") -> RunConfig:
        head = HeadConfig(kind=kind, pool=_pool_for(backbone))
        return dataclasses.replace(base, **_frozen_model(base, backbone, head))
    return build


_CLASSIC_REFERENCE = ("The Keras feature-extraction recipe: F. Chollet, *Deep Learning with Python* (Manning, 2017), "
                      "§5.3 “Using a pretrained convnet”, on VGG16 from K. Simonyan and A. Zisserman, "
                      "“Very Deep Convolutional Networks for Large-Scale Image Recognition”, ICLR 2015.")
_FEATURES_REFERENCE = ("A. S. Razavian, H. Azizpour, J. Sullivan and S. Carlsson, “CNN Features off-the-shelf: an "
                       "Astounding Baseline for Recognition”, CVPR Workshops 2014; J. Donahue et al., “DeCAF: A Deep "
                       "Convolutional Activation Feature for Generic Visual Recognition”, ICML 2014.")

PRESETS: dict[str, Preset] = {p.key: p for p in (
    Preset("classic", "The classic recipe (VGG16, Keras style)",
           "VGG16 frozen as a feature extractor, Flatten, Dense(1024, relu), Dense(N, softmax); RMSprop with Keras' "
           "defaults (rho 0.9, epsilon 1e-7) at a constant learning rate of 1e-4, 10 epochs, batch 32; no dropout, weight decay, label smoothing, "
           "augmentation or early stopping.",
           _CLASSIC_REFERENCE, "vgg16", classic_recipe),
    Preset("features_svm", "Deep features + linear SVM (VGG16)",
           "VGG16 frozen; its flattened features computed once, then a linear SVM (scikit-learn) fitted on them "
           "in seconds. No augmentation: each image's features are those of its centre crop.",
           _FEATURES_REFERENCE, "vgg16", deep_features_recipe("linear_svm")),
    Preset("features_lda", "Deep features + LDA (VGG16)",
           "VGG16 frozen; its flattened features computed once, then linear discriminant analysis "
           "(scikit-learn) fitted on them. No augmentation: each image's features are those of its centre crop.",
           _FEATURES_REFERENCE, "vgg16", deep_features_recipe("lda")),
)}


def get_preset(key: str) -> Preset:
    try:
        return PRESETS[key]
    except KeyError:
        raise ConfigError(f"Unknown recipe {key!r}. Choose one of: {', '.join(PRESETS)}.") from None
