"""The pretrained weights a backbone has on this machine, and adding a weights file a user offers.

``weights_status`` and ``load_pretrained_state_dict`` take a backbone's name and look its file up
(``tl_core.model.weights_lookup`` says where). ``import_weights`` adds a file a user offers (the
Model page's upload) after four named checks (``WEIGHT_CHECKS``); ``import_weights_folder`` does
so for each weights file (``.pth``, ``.safetensors``) of a folder on the server.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pickle
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import torch
from torch.hub import HASH_REGEX

from tl_core import atomic
from tl_core.errors import TLError, WeightsRejected, WeightsUnavailable
from tl_core.model.registry import BackboneSpec, get_backbone, list_backbones
from tl_core.model.weights_lookup import (
    ENV_WEIGHTS,
    WeightsStatus,
    find_weights,
    load_weights_file,
    pretrained_state_dict,
    torch_cache_dir,
)

WEIGHT_CHECKS = ("file name", "hash", "safe load", "keys and shapes")  # import_weights, in this order
WEIGHTS_SUFFIXES = (".pth", ".safetensors")  # torchvision's files; timm's and open_clip's


def weights_status(name: str, weights_dir: str | Path | None = None) -> WeightsStatus:
    """Whether the pretrained weights of ``name`` can be used, without loading them."""
    return find_weights(get_backbone(name), weights_dir)


def load_pretrained_state_dict(name: str, weights_dir: str | Path | None = None, *,
                               allow_download: bool = True) -> tuple[dict[str, torch.Tensor], str]:
    """The ImageNet state dict of the torchvision model, and where it came from."""
    return pretrained_state_dict(get_backbone(name), weights_dir, allow_download=allow_download)


# ----------------------------------------------------------------------------- adding weights


def spec_for_weights_file(file_name: str) -> BackboneSpec:
    """The registered backbone whose torchvision weights file is called ``file_name``."""
    name = Path(file_name).name
    for spec in list_backbones():
        if spec.weights_filename == name:
            return spec
    expected = ", ".join(f"{s.weights_filename} ({s.name})" for s in list_backbones())
    raise WeightsRejected("file name", f"Refused {name!r} (check: file name): it is not the weights file of a "
                                       f"backbone TL Studio knows. Keep the name torchvision gives it, or for "
                                       f"timm and open_clip the name the Model page shows; expected one of: "
                                       f"{expected}.")


def weights_import_dir() -> Path:
    """Where ``import_weights`` saves files: the ``TL_STUDIO_WEIGHTS`` folder when it is set and
    writable (the teacher chose it), else torchvision's cache. The weights lookup reads both."""
    folders = [Path(f).expanduser() for f in (os.environ.get(ENV_WEIGHTS),) if f] + [torch_cache_dir()]
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError:
            continue
        if os.access(folder, os.W_OK):
            return folder
    raise WeightsUnavailable(f"No folder to save weights in: {', '.join(map(str, folders))} cannot be written. "
                             f"Set {ENV_WEIGHTS} to a folder this server may write to.")


def expected_state_shapes(spec: BackboneSpec) -> dict[str, tuple[int, ...]]:
    """Key -> shape of the library's model's state dict; built on the meta device (no memory, instant)."""
    with torch.device("meta"):
        model = spec.build()
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def max_weights_bytes(spec: BackboneSpec) -> int:
    """The most bytes a weights file of ``spec`` can sensibly hold: its parameters as float32 (an
    image-text model's file holds both towers), half as much again for buffers (BatchNorm
    statistics) and pickle framing, plus 4 MiB."""
    return int(spec.option("file_params", spec.num_params) * 4 * 1.5) + 4 * 1024**2


def _too_big(spec: BackboneSpec, name: str) -> WeightsRejected:
    """The hash check, early: a file larger than the backbone's weights can be is not torchvision's
    file, and is not read to its end (nor written whole to the disk) to find that out."""
    limit = max_weights_bytes(spec)
    return WeightsRejected("hash", f"Refused {name!r} (check: hash): it is larger than {spec.name}'s weights "
                                   f"can be ({limit / 1024**2:.0f} MiB at most), so it cannot be torchvision's "
                                   f"file. Download {spec.weights_url} again.")


@contextlib.contextmanager
def _chunks(source: bytes | Path | IO[bytes]) -> Iterator[Iterable[bytes]]:
    """``source`` from its start, in chunks of 1 MiB (bytes in one piece, so that a too-large upload
    is refused before anything is written); a file opened here is closed after."""
    if isinstance(source, bytes | bytearray | memoryview):
        yield [source]
        return
    reader = open(source, "rb") if isinstance(source, str | Path) else source  # noqa: SIM115
    try:
        if hasattr(reader, "seek"):
            reader.seek(0)
        yield iter(lambda: reader.read(1 << 20), b"")
    finally:
        if reader is not source:
            reader.close()


def _copy_hashing(source: bytes | Path | IO[bytes], dest: Path, spec: BackboneSpec, name: str) -> str:
    """Write ``source`` to ``dest`` chunk by chunk (an upload is not copied again in memory); its
    sha256. Stops at the first byte past ``max_weights_bytes(spec)``."""
    limit = max_weights_bytes(spec)
    digest = hashlib.sha256()
    copied = 0
    with open(dest, "wb") as out, _chunks(source) as chunks:
        for chunk in chunks:
            copied += len(chunk)
            if copied > limit:
                raise _too_big(spec, name)
            digest.update(chunk)
            out.write(chunk)
    return digest.hexdigest()


def _check_hash(digest: str, spec: BackboneSpec, name: str) -> None:
    """Against the checksum published for the file: the spec's, or the one in a torchvision name.
    (A Hugging Face file a user offers has none to compare here; its keys and shapes are checked.)"""
    match = HASH_REGEX.search(spec.weights_filename)
    expected_hash = spec.weights.sha256_prefix or (match.group(1) if match else "")
    if expected_hash and not digest.startswith(expected_hash):
        raise WeightsRejected("hash", f"Refused {name!r} (check: hash): its sha256 starts with "
                                      f"{digest[:len(expected_hash)]}, not {expected_hash} as its name says. "
                                      f"It is damaged or a different file; download {spec.weights_url} again.")


def _load_safely(path: Path, name: str) -> dict[str, torch.Tensor]:
    try:
        state = load_weights_file(path, name)
    except pickle.UnpicklingError as exc:  # weights_only refuses anything but tensors and plain containers
        raise WeightsRejected("safe load", f"Refused {name!r} (check: safe load): it holds code or objects other "
                                           "than tensors, so torch.load(weights_only=True) will not open it. "
                                           "Use the file exactly as torchvision publishes it.") from exc
    except Exception as exc:  # noqa: BLE001 - any other failure: not a PyTorch file, or a truncated one
        raise WeightsRejected("safe load", f"Refused {name!r} (check: safe load): it is not a PyTorch weights file "
                                           f"that loads ({type(exc).__name__}). Download it again.") from exc
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsRejected("safe load", f"Refused {name!r} (check: safe load): it is not a state dict of tensors. "
                                           "Use the file exactly as torchvision publishes it.")
    return state


def _check_keys_and_shapes(spec: BackboneSpec, state: dict[str, torch.Tensor], name: str) -> None:
    expected = expected_state_shapes(spec)
    kinds = {"missing": [k for k in expected if k not in state],
             "unexpected": [k for k in state if k not in expected],
             "of another shape": [f"{k} is {tuple(v.shape)}, expected {expected[k]}" for k, v in state.items()
                                  if k in expected and tuple(v.shape) != expected[k]]}
    problems = [f"{len(items)} {kind} (e.g. {', '.join(items[:2])})" for kind, items in kinds.items() if items]
    if problems:
        shown = "; ".join(problems)
        raise WeightsRejected("keys and shapes", f"Refused {name!r} (check: keys and shapes): it does not fit "
                                                 f"{spec.name} ({shown}). It is not {spec.name}'s pretrained weights.")


def import_weights(source: bytes | Path | IO[bytes], file_name: str | None = None,
                   dest_dir: Path | None = None) -> Path:
    """Add a weights file (bytes, a path or a binary file object such as an upload) to
    the weights this machine has, after four checks (``WEIGHT_CHECKS``): its name is a registered
    backbone's weights file name; its sha256 starts with the published one, where there is one (the
    hash in a torchvision name; a file larger than ``max_weights_bytes`` fails it before it is read
    to the end); it loads with safetensors or ``torch.load(weights_only=True)``, neither of which
    runs code; its keys and shapes are exactly the backbone's.

    Saved atomically in ``dest_dir`` (default ``weights_import_dir()``); returns the saved path.
    A failed check raises ``WeightsRejected`` naming it, and nothing is saved.
    """
    name = Path(file_name if file_name is not None else str(source)).name
    spec = spec_for_weights_file(name)
    dest = Path(dest_dir) if dest_dir is not None else weights_import_dir()
    target = dest / spec.weights_filename
    try:
        with atomic.replacing(target) as tmp:
            _check_hash(_copy_hashing(source, tmp, spec, name), spec, name)
            _check_keys_and_shapes(spec, _load_safely(tmp, name), name)
    except PermissionError as exc:
        raise WeightsUnavailable(f"Could not save {spec.weights_filename} in {dest}: permission denied. "
                                 f"Set {ENV_WEIGHTS} to a folder this server may write to.") from exc
    return target


@dataclass(frozen=True)
class WeightsImportResult:
    """What ``import_weights_folder`` did with one file of the folder."""
    file: str  # the file's name in the folder
    outcome: str  # "added", "refused" (a check failed, or it could not be saved) or "skipped" (not a .pth)
    message: str  # where it was saved, or why not: a full sentence, holding the file's name
    check: str | None = None  # the WEIGHT_CHECKS item that failed, when one did
    saved: Path | None = None  # where it was saved, when added


def import_weights_folder(folder: str | Path, dest_dir: Path | None = None) -> list[WeightsImportResult]:
    """``import_weights`` for each weights file directly in ``folder`` (a folder on this server the
    teacher names), one result per file, sorted by name; other files are listed as skipped. A file
    refused does not stop the others."""
    source = Path(folder).expanduser()
    if not source.is_dir():
        raise WeightsUnavailable(f"There is no folder {source} on this server. Name a folder that holds "
                                 "weights files (e.g. the one you copied them to from a USB stick).")
    try:
        files = sorted((p for p in source.iterdir() if p.is_file()), key=lambda p: p.name)
    except OSError as exc:
        raise WeightsUnavailable(f"Could not read the folder {source} ({exc.strerror or exc}). "
                                 "Check that this server may read it.") from exc
    return [import_weights_file(path, dest_dir) for path in files]


def import_weights_file(path: str | Path, dest_dir: Path | None = None) -> WeightsImportResult:
    """``import_weights`` for one file on this server, as a result rather than an exception."""
    path = Path(path).expanduser()
    if not path.is_file():
        return WeightsImportResult(path.name, "refused", f"{path.name}: not added. There is no file {path} on this "
                                                         "server; check the path.")
    if path.suffix.lower() not in WEIGHTS_SUFFIXES:
        return WeightsImportResult(path.name, "skipped", f"{path.name}: skipped, not a .pth or .safetensors file.")
    try:
        saved = import_weights(path, path.name, dest_dir=dest_dir)
    except WeightsRejected as exc:
        return WeightsImportResult(path.name, "refused", str(exc), check=exc.check)
    except (TLError, OSError) as exc:  # a full disk, a folder it may not write, a file it may not read
        return WeightsImportResult(path.name, "refused", f"{path.name}: not added. {exc}")
    return WeightsImportResult(path.name, "added", f"{path.name}: added, all four checks passed; saved as {saved}.",
                               saved=saved)
