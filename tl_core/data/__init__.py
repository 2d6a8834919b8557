"""Datasets: import (folder, zip, CSV, uploads), safety checks, health report, split, decode cache,
augmentation. See docs/ARCHITECTURE.md, section tl_core.data."""

from .augment import PRESET_HELP, PRESETS, center_crop, make_augment
from .cache import cache_key, decode_images, decode_square
from .dataset import DATASET_FILE, Dataset, ImageRecord, ProgressFn, Skipped, UploadedImage
from .health import HealthReport, check_trainable, health_report
from .ingest import IMAGES_DIR, ingest
from .safety import IMAGE_EXTENSIONS, Limits
from .split import Split, make_split

__all__ = [
    "DATASET_FILE", "IMAGES_DIR", "IMAGE_EXTENSIONS", "PRESETS", "PRESET_HELP",
    "Dataset", "HealthReport", "ImageRecord", "Limits", "ProgressFn", "Skipped", "Split", "UploadedImage",
    "cache_key", "center_crop", "check_trainable", "decode_images", "decode_square", "health_report",
    "ingest", "make_augment", "make_split",
]
