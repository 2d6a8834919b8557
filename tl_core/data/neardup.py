"""Near-duplicate images: the same photo resized, re-compressed, slightly cropped or brightened.

Each image gets two 64-bit perceptual hashes (``imagehash``): a pHash (the low frequencies of its
DCT, above or below their median) and a dHash (whether each pixel is brighter than its neighbour,
on a 9x8 grey thumbnail). Two images are near-identical when both hashes differ in at most
``threshold`` of their 64 bits (Hamming distance). Why ``DEFAULT_THRESHOLD = 6``: re-saving a photo
as a JPEG, resizing it or a small change of brightness moves a pHash by 0-4 bits, while two
different photos of the same kind of object are 20-32 bits apart (about half the bits, as two
random hashes). Below 6 hardly any copy is found; above 10 similar but distinct shots (burst
photos, the same slide under the microscope moved a little) start to be grouped, which may be what
a user wants but is a different question. Requiring both hashes to agree keeps unrelated images
with a flat background (where one hash alone collides) apart.

Pairs are found by comparing every hash with every other (numpy, in blocks: n^2/2 XOR-and-count
of 64-bit words is a fraction of a second for a few thousand images and a few seconds for 20 000;
a BK-tree would be slower than that in pure Python at these sizes). Close pairs are grouped with a
union-find: a group is every image linked by a chain of close pairs.

Hashes are kept by image content (sha256) in ``cache_dir``, so a second look, after a fix or in
another session on the same images, decodes nothing again. Pairs of byte-identical images (exact
duplicates, listed by the health report already) are left out unless ``include_exact``.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path

import imagehash
import numpy as np
from PIL import Image

from tl_core import atomic
from tl_core.data.dataset import Dataset, ProgressFn
from tl_core.data.safety import ImageRefused, thumbnail_jpeg

DEFAULT_THRESHOLD = 6  # bits of 64 (see the module's docstring)
HASH_FILE = "perceptual_hashes.json"  # in cache_dir: sha256 -> [phash hex, dhash hex]
_DECODE_SIZE = 64  # pixels a side the image is decoded to: both hashes shrink it further (to 32 and 9)
_BLOCK = 2048  # rows compared at once: a block x n matrix of uint64 stays a few tens of MB


def image_hashes(ds: Dataset, *, cache_dir: Path | None = None,
                 progress: ProgressFn | None = None) -> list[tuple[int, int] | None]:
    """(pHash, dHash) of each record as 64-bit integers, or None for an image that cannot be read
    (gone from disk, refused by the image guards). Cached by sha256 in ``cache_dir`` when given."""
    cache_path = Path(cache_dir) / HASH_FILE if cache_dir is not None else None
    cached: dict[str, list[str]] = (atomic.read_json(cache_path, {}) if cache_path else {}) or {}
    out: list[tuple[int, int] | None] = []
    fresh = 0
    total = len(ds.records)
    for i, record in enumerate(ds.records):
        known = cached.get(record.sha256)
        if isinstance(known, list) and len(known) == 2:
            out.append((int(known[0], 16), int(known[1], 16)))
        else:
            hashes = _hash_file(ds.path_of(record))
            out.append(hashes)
            if hashes is not None:
                cached[record.sha256] = [f"{hashes[0]:016x}", f"{hashes[1]:016x}"]
                fresh += 1
        if progress is not None and (i + 1 == total or i % 50 == 0):
            progress(i + 1, total, f"Comparing images: {i + 1} of {total}")
    if cache_path is not None and fresh:
        try:
            atomic.write_json(cache_path, cached)
        except OSError:  # a cache: a full disk only costs the next look its decoding again
            pass
    return out


def near_duplicate_pairs(ds: Dataset, threshold: int = DEFAULT_THRESHOLD, *, include_exact: bool = False,
                         cache_dir: Path | None = None, progress: ProgressFn | None = None) -> list[tuple[int, int]]:
    """Pairs (i, j), i < j, of record indices whose images are near-identical (both hashes within
    ``threshold`` bits), sorted. Byte-identical pairs only with ``include_exact``."""
    hashes = image_hashes(ds, cache_dir=cache_dir, progress=progress)
    index = np.array([i for i, h in enumerate(hashes) if h is not None], dtype=np.int64)
    if len(index) < 2:
        return []
    phash = np.array([hashes[i][0] for i in index], dtype=np.uint64)
    dhash = np.array([hashes[i][1] for i in index], dtype=np.uint64)
    pairs: list[tuple[int, int]] = []
    for start in range(0, len(index), _BLOCK):
        stop = min(start + _BLOCK, len(index))
        close = ((np.bitwise_count(phash[start:stop, None] ^ phash[None, :]) <= threshold)
                 & (np.bitwise_count(dhash[start:stop, None] ^ dhash[None, :]) <= threshold))
        rows, cols = np.nonzero(close)
        for r, c in zip(rows + start, cols, strict=True):
            if r < c:
                pairs.append((int(index[r]), int(index[c])))
    if not include_exact:
        pairs = [(i, j) for i, j in pairs if ds.records[i].sha256 != ds.records[j].sha256]
    return sorted(pairs)


def group_pairs(pairs: Sequence[tuple[int, int]]) -> list[list[int]]:
    """Connected groups of the pairs (union-find), each sorted, ordered by their first index."""
    parent: dict[int, int] = {}

    def find(x: int) -> int:
        parent.setdefault(x, x)
        while parent[x] != x:
            parent[x] = parent[parent[x]]  # path halving keeps the trees flat
            x = parent[x]
        return x

    for i, j in pairs:
        a, b = find(i), find(j)
        if a != b:
            parent[max(a, b)] = min(a, b)
    groups: dict[int, list[int]] = {}
    for x in parent:
        groups.setdefault(find(x), []).append(x)
    return sorted((sorted(g) for g in groups.values()), key=lambda g: g[0])


def near_duplicate_groups(ds: Dataset, threshold: int = DEFAULT_THRESHOLD, *, cache_dir: Path | None = None,
                          progress: ProgressFn | None = None) -> list[list[str]]:
    """Groups of near-identical images, as record paths in record order (the first is the one a
    "keep one" fix keeps). Groups made only of byte-identical files are left out (exact duplicates)."""
    pairs = near_duplicate_pairs(ds, threshold, cache_dir=cache_dir, progress=progress)
    return [[ds.records[i].path for i in group] for group in group_pairs(pairs)]


def _hash_file(path: Path) -> tuple[int, int] | None:
    try:
        small = Image.open(io.BytesIO(thumbnail_jpeg(path, _DECODE_SIZE)))
        return _as_int(imagehash.phash(small)), _as_int(imagehash.dhash(small))
    except (OSError, ImageRefused):
        return None


def _as_int(h: imagehash.ImageHash) -> int:
    return int(str(h), 16)
