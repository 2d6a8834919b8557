"""Decode each image once: resized, centre-cropped uint8 tensors cached as ``.npy`` on disk.

Training reads the cache for every epoch (and every later run on the same images), so JPEG
decoding is paid once per dataset and size. A cache already on disk is memory-mapped: the runs of
one server share its pages in the OS's page cache (30 students on the teacher's dataset hold one
copy, not 30), and a 20,000-image set costs a process little private memory. A fresh decode fills
RAM up to the RAM budget, past it the memory-mapped file directly.
"""

from __future__ import annotations

import errno
import hashlib
import multiprocessing
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

# The decoder lives in the module every export ships as predict.py: one copy, the same pixels.
from tl_core import atomic
from tl_core.bundle_predict import decode_square
from tl_core.data.dataset import Dataset, ProgressFn
from tl_core.errors import DataError

DECODE_VERSION = 3  # bump when the decoding below changes, so old caches are not reused (3: 16-bit min-max)
# Past this a fresh decode goes straight into the memory-mapped file: a process's private memory
# stays bounded whatever the dataset's size (bench/run.py's memory case; 2 GiB let a 20,000-image
# set at 96 px hold 0.5 GB per training process, ~10,000 at 256 px 2 GB).
DEFAULT_RAM_BUDGET = 256 * 1024**2
AUTO_WORKERS_MIN_IMAGES = 256  # below this a pool's start-up costs about what it saves


def cache_key(ds: Dataset, indices: Sequence[int], size: int) -> str:
    """Content key: the images' sha256 in order, the size and the decoder version (not the paths)."""
    h = hashlib.sha256(f"v{DECODE_VERSION}:{size}:".encode())
    for i in indices:
        h.update(ds.records[i].sha256.encode())
    return h.hexdigest()[:32]


def decode_images(ds: Dataset, indices: Sequence[int], size: int, cache_dir: Path, *,
                  ram_budget_bytes: int = DEFAULT_RAM_BUDGET, progress: ProgressFn | None = None,
                  workers: int | None = None) -> torch.Tensor:
    """uint8 [N, 3, size, size] for ``ds.records[indices]``, decoded once and cached in ``cache_dir``.

    Returns a memory-mapped (copy-on-write) tensor when the cache was on disk already or the array
    is larger than ``ram_budget_bytes``, else an in-RAM one. ``workers`` > 1 decodes in that many processes; None (the default) uses
    one per CPU core when there are at least ``AUTO_WORKERS_MIN_IMAGES`` images, else 1.
    """
    indices = [int(i) for i in indices]
    shape = (len(indices), 3, size, size)
    nbytes = int(np.prod(shape))
    use_mmap = nbytes > ram_budget_bytes
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"decoded-{cache_key(ds, indices, size)}-{size}.npy"

    cached = _load(path, shape, use_mmap=True)  # the page cache's copy, shared (see the module docstring)
    if cached is not None:
        if progress is not None:
            progress(len(indices), len(indices), "Decoded images loaded from the cache")
        return torch.from_numpy(cached)

    # A reader sees the whole cache or none. Not fsynced: a cache lost in a power cut is decoded again.
    if use_mmap:  # decoded straight into the file: a full disk (DiskFull) leaves no cache and no temporary file
        with atomic.replacing(path, fsync=False) as tmp:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            _reserve(tmp)
            _fill(ds, indices, size, out, progress, workers)
            out.flush()
            del out
        return torch.from_numpy(np.load(path, mmap_mode="c"))
    out = np.empty(shape, dtype=np.uint8)
    _fill(ds, indices, size, out, progress, workers)
    try:
        with atomic.replacing(path, fsync=False) as tmp, open(tmp, "wb") as handle:
            np.save(handle, out)
    except atomic.DiskFull:
        pass  # the images are decoded in RAM: this run carries on, the next one decodes them again
    return torch.from_numpy(out)


def _reserve(path: Path) -> None:
    """Claim the disk blocks of the (sparse) memory-mapped file now: on a full disk, writing into
    the map later would kill the process with SIGBUS; claimed here, it raises ENOSPC instead."""
    if not hasattr(os, "posix_fallocate"):  # macOS, Windows: no such call
        return
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as exc:
        if exc.errno in (errno.EINVAL, errno.EOPNOTSUPP):  # a file system that cannot: as before
            return
        raise
    finally:
        os.close(fd)


def _load(path: Path, shape: tuple[int, ...], use_mmap: bool) -> np.ndarray | None:
    if not path.is_file():
        return None
    try:
        # "c" (copy-on-write) rather than "r": torch wants a writable array, and writes stay private.
        arr = np.load(path, mmap_mode="c" if use_mmap else None, allow_pickle=False)
    except (ValueError, OSError, EOFError):
        arr = None
    if arr is None or arr.shape != shape or arr.dtype != np.uint8:
        path.unlink(missing_ok=True)  # damaged or foreign: decode again
        return None
    return arr


def _cpu_count() -> int:
    """CPU cores this process may run on (its affinity mask, where the OS has one), at most 16."""
    try:
        n = len(os.sched_getaffinity(0))
    except AttributeError:  # macOS, Windows
        n = os.cpu_count() or 1
    return max(1, min(n, 16))


_DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError, Image.DecompressionBombWarning)


def _decode_task(args: tuple[str, int]) -> tuple[np.ndarray | None, str]:
    try:
        return decode_square(args[0], args[1]), ""
    except _DECODE_ERRORS as exc:
        return None, str(exc) or type(exc).__name__


def _fill(ds: Dataset, indices: list[int], size: int, out: np.ndarray, progress: ProgressFn | None,
          workers: int | None) -> None:
    total = len(indices)
    tasks = [(str(ds.root / ds.records[i].path), size) for i in indices]
    every = max(1, total // 100)
    pool = None
    if workers is None:
        workers = _cpu_count() if total >= AUTO_WORKERS_MIN_IMAGES else 1
    if workers > 1 and total > 64:
        ctx = multiprocessing.get_context("fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn")
        # One torch thread per worker: no oversubscription, and no OpenMP pool used across a fork.
        pool = ctx.Pool(workers, initializer=torch.set_num_threads, initargs=(1,))
    try:
        results = pool.imap(_decode_task, tasks, chunksize=16) if pool else map(_decode_task, tasks)
        for j, (arr, error) in enumerate(results):
            if arr is None:
                raise DataError(f"{ds.records[indices[j]].path} can no longer be read ({error}). The dataset "
                                "changed on disk since it was imported; import it again.")
            out[j] = arr
            if progress is not None and ((j + 1) % every == 0 or j + 1 == total):
                progress(j + 1, total, f"Decoded {j + 1} of {total} images")
    finally:
        if pool is not None:
            pool.terminate()
