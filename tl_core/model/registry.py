"""Registry of pretrained backbones, and the ``TransferModel`` built from one.

Every backbone is one frozen ``BackboneSpec`` (torchvision builder, pinned weights, preprocessing
read from the weights, layer groups). ``build_model`` turns one into a ``TransferModel`` whose
``body`` maps normalised images to pooled features and whose ``head`` maps features to logits.

How each family's torchvision model becomes a body is ``tl_core.model.adapters``; where the
pretrained weights come from is ``tl_core.model.weights_lookup``. Neither imports this module, so
the registry can use both. ``tl_core.model.weights`` (the weights a backbone name has, and adding
a file a user offers) sits above it and looks names up here.
"""

from __future__ import annotations

import functools
import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torchvision.models as tvm
from torch import nn
from torchvision.models import WeightsEnum

from tl_core.config import HeadConfig
from tl_core.errors import ConfigError
from tl_core.model.adapters import ADAPTERS as _ADAPTERS  # register() checks a new backbone's family in it
from tl_core.model.adapters import TransferModel
from tl_core.model.heads import make_head
from tl_core.model.weights_lookup import pretrained_state_dict

# Comma-separated modules imported once the shipped backbones are registered; each registers its
# own with ``register`` (a torchvision-style builder and WeightsEnum of one of the families below).
ENV_BACKBONE_PLUGINS = "TL_STUDIO_BACKBONE_PLUGINS"


@dataclass(frozen=True)
class Preprocess:
    resize_size: int  # shorter side is resized to this before the centre crop
    crop_size: int  # square input size the network sees
    mean: tuple[float, float, float]  # per-channel mean of the [0, 1] image
    std: tuple[float, float, float]  # per-channel std of the [0, 1] image
    interpolation: str  # torchvision InterpolationMode value: "bilinear", "bicubic", ...

    @classmethod
    def from_weights(cls, weights: WeightsEnum) -> Preprocess:
        t = weights.transforms()  # torchvision's ImageClassification eval transform
        return cls(
            resize_size=int(t.resize_size[0]),
            crop_size=int(t.crop_size[0]),
            mean=tuple(float(v) for v in t.mean),
            std=tuple(float(v) for v in t.std),
            interpolation=str(t.interpolation.value),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"resize_size": self.resize_size, "crop_size": self.crop_size, "mean": list(self.mean),
                "std": list(self.std), "interpolation": self.interpolation}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocess:
        return cls(resize_size=int(data["resize_size"]), crop_size=int(data["crop_size"]),
                   mean=tuple(float(v) for v in data["mean"]), std=tuple(float(v) for v in data["std"]),
                   interpolation=str(data["interpolation"]))


@dataclass(frozen=True)
class BackboneSpec:
    name: str  # registry name, e.g. "mobilenet_v2"
    family: str  # picks the body/head adapter and layer-group splitter
    builder: Callable[..., nn.Module]  # torchvision model builder
    weights: WeightsEnum  # pinned torchvision weights (not DEFAULT, so upgrades change nothing)
    description: str  # one line for the UI
    feature_dim: int  # width of the body's pooled features (VGG: with pool="avg")
    stage_starts: tuple[int, ...] = ()  # features-based families: first `features` index of each group
    num_params: int = field(init=False)  # of the ImageNet model, from the weights' meta
    top1: float = field(init=False)  # ImageNet-1K top-1 accuracy (%)
    gflops: float = field(init=False)  # per 224px image
    preprocess: Preprocess = field(init=False)
    weights_filename: str = field(init=False)  # what torchvision's download names the file

    def __post_init__(self) -> None:
        meta = self.weights.meta
        object.__setattr__(self, "num_params", int(meta["num_params"]))
        object.__setattr__(self, "top1", float(meta["_metrics"]["ImageNet-1K"]["acc@1"]))
        object.__setattr__(self, "gflops", float(meta["_ops"]))
        object.__setattr__(self, "preprocess", Preprocess.from_weights(self.weights))
        object.__setattr__(self, "weights_filename", os.path.basename(self.weights.url))

    @property
    def weights_url(self) -> str:
        return self.weights.url

    @property
    def categories(self) -> list[str]:
        """ImageNet class names of the pretrained head."""
        return list(self.weights.meta["categories"])

    def feature_dim_for(self, head: HeadConfig) -> int:
        if self.family == "vgg" and head.pool == "flatten":
            return 512 * 7 * 7
        return self.feature_dim


_REGISTRY: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    if spec.name in _REGISTRY:
        raise ConfigError(f"Backbone {spec.name!r} is registered twice; registered: {', '.join(_REGISTRY)}.")
    if spec.family not in _ADAPTERS:
        raise ConfigError(f"Backbone {spec.name!r} has unknown family {spec.family!r}; "
                          f"known families: {', '.join(_ADAPTERS)}.")
    _REGISTRY[spec.name] = spec
    return spec


def list_backbones() -> list[BackboneSpec]:
    return list(_REGISTRY.values())


def get_backbone(name: str) -> BackboneSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"Unknown backbone {name!r}. Choose one of: {', '.join(_REGISTRY)}.") from None


def build_model(name: str, num_classes: int, head: HeadConfig | None = None, *, pretrained: bool = True,
                weights_dir: str | Path | None = None, allow_download: bool = True) -> TransferModel:
    """A ``TransferModel`` with a new head for ``num_classes``.

    ``pretrained=False`` is random initialisation (only when the user asked for it); otherwise
    ``WeightsUnavailable`` says how to get the weights.
    """
    head = head or HeadConfig()
    spec = get_backbone(name)
    if num_classes < 2:
        raise ConfigError(f"A classifier needs at least 2 classes, got {num_classes}.")
    tv_model = spec.builder(weights=None)
    if pretrained:
        state, _ = pretrained_state_dict(spec, weights_dir, allow_download=allow_download)
        tv_model.load_state_dict(state)
    return transfer_model_from(spec, tv_model, num_classes, head, pretrained=pretrained)


def transfer_model_from(spec: BackboneSpec, tv_model: nn.Module, num_classes: int, head: HeadConfig, *,
                        pretrained: bool) -> TransferModel:
    """Re-arrange a torchvision model (its modules are reused, not copied) into body + new head."""
    body, groups, _ = _ADAPTERS[spec.family](spec, tv_model, head)
    return TransferModel(spec, body, make_head(head, spec.feature_dim_for(head), num_classes), groups,
                         num_classes, head, pretrained)


def imagenet_head(name: str, weights_dir: str | Path | None = None) -> nn.Linear:
    """The pretrained 1000-class last Linear of ``name`` (for a TransferModel with num_classes=1000)."""
    spec = get_backbone(name)
    if spec.family == "vgg":
        raise ConfigError("VGG16's ImageNet classifier is a 3-layer MLP; it does not fit a TransferModel head.")
    tv_model = spec.builder(weights=None)
    tv_model.load_state_dict(pretrained_state_dict(spec, weights_dir)[0])
    return _ADAPTERS[spec.family](spec, tv_model, HeadConfig())[2]


# ----------------------------------------------------------------------------- the registry

for _spec in (
    BackboneSpec("resnet18", "resnet", tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1,
                 "ResNet-18: small, fast, a solid default on CPU.", 512),
    BackboneSpec("resnet50", "resnet", tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V2,
                 "ResNet-50: the classic accurate all-rounder; wants a GPU to fine-tune.", 2048),
    BackboneSpec("mobilenet_v2", "mobilenet_v2", tvm.mobilenet_v2, tvm.MobileNet_V2_Weights.IMAGENET1K_V1,
                 "MobileNetV2: tiny and fast; weights ship with TL Studio (works offline).", 1280,
                 stage_starts=(0, 2, 4, 7, 14)),
    BackboneSpec("mobilenet_v3_small", "mobilenet_v3", tvm.mobilenet_v3_small,
                 tvm.MobileNet_V3_Small_Weights.IMAGENET1K_V1,
                 "MobileNetV3-Small: the smallest and fastest; lower accuracy.", 1024,
                 stage_starts=(0, 2, 4, 9)),
    BackboneSpec("mobilenet_v3_large", "mobilenet_v3", tvm.mobilenet_v3_large,
                 tvm.MobileNet_V3_Large_Weights.IMAGENET1K_V2,
                 "MobileNetV3-Large: fast on CPU with good accuracy.", 1280,
                 stage_starts=(0, 2, 4, 7, 13)),
    BackboneSpec("efficientnet_b0", "efficientnet", tvm.efficientnet_b0, tvm.EfficientNet_B0_Weights.IMAGENET1K_V1,
                 "EfficientNet-B0: accurate for its size.", 1280, stage_starts=(0, 2, 3, 4, 6)),
    BackboneSpec("convnext_tiny", "convnext", tvm.convnext_tiny, tvm.ConvNeXt_Tiny_Weights.IMAGENET1K_V1,
                 "ConvNeXt-Tiny: a modern CNN, very accurate; slow on CPU.", 768,
                 stage_starts=(0, 1, 2, 4, 6)),
    BackboneSpec("vit_b_16", "vit", tvm.vit_b_16, tvm.ViT_B_16_Weights.IMAGENET1K_V1,
                 "ViT-B/16: Vision Transformer; strong with enough data; 224px only; needs a GPU.", 768),
    BackboneSpec("vgg16", "vgg", tvm.vgg16, tvm.VGG16_Weights.IMAGENET1K_V1,
                 "VGG16: the textbook backbone (Keras recipe: Flatten + Dense); large and slow.", 512,
                 stage_starts=(0, 5, 10, 17, 24)),
):
    register(_spec)
del _spec


def plugin_modules(value: str | None = None) -> list[str]:
    """The modules ``TL_STUDIO_BACKBONE_PLUGINS`` (or ``value``) names, in order, without blanks."""
    value = os.environ.get(ENV_BACKBONE_PLUGINS, "") if value is None else value
    return [name.strip() for name in value.split(",") if name.strip()]


def load_backbone_plugins(value: str | None = None) -> list[str]:
    """Import the plugin modules (each registers its backbones when imported); their names.

    Every process that builds models reads the same variable (the app, job workers, torchrun ranks
    and Ray jobs inherit it), so a run can use a plugin's backbone anywhere. A module that cannot
    be imported raises ``ConfigError`` naming it: a misspelt plugin is not silently left out.
    """
    names = plugin_modules(value)
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"{ENV_BACKBONE_PLUGINS} names {name!r}, which cannot be imported ({exc}). "
                              f"Check the module name and that it is on the Python path (PYTHONPATH), "
                              f"or remove it from {ENV_BACKBONE_PLUGINS}.") from exc
    return names


def body_group_names(name: str) -> tuple[str, ...]:
    """The body's layer groups of a registered backbone, stem first, the head left out: what a
    freezing plan counts. The model is built on the meta device (no weights, a fraction of a second)."""
    return _body_group_names(get_backbone(name).name)


@functools.lru_cache(maxsize=64)
def _body_group_names(name: str) -> tuple[str, ...]:
    spec = get_backbone(name)
    with torch.device("meta"):
        model = transfer_model_from(spec, spec.builder(weights=None), 2, HeadConfig(), pretrained=False)
    return tuple(model.group_names[:-1])


# Last, so that a plugin finds every name of this module when it imports it.
load_backbone_plugins()
