"""Decode each image once: resized, centre-cropped uint8 tensors cached as ``.npy`` on disk.

Training reads the cache for every epoch (and every later run on the same images), so JPEG
decoding is paid once per dataset and size. Past the RAM budget the cache is memory-mapped.
"""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from ..errors import DataError
from .dataset import Dataset, ProgressFn
from .safety import open_rgb

try:  # libjpeg-turbo straight into numpy; without it PIL decodes the same pixels, slower
    import simplejpeg
except ImportError:  # pragma: no cover - a platform without a wheel
    simplejpeg = None

DECODE_VERSION = 2  # bump when the decoding below changes, so old caches are not reused
DEFAULT_RAM_BUDGET = 2 * 1024**3
AUTO_WORKERS_MIN_IMAGES = 256  # below this a pool's start-up costs about what it saves


def decode_square(path: Path | str, size: int) -> np.ndarray:
    """One image as uint8 [3, size, size]: EXIF-oriented RGB, centre square resized to ``size``
    (bilinear, antialiased). JPEGs decode at a reduced DCT scale when big."""
    rgb = decode_jpeg_rgb(path, size)
    if rgb is None:  # not a plain JPEG (PNG, CMYK, ...), or no simplejpeg: PIL does it all
        rgb = np.asarray(open_rgb(path, draft_size=size))
    return resize_square(rgb, size)


def decode_jpeg_rgb(path: Path | str, size: int) -> np.ndarray | None:
    """A YCbCr or greyscale JPEG as EXIF-oriented uint8 [H, W, 3], decoded by libjpeg-turbo straight
    into numpy (no PIL image, no copy out of one); None for anything else, left to PIL. The pixels
    are exactly ``open_rgb(path, draft_size=size)``'s: the same DCT scale (1, 1/2, 1/4 or 1/8 keeping
    the shorter side >= size), fast integer DCT and plain upsampling, as PIL's draft mode asks."""
    if simplejpeg is None:
        return None
    if hasattr(path, "read"):  # an open file or BytesIO (an upload): left where it was, for PIL
        start = path.tell()
        data = path.read()
        path.seek(start)
    else:
        data = Path(path).read_bytes()
    try:
        h, w, colorspace, _ = simplejpeg.decode_jpeg_header(data)
    except ValueError:
        return None
    orientation = jpeg_orientation(data)
    limit = Image.MAX_IMAGE_PIXELS
    if colorspace not in ("YCbCr", "Gray") or orientation is None or (limit and w * h > limit):
        return None  # CMYK, odd EXIF, too big: PIL converts, decides or refuses
    scale = min(w // size, h // size)
    scale = next(s for s in (8, 4, 2, 1) if scale >= s or s == 1)  # as PIL's draft() chooses
    dims = (h + scale - 1) // scale, (w + scale - 1) // scale
    try:
        rgb = simplejpeg.decode_jpeg(data, "RGB", fastdct=True, fastupsample=True,
                                     min_height=dims[0] if scale > 1 else 0,
                                     min_width=dims[1] if scale > 1 else 0)
    except ValueError:  # damaged: PIL decodes it or says what is wrong
        return None
    if rgb.shape[:2] != dims:
        return None
    # ImageOps.exif_transpose as numpy views: 2 mirror, 3 rotate 180, 4 flip, 5 transpose,
    # 6 rotate 270, 7 transverse, 8 rotate 90.
    if orientation in (5, 6, 7, 8):
        rgb = rgb.transpose(1, 0, 2)
    flips = {2: (1,), 3: (0, 1), 4: (0,), 6: (1,), 7: (0, 1), 8: (0,)}.get(orientation, ())
    return np.flip(rgb, flips) if flips else rgb


def jpeg_orientation(data: bytes) -> int | None:
    """The EXIF orientation of a JPEG as PIL reads it (the first Exif APP1 segment's IFD0), 1 when
    there is none; None when PIL might see it otherwise (odd headers, an XMP packet that could carry
    the orientation instead): then PIL decides."""
    found, exif, xmp, i = 0, False, False, 2  # found: 0 = no orientation tag (yet)
    while i + 4 <= len(data) and data[i] == 0xFF:
        marker = data[i + 1]
        if marker == 0xFF:  # fill byte
            i += 1
            continue
        if marker == 0xDA:  # start of scan: the headers are over
            if not found and xmp:
                return None
            return found or 1
        end = i + 2 + int.from_bytes(data[i + 2:i + 4], "big")
        segment = data[i + 4:end]
        if marker == 0xE1 and segment.startswith(b"http://ns.adobe.com/xap/1.0/"):
            xmp = True
        elif marker == 0xE1 and segment.startswith(b"Exif\0\0") and not exif:  # PIL reads the first
            exif, found = True, _ifd0_orientation(segment[6:])
            if found is None:
                return None
        i = end
    return None


def _ifd0_orientation(tiff: bytes) -> int | None:
    """Orientation (1-8) from a TIFF header's IFD0, 0 when the tag is absent, None when malformed."""
    order = {b"II": "little", b"MM": "big"}.get(tiff[:2])
    if order is None or len(tiff) < 8:
        return None
    ifd = int.from_bytes(tiff[4:8], order)
    count = int.from_bytes(tiff[ifd:ifd + 2], order)
    if ifd + 2 + 12 * count > len(tiff):
        return None
    for entry in range(ifd + 2, ifd + 2 + 12 * count, 12):
        if int.from_bytes(tiff[entry:entry + 2], order) == 0x0112:
            kind = int.from_bytes(tiff[entry + 2:entry + 4], order)
            n = int.from_bytes(tiff[entry + 4:entry + 8], order)
            value = int.from_bytes(tiff[entry + 8:entry + 10], order)
            return value if kind == 3 and n == 1 and 1 <= value <= 8 else None
    return 0


def resize_square(rgb: np.ndarray, size: int) -> np.ndarray:
    """uint8 [H, W, 3] -> [3, size, size]: the centre square (integer offsets), resized bilinear
    with antialiasing by torch's vectorised uint8 kernel (channels-last), 2-4x faster than PIL's.
    Without torch (a standalone predict.py), PIL resizes: the same filter, and pixels within a grey
    level of torch's (rounding of the fixed-point weights differs)."""
    h, w = rgb.shape[:2]
    side = min(h, w)
    top, left = (h - side) // 2, (w - side) // 2
    square = np.ascontiguousarray(rgb[top:top + side, left:left + side])
    if torch is None:
        im = Image.fromarray(square).resize((size, size), Image.Resampling.BILINEAR)
        return np.asarray(im, dtype=np.uint8).transpose(2, 0, 1)
    if not square.flags.writeable:  # torch wants a writable array; a PIL image's view is not
        square = square.copy()
    x = torch.from_numpy(square).permute(2, 0, 1)[None]  # [1, 3, side, side], channels-last memory
    out = torch.nn.functional.interpolate(x, size=(size, size), mode="bilinear", antialias=True,
                                          align_corners=False)
    return out[0].numpy()


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

    Returns an in-RAM tensor, or a memory-mapped (copy-on-write) one when the array is larger than
    ``ram_budget_bytes``. ``workers`` > 1 decodes in that many processes; None (the default) uses
    one per CPU core when there are at least ``AUTO_WORKERS_MIN_IMAGES`` images, else 1.
    """
    indices = [int(i) for i in indices]
    shape = (len(indices), 3, size, size)
    nbytes = int(np.prod(shape))
    use_mmap = nbytes > ram_budget_bytes
    cache_dir = Path(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    path = cache_dir / f"decoded-{cache_key(ds, indices, size)}-{size}.npy"

    cached = _load(path, shape, use_mmap)
    if cached is not None:
        if progress is not None:
            progress(len(indices), len(indices), "Decoded images loaded from the cache")
        return torch.from_numpy(cached)

    fd, tmp_name = tempfile.mkstemp(dir=cache_dir, prefix=f".{path.name}.", suffix=".tmp")
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        if use_mmap:
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
        else:
            out = np.empty(shape, dtype=np.uint8)
        _fill(ds, indices, size, out, progress, workers)
        if use_mmap:
            out.flush()
            del out
        else:
            with open(tmp, "wb") as handle:
                np.save(handle, out)
        os.replace(tmp, path)  # atomic: a reader sees the whole cache or none
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    if use_mmap:
        return torch.from_numpy(np.load(path, mmap_mode="c"))
    return torch.from_numpy(out)


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
