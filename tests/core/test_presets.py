"""Presets: the classic recipe is exactly the Keras architecture and settings, README's command
reproduces it, and the deep-features presets fit classical heads on frozen features."""

from __future__ import annotations

import dataclasses
import re
import shlex
from pathlib import Path

import pytest
import torch
from torch import nn

from tl_core.cli.options import build_config
from tl_core.cli.parser import make_parser
from tl_core.config import DataConfig, RunConfig, TrainConfig
from tl_core.errors import ConfigError
from tl_core.model.presets import PRESETS, get_preset
from tl_core.model.registry import build_model

README = Path(__file__).resolve().parents[2] / "README.md"


def base_config(**train) -> RunConfig:
    return RunConfig(data=DataConfig(source="DATA", augment="standard"), train=TrainConfig(**train))


def test_classic_recipe_sets_each_listed_value():
    # A base far from the recipe, so every value below must come from the preset.
    base = dataclasses.replace(base_config(epochs=3, batch_size=8, lr=3e-3, optimizer="adamw", weight_decay=1e-2,
                                           schedule="onecycle", label_smoothing=0.1, early_stopping_patience=4,
                                           seed=7, device="cpu"))
    base = dataclasses.replace(base, model=dataclasses.replace(base.model, backbone="resnet18"),
                               freeze=dataclasses.replace(base.freeze, mode="full"))
    cfg = get_preset("classic").apply(base)
    assert cfg.model.backbone == "vgg16" and cfg.model.pretrained
    assert cfg.freeze.mode == "feature_extractor"
    head = cfg.model.head
    assert (head.kind, head.pool, head.hidden, head.dropout) == ("mlp", "flatten", 1024, 0.0)
    t = cfg.train
    assert (t.optimizer, t.schedule, t.epochs, t.batch_size, t.lr) == ("rmsprop_keras", "constant", 10, 32, 1e-4)
    # Keras' RMSprop defaults (rho 0.9, epsilon 1e-7), not PyTorch's (alpha 0.99, eps 1e-8).
    from tl_core.model.optim import make_optimizer
    optimizer = make_optimizer(t.optimizer, [{"params": [nn.Parameter(torch.zeros(1))]}], t.lr, t.weight_decay)
    assert isinstance(optimizer, torch.optim.RMSprop)
    assert (optimizer.defaults["alpha"], optimizer.defaults["eps"], optimizer.defaults["momentum"]) == (0.9, 1e-7, 0)
    assert (t.weight_decay, t.label_smoothing, t.early_stopping_patience) == (0.0, 0.0, 0)
    assert cfg.data.augment == "none"
    # How and where to run stays the user's.
    assert (t.seed, t.device, cfg.data.source) == (7, "cpu", "DATA")
    cfg.validate()


def _layers(module: nn.Module) -> list[nn.Module]:
    return [m for m in module if not isinstance(m, nn.Identity)]


def test_classic_recipe_builds_the_keras_architecture():
    cfg = get_preset("classic").apply(base_config())
    with torch.device("meta"):  # shapes only: no memory for VGG16's 138M parameters
        model = build_model(cfg.model.backbone, 5, cfg.model.head, pretrained=False)
        out = model(torch.empty(2, 3, 224, 224))
    assert tuple(out.shape) == (2, 5)

    # VGG16's convolutional base: 13 3x3 convolutions with ReLU, 5 max pools (Keras include_top=False).
    convs = [m.out_channels for m in model.body.features if isinstance(m, nn.Conv2d)]
    assert convs == [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
    assert sum(isinstance(m, nn.MaxPool2d) for m in model.body.features) == 5
    # Flatten of the 7x7x512 map, not a global pool.
    assert model.body.pool.output_size == (7, 7) and isinstance(model.body.flatten, nn.Flatten)
    assert model.feature_dim == 7 * 7 * 512
    # Dense(1024, relu), Dense(N); softmax is in the loss. No dropout layer at all.
    head = _layers(model.head)
    assert [type(m) for m in head] == [nn.Linear, nn.ReLU, nn.Linear]
    assert (head[0].in_features, head[0].out_features) == (25088, 1024)
    assert (head[2].in_features, head[2].out_features) == (1024, 5)
    assert not any(isinstance(m, nn.Dropout) for m in model.modules())


def test_classic_recipe_on_another_backbone_pools_and_says_so():
    preset = get_preset("classic")
    cfg = preset.apply(base_config(), "mobilenet_v2")
    vgg = preset.apply(base_config())
    assert cfg.model.backbone == "mobilenet_v2" and cfg.model.head.pool == "avg"
    assert dataclasses.replace(cfg.model.head, pool="flatten") == vgg.model.head
    assert cfg.train == vgg.train and cfg.freeze == vgg.freeze
    assert "average pooling" in preset.on_other_backbone("mobilenet_v2")
    assert preset.on_other_backbone("vgg16") == ""


@pytest.mark.parametrize(("key", "kind"), [("features_svm", "linear_svm"), ("features_lda", "lda")])
def test_deep_features_presets_fit_a_classical_head_on_frozen_vgg16(key, kind):
    cfg = get_preset(key).apply(base_config())
    assert (cfg.model.backbone, cfg.model.head.kind, cfg.freeze.mode) == ("vgg16", kind, "feature_extractor")
    assert cfg.model.head.pool == "flatten"  # the classic recipe's features: one feature cache for both
    assert cfg.data.augment == "none"
    cfg.validate()


def test_every_preset_is_described_and_cited():
    for key, preset in PRESETS.items():
        assert preset.key == key and preset.title and preset.description and preset.reference
        preset.apply(base_config()).validate()


def test_unknown_preset_lists_the_valid_ones():
    with pytest.raises(ConfigError, match="classic"):
        get_preset("keras")


def readme_recipe_command() -> list[str]:
    """The command of README's code block that trains the classic recipe, as argv after `python -m tl_core`."""
    blocks = re.findall(r"```bash\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)
    recipe = [b for b in blocks if "--pool flatten" in b]
    assert len(recipe) == 1, "README.md should show the classic recipe's command in one ```bash block"
    argv = shlex.split(recipe[0].replace("\\\n", " "), comments=True)
    assert argv[:3] == ["python", "-m", "tl_core"]
    return argv[3:]


def test_readme_recipe_command_is_the_classic_preset():
    args = make_parser().parse_args(readme_recipe_command())
    assert args.command == "train" and args.data == "DATA"
    from_cli = build_config(args)
    from_preset = get_preset("classic").apply(RunConfig(data=DataConfig(source="DATA")))
    assert from_cli == from_preset, (from_cli.to_dict(), from_preset.to_dict())


def test_mlp_head_without_dropout_keeps_the_checkpoint_keys():
    """Dropout 0 is no layer, but runs saved when it was Dropout(0.0) still load."""
    from tl_core.config import HeadConfig
    from tl_core.model.heads import make_head

    without = make_head(HeadConfig(kind="mlp", hidden=8, dropout=0.0), 4, 3)
    with_dropout = make_head(HeadConfig(kind="mlp", hidden=8, dropout=0.3), 4, 3)
    assert not any(isinstance(m, nn.Dropout) for m in without.modules())
    without.load_state_dict(with_dropout.state_dict())
