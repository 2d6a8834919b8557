"""How an image becomes a tensor for the model: the one place, keyed by the backbone's ``Preprocess``.

1. **Decode** (``decode``, ``decode_dataset``): EXIF-oriented RGB, the centre square resized to
   ``preprocess.resize_size``, as uint8 [N, 3, S, S]. The pixels come from ``tl_core.data``'s
   decoder, cached on disk for a dataset.
2. **View** (``eval_view``, ``train_view``): uint8 [B, 3, S, S] -> uint8 [B, 3, crop, crop]; the
   centre crop at evaluation, a random augmentation preset in training (``augment_preview``: a
   few images through it, as the Train page shows them).
3. **Normalise** (``Normalizer``, ``normalize``): float, ``(x / 255 - mean) / std`` on the device.

``model_inputs`` is steps 2 and 3 for evaluation: training's validation, prediction, Grad-CAM,
the feature map and the export's parity check all go through it (or its two named steps), so the
app's model sees an image the same way everywhere. ``make_loader`` batches decoded images through
a view for training and feature extraction.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from PIL import Image

from tl_core.errors import DataError

if TYPE_CHECKING:
    from tl_core.data.dataset import Dataset, ProgressFn
    from tl_core.model.registry import Preprocess

ImageSource = Image.Image | Path | str | bytes
View = Callable[[torch.Tensor], torch.Tensor]


# -- 1. decode ---------------------------------------------------------------------------------
def decode(images: Sequence[ImageSource], preprocess: Preprocess) -> torch.Tensor:
    """Files, uploads (bytes) or PIL images as uint8 [N, 3, resize, resize], decoded exactly as
    training does (EXIF, RGB, shorter side to ``preprocess.resize_size``, centre square)."""
    from tl_core.data.cache import decode_square

    def source(image):
        if isinstance(image, Image.Image):  # lossless round trip through the one decode path
            buffer = io.BytesIO()
            image.save(buffer, "PNG")
            buffer.seek(0)
            return buffer
        return io.BytesIO(image) if isinstance(image, bytes) else image

    try:
        return torch.stack([torch.from_numpy(np.array(decode_square(source(image), preprocess.resize_size)))
                            for image in images])
    except (OSError, ValueError, Image.DecompressionBombError) as exc:  # FormatUnavailable is a ValueError
        from tl_core.data.formats import SUPPORTED_WORDS

        raise DataError(f"Could not read an image to predict on ({exc}); use a {SUPPORTED_WORDS} file.") from exc


def decode_dataset(dataset: Dataset, preprocess: Preprocess, cache_dir: Path,
                   progress: ProgressFn | None = None) -> torch.Tensor:
    """Every image of ``dataset`` as uint8 [N, 3, resize, resize], from the decode cache (maybe
    memory-mapped)."""
    from tl_core.data.cache import decode_images

    return decode_images(dataset, list(range(len(dataset.records))), size=preprocess.resize_size,
                         cache_dir=cache_dir, progress=progress)


# -- 2. view -----------------------------------------------------------------------------------
def eval_view(preprocess: Preprocess) -> View:
    """The centre crop the model sees at evaluation and prediction."""
    from tl_core.data.augment import center_crop

    crop = preprocess.crop_size
    return lambda batch: center_crop(batch, crop)


def train_view(preprocess: Preprocess, augment: str) -> View:
    """A random view per image for the augmentation preset ``augment`` (``none``: the eval view)."""
    from tl_core.data.augment import make_augment

    return make_augment(augment, preprocess.crop_size)


def augment_preview(dataset: Dataset, augment: str, backbone: str, *, images: int = 4, views: int = 4,
                    seed: int = 0, width: int = 110) -> list[bytes]:
    """``views`` augmented versions of the first image of ``images`` classes of ``dataset``, as
    JPEGs ``width`` pixels wide (row-major: one row per image): what the augmentation preset
    ``augment`` makes of them for ``backbone``. The same decoding and augmentation as training;
    the random draws are seeded (``seed``), so a preview is the same every time."""
    from tl_core.model.registry import get_backbone

    preprocess = get_backbone(backbone).preprocess
    picked = [dataset.path_of(records[0]) for records in dataset.examples(1, max_classes=images).values()]
    view = train_view(preprocess, augment)
    torch.manual_seed(seed)
    out = []
    for square in decode(picked, preprocess):
        batch = view(square.unsqueeze(0).repeat(views, 1, 1, 1))
        for image in batch:
            # encoded once here, at the width shown: given arrays, st.image encodes and resizes
            # each of them again on every rerun of the page
            picture = Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())
            if picture.width > width:
                picture = picture.resize((width, round(picture.height * width / picture.width)),
                                         Image.Resampling.BILINEAR)
            buffer = io.BytesIO()
            picture.save(buffer, format="JPEG", quality=90)
            out.append(buffer.getvalue())
    return out


# -- 3. normalise ------------------------------------------------------------------------------
class Normalizer:
    """uint8 [B,3,H,W] on any device -> normalised float on ``device`` (channels_last on CUDA)."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], device: torch.device) -> None:
        self.device = device
        self.mean = torch.tensor(mean, device=device).view(1, 3, 1, 1) * 255
        self.std = torch.tensor(std, device=device).view(1, 3, 1, 1) * 255
        self.memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format

    @classmethod
    def for_preprocess(cls, preprocess: Preprocess, device: str | torch.device = "cpu") -> Normalizer:
        return cls(preprocess.mean, preprocess.std, torch.device(device))

    def __call__(self, batch_uint8: torch.Tensor) -> torch.Tensor:
        x = batch_uint8.to(self.device, non_blocking=True).float()
        return ((x - self.mean) / self.std).contiguous(memory_format=self.memory_format)


def normalize(batch_uint8: torch.Tensor, preprocess: Preprocess, device: str | torch.device = "cpu") -> torch.Tensor:
    return Normalizer.for_preprocess(preprocess, device)(batch_uint8)


def model_inputs(images_uint8: torch.Tensor, preprocess: Preprocess,
                 device: str | torch.device = "cpu") -> torch.Tensor:
    """Decoded uint8 images [N,3,S,S] -> the normalised eval view [N,3,crop,crop] on ``device``."""
    return normalize(eval_view(preprocess)(images_uint8), preprocess, device)


# -- batches -----------------------------------------------------------------------------------
class ImageSet(torch.utils.data.Dataset):
    """Decoded uint8 images (possibly memory-mapped) + labels; ``view`` makes one crop of each."""

    def __init__(self, images: torch.Tensor, indices: Sequence[int], labels: Sequence[int], view: View) -> None:
        self.images, self.indices, self.labels, self.view = images, list(indices), list(labels), view

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int):
        image = torch.as_tensor(self.images[self.indices[i]]).clone()  # private copy: the cache may be a memmap
        return self.view(image.unsqueeze(0))[0], self.labels[i]


def make_loader(images: torch.Tensor, indices: Sequence[int], labels: Sequence[int],
                transform: View, batch_size: int, *, shuffle: bool, seed: int = 0,
                num_workers: int = 0, pin_memory: bool = False,
                weights: Sequence[float] | None = None) -> torch.utils.data.DataLoader:
    """Batches of (uint8 views, labels); normalise them on the device with a ``Normalizer``.
    ``weights`` (one per index): draw ``len(indices)`` images with replacement in proportion to
    them (a class-balanced epoch, ``tl_core.training.balance``) instead of shuffling."""
    generator = torch.Generator().manual_seed(seed)
    sampler = None
    if weights is not None:
        sampler = torch.utils.data.WeightedRandomSampler(weights, len(indices), replacement=True, generator=generator)
        shuffle = False
    return torch.utils.data.DataLoader(
        ImageSet(images, indices, labels, transform), batch_size=batch_size, shuffle=shuffle, sampler=sampler,
        generator=generator, num_workers=num_workers, pin_memory=pin_memory,
        persistent_workers=num_workers > 0)
