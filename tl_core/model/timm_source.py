"""Backbones from timm (PyTorch Image Models): DINOv2, ConvNeXt V2, EfficientNetV2, any timm name.

``timm_spec`` describes one timm model with its pretrained tag (``"convnextv2_nano.fcmae_ft_in22k_in1k"``).
Its weights are the ones timm publishes on the Hugging Face hub (``model.safetensors`` of
``timm/<name>``): found in the hub's cache, in a weights folder as ``<name>.safetensors``, or
downloaded by huggingface_hub, timm's own path. The model is built with timm's defaults for that
tag, so the weights file's keys and shapes fit it exactly; the adapter then sets the input size
and takes the classifier off.

timm is imported only when a timm model is built, so listing backbones stays instant.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

from tl_core.errors import ConfigError
from tl_core.model.groups import groups_in_order
from tl_core.model.spec import BackboneSpec, Preprocess, WeightsFile

HUB_FILE = "model.safetensors"  # the file timm publishes in each hub repository
DYNAMIC_PREFIX = "timm/"  # "timm/<any timm name>" is a backbone the registry builds a spec for on demand


def hub_weights(repo_id: str, filename: str, local_name: str) -> WeightsFile:
    """A weights file on the Hugging Face hub: found in the hub's cache, fetched by huggingface_hub."""

    def download() -> Path:
        from huggingface_hub import hf_hub_download

        return Path(hf_hub_download(repo_id, filename))

    def cached() -> Path | None:
        try:
            from huggingface_hub import try_to_load_from_cache
        except ImportError:
            return None
        found = try_to_load_from_cache(repo_id, filename)
        return Path(found) if isinstance(found, str) else None

    return WeightsFile(filename=local_name, url=f"https://huggingface.co/{repo_id}/resolve/main/{filename}",
                       download=download, cached=cached)


def _create(source_name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import timm

        return timm.create_model(source_name, pretrained=False)
    return build


def timm_spec(name: str, source_name: str, *, description: str, feature_dim: int, num_params: int,
              gflops: float, preprocess: Preprocess, top1: float = 0.0, accuracy: str = "top-1",
              accuracy_source: str = "", family: str | None = None, hub_id: str | None = None) -> BackboneSpec:
    """A timm model with its pretrained tag. ``family`` "timm_vit" pools as DINOv2's linear
    evaluation does (class token and mean patch token); "timm" takes timm's own pooled features."""
    arch = source_name.split(".")[0]
    family = family or ("timm_vit" if arch.startswith(("vit_", "deit", "eva")) else "timm")
    return BackboneSpec(
        name=name, family=family, source="timm", source_name=source_name, build=_create(source_name),
        weights=hub_weights(hub_id or f"timm/{source_name}", HUB_FILE, f"{source_name}.safetensors"),
        description=description, feature_dim=feature_dim, num_params=num_params, top1=top1, accuracy=accuracy,
        accuracy_source=accuracy_source, gflops=gflops, preprocess=preprocess,
        extra=(("input_size", preprocess.crop_size),))


def spec_for_timm_name(source_name: str) -> BackboneSpec:
    """The spec of any timm model an expert names (``convnext_tiny.in12k_ft_in1k``), measured on
    the meta device (no weights, no memory). ``ConfigError`` with close matches for an unknown name."""
    import difflib

    import timm
    from timm.data import resolve_model_data_config
    from torch.utils.flop_counter import FlopCounterMode

    known = timm.list_models(pretrained=True)
    if source_name not in known:
        if source_name in timm.list_models():  # an architecture: its default pretrained tag
            tagged = [n for n in known if n.split(".")[0] == source_name]
            if tagged:
                source_name = tagged[0]
        if source_name not in known:
            close = difflib.get_close_matches(source_name, known, n=5, cutoff=0.6)
            hint = f" Close matches: {', '.join(close)}." if close else ""
            raise ConfigError(f"timm has no pretrained model {source_name!r}.{hint} "
                              "The names are those of timm.list_models(pretrained=True), e.g. "
                              "convnext_tiny.in12k_ft_in1k.")
    with torch.device("meta"):
        model = timm.create_model(source_name, pretrained=False)
    config = resolve_model_data_config(model)
    size = int(config["input_size"][-1])
    preprocess = Preprocess.from_crop(size, float(config.get("crop_pct", 1.0)), config["mean"], config["std"],
                                      str(config.get("interpolation", "bicubic")))
    num_params = sum(p.numel() for p in model.parameters())
    spec = timm_spec(DYNAMIC_PREFIX + source_name, source_name, description=f"{source_name} (timm)",
                     feature_dim=1, num_params=num_params, gflops=0.0, preprocess=preprocess,
                     accuracy_source="see timm's results tables")
    body, _, _ = ADAPTERS[spec.family](spec, model, None)
    with FlopCounterMode(display=False) as flops:
        out = body(torch.empty(1, 3, size, size, device="meta"))
    from dataclasses import replace

    return replace(spec, feature_dim=int(out.shape[1]), gflops=flops.get_total_flops() / 2e9)


class TokenPool(nn.Module):
    """A timm ViT's features as DINOv2's linear evaluation takes them: the class token after the
    last norm, concatenated with the mean of the patch tokens (Oquab et al. 2023)."""

    def __init__(self, vit: nn.Module):
        super().__init__()
        self.vit = vit
        self.prefix = int(getattr(vit, "num_prefix_tokens", 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        tokens = self.vit.forward_features(x)  # [B, prefix + patches, D], normed
        return torch.cat([tokens[:, 0], tokens[:, self.prefix:].mean(dim=1)], dim=1)


def _fit_input(spec: BackboneSpec, model: nn.Module) -> None:
    """Resample a ViT's position embedding to the crop it will see (DINOv2 is published at 518 px;
    224 px costs a fifth of the compute); a CNN takes any size as it is."""
    size = spec.option("input_size")
    current = getattr(getattr(model, "patch_embed", None), "img_size", None)
    if size and current is not None and tuple(current) != (size, size) and hasattr(model, "set_input_size"):
        model.set_input_size(img_size=(size, size))


def _adapt_timm_vit(spec: BackboneSpec, model: nn.Module, head):
    classifier = model.get_classifier() if getattr(model, "num_classes", 0) else None
    _fit_input(spec, model)
    model.reset_classifier(0)
    body = TokenPool(model)
    return body, groups_in_order(body), classifier


def _adapt_timm(spec: BackboneSpec, model: nn.Module, head):
    classifier = model.get_classifier() if getattr(model, "num_classes", 0) else None
    model.reset_classifier(0)  # model(x) is now timm's pooled (and, for ConvNeXt, normed) features
    return model, groups_in_order(model), classifier


ADAPTERS = {"timm_vit": _adapt_timm_vit, "timm": _adapt_timm}


# ----------------------------------------------------------------------------- curated entries
# Numbers: parameters and multiply-adds measured on the model itself (tests/core/test_backbones.py
# checks them); preprocessing from timm's pretrained config, at the crop said; accuracies as published.

_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))

CURATED = (
    timm_spec("dinov2_vits14", "vit_small_patch14_dinov2.lvd142m",
              description="DINOv2 ViT-S/14: self-supervised features that probe very well; a good CPU choice "
                          "for few images.",
              feature_dim=768, num_params=22_056_192, gflops=6.12,
              preprocess=Preprocess.from_crop(224, 0.875, *_IMAGENET, "bicubic"),
              top1=81.1, accuracy="linear probe", accuracy_source="Oquab et al. 2023, DINOv2"),
    timm_spec("dinov2_vitb14", "vit_base_patch14_dinov2.lvd142m",
              description="DINOv2 ViT-B/14: stronger self-supervised features; slow on a CPU.",
              feature_dim=1536, num_params=86_579_712, gflops=23.16,
              preprocess=Preprocess.from_crop(224, 0.875, *_IMAGENET, "bicubic"),
              top1=84.5, accuracy="linear probe", accuracy_source="Oquab et al. 2023, DINOv2"),
    timm_spec("convnextv2_nano", "convnextv2_nano.fcmae_ft_in22k_in1k",
              description="ConvNeXt V2-Nano: a modern CNN pre-trained on ImageNet-22k; accurate for its size.",
              feature_dim=640, num_params=15_623_800, gflops=2.44,
              preprocess=Preprocess.from_crop(224, 0.875, *_IMAGENET, "bicubic"),
              top1=82.1, accuracy="top-1", accuracy_source="Woo et al. 2023, ConvNeXt V2 (ImageNet-22k fine-tuned)"),
    timm_spec("efficientnetv2_s", "tf_efficientnetv2_s.in21k_ft_in1k",
              description="EfficientNetV2-S: a CNN pre-trained on ImageNet-21k; accurate, 300 px input.",
              feature_dim=1280, num_params=21_458_488, gflops=5.31,
              preprocess=Preprocess.from_crop(300, 1.0, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic"),
              top1=84.9, accuracy="top-1",
              accuracy_source="Tan and Le 2021, EfficientNetV2 (ImageNet-21k pre-trained, at 384 px)"),
)
