"""What TL Studio knows of one backbone, whichever library it comes from: ``BackboneSpec``.

A spec carries how to build the library's model (random init), where its pretrained weights file
is found and fetched (``WeightsFile``), the preprocessing of those weights, the published accuracy
with its source, and the numbers the Model page shows. The sources (``torchvision_spec`` here,
``tl_core.model.timm_source``, ``tl_core.model.open_clip_source``) fill it in; the registry holds
the specs by name. This module imports no source library, so every other one can import it.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

SOURCES = ("torchvision", "timm", "open_clip")  # the libraries a backbone comes from


@dataclass(frozen=True)
class Preprocess:
    resize_size: int  # shorter side is resized to this before the centre crop
    crop_size: int  # square input size the network sees
    mean: tuple[float, float, float]  # per-channel mean of the [0, 1] image
    std: tuple[float, float, float]  # per-channel std of the [0, 1] image
    interpolation: str  # torchvision InterpolationMode value: "bilinear", "bicubic", ...

    @classmethod
    def from_weights(cls, weights: Any) -> Preprocess:
        """From a torchvision ``WeightsEnum`` member (its ImageClassification eval transform)."""
        t = weights.transforms()
        return cls(
            resize_size=int(t.resize_size[0]),
            crop_size=int(t.crop_size[0]),
            mean=tuple(float(v) for v in t.mean),
            std=tuple(float(v) for v in t.std),
            interpolation=str(t.interpolation.value),
        )

    @classmethod
    def from_crop(cls, crop_size: int, crop_pct: float, mean, std, interpolation: str) -> Preprocess:
        """timm's and open_clip's way of saying it: the crop and the fraction of the resized image it
        keeps (timm's ``crop_pct``; 1.0 resizes the shorter side straight to the crop)."""
        return cls(resize_size=int(round(crop_size / crop_pct)), crop_size=int(crop_size),
                   mean=tuple(float(v) for v in mean), std=tuple(float(v) for v in std),
                   interpolation=str(interpolation))

    def to_dict(self) -> dict[str, Any]:
        return {"resize_size": self.resize_size, "crop_size": self.crop_size, "mean": list(self.mean),
                "std": list(self.std), "interpolation": self.interpolation}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocess:
        return cls(resize_size=int(data["resize_size"]), crop_size=int(data["crop_size"]),
                   mean=tuple(float(v) for v in data["mean"]), std=tuple(float(v) for v in data["std"]),
                   interpolation=str(data["interpolation"]))


@dataclass(frozen=True)
class WeightsFile:
    """One backbone's pretrained weights file, and how its library finds and fetches it."""
    filename: str  # its name in a weights folder (and in torchvision's cache, for torchvision)
    url: str  # where a person downloads it by hand
    # The library's own download: returns the local file (or, for torchvision, the state dict),
    # checked by the library. None: there is nothing to download (a test's backbone).
    download: Callable[[], Any] | None = None
    # Where the library's own cache already holds the file (the Hugging Face hub cache), or None.
    cached: Callable[[], Path | None] | None = None
    sha256_prefix: str = ""  # what the file's sha256 starts with, where it is published ("" unknown)


@dataclass(frozen=True)
class BackboneSpec:
    name: str  # registry name, e.g. "mobilenet_v2" or "dinov2_vits14"
    family: str  # picks the body/head adapter and layer-group splitter
    source: str  # the library the model comes from: one of SOURCES
    source_name: str  # the library's own name for it, e.g. "vit_small_patch14_dinov2.lvd142m"
    build: Callable[[], nn.Module]  # the library's model with random weights, ready for its weights file
    weights: WeightsFile
    description: str  # one line for the UI
    feature_dim: int  # width of the body's pooled features (VGG: with pool="avg")
    num_params: int  # of the pretrained model as published (torchvision: its ImageNet classifier too)
    top1: float  # the published accuracy (%) in `accuracy`, on ImageNet-1K
    accuracy: str  # what top1 measures: "top-1", "linear probe" or "zero-shot"
    accuracy_source: str  # where the number is published
    gflops: float  # per image at crop_size, multiply-adds (torchvision's `_ops` convention)
    preprocess: Preprocess
    stage_starts: tuple[int, ...] = ()  # features-based families: first `features` index of each group
    categories: tuple[str, ...] = ()  # class names of the pretrained classifier, where it has one
    zero_shot: bool = False  # an image-text model: classifies from class names with no training images
    extra: tuple[tuple[str, Any], ...] = ()  # source-specific settings (e.g. open_clip's model and tag)

    @property
    def weights_filename(self) -> str:
        return self.weights.filename

    @property
    def weights_url(self) -> str:
        return self.weights.url

    def option(self, key: str, default: Any = None) -> Any:
        return dict(self.extra).get(key, default)

    def feature_dim_for(self, head: Any) -> int:
        """``head`` is a ``HeadConfig`` (VGG's Keras recipe flattens 7x7x512)."""
        if self.family == "vgg" and getattr(head, "pool", "avg") == "flatten":
            return 512 * 7 * 7
        return self.feature_dim

    @property
    def accuracy_label(self) -> str:
        """e.g. "ImageNet top-1 76.1%" or "ImageNet linear probe 81.1% (Oquab et al. 2023)"."""
        return f"ImageNet {self.accuracy} {self.top1:.1f}%"


def torchvision_spec(name: str, family: str, builder: Callable[..., nn.Module], weights: Any, description: str,
                     feature_dim: int, stage_starts: tuple[int, ...] = ()) -> BackboneSpec:
    """A torchvision backbone: ``builder`` (e.g. ``torchvision.models.resnet18``) and its pinned
    ``WeightsEnum`` member (not DEFAULT, so upgrades change nothing) give everything else."""
    meta = weights.meta
    return BackboneSpec(
        name=name, family=family, source="torchvision", source_name=builder.__name__,
        build=lambda: builder(weights=None),
        weights=WeightsFile(filename=os.path.basename(weights.url), url=weights.url,
                            # torchvision's normal download into its cache, hash-checked
                            download=lambda: weights.get_state_dict(progress=True, check_hash=True)),
        description=description, feature_dim=feature_dim, num_params=int(meta["num_params"]),
        top1=float(meta["_metrics"]["ImageNet-1K"]["acc@1"]), accuracy="top-1",
        accuracy_source="torchvision's model documentation",
        gflops=float(meta["_ops"]), preprocess=Preprocess.from_weights(weights), stage_starts=stage_starts,
        categories=tuple(meta.get("categories") or ()),
        extra=(("weights_enum", type(weights).__name__), ("weights_member", weights.name),
               ("module", builder.__module__)))
