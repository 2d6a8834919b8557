"""Backbone features: the body run over batches of images, and the caches a frozen-body run trains on.

When the whole backbone stays frozen, the body's features are computed once per view of the
images and only the head trains on them. The views are computed lazily: epoch 1 needs one
augmented view of the training images (and the validation set's eval view), each later epoch
adds a view until ``config.MAX_FEATURE_VIEWS``, then epochs cycle through them. So the first curve point
comes after one pass of the backbone, not after all of them.

Two caches: ``FeatureCache`` holds a run's features in memory; ``FeatureStore`` keeps them on disk
under the workspace's cache folder, keyed by everything that changes them (``feature_key``), so a
second run on the same images, backbone, preprocessing and view (another head, another learning
rate) starts at once. A run on a share of the training images keys and stores the whole training
set's features and takes its rows (``train_session.Session.feature_images``).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch
from torch import nn

from tl_core import atomic
from tl_core.device import autocast
from tl_core.model.preprocess import Normalizer

if TYPE_CHECKING:
    from tl_core.config import TrainConfig
    from tl_core.model.registry import Preprocess

FEATURES_VERSION = 2  # bump when how features are computed changes, so old stored ones are not reused


def mostly_convolutional(body: nn.Module) -> bool:
    """True when most of ``body``'s weights are in 2-D convolutions (a CNN, not a transformer)."""
    total = sum(p.numel() for p in body.parameters())
    conv = sum(p.numel() for m in body.modules() if isinstance(m, nn.Conv2d) for p in m.parameters(recurse=False))
    return total > 0 and conv > total / 2


def extract_features(body: nn.Module, loader: Iterable, normalize: Normalizer,
                     amp_dtype: torch.dtype | None = None,
                     progress: Callable[[int, int], None] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Run ``body`` over a loader of (uint8 images, labels); returns float32 features and labels on CPU.
    Puts ``body`` in eval mode and, for a CNN, in channels-last memory format (in place: a frozen body
    computes the same features either way, a CNN in channels-last faster)."""
    body.eval()
    # oneDNN's CPU convolutions run ~1.7x faster on channels-last (NHWC) inputs and weights (bench/run.py,
    # docs/benchmarks.md), as cuDNN's do with mixed precision. A transformer has one convolution (its
    # patch embedding), and its tokens come out of an NHWC one in a slower layout (DINOv2 ViT-S: 0.87
    # of plain forwards, bench/backbones.py): it keeps the default format.
    memory_format = torch.channels_last if mostly_convolutional(body) else torch.contiguous_format
    body.to(memory_format=memory_format)
    feats, labels = [], []
    total = len(loader) if hasattr(loader, "__len__") else 0
    for i, (images, y) in enumerate(loader, start=1):
        with torch.inference_mode(), autocast(normalize.device, amp_dtype):
            f = body(normalize(images).contiguous(memory_format=memory_format))
            # Left on the device until the end: a copy to the CPU per batch would make the CPU wait
            # for the GPU each batch instead of preparing the next one meanwhile.
            feats.append(f.float())
        labels.append(torch.as_tensor(y))
        if progress:
            progress(i, total)
    # Concatenated outside inference mode: normal tensors, which a head can train on.
    return torch.cat(feats).cpu(), torch.cat(labels)


class EvalBatches:
    """``view`` of ``images[indices]`` a batch at a time, with labels: for a deterministic view (the
    eval centre crop) the same batches as a DataLoader over single images gives, without its
    per-image Python work (a gather and a crop per batch; pinned for a CUDA device)."""

    def __init__(self, images: torch.Tensor, indices: Sequence[int], labels: Sequence[int],
                 view: Callable[[torch.Tensor], torch.Tensor], batch_size: int, pin_memory: bool = False) -> None:
        self.images, self.indices, self.labels = images, torch.as_tensor(list(indices), dtype=torch.long), list(labels)
        self.view, self.batch_size, self.pin_memory = view, batch_size, pin_memory

    def __len__(self) -> int:
        return -(-len(self.indices) // self.batch_size)

    def __iter__(self):
        for start in range(0, len(self.indices), self.batch_size):
            batch = self.view(self.images[self.indices[start:start + self.batch_size]])
            yield (batch.pin_memory() if self.pin_memory else batch), \
                torch.as_tensor(self.labels[start:start + self.batch_size])


@dataclass(frozen=True)
class FeatureView:
    """Which view of the images the body saw: the eval centre crop (``augment="none"``), or
    augmented view ``index`` of the preset ``augment`` drawn from ``seed``. The same view draws
    the same crops whenever and in whatever order it is computed (``torch_seed``)."""

    augment: str = "none"
    index: int = 0
    seed: int = 0

    @property
    def is_eval(self) -> bool:
        return self.augment == "none"

    def label(self) -> str:
        return "eval" if self.is_eval else f"{self.augment}/view{self.index}/seed{self.seed}"

    def torch_seed(self) -> int:
        """The torch seed the view's random crops are drawn from; view 0 uses the run's seed itself."""
        if self.index == 0:
            return self.seed
        return int(np.random.SeedSequence([self.seed % 2**63, self.index]).generate_state(1, np.uint64)[0])


EVAL_VIEW = FeatureView()


def train_feature_view(augment: str, index: int, seed: int) -> FeatureView:
    """View ``index`` of the training images; without augmentation every view is the eval view."""
    return EVAL_VIEW if augment == "none" else FeatureView(augment, index, seed)


@dataclass
class FeatureCache:
    """Body features of a run's images, on CPU; filled view by view as epochs first need them."""

    n_views: int = 1  # training views the run cycles through (``config.feature_views``)
    train_views: dict[int, torch.Tensor] = field(default_factory=dict)  # view index -> [N_train, D]
    val: torch.Tensor | None = None  # [N_val, D], the eval view

    def view_of(self, epoch: int) -> int:
        """The view epoch ``epoch`` (from 1) trains on; epochs cycle through the views."""
        return (epoch - 1) % self.n_views

    def train_features(self, epoch: int) -> torch.Tensor:
        return self.train_views[self.view_of(epoch)]


# -- on disk, shared by runs -------------------------------------------------------------------
def model_fingerprint(backbone: str, pretrained: bool, body: nn.Module) -> str:
    """Identifies what the body computes: the architecture (its modules, pooling included), the
    pretrained flag and every weight and buffer. Random-init bodies are told apart by their
    weights, and never match a pretrained one."""
    h = hashlib.sha256(f"{backbone}|pretrained={pretrained}|{body!r}".encode())
    for name, tensor in body.state_dict().items():
        t = tensor.detach().cpu().contiguous().reshape(-1)
        h.update(f"{name}|{t.dtype}|{tuple(tensor.shape)}".encode())
        h.update(t.view(torch.uint8).numpy().tobytes())
    return h.hexdigest()


def feature_key(model: str, preprocess: Preprocess, image_ids: Sequence[str], view: FeatureView,
                numerics: str) -> str:
    """The disk cache's key: the body (``model_fingerprint``), the preprocessing, the images in
    order (their content hashes: a different dataset, record order or split gives another key),
    the view and how the numbers were computed (device, precision, torch, loader)."""
    from tl_core.data.cache import DECODE_VERSION

    h = hashlib.sha256(f"features v{FEATURES_VERSION}|decode v{DECODE_VERSION}|{model}|{preprocess!r}|"
                       f"{view.label()}|{numerics}|{len(image_ids)}|".encode())
    for image_id in image_ids:
        h.update(image_id.encode())
    return h.hexdigest()[:40]


@dataclass(frozen=True)
class FeatureStore:
    """Features on disk, one ``.npy`` per key: written whole or not at all, and a file that does
    not read back as the expected float32 [rows, D] is deleted and computed again."""

    folder: Path

    def path(self, key: str) -> Path:
        return self.folder / f"features-{key}.npy"

    def load(self, key: str, rows: int) -> torch.Tensor | None:
        path = self.path(key)
        if not path.is_file():
            return None
        try:
            array = np.load(path, allow_pickle=False)
        except (OSError, ValueError, EOFError):
            array = None
        if array is None or array.ndim != 2 or array.shape[0] != rows or array.dtype != np.float32:
            path.unlink(missing_ok=True)  # damaged or foreign: compute again
            return None
        return torch.from_numpy(array)

    def save(self, key: str, features: torch.Tensor) -> bool:
        """Store ``features``; False when the disk refused (the run carries on without storing)."""
        try:
            # Not fsynced: features lost in a power cut are computed again.
            with atomic.replacing(self.path(key), fsync=False) as tmp, open(tmp, "wb") as handle:
                np.save(handle, features.float().contiguous().numpy())
        except OSError:  # DiskFull is an OSError too
            return False
        return True


def feature_numerics(device: torch.device, amp_dtype: torch.dtype | None, train: TrainConfig,
                     view: FeatureView) -> str:
    """How a view's features were computed, for ``features.feature_key``: device, precision, torch
    and the loader (``tl_core.evaluation.label_issues`` keys its features the same way, to share them)."""
    loader = f"workers={train.num_workers}"
    if train.num_workers and not view.is_eval:  # worker processes draw the crops batch by batch
        loader += f",batch={train.batch_size}"
    return f"{device.type}|{amp_dtype}|torch {torch.__version__}|{loader}"
