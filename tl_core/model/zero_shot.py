"""Zero-shot classification from class names (CLIP, Radford et al. 2021): no training images.

An image-text backbone's body gives normalised image embeddings (``open_clip_source.ImageTower``).
Each class's words become prompts ("a photo of a {}.", several templates), the text tower embeds
them, and their normalised mean is the class's direction. The head is then one linear layer:
``logits = scale * cos(image, class text)``, with the model's own learnt temperature ``scale``. It
is an ``nn.Linear`` like any other head, so a zero-shot run exports, explains and evaluates as any
run does, and training on from it is a probe that starts from the words ("zero-shot init").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import torch
from torch import nn

from tl_core.config import HeadConfig
from tl_core.model.open_clip_source import TEMPLATES, logit_scale, text_embeddings
from tl_core.model.registry import check_head_fits, get_backbone
from tl_core.model.spec import BackboneSpec
from tl_core.model.weights_lookup import pretrained_state_dict

SIMILAR_TEXTS = 0.95  # cosine of two classes' text embeddings above which they are "nearly the same"


def default_words(class_name: str) -> str:
    """A folder name as words for a prompt: ``colts-foot`` -> "colts foot", ``Golden_Retriever`` ->
    "Golden Retriever". (``cls_03`` stays a poor prompt: the page asks for better words.)"""
    return re.sub(r"\s+", " ", re.sub(r"[_\-.]+", " ", class_name)).strip() or class_name


def class_words(head: HeadConfig, classes: Sequence[str]) -> list[list[str]]:
    """Each class's words: the ones the user gave (``HeadConfig.class_words``), else its name as
    words. Several words or phrases for one class are separated by commas."""
    given = {name: words for name, words in head.class_words}
    found = []
    for name in classes:
        text = given.get(name, "") or default_words(name)
        found.append([w.strip() for w in text.split(",") if w.strip()] or [default_words(name)])
    return found


def load_image_text_model(spec: BackboneSpec, *, pretrained: bool = True, weights_dir: str | Path | None = None,
                          allow_download: bool = True) -> nn.Module:
    """The whole open_clip model (both towers), its weights loaded unless ``pretrained`` is False."""
    check_head_fits(spec.name, "zero_shot")
    model = spec.build()
    if pretrained:
        model.load_state_dict(pretrained_state_dict(spec, weights_dir, allow_download=allow_download)[0])
    return model.eval()


def head_from_text(model: nn.Module, spec: BackboneSpec, words: Sequence[Sequence[str]],
                   templates: Sequence[str] = TEMPLATES) -> nn.Linear:
    """The zero-shot head: weight = scale * each class's normalised text embedding, bias 0 (a
    SigLIP bias is the same for every class, so it changes no probability and is left out)."""
    directions = text_embeddings(spec, model, words, templates)
    scale, _ = logit_scale(model)
    head = nn.Linear(directions.shape[1], directions.shape[0])
    with torch.no_grad():
        head.weight.copy_(directions * scale)
        head.bias.zero_()
    return head


def zero_shot_head(backbone: str, head: HeadConfig, classes: Sequence[str], *, pretrained: bool = True,
                   weights_dir: str | Path | None = None) -> nn.Linear:
    """The zero-shot head of ``backbone`` for ``classes`` (words from ``head.class_words``)."""
    spec = get_backbone(backbone)
    model = load_image_text_model(spec, pretrained=pretrained, weights_dir=weights_dir)
    return head_from_text(model, spec, class_words(head, classes))


def similar_classes(backbone: str, head: HeadConfig, classes: Sequence[str], *, pretrained: bool = True,
                    weights_dir: str | Path | None = None,
                    threshold: float = SIMILAR_TEXTS) -> list[tuple[str, str, float]]:
    """Pairs of classes whose texts the model can barely tell apart (cosine above ``threshold``),
    most similar first: zero-shot will confuse them whatever the images show."""
    spec = get_backbone(backbone)
    model = load_image_text_model(spec, pretrained=pretrained, weights_dir=weights_dir)
    directions = text_embeddings(spec, model, class_words(head, classes))
    cosine = directions @ directions.T
    pairs = [(classes[i], classes[j], float(cosine[i, j])) for i in range(len(classes))
             for j in range(i + 1, len(classes)) if float(cosine[i, j]) > threshold]
    return sorted(pairs, key=lambda p: -p[2])
