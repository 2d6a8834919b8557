"""Backbones from open_clip: the image towers of image-text models (CLIP, SigLIP, MobileCLIP).

The body is the image tower and its projection, and its features are L2-normalised image
embeddings: the space in which the text tower's embeddings of class names live, so that a
zero-shot head (``text_embeddings``) is one linear layer on the same features a probe trains on.
The weights file is open_clip's own, image and text towers together, published on the Hugging
Face hub; it is found and fetched as timm's are (``timm_source.hub_weights``).

open_clip is imported only when such a model is built.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from tl_core.errors import ConfigError
from tl_core.model.groups import groups_in_order
from tl_core.model.spec import BackboneSpec, Preprocess, WeightsFile
from tl_core.model.timm_source import hub_weights

HUB_FILE = "open_clip_model.safetensors"  # open_clip's file in each hub repository

# A small ensemble of prompt templates, after CLIP's (Radford et al. 2021, section 3.1.4): averaging
# the embeddings of several phrasings of a class name is more accurate than one "a photo of a {}.".
TEMPLATES = (
    "a photo of a {}.",
    "a photo of the {}.",
    "a close-up photo of a {}.",
    "a cropped photo of a {}.",
    "a bright photo of a {}.",
    "a blurry photo of a {}.",
    "a photo of a small {}.",
    "a photo of a large {}.",
)


def _create(model_name: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import logging

        import open_clip

        logging.disable(logging.WARNING)  # open_clip warns "no pretrained weights loaded": they load after
        try:
            # on the default device: the meta device when only shapes are wanted
            return open_clip.create_model(model_name, pretrained=None, device=torch.empty(0).device)
        finally:
            logging.disable(logging.NOTSET)
    return build


def open_clip_spec(name: str, model_name: str, tag: str, *, description: str, feature_dim: int, num_params: int,
                   file_params: int, gflops: float, preprocess: Preprocess, top1: float = 0.0,
                   accuracy_source: str = "", hub_id: str | None = None) -> BackboneSpec:
    """``model_name`` and ``tag`` as open_clip names them (``open_clip.list_pretrained()``)."""
    local_name = f"{model_name}.{tag}.safetensors"
    weights = hub_weights(hub_id, HUB_FILE, local_name) if hub_id else WeightsFile(local_name, url="")
    return BackboneSpec(
        name=name, family="open_clip", source="open_clip", source_name=f"{model_name}/{tag}",
        build=_create(model_name), weights=weights, description=description, feature_dim=feature_dim,
        num_params=num_params, top1=top1, accuracy="zero-shot", accuracy_source=accuracy_source, gflops=gflops,
        preprocess=preprocess, zero_shot=True,
        extra=(("model_name", model_name), ("tag", tag), ("file_params", file_params)))


class ImageTower(nn.Module):
    """An open_clip image tower whose output is the L2-normalised image embedding."""

    def __init__(self, visual: nn.Module):
        super().__init__()
        self.visual = visual

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.normalize(self.visual(x), dim=-1)


def _adapt_open_clip(spec: BackboneSpec, model: nn.Module, head):
    body = ImageTower(model.visual)
    return body, groups_in_order(body), None


ADAPTERS = {"open_clip": _adapt_open_clip}


def logit_scale(model: nn.Module) -> tuple[float, float]:
    """The model's learnt temperature (exp of ``logit_scale``) and bias (SigLIP's; 0 for CLIP)."""
    scale = float(model.logit_scale.detach().exp())
    bias = getattr(model, "logit_bias", None)
    return scale, float(bias.detach()) if bias is not None else 0.0


@torch.inference_mode()
def text_embeddings(spec: BackboneSpec, model: nn.Module, class_texts: Sequence[Sequence[str]],
                    templates: Sequence[str] = TEMPLATES) -> torch.Tensor:
    """[num_classes, D]: each class's text embedding, the normalised mean over its words (one or
    more per class, e.g. "coltsfoot", "yellow wildflower") and the templates, normalised again:
    CLIP's prompt ensembling. ``model`` is the whole open_clip model, weights loaded."""
    import open_clip

    try:
        tokenizer = open_clip.get_tokenizer(spec.option("model_name"))
    except ImportError as exc:  # SigLIP's tokenizer is a Hugging Face one, read through transformers
        raise ConfigError(f"Zero-shot with {spec.name} needs its text tokenizer, which Hugging Face's transformers "
                          f"library reads ({exc}): pip install transformers, then run it once online (the tokenizer "
                          "is downloaded and kept in the Hugging Face cache). CLIP and MobileCLIP need neither: "
                          "their tokenizer ships with open_clip.") from exc
    except Exception as exc:  # noqa: BLE001 - a hub tokenizer not downloaded yet, offline
        raise ConfigError(f"The text tokenizer of {spec.name} cannot be loaded here ({exc}). Zero-shot needs it; "
                          "it is downloaded into the Hugging Face cache on first use on a machine with internet. "
                          "CLIP and MobileCLIP's tokenizer ships with open_clip and works offline.") from exc
    model.eval()
    rows = []
    for words in class_texts:
        words = [w.strip() for w in words if w and w.strip()]
        if not words:
            raise ConfigError("Every class needs at least one word or phrase for zero-shot.")
        prompts = [template.format(word) for word in words for template in templates]
        embedded = F.normalize(model.encode_text(tokenizer(prompts)).float(), dim=-1)
        rows.append(F.normalize(embedded.mean(dim=0), dim=-1))
    return torch.stack(rows)


# ----------------------------------------------------------------------------- curated entries
# Parameters (image tower; file_params: both towers, what the weights file holds) and multiply-adds
# measured on the model (tests/core/test_backbones.py checks them). Preprocessing from open_clip's
# pretrained config: SigLIP squashes the whole image to a square, here resized and centre-cropped
# like the others (a photo's borders are cut rather than squeezed). Accuracies: zero-shot ImageNet.

_CLIP_MEAN, _CLIP_STD = (0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711)

CURATED = (
    open_clip_spec("mobileclip_s1", "MobileCLIP-S1", "datacompdr", hub_id="apple/MobileCLIP-S1-OpenCLIP",
                   description="MobileCLIP-S1: a small, fast image-text model; zero-shot from class names, and "
                               "good features on a CPU.",
                   feature_dim=512, num_params=21_541_632, file_params=84_969_729, gflops=4.67,
                   preprocess=Preprocess.from_crop(256, 1.0, (0.0, 0.0, 0.0), (1.0, 1.0, 1.0), "bilinear"),
                   top1=72.6, accuracy_source="Vasu et al. 2024, MobileCLIP"),
    open_clip_spec("clip_vit_b32", "ViT-B-32", "openai", hub_id="timm/vit_base_patch32_clip_224.openai",
                   description="CLIP ViT-B/32 (OpenAI): the original image-text model; zero-shot from class names.",
                   feature_dim=512, num_params=87_849_216, file_params=151_277_313, gflops=4.41,
                   preprocess=Preprocess.from_crop(224, 1.0, _CLIP_MEAN, _CLIP_STD, "bicubic"),
                   top1=63.2, accuracy_source="Radford et al. 2021, CLIP"),
    open_clip_spec("siglip_vit_b16", "ViT-B-16-SigLIP", "webli", hub_id="timm/ViT-B-16-SigLIP",
                   description="SigLIP ViT-B/16: a stronger image-text model; zero-shot and very good features; "
                               "slow on a CPU.",
                   feature_dim=768, num_params=92_884_224, file_params=203_155_970, gflops=17.71,
                   preprocess=Preprocess.from_crop(224, 1.0, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5), "bicubic"),
                   top1=76.2, accuracy_source="Zhai et al. 2023, SigLIP"),
)
