"""Automatic batch size on CUDA: the largest power of two whose training step fits with headroom.

``choose_batch_size`` is what a run with ``TrainConfig.auto_batch`` calls once its model is built
and frozen. On a CUDA device it tries one forward and backward pass at 1, 2, 4, ... images
(``step_fits``) until one does not fit or leaves less than ``HEADROOM`` of the GPU's memory free,
caps the result by the training set's size, and remembers it in ``<workspace>/cache/autobatch.json``
per (backbone, device name, image size, trainable part, precision), so the next run starts at
once. Off CUDA there is nothing to measure (a CPU's batch size is a matter of speed, not memory):
the configured batch size stays and the run says so.

A later epoch that trains more layers (gradual unfreezing) can need more memory than epoch 1's
probe: the trainer's out-of-memory halving (``training.EpochLoop``) covers it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from tl_core import atomic
from tl_core.device import autocast, is_out_of_memory

HEADROOM = 0.15  # share of the GPU's total memory left free at the chosen batch size
MAX_AUTO_BATCH = 1024  # beyond this, fine-tuning gains nothing but worse generalisation
CACHE_FILE = "autobatch.json"

Fits = Callable[[int], bool]


@dataclass(frozen=True)
class BatchChoice:
    batch_size: int
    measured: bool  # False: recalled from an earlier run, or not on CUDA
    note: str  # one sentence for the run's events


def power_of_two_floor(n: int) -> int:
    """The largest power of two <= ``n`` (1 for ``n`` < 2)."""
    return 1 << (max(int(n), 1).bit_length() - 1)


def largest_fitting(fits: Fits, cap: int) -> int:
    """The largest power of two ``b`` <= ``cap`` with ``fits(b)``, doubling from 1 and stopping at
    the first that does not fit (memory grows with the batch). 1 when even 1 does not fit: the run
    then meets the out-of-memory error and says what to do."""
    cap = power_of_two_floor(min(cap, MAX_AUTO_BATCH))
    best, batch = 1, 1
    while batch <= cap:
        if not fits(batch):
            break
        best, batch = batch, batch * 2
    return best


def step_fits(model: nn.Module, input_shape: tuple[int, int, int], n_classes: int, device: torch.device,
              amp_dtype: torch.dtype | None, headroom: float = HEADROOM) -> Fits:
    """A predicate: does one training step (forward, loss, backward) of ``model`` at batch ``b`` fit
    on CUDA ``device`` and leave ``headroom`` of its memory free? Counts the optimiser's state to
    come (AdamW: two fp32 tensors per trainable weight) and what other processes use. The model's
    weights, gradients and buffers (BatchNorm's statistics) are left as they were."""
    trainable = [p for p in model.parameters() if p.requires_grad]
    optimizer_state = 2 * sum(p.numel() * 4 for p in trainable)
    # A probe in train mode moves BatchNorm's running statistics towards its random inputs: put
    # the pretrained ones back after each probe.
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}

    def fits(batch: int) -> bool:
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        free, total = torch.cuda.mem_get_info(device)
        start = torch.cuda.memory_allocated(device)
        torch.cuda.reset_peak_memory_stats(device)
        was_training = model.training
        try:
            model.train()
            x = torch.randn(batch, *input_shape, device=device).contiguous(memory_format=torch.channels_last)
            y = torch.randint(0, n_classes, (batch,), device=device)
            with autocast(device, amp_dtype):
                loss = nn.functional.cross_entropy(model(x).float(), y)
            if loss.requires_grad:
                loss.backward()
            torch.cuda.synchronize(device)
            step = torch.cuda.max_memory_allocated(device) - start
        except Exception as exc:
            if not is_out_of_memory(exc):
                raise
            return False
        finally:
            x = y = loss = None  # noqa: F841 - free the probe's tensors before emptying the cache
            for p in trainable:
                p.grad = None
            with torch.no_grad():
                for name, b in model.named_buffers():
                    b.copy_(buffers[name])
            model.train(was_training)
            torch.cuda.empty_cache()
        return step + optimizer_state <= free - headroom * total

    return fits


def cache_key(backbone: str, device_name: str, image_size: int, trainable: str, precision: str) -> str:
    return f"{backbone}|{device_name}|{image_size}px|{trainable}|{precision}"


def trainable_part(model: nn.Module) -> str:
    """What trains in epoch 1, as the model's top-level parts with trainable weights
    (``head`` for a frozen body, ``body+head`` for a full fine-tune) and their count."""
    parts = sorted({name.split(".", 1)[0] for name, p in model.named_parameters() if p.requires_grad})
    count = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return f"{'+'.join(parts) or 'nothing'}:{count}"


def recall(cache_dir: Path, key: str, cap: int) -> int | None:
    """The batch size an earlier run measured for ``key``, when it answers for ``cap``: its search
    found the limit below its own cap, or went at least as far as ``cap``."""
    known = atomic.read_json(Path(cache_dir) / CACHE_FILE, {})
    entry = known.get(key) if isinstance(known, dict) else None
    if not isinstance(entry, dict):
        return None
    size, searched = entry.get("batch_size"), entry.get("searched_up_to")
    if not (isinstance(size, int) and isinstance(searched, int) and 1 <= size <= searched):
        return None  # damaged or hand-edited: measure again
    if size < searched or power_of_two_floor(cap) <= searched:
        return min(size, power_of_two_floor(cap))
    return None


def remember(cache_dir: Path, key: str, batch_size: int, searched_up_to: int) -> bool:
    """Store ``batch_size`` for ``key`` (whole file or nothing); False when the disk refused: the
    run goes on, and the next one measures again."""
    path = Path(cache_dir) / CACHE_FILE
    known = atomic.read_json(path, {})
    known = known if isinstance(known, dict) else {}
    known[key] = {"batch_size": batch_size, "searched_up_to": searched_up_to,
                  "measured_at": time.strftime("%Y-%m-%d %H:%M:%S"), "torch": torch.__version__}
    try:
        atomic.write_json(path, known)
    except OSError:  # DiskFull is an OSError
        return False
    return True


def choose_batch_size(model: nn.Module, *, backbone: str, device: torch.device, amp_dtype: torch.dtype | None,
                      crop_size: int, n_classes: int, n_train: int, configured: int, cache_dir: Path,
                      fits: Fits | None = None) -> BatchChoice:
    """The batch size a run with automatic batch size uses (see the module's docstring). ``fits``
    replaces the CUDA measurement (tests use a fake one; then any device measures)."""
    if device.type != "cuda" and fits is None:
        return BatchChoice(configured, False, f"Automatic batch size needs a CUDA GPU; on {device.type.upper()} "
                                              f"this run uses the configured batch size, {configured}.")
    device_name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    precision = str(amp_dtype).replace("torch.", "") if amp_dtype is not None else "float32"
    key = cache_key(backbone, device_name, crop_size, trainable_part(model), precision)
    cap = max(1, min(n_train, MAX_AUTO_BATCH))
    size = recall(cache_dir, key, cap)
    if size is not None:
        return BatchChoice(size, False, f"Batch size {size}: the largest that fits on {device_name} for "
                                        f"{backbone} at {crop_size} px, as measured by an earlier run.")
    if fits is None:
        fits = step_fits(model, (3, crop_size, crop_size), n_classes, device, amp_dtype)
    size = largest_fitting(fits, cap)
    remember(cache_dir, key, size, power_of_two_floor(cap))
    capped = " (capped by the number of training images)" if size == power_of_two_floor(cap) < MAX_AUTO_BATCH else ""
    return BatchChoice(size, True, f"Batch size {size}: the largest power of two whose training step fits on "
                                   f"{device_name} with {HEADROOM:.0%} of its memory free{capped}.")
