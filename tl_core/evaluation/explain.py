"""Where does the model look? Grad-CAM for convnets and vision transformers.

Grad-CAM (Selvaraju et al., 2017): weight each channel of a stage's activations by the mean
gradient of the target logit with respect to it, sum, keep the positive part, upsample to the
input size. For a convnet (torchvision's, timm's) the stage is a block of convolutions, the last
one by default. For a vision transformer (torchvision's, timm's DINOv2, open_clip's CLIP and
SigLIP towers) it is Grad-CAM on patch tokens, reshaped to the patch grid (the same
``reshape_transform`` that pytorch-grad-cam uses for ViTs), one cell per patch: the output tokens
of a block when they reach the features (DINOv2's features average the last block's patch
tokens), else the input of the block's attention (a model that reads out only the class token,
such as CLIP, gives its last block's own output tokens no gradient). It is not attention rollout.

Written here with forward hooks (about 100 lines) rather than taken from ``pytorch-grad-cam``:
that package pulls in OpenCV and matplotlib for what is a few tensor operations, and we need the
stage list (for the UI's picker) from our own layer groups anyway.

For a trained run, ``run_stages`` lists what its best checkpoint's model can explain and
``explain_run_images`` explains a few images with one model load (the pages' Grad-CAM).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

from tl_core.errors import ConfigError

if TYPE_CHECKING:
    from tl_core.runs import Run

_MAX_EXTRA_TOKENS = 8  # class/distillation/register tokens ahead of the patch tokens


@dataclass(frozen=True)
class Stage:
    name: str  # qualified module name in ``model.named_modules()``; pass it as ``stage=``
    label: str  # what to show the user, e.g. "layer4" or "encoder block 12"
    kind: Literal["conv", "tokens"]  # a [B,C,h,w] feature map, or [B,T,D] patch tokens
    grid: tuple[int, int]  # spatial size of the heatmap before upsampling (for a given input)

    @property
    def description(self) -> str:
        """The label and, for a transformer, what the map is: "stage3 (patch tokens, 16 x 16 grid)"."""
        if self.kind == "tokens":
            return f"{self.label} (patch tokens, {self.grid[0]} x {self.grid[1]} grid)"
        return self.label


def _candidates(model: nn.Module) -> list[tuple[str, str, nn.Module]]:
    """(qualified name, label, module) from coarse to fine, input to output order.

    A TransferModel's layer groups give the stages (the last module of each body group);
    anything else falls back to the children of ``body`` (or of the model), one level into
    containers such as torchvision's ``features`` Sequential.
    """
    names = {id(m): n for n, m in model.named_modules()}
    out: list[tuple[str, str, nn.Module]] = []
    if hasattr(model, "groups") and callable(model.groups):
        for group_name, modules in model.groups():
            if group_name == "head":
                continue
            for module in modules:
                if id(module) in names:
                    out.append((names[id(module)], group_name, module))
        return out
    root = getattr(model, "body", model)
    children = list(root.named_children())
    for child_name, child in children:
        kids = list(child.named_children())
        # A body that is mostly one container (``features`` + pooling) is listed by its items.
        if len(children) <= 3 and isinstance(child, (nn.Sequential, nn.ModuleList)) and len(kids) > 1:
            for kid_name, kid in kids:
                out.append((names[id(kid)], f"{child_name}.{kid_name}", kid))
        else:
            out.append((names[id(child)], child_name, child))
    return out


def _token_grid(num_tokens: int) -> tuple[int, int] | None:
    side = math.isqrt(num_tokens)
    if side >= 2 and num_tokens - side * side <= _MAX_EXTRA_TOKENS:
        return side, side
    return None


def _as_map(act: torch.Tensor) -> torch.Tensor | None:
    """One image's activation as [C, h, w], or None if it has no spatial layout."""
    if act.dim() == 4 and act.shape[-1] * act.shape[-2] > 1:
        return act[0]
    if act.dim() == 3:
        grid = _token_grid(act.shape[1])
        if grid is not None:
            patches = act[0, act.shape[1] - grid[0] * grid[1]:]  # drop class/register tokens
            return patches.transpose(0, 1).reshape(act.shape[2], *grid)
    return None


def _hook_targets(module: nn.Module, kind: str) -> list[nn.Module]:
    """Where to read a stage's map, in order of preference: the module's own output, and for
    tokens a fallback. In a pre-norm transformer whose class token alone is read out (torchvision's
    ViT, CLIP), the patch tokens of the *last* block never reach the output, so their gradient is
    zero; the block's first LayerNorm - the input to its attention - is where they still matter.
    (A model that pools the patch tokens, as DINOv2's linear evaluation does, keeps its output.)"""
    if kind != "tokens":
        return [module]
    blocks = [m for m in module.modules()
              if any(isinstance(c, nn.MultiheadAttention) for c in m.children())]
    block = blocks[-1] if blocks else module
    norm = next((sub for sub in block.modules() if isinstance(sub, nn.LayerNorm)), None)
    return [module] if norm is None or norm is module else [module, norm]


class _Recorder:
    """Forward hooks that keep each module's output (and hand a clone downstream, so that an
    in-place op after the module cannot change what we recorded)."""

    def __init__(self, modules: dict[str, nn.Module]) -> None:
        self.outputs: dict[str, torch.Tensor] = {}
        self._handles = [m.register_forward_hook(self._hook(n)) for n, m in modules.items()]

    def _hook(self, name: str):
        def hook(_module, _inputs, output):
            if isinstance(output, torch.Tensor):
                self.outputs[name] = output
                return output.clone()
            return None

        return hook

    def close(self) -> None:
        for handle in self._handles:
            handle.remove()

    def __enter__(self) -> _Recorder:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def list_stages(model: nn.Module, image: torch.Tensor | None = None, input_size: int = 224) -> list[Stage]:
    """Stages Grad-CAM can explain, input to output; the last one is the default.

    ``image`` ([1,3,H,W], normalised) or a fixed random image of ``input_size`` is run forward
    and backward once to find the modules that produce a spatial map or a square grid of patch
    tokens *and* get a gradient there (a ViT's final norm does not: only its class token is read).
    """
    cands = _candidates(model)
    modules = dict(model.named_modules())
    names = {id(m): n for n, m in modules.items()}
    device = next(model.parameters()).device
    if image is None:
        gen = torch.Generator().manual_seed(0)
        image = torch.randn(1, 3, input_size, input_size, generator=gen)
    x = image.detach().to(device).requires_grad_(True)
    hooked = {n: m for n, _, m in cands}
    with _Recorder(hooked) as shapes, torch.no_grad():
        _eval_forward(model, x)
    found: list[tuple[str, list[str], str, tuple[int, int]]] = []  # label, target names, kind, grid
    for name, label, module in cands:
        act = shapes.outputs.get(name)
        if act is None or (fmap := _as_map(act)) is None:
            continue
        kind = "conv" if act.dim() == 4 else "tokens"
        found.append((label, [names[id(m)] for m in _hook_targets(module, kind)], kind,
                      (int(fmap.shape[1]), int(fmap.shape[2]))))
    targets = {target: modules[target] for _, preferred, _, _ in found for target in preferred}
    with _Recorder(targets) as rec, torch.enable_grad():
        body = getattr(model, "body", None)
        # The body's features, not the logits: an untrained head may be all zeros.
        out = _eval_forward(body if isinstance(body, nn.Module) else model, x)
    acts = [rec.outputs[t] for t in targets if t in rec.outputs]
    grads = torch.autograd.grad(out.float().pow(2).sum(), acts, allow_unused=True)
    alive = {t for t, g in zip(targets, grads, strict=True)
             if g is not None and (gmap := _as_map(g)) is not None and bool(gmap.abs().sum() > 0)}
    # Several modules of one group: keep the group's last stage, so the picker lists groups.
    by_label: dict[str, Stage] = {}
    for label, preferred, kind, grid in found:
        target = next((t for t in preferred if t in alive), None)
        if target is not None:
            by_label[label] = Stage(target, label, kind, grid)
    return list(by_label.values())


def _eval_forward(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    was_training = model.training
    model.eval()
    try:
        return model(x)
    finally:
        model.train(was_training)


def gradcam(model: nn.Module, image: torch.Tensor, target_class: int | None = None,
            stage: str | None = None) -> np.ndarray:
    """Grad-CAM heatmap [H, W] in [0, 1] for a normalised image [1, 3, H, W].

    ``target_class`` defaults to the predicted class; ``stage`` is a ``Stage.name`` from
    ``list_stages`` and defaults to the last one. The model is put in eval mode.
    """
    return explain(model, image, target_class, stage).heatmap


@dataclass(frozen=True)
class Explanation:
    heatmap: np.ndarray  # [H, W] float32 in [0, 1]
    target_class: int  # the class explained
    probs: np.ndarray  # [num_classes] softmax of the model's logits
    stage: str  # the module whose activations were used


def explain(model: nn.Module, image: torch.Tensor, target_class: int | None = None,
            stage: str | None = None) -> Explanation:
    """Like ``gradcam`` but also returns the class explained and the predicted probabilities."""
    if image.dim() != 4 or image.shape[0] != 1:
        raise ValueError(f"expected one image [1, 3, H, W], got {tuple(image.shape)}")
    model.eval()
    device = next(model.parameters()).device
    if stage is None:
        stages = list_stages(model, image.to(device))
        if not stages:
            raise ConfigError("This model has no convolutional stage or patch-token grid to explain.")
        stage = stages[-1].name
    modules = dict(model.named_modules())
    if stage not in modules:
        raise ConfigError(f"Unknown stage '{stage}'. Pick one of: "
                          + ", ".join(s.name for s in list_stages(model, image.to(device))))
    # The input requires grad so that the graph exists even when every weight is frozen.
    x = image.detach().to(device).requires_grad_(True)
    with _Recorder({stage: modules[stage]}) as rec, torch.enable_grad():
        logits = model(x)
    act = rec.outputs.get(stage)
    if act is None:
        raise ConfigError(f"Stage '{stage}' did not run in the forward pass.")
    probs = logits.detach().float().softmax(-1)[0]
    cls = int(probs.argmax()) if target_class is None else int(target_class)
    if not 0 <= cls < logits.shape[-1]:
        raise ConfigError(f"Class index {cls} is out of range (0..{logits.shape[-1] - 1}).")
    (grad,) = torch.autograd.grad(logits[0, cls], act)
    fmap, gmap = _as_map(act.detach().float()), _as_map(grad.float())
    if fmap is None or gmap is None:
        raise ConfigError(f"Stage '{stage}' has no spatial layout to explain.")
    weights = gmap.mean(dim=(1, 2))
    cam = torch.relu((weights[:, None, None] * fmap).sum(0))
    cam = F.interpolate(cam[None, None], size=image.shape[-2:], mode="bilinear", align_corners=False)[0, 0]
    cam = cam.clamp_min(0)
    peak = float(cam.max())
    heat = (cam / peak) if peak > 1e-12 else torch.zeros_like(cam)
    return Explanation(heat.cpu().numpy().astype(np.float32), cls, probs.cpu().numpy(), stage)


def _colormap(values: np.ndarray) -> np.ndarray:
    """[H, W] in [0, 1] -> [H, W, 3] uint8, a jet-like ramp (blue, cyan, yellow, red).

    Piecewise linear in numpy so that the engine does not need matplotlib for one colour map.
    """
    v = np.clip(values, 0.0, 1.0)
    r = np.clip(1.5 - np.abs(4 * v - 3), 0, 1)
    g = np.clip(1.5 - np.abs(4 * v - 2), 0, 1)
    b = np.clip(1.5 - np.abs(4 * v - 1), 0, 1)
    return (np.stack([r, g, b], axis=-1) * 255).astype(np.uint8)


def overlay(image: Image.Image, heatmap: np.ndarray, alpha: float = 0.45) -> Image.Image:
    """The heatmap in colour over ``image`` (resized to the image's size); RGB, same size.

    Pass the image the model saw (the centre crop), so that the heat lines up with it.
    """
    rgb = image.convert("RGB")
    heat = Image.fromarray((np.clip(heatmap, 0, 1) * 255).astype(np.uint8))
    heat = np.asarray(heat.resize(rgb.size, Image.BILINEAR), dtype=np.float32) / 255.0
    colour = _colormap(heat).astype(np.float32)
    # Cold regions stay mostly the photo; hot regions take the colour.
    weight = alpha * (0.3 + 0.7 * heat[..., None])
    mixed = (1 - weight) * np.asarray(rgb, dtype=np.float32) + weight * colour
    return Image.fromarray(np.clip(mixed, 0, 255).astype(np.uint8))


def model_view(image: Image.Image | Path | str | bytes, preprocess) -> tuple[torch.Tensor, Image.Image]:
    """An image as the app's model sees it: the normalised input [1, 3, crop, crop] and the centre
    crop as a PIL image (to draw the heatmap on). Decoded by ``tl_core.data`` like training data;
    pass uploads as bytes or a path so that their EXIF orientation is honoured."""
    from tl_core.model.preprocess import decode, eval_view, normalize

    crop = eval_view(preprocess)(decode([image], preprocess))
    x = normalize(crop, preprocess).contiguous()
    return x, Image.fromarray(crop[0].permute(1, 2, 0).numpy())


def explain_image(model: nn.Module, image: Image.Image | Path | str | bytes, preprocess,
                  target_class: int | None = None, stage: str | None = None) -> tuple[Explanation, Image.Image]:
    """Grad-CAM for one image file/upload: the explanation and ``overlay``-ready centre crop.

    Page use: ``result, crop = explain_image(model, upload.getvalue(), preprocess)`` then
    ``st.image(overlay(crop, result.heatmap))``.
    """
    x, crop = model_view(image, preprocess)
    device = next(model.parameters()).device
    return explain(model, x.to(device), target_class, stage), crop


def run_stages(run: Run) -> list[Stage]:
    """The stages Grad-CAM can explain in a run's best model, input to output."""
    from tl_core.model.loading import load_model

    return list_stages(load_model(run, "best"))


def explain_run_images(run: Run, images: Sequence[str | bytes], stage: str | None,
                       targets: Sequence[int | None]) -> list[tuple[np.ndarray, str] | str]:
    """Grad-CAM overlays of a few images (file paths or upload bytes) by a run's best model, one
    model load for all: per image the RGB overlay and the label of the class it explains
    (``targets``: None = predicted), or, for an image that could not be explained, the reason as a
    string."""
    from tl_core.errors import TLError
    from tl_core.model.loading import load_model
    from tl_core.model.registry import get_backbone

    model = load_model(run, "best")
    preprocess = get_backbone(run.config.model.backbone).preprocess
    out: list[tuple[np.ndarray, str] | str] = []
    for image, target in zip(images, targets, strict=True):
        source = Path(image) if isinstance(image, str) else image
        try:
            result, crop = explain_image(model, source, preprocess, target_class=target, stage=stage)
        except (TLError, OSError, ValueError) as exc:
            out.append(f"could not explain this image ({exc})")
            continue
        out.append((np.asarray(overlay(crop, result.heatmap)), run.classes[result.target_class]))
    return out
