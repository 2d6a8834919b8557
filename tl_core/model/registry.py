"""Registry of pretrained backbones, and the ``TransferModel`` built from one.

Every backbone is one frozen ``BackboneSpec`` (``tl_core.model.spec``): how its library builds the
model, where its weights are, their preprocessing, its layer groups. Three libraries supply them:
torchvision (the entries below), timm (``tl_core.model.timm_source``: DINOv2, ConvNeXt V2,
EfficientNetV2, and any timm name as ``timm/<name>``) and open_clip
(``tl_core.model.open_clip_source``: CLIP, SigLIP, MobileCLIP image towers). ``build_model`` turns
a spec into a ``TransferModel`` whose ``body`` maps normalised images to pooled features and whose
``head`` maps features to logits.

How each family's model becomes a body is an adapter (``tl_core.model.adapters`` for torchvision's,
the source modules for theirs); where the pretrained weights come from is
``tl_core.model.weights_lookup``. None of them imports this module, so the registry can use all.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import importlib
import os
from pathlib import Path

import torch
import torchvision.models as tvm
from torch import nn

from tl_core.config import ZERO_SHOT_HEAD, HeadConfig
from tl_core.errors import ConfigError
from tl_core.model import open_clip_source, timm_source
from tl_core.model.adapters import ADAPTERS as _TORCHVISION_ADAPTERS
from tl_core.model.adapters import TransferModel
from tl_core.model.heads import make_head
from tl_core.model.spec import SOURCES, BackboneSpec, Preprocess, WeightsFile, torchvision_spec
from tl_core.model.weights_lookup import pretrained_state_dict

__all__ = ["BackboneSpec", "Preprocess", "WeightsFile", "torchvision_spec", "register", "list_backbones",
           "get_backbone", "check_head_fits", "build_model", "transfer_model_from", "imagenet_head", "body_group_names"]

# Comma-separated modules imported once the shipped backbones are registered; each registers its
# own with ``register`` (e.g. a ``torchvision_spec`` of one of the torchvision families).
ENV_BACKBONE_PLUGINS = "TL_STUDIO_BACKBONE_PLUGINS"

# Every family's adapter: the model (weights loaded) -> body, layer groups, pretrained classifier.
_ADAPTERS = {**_TORCHVISION_ADAPTERS, **timm_source.ADAPTERS, **open_clip_source.ADAPTERS}


_REGISTRY: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    if spec.source not in SOURCES:
        raise ConfigError(f"Backbone {spec.name!r} comes from unknown library {spec.source!r}; "
                          f"known: {', '.join(SOURCES)}.")
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
    """The spec of ``name``; ``timm/<any timm name>`` is checked with timm and added on first use
    (every process resolves it the same way, so a run can name it). ``ConfigError`` with close
    matches for an unknown name."""
    spec = _REGISTRY.get(name)
    if spec is not None:
        return spec
    if name.startswith(timm_source.DYNAMIC_PREFIX):
        try:
            spec = timm_source.spec_for_timm_name(name[len(timm_source.DYNAMIC_PREFIX):])
        except ImportError as exc:
            raise ConfigError(f"{name} needs timm, which is not installed here (pip install timm).") from exc
        # under the name asked for: "timm/convnext_tiny" is timm's default tag of convnext_tiny
        return _REGISTRY.setdefault(name, dataclasses.replace(spec, name=name))
    close = difflib.get_close_matches(name, list(_REGISTRY), n=3, cutoff=0.5)
    hint = f" Did you mean {' or '.join(close)}?" if close else ""
    raise ConfigError(f"Unknown backbone {name!r}.{hint} Choose one of: {', '.join(_REGISTRY)}, or any timm "
                      f"model as {timm_source.DYNAMIC_PREFIX}<name> (e.g. timm/convnext_tiny.in12k_ft_in1k).")


def check_head_fits(name: str, head_kind: str) -> None:
    """``ConfigError`` when ``name`` cannot have a head of ``head_kind``: the zero-shot head needs an
    image-text backbone's text tower. Checked before a run exists, and again where the head is made."""
    spec = get_backbone(name)
    if head_kind == ZERO_SHOT_HEAD and not spec.zero_shot:
        raise ConfigError(f"{spec.name} is an image model without a text tower, so it cannot classify from class "
                          "names. Choose an image-text backbone (CLIP, SigLIP, MobileCLIP) for the zero-shot head.")


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
    source_model = spec.build()
    if pretrained:
        state, _ = pretrained_state_dict(spec, weights_dir, allow_download=allow_download)
        source_model.load_state_dict(state)
    return transfer_model_from(spec, source_model, num_classes, head, pretrained=pretrained)


def transfer_model_from(spec: BackboneSpec, source_model: nn.Module, num_classes: int, head: HeadConfig, *,
                        pretrained: bool) -> TransferModel:
    """Re-arrange the library's model (its modules are reused, not copied) into body + new head."""
    body, groups, _ = _ADAPTERS[spec.family](spec, source_model, head)
    return TransferModel(spec, body, make_head(head, spec.feature_dim_for(head), num_classes), groups,
                         num_classes, head, pretrained)


def imagenet_head(name: str, weights_dir: str | Path | None = None) -> nn.Linear:
    """The pretrained 1000-class last Linear of ``name`` (for a TransferModel with num_classes=1000)."""
    spec = get_backbone(name)
    if spec.family == "vgg":
        raise ConfigError("VGG16's ImageNet classifier is a 3-layer MLP; it does not fit a TransferModel head.")
    source_model = spec.build()
    source_model.load_state_dict(pretrained_state_dict(spec, weights_dir)[0])
    classifier = _ADAPTERS[spec.family](spec, source_model, HeadConfig())[2]
    if not isinstance(classifier, nn.Linear):
        raise ConfigError(f"{name} has no ImageNet classifier (its pre-training had no ImageNet labels).")
    return classifier


# ----------------------------------------------------------------------------- the registry

for _spec in (
    torchvision_spec("resnet18", "resnet", tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1,
                 "ResNet-18: small, fast, a solid default on CPU.", 512),
    torchvision_spec("resnet50", "resnet", tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V2,
                 "ResNet-50: the classic accurate all-rounder; wants a GPU to fine-tune.", 2048),
    torchvision_spec("mobilenet_v2", "mobilenet_v2", tvm.mobilenet_v2, tvm.MobileNet_V2_Weights.IMAGENET1K_V1,
                 "MobileNetV2: tiny and fast; weights ship with TL Studio (works offline).", 1280,
                 stage_starts=(0, 2, 4, 7, 14)),
    torchvision_spec("mobilenet_v3_small", "mobilenet_v3", tvm.mobilenet_v3_small,
                 tvm.MobileNet_V3_Small_Weights.IMAGENET1K_V1,
                 "MobileNetV3-Small: the smallest and fastest; lower accuracy.", 1024,
                 stage_starts=(0, 2, 4, 9)),
    torchvision_spec("mobilenet_v3_large", "mobilenet_v3", tvm.mobilenet_v3_large,
                 tvm.MobileNet_V3_Large_Weights.IMAGENET1K_V2,
                 "MobileNetV3-Large: fast on CPU with good accuracy.", 1280,
                 stage_starts=(0, 2, 4, 7, 13)),
    torchvision_spec("efficientnet_b0", "efficientnet", tvm.efficientnet_b0, tvm.EfficientNet_B0_Weights.IMAGENET1K_V1,
                 "EfficientNet-B0: accurate for its size.", 1280, stage_starts=(0, 2, 3, 4, 6)),
    torchvision_spec("convnext_tiny", "convnext", tvm.convnext_tiny, tvm.ConvNeXt_Tiny_Weights.IMAGENET1K_V1,
                 "ConvNeXt-Tiny: a modern CNN, very accurate; slow on CPU.", 768,
                 stage_starts=(0, 1, 2, 4, 6)),
    torchvision_spec("vit_b_16", "vit", tvm.vit_b_16, tvm.ViT_B_16_Weights.IMAGENET1K_V1,
                 "ViT-B/16: Vision Transformer; strong with enough data; 224px only; needs a GPU.", 768),
    torchvision_spec("vgg16", "vgg", tvm.vgg16, tvm.VGG16_Weights.IMAGENET1K_V1,
                 "VGG16: the textbook backbone (Keras recipe: Flatten + Dense); large and slow.", 512,
                 stage_starts=(0, 5, 10, 17, 24)),
    *timm_source.CURATED,
    *open_clip_source.CURATED,
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
        model = transfer_model_from(spec, spec.build(), 2, HeadConfig(), pretrained=False)
    return tuple(model.group_names[:-1])


# Last, so that a plugin finds every name of this module when it imports it.
load_backbone_plugins()
