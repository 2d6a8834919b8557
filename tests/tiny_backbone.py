"""``tiny_cnn``: a backbone of about 15,000 parameters for the tests that check plumbing (the trainer,
jobs, the CLI, limits, runs), not MobileNetV2 itself. A training step costs milliseconds.

It is a real backbone in every way the engine sees: a torchvision-style model (``features``, then a
``classifier``), BatchNorm in every block, four layer groups (stem -> stage1..3) and a head, a
``WeightsEnum`` with its preprocessing, and "pretrained" weights in a ``.pth`` file whose name
carries its sha256 prefix, as torchvision's do. The weights are a seeded random initialisation
(they were never trained on anything); ``save_weights`` writes the file, and the lookup finds it in
the ``TL_STUDIO_WEIGHTS`` folder the test session names (tests/conftest.py).

Registered through the plugin variable, never in the product's registry:
``TL_STUDIO_BACKBONE_PLUGINS=tests.tiny_backbone``. tests/conftest.py sets it, so the test process
and every worker it starts (job workers, torchrun ranks, Ray jobs) register it the same way.
"""

from __future__ import annotations

import hashlib
import io
from functools import partial
from pathlib import Path

import torch
from torch import nn
from torchvision.models import MobileNet_V2_Weights, Weights, WeightsEnum

from tl_core.model.registry import register, torchvision_spec

NAME = "tiny_cnn"
MODULE = __name__  # what TL_STUDIO_BACKBONE_PLUGINS names
CROP_SIZE = 32  # small inputs, as torchvision's own model tests use
FEATURE_DIM = 32
# What the seeded "pretrained" head was made for (the weights were never trained: a made-up set).
CATEGORIES = ("red", "green", "blue", "yellow")
WIDTHS = (8, 16, 32, FEATURE_DIM)  # output channels of the stem and the three stages
STRIDES = (2, 2, 1, 2)


def _conv_bn(c_in: int, c_out: int, stride: int, relu: bool = True) -> nn.Sequential:
    layers = [nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out)]
    return nn.Sequential(*layers, nn.ReLU(inplace=True)) if relu else nn.Sequential(*layers)


class TinyCNN(nn.Module):
    """Four conv-BN blocks (ReLU after all but the last), global average pooling and a linear classifier."""

    def __init__(self, num_classes: int = len(CATEGORIES)):
        super().__init__()
        blocks, c_in = [], 3
        for i, (c_out, stride) in enumerate(zip(WIDTHS, STRIDES, strict=True)):
            # The last block is linear (no ReLU), as MobileNetV2's bottlenecks end: features of
            # both signs, which a new linear head separates in a few steps.
            blocks.append(_conv_bn(c_in, c_out, stride, relu=i < len(WIDTHS) - 1))
            c_in = c_out
        self.features = nn.Sequential(*blocks)
        self.classifier = nn.Sequential(nn.Dropout(0.2), nn.Linear(FEATURE_DIM, num_classes))
        # He initialisation keeps the activations' scale through the blocks (torchvision's models
        # initialise their convolutions so too); PyTorch's default would shrink the features ~10x.
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.adaptive_avg_pool2d(self.features(x), 1).flatten(1)
        return self.classifier(x)


def _seeded_weights_file() -> bytes:
    """The "pretrained" weights: TinyCNN's initialisation under seed 0, as torch.save writes them
    (the same bytes in every process, so the file name's hash prefix is the same everywhere)."""
    with torch.random.fork_rng(devices=[]):  # leaves the caller's random state as it was
        torch.manual_seed(0)
        model = TinyCNN()
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    return buffer.getvalue()


# torchvision's evaluation preset class (ImageClassification), taken from a public weights entry
# rather than from the private module that defines it.
ImageClassification = MobileNet_V2_Weights.IMAGENET1K_V1.transforms.func
WEIGHTS_BYTES = _seeded_weights_file()
WEIGHTS_FILENAME = f"{NAME}-{hashlib.sha256(WEIGHTS_BYTES).hexdigest()[:8]}.pth"
NUM_PARAMS = sum(p.numel() for p in TinyCNN().parameters())


def _gflops() -> float:
    """Multiply-adds of the convolutions and the classifier at CROP_SIZE px, in GFLOPs."""
    ops, size, c_in = 0, CROP_SIZE, 3
    for c_out, stride in zip(WIDTHS, STRIDES, strict=True):
        size = (size + 1) // stride
        ops += size * size * c_out * c_in * 9
        c_in = c_out
    return (ops + FEATURE_DIM * len(CATEGORIES)) / 1e9


class TinyCNN_Weights(WeightsEnum):
    SEEDED = Weights(
        # Never downloaded (tests run offline): .invalid is a name no host has.
        url=f"https://tl-studio.invalid/tests/{WEIGHTS_FILENAME}",
        transforms=partial(ImageClassification, crop_size=CROP_SIZE, resize_size=CROP_SIZE + 4),
        meta={"num_params": NUM_PARAMS, "categories": list(CATEGORIES),
              # Not measured on ImageNet: NaN says so rather than a made-up accuracy.
              "_metrics": {"ImageNet-1K": {"acc@1": float("nan"), "acc@5": float("nan")}},
              "_ops": _gflops(), "_docs": "Seeded random initialisation of a test-only backbone."},
    )


def tiny_cnn(*, weights: TinyCNN_Weights | None = None, progress: bool = True, **kwargs) -> TinyCNN:
    """A torchvision-style builder: ``weights=None`` is random init; the engine loads weights itself."""
    model = TinyCNN(**kwargs)
    if weights is not None:
        model.load_state_dict(weights.get_state_dict(progress=progress, check_hash=True))
    return model


def save_weights(folder: Path) -> Path:
    """Write the weights file into ``folder`` (a ``TL_STUDIO_WEIGHTS`` folder); its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / WEIGHTS_FILENAME
    path.write_bytes(WEIGHTS_BYTES)
    return path


def save_tiny_draft(workspace, data=None, train=None) -> None:
    """The session's saved settings (``runs.save_draft``, as the Model page keeps them) with this
    backbone picked, so the jobs a page or a browser starts check the plumbing in seconds."""
    from tl_core.config import DataConfig, ModelConfig, RunConfig, TrainConfig
    from tl_core.runs import save_draft

    draft = RunConfig(data=data or DataConfig(source=""), model=ModelConfig(backbone=NAME),
                      train=train or TrainConfig())
    save_draft(workspace, draft.to_dict())


# The family picks the adapter: "mobilenet_v2" is features -> global average pool -> classifier[-1].
SPEC = register(torchvision_spec(
    NAME, "mobilenet_v2", tiny_cnn, TinyCNN_Weights.SEEDED,
    "Tiny CNN (tests only): four conv-BN blocks, about 15,000 parameters.", FEATURE_DIM,
    stage_starts=(0, 1, 2, 3)))
