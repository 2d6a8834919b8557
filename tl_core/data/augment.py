"""Augmentation presets on uint8 image batches (torchvision.transforms.v2 works on tensors).

The presets' names and what each does in words are ``config.AugmentPreset`` and ``config.AUGMENT_LABELS``."""

from __future__ import annotations

from collections.abc import Callable

import torch
from torchvision.transforms import v2
from torchvision.transforms.v2 import functional as F

from tl_core.config import AugmentPreset, check_choice


def center_crop(batch: torch.Tensor, crop: int) -> torch.Tensor:
    """The evaluation view: [B,3,S,S] -> [B,3,crop,crop] (resized up first if S < crop)."""
    if min(batch.shape[-2:]) < crop:
        batch = F.resize(batch, [crop], antialias=True)
    return F.center_crop(batch, [crop, crop])


def make_augment(preset: str, crop: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """A callable [B,3,S,S] uint8 -> [B,3,crop,crop] uint8 drawing new random parameters per image."""
    check_choice("augmentation preset", preset, AugmentPreset)
    if preset == "none":
        return lambda batch: center_crop(batch, crop)
    if preset == "light":
        transform = v2.Compose([v2.RandomResizedCrop(crop, scale=(0.7, 1.0), antialias=True),
                                v2.RandomHorizontalFlip()])
    else:  # standard
        transform = v2.Compose([v2.RandomRotation(15),
                                v2.RandomResizedCrop(crop, scale=(0.5, 1.0), antialias=True),
                                v2.RandomHorizontalFlip(),
                                v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02)])

    def augment(batch: torch.Tensor) -> torch.Tensor:
        # v2 transforms draw one set of parameters per call, so a call per image varies them per image.
        return torch.stack([transform(image) for image in batch])

    return augment
