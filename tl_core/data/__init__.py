"""Datasets: import (folder, zip, CSV, uploads), safety checks, health report, split, decode cache,
augmentation. See docs/ARCHITECTURE.md, section tl_core.data.

The torch-based parts (decode cache, augmentation) load on first use, so that reading a dataset
or checking an upload does not pay for importing torch.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from tl_core.data.dataset import DATASET_FILE, Dataset, ImageRecord, ProgressFn, Skipped, UploadedImage
from tl_core.data.health import HealthReport, check_trainable, health_report
from tl_core.data.ingest import IMAGES_DIR, CheckedImage, check_images, create_dataset, ingest
from tl_core.data.safety import IMAGE_EXTENSIONS, Limits
from tl_core.data.split import Split, make_split, subset_per_class

if TYPE_CHECKING:
    from tl_core.data.augment import center_crop, make_augment
    from tl_core.data.cache import cache_key, decode_images, decode_square

_LAZY = {"center_crop": "augment", "make_augment": "augment",
         "cache_key": "cache", "decode_images": "cache", "decode_square": "cache"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        return getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "DATASET_FILE", "IMAGES_DIR", "IMAGE_EXTENSIONS",
    "CheckedImage", "Dataset", "HealthReport", "ImageRecord", "Limits", "ProgressFn", "Skipped", "Split", "UploadedImage",
    "cache_key", "center_crop", "check_images", "check_trainable", "create_dataset", "decode_images", "decode_square", "health_report",
    "ingest", "make_augment", "make_split", "subset_per_class",
]
