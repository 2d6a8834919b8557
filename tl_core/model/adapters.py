"""How each family's torchvision model becomes a body, its layer groups, and the ``TransferModel``.

An adapter (``ADAPTERS[family]``) takes the torchvision model, weights already loaded, and
re-arranges its modules (reused, not copied) into a body that maps normalised images to pooled
features. ``TransferModel`` puts a new head on such a body. The registry checks a new backbone's
family against ``ADAPTERS`` and puts the pieces together (``registry.transfer_model_from``), so
this module reads a backbone's spec through ``AdaptedBackbone`` rather than importing it.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Any, Protocol

import torch
import torchvision.models as tvm
from torch import nn

from tl_core.config import HeadConfig
from tl_core.model.groups import Groups, ParameterSet


class AdaptedBackbone(Protocol):
    """What an adapter and ``TransferModel`` read of a backbone (a ``registry.BackboneSpec``)."""

    @property
    def name(self) -> str: ...

    @property
    def stage_starts(self) -> tuple[int, ...]: ...

    @property
    def preprocess(self) -> Any: ...  # the spec's ``registry.Preprocess``

    def feature_dim_for(self, head: HeadConfig) -> int: ...


# An adapter takes the torchvision model (weights already loaded) and returns the body, its layer
# groups as (name, [qualified module names inside the body]) ordered stem -> top, and the
# pretrained classifier that the new head replaces (kept only to hand back on request).



def _features_groups(spec: AdaptedBackbone, n_features: int, prefix: str = "features") -> Groups:
    starts = list(spec.stage_starts) + [n_features]
    names = ["stem"] + [f"stage{i}" for i in range(1, len(starts) - 1)]
    return [(name, [f"{prefix}.{i}" for i in range(lo, hi)])
            for name, lo, hi in zip(names, starts[:-1], starts[1:], strict=True)]


def _adapt_resnet(spec: AdaptedBackbone, m: nn.Module, head: HeadConfig):
    body = nn.Sequential(OrderedDict(
        conv1=m.conv1, bn1=m.bn1, relu=m.relu, maxpool=m.maxpool, layer1=m.layer1, layer2=m.layer2,
        layer3=m.layer3, layer4=m.layer4, avgpool=m.avgpool, flatten=nn.Flatten(1)))
    groups = [("stem", ["conv1", "bn1"])] + [(f"layer{i}", [f"layer{i}"]) for i in range(1, 5)]
    return body, groups, m.fc


def _adapt_pooled_features(spec: AdaptedBackbone, m: nn.Module, head: HeadConfig):
    """MobileNetV2, EfficientNet: features -> global average pool; the whole classifier is replaced."""
    body = nn.Sequential(OrderedDict(features=m.features, pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(1)))
    return body, _features_groups(spec, len(m.features)), m.classifier[-1]


def _adapt_mobilenet_v3(spec: AdaptedBackbone, m: nn.Module, head: HeadConfig):
    # The pretrained pre-logits Linear(..., 1024/1280) + Hardswish stay in the body: they are part
    # of what was learnt on ImageNet. Its Dropout goes, so cached and live features agree.
    body = nn.Sequential(OrderedDict(
        features=m.features, pool=m.avgpool, flatten=nn.Flatten(1), pre_logits=m.classifier[0],
        act=m.classifier[1]))
    groups = _features_groups(spec, len(m.features)) + [("pre_logits", ["pre_logits"])]
    return body, groups, m.classifier[3]


def _adapt_convnext(spec: AdaptedBackbone, m: nn.Module, head: HeadConfig):
    body = nn.Sequential(OrderedDict(
        features=m.features, pool=m.avgpool, norm=m.classifier[0], flatten=m.classifier[1]))
    groups = _features_groups(spec, len(m.features)) + [("final_norm", ["norm"])]
    return body, groups, m.classifier[2]


def _adapt_vgg(spec: AdaptedBackbone, m: nn.Module, head: HeadConfig):
    # pool="flatten" is the Keras recipe (Flatten of 7x7x512); the adaptive pool keeps it 7x7 at
    # any input size, as torchvision's VGG does. The 4096-wide pretrained classifier is dropped.
    pool = nn.AdaptiveAvgPool2d((7, 7)) if head.pool == "flatten" else nn.AdaptiveAvgPool2d(1)
    body = nn.Sequential(OrderedDict(features=m.features, pool=pool, flatten=nn.Flatten(1)))
    return body, _features_groups(spec, len(m.features)), m.classifier[-1]


class _ViTEmbed(nn.Module):
    """Patch projection + class token + position embedding, taken from a torchvision ViT."""

    def __init__(self, vit: tvm.VisionTransformer):
        super().__init__()
        self.patch_size = vit.patch_size
        self.conv_proj = vit.conv_proj
        self.class_token = vit.class_token
        self.pos_embedding = vit.encoder.pos_embedding
        self.dropout = vit.encoder.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_proj(x)  # [B, D, H/p, W/p]
        x = x.flatten(2).transpose(1, 2)  # [B, N, D]
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.dropout(x + self.pos_embedding)


class _ViTBody(nn.Module):
    def __init__(self, vit: tvm.VisionTransformer):
        super().__init__()
        self.embed = _ViTEmbed(vit)
        self.layers = vit.encoder.layers
        self.ln = vit.encoder.ln

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(self.layers(self.embed(x)))[:, 0]  # the class token


def _adapt_vit(spec: AdaptedBackbone, m: nn.Module, head: HeadConfig):
    body = _ViTBody(m)
    blocks = [f"layers.{name}" for name, _ in body.layers.named_children()]
    size = -(-len(blocks) // 3)  # 12 blocks -> 3 groups of 4
    groups = [("embed", ["embed"])]
    groups += [(f"blocks{k}", blocks[i:i + size]) for k, i in enumerate(range(0, len(blocks), size), 1)]
    groups.append(("final_norm", ["ln"]))
    return body, groups, m.heads.head


ADAPTERS = {
    "resnet": _adapt_resnet,
    "mobilenet_v2": _adapt_pooled_features,
    "efficientnet": _adapt_pooled_features,
    "mobilenet_v3": _adapt_mobilenet_v3,
    "convnext": _adapt_convnext,
    "vgg": _adapt_vgg,
    "vit": _adapt_vit,
}


class TransferModel(nn.Module):
    """A pretrained body and a new head; ``forward(x) = head(body(x))``.

    ``x`` is float, normalised with ``preprocess.mean/std``, [B, 3, crop, crop].
    """

    def __init__(self, spec: AdaptedBackbone, body: nn.Module, head: nn.Module, body_groups: Groups,
                 num_classes: int, head_config: HeadConfig, pretrained: bool):
        super().__init__()
        self.body = body
        self.head = head
        # Module names, not modules: survives deepcopy/state-dict round trips and never duplicates
        # registration of a submodule.
        self._group_paths = [(name, [f"body.{p}" for p in paths]) for name, paths in body_groups]
        self._group_paths.append(("head", ["head"]))
        self.spec_name = spec.name
        self.num_classes = num_classes
        self.head_config = head_config
        self.pretrained = pretrained
        self.feature_dim = spec.feature_dim_for(head_config)
        self.preprocess = spec.preprocess

    @property
    def group_names(self) -> list[str]:
        return [name for name, _ in self._group_paths]

    def groups(self) -> list[tuple[str, list[nn.Module]]]:
        """Layer groups stem -> top of body, then "head"; together they hold every parameter once.
        A group's loose parameters (paths that name a parameter, not a module) come as one
        ``ParameterSet`` at the group's end."""
        found = []
        for name, paths in self._group_paths:
            modules, loose = [], {}
            for path in paths:
                try:
                    modules.append(self.get_submodule(path))
                except AttributeError:
                    loose[path] = self.get_parameter(path)
            found.append((name, modules + ([ParameterSet(loose)] if loose else [])))
        return found

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))
