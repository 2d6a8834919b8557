"""Tiny timm and open_clip backbones for the tests that check the foundation-model plumbing.

- ``tiny_vit``: timm's own ``test_vit`` (a 4-block ViT of 371k parameters) at 64 px, so its
  position embedding is resampled from timm's 160 px as DINOv2's is from 518 px; it pools as
  DINOv2's linear evaluation does (class token and mean patch token).
- ``tiny_effnet``: timm's ``test_efficientnet`` (356k parameters, BatchNorm) at 64 px.
- ``tiny_clip``: an open_clip image-text model of a made-up config (a 2-block ViT image tower and a
  1-block text tower, 32-wide), with open_clip's bundled tokenizer: zero-shot works offline.

All have random weights (timm and open_clip build them; nothing is downloaded). ``save_weights``
writes a model's state dict as the safetensors file the offline lookup reads from a
``TL_STUDIO_WEIGHTS`` folder. Registered through ``TL_STUDIO_BACKBONE_PLUGINS`` (tests/conftest.py),
so job workers resolve the names too; timm and open_clip are imported only when a model is built.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
from pathlib import Path

import torch

from tl_core.model.open_clip_source import open_clip_spec
from tl_core.model.registry import register
from tl_core.model.spec import Preprocess
from tl_core.model.timm_source import timm_spec

MODULE = __name__
TINY_CLIP_MODEL = "tl-tiny-clip"
TINY_CLIP_CONFIG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 32, "layers": 2, "width": 32, "head_width": 16, "patch_size": 8},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 1},
}


def add_tiny_clip_config() -> None:
    """Teach open_clip the tiny config (idempotent; open_clip reads configs from JSON files)."""
    import open_clip

    if TINY_CLIP_MODEL in open_clip.list_models():
        return
    with tempfile.TemporaryDirectory() as folder:  # open_clip names a config after its file
        path = Path(folder) / f"{TINY_CLIP_MODEL}.json"
        path.write_text(json.dumps(TINY_CLIP_CONFIG))
        open_clip.add_model_config(path)


_MEAN_STD = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))

VIT = register(timm_spec("tiny_vit", "test_vit.r160_in1k", description="Tiny ViT (tests only): timm's test_vit.",
                         feature_dim=128, num_params=371_240, gflops=0.0026,
                         preprocess=Preprocess.from_crop(64, 1.0, *_MEAN_STD, "bicubic"), top1=1.0, family="timm_vit"))
EFFNET = register(timm_spec("tiny_effnet", "test_efficientnet.r160_in1k",
                            description="Tiny EfficientNet (tests only): timm's test_efficientnet.",
                            feature_dim=256, num_params=356_196, gflops=0.0091,
                            preprocess=Preprocess.from_crop(64, 1.0, (0.485, 0.456, 0.406),
                                                            (0.229, 0.224, 0.225), "bicubic"), top1=1.0))
_clip = open_clip_spec("tiny_clip", TINY_CLIP_MODEL, "random", description="Tiny CLIP (tests only).",
                       feature_dim=32, num_params=33_280, file_params=1_630_593, gflops=0.00052,
                       preprocess=Preprocess.from_crop(32, 1.0, *_MEAN_STD, "bicubic"), top1=1.0)


def _build_tiny_clip():
    import open_clip

    add_tiny_clip_config()
    return open_clip.create_model(TINY_CLIP_MODEL, pretrained=None, device=torch.empty(0).device)


CLIP = register(dataclasses.replace(_clip, build=_build_tiny_clip))


def save_weights(name: str, folder: Path, seed: int = 0) -> Path:
    """The seeded random weights of backbone ``name`` as ``folder/<its weights file>``; the path."""
    from safetensors.torch import save_file

    from tl_core.model.registry import get_backbone

    spec = get_backbone(name)
    torch.manual_seed(seed)
    state = {k: v.contiguous() for k, v in spec.build().state_dict().items()}
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / spec.weights_filename
    save_file(state, str(path))
    return path


def load_state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(path))
