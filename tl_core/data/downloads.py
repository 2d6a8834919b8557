"""Well-known datasets from torchvision, downloaded once and turned into a TL Studio dataset.

Each is cut to a few images per class (so it trains in minutes on a CPU) and written as an
image folder, then ingested like any upload. Offline, a ``DataError`` says so and what to use.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tl_core.errors import DataError


@dataclass(frozen=True)
class Downloadable:
    name: str
    description: str
    size_mb: int  # download size, roughly
    make: Callable[[Path], object]  # builds the torchvision dataset (downloads into the folder)
    label_names: Callable[[object], list[str]]


def _tv():
    import torchvision.datasets as tvd

    return tvd


DOWNLOADABLE: dict[str, Downloadable] = {d.name: d for d in (
    Downloadable("CIFAR-10", "10 everyday classes, tiny 32x32 photos (planes, cats, ships, …)", 170,
                 lambda root: _tv().CIFAR10(str(root), train=True, download=True),
                 lambda ds: list(ds.classes)),
    Downloadable("Flowers102", "102 kinds of flowers, photos of varied size", 350,
                 lambda root: _tv().Flowers102(str(root), split="train", download=True),
                 lambda ds: [f"flower_{i:03d}" for i in range(102)]),
    Downloadable("EuroSAT", "10 land-use classes from satellite images (forest, river, …)", 90,
                 lambda root: _tv().EuroSAT(str(root), download=True),
                 lambda ds: list(ds.classes)),
    Downloadable("OxfordIIITPet", "37 breeds of cats and dogs", 800,
                 lambda root: _tv().OxfordIIITPet(str(root), split="trainval", download=True),
                 lambda ds: list(ds.classes)),
)}

OFFLINE_MESSAGE = ("{name} has to be downloaded from the internet, and this server is offline "
                   "({detail}). Use the built-in sample instead, or upload your own images as a zip.")


def offline() -> bool:
    return os.environ.get("TL_STUDIO_OFFLINE", "") not in ("", "0")


def download_dataset(name: str, dest: Path, *, per_class: int = 50, cache_dir: Path | None = None,
                     progress: Callable[[int, int, str], None] | None = None):
    """Download ``name`` (see ``DOWNLOADABLE``), keep ``per_class`` images of each class, and
    ingest them into ``dest``. Returns the ``Dataset``."""
    from tl_core.data.ingest import ingest

    if name not in DOWNLOADABLE:
        raise DataError(f"Unknown dataset {name!r}; choose one of: {', '.join(DOWNLOADABLE)}.")
    item = DOWNLOADABLE[name]
    if offline():
        raise DataError(OFFLINE_MESSAGE.format(name=name, detail="TL_STUDIO_OFFLINE is set"))
    root = Path(cache_dir or dest.parent / ".downloads") / name
    root.mkdir(parents=True, exist_ok=True)
    try:
        dataset = item.make(root)
    except (OSError, RuntimeError) as exc:  # URLError is an OSError; torchvision raises RuntimeError
        raise DataError(OFFLINE_MESSAGE.format(name=name, detail=str(exc)[:200])) from exc
    names = item.label_names(dataset)
    kept: dict[int, int] = {}
    scratch = dest.parent / f".{dest.name}-download"
    folder = scratch / name  # the folder's name becomes the dataset's name
    try:
        for index in range(len(dataset)):
            image, label = dataset[index]
            if kept.get(label, 0) >= per_class:
                if len(kept) == len(names) and all(v >= per_class for v in kept.values()):
                    break
                continue
            kept[label] = kept.get(label, 0) + 1
            target = folder / names[label]
            target.mkdir(parents=True, exist_ok=True)
            image.convert("RGB").save(target / f"{index}.jpg", quality=92)
            if progress:
                progress(sum(kept.values()), per_class * len(names), f"Extracting {name}")
        return ingest(folder, dest)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
