"""The code behind a run: its ``python -m tl_core train`` command and a standalone PyTorch script.

``cli_command`` is built from the CLI's own option table (``cli.options.FIELD_OPTIONS``), so every option
the CLI gains is written here too, and parsing the command gives back the same ``RunConfig``.

``standalone_script`` writes a readable training script with no TL Studio import (torch,
torchvision, numpy, Pillow; timm or open_clip for their backbones; scikit-learn for a classical
head), for a teacher to show. What it
freezes, the layer groups and their learning rates are read from the engine (``backbones``,
``freeze``, ``classical``), not written out a second time; what is written here a second time
(the body adapters, the augmentation presets, the split) is checked against the engine by
``tests/core/test_codegen.py``.

User-typed text (run and class names) only ever enters the script through ``repr()``.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import textwrap
import typing

from tl_core.cli.options import FIELD_OPTIONS, option_field
from tl_core.config import (
    BALANCE_LABELS,
    CLASSICAL_HEADS,
    FREEZE_MODE_LABELS,
    HEAD_LABELS,
    OPTIMIZERS,
    RunConfig,
)

# ----------------------------------------------------------------------------------------------
# The command line
# ----------------------------------------------------------------------------------------------
PLACEHOLDER_DATA = "path/to/images"


def _option_value(value: typing.Any) -> str:
    return repr(value) if isinstance(value, float) else str(value)


def cli_command(config: RunConfig, data_path: str | None = None) -> str:
    """``python -m tl_core train DATA --option value ...`` that trains ``config`` again.

    Only options that differ from the CLI's defaults are written (a short command a person can
    read). ``data_path`` defaults to the config's data source. Parsing the command with
    ``cli.parser.make_parser()`` and ``cli.options.build_config`` gives ``config`` back, except for what the CLI
    cannot set: the ingested dataset folder, and a split seed different from the training seed
    (said in a ``#`` comment line after the command).
    """
    parts: list[list[str]] = []
    for flag, (section, name) in FIELD_OPTIONS.items():
        holder = config.model.head if section == "head" else getattr(config, section)
        value = getattr(holder, name)
        fld, hint = option_field(section, name)
        if value == fld.default:
            continue
        parts.append([flag] if hint is bool else [flag, _option_value(value)])
    if config.freeze.groups:
        parts.append(["--groups", ",".join(config.freeze.groups)])
    if config.freeze.lr_range is not None:
        parts.append(["--lr-range", ",".join(_option_value(float(v)) for v in config.freeze.lr_range)])
    for name, words in config.model.head.class_words:
        parts.append(["--class-words", f"{name}={words}"])
    if config.name:
        parts.append(["--name", config.name])
    data = data_path or config.data.source or PLACEHOLDER_DATA
    lines = [f"python -m tl_core train {shlex.quote(data)}"]
    lines += ["  " + " ".join(shlex.quote(p) for p in part) for part in parts]
    command = " \\\n".join(lines)
    if config.data.split_seed != config.train.seed:
        command += (f"\n# The CLI splits with --seed ({config.train.seed}); this run split the data with seed "
                    f"{config.data.split_seed}, so its validation images differ.")
    return command


# ----------------------------------------------------------------------------------------------
# What the script needs to know about the model, read from the engine
# ----------------------------------------------------------------------------------------------
@functools.lru_cache(maxsize=64)
def _layer_groups(backbone: str, head_kind: str, pool: str) -> tuple[tuple[str, tuple[str, ...]], ...]:
    """The app's layer groups as (group, module paths in the TransferModel), stem -> head.

    The model is built on the meta device: no weights, no memory, a fraction of a second.
    """
    import torch

    from tl_core.config import HeadConfig
    from tl_core.model.registry import get_backbone, transfer_model_from

    spec = get_backbone(backbone)
    with torch.device("meta"):
        model = transfer_model_from(spec, spec.build(), 2, HeadConfig(kind=head_kind, pool=pool),
                                    pretrained=False)
    names = {id(module): name for name, module in model.named_modules()}
    names.update({id(param): name for name, param in model.named_parameters()})

    def paths(module) -> list[str]:  # a loose-parameter set (a ViT's tokens) by its parameters' paths
        return [names[id(module)]] if id(module) in names else [names[id(p)] for p in module.parameters()]

    return tuple((group, tuple(p for m in modules for p in paths(m))) for group, modules in model.groups())


def _names_code(paths: tuple[str, ...]) -> str:
    """A list of module paths as code; ``features.7`` ... ``features.13`` as one comprehension."""
    numbered = [re.fullmatch(r"(.*?)(\d+)", p) for p in paths]
    if len(paths) > 3 and all(numbered) and len({m.group(1) for m in numbered}) == 1:
        numbers = [int(m.group(2)) for m in numbered]
        if numbers == list(range(numbers[0], numbers[-1] + 1)):
            return f'[f"{numbered[0].group(1)}{{i}}" for i in range({numbers[0]}, {numbers[-1] + 1})]'
    return "[" + ", ".join(f'"{p}"' for p in paths) + "]"


# The torchvision model -> body adapters of tl_core.model.registry, one per family, as script code.
# The body's module names must be the app's: the freezing plan names modules by path.
_BODY_CODE: dict[str, str] = {
    "resnet": """\
body = nn.Sequential(OrderedDict(
    conv1=net.conv1, bn1=net.bn1, relu=net.relu, maxpool=net.maxpool,
    layer1=net.layer1, layer2=net.layer2, layer3=net.layer3, layer4=net.layer4,
    avgpool=net.avgpool, flatten=nn.Flatten(1)))""",
    "mobilenet_v2": """\
body = nn.Sequential(OrderedDict(
    features=net.features, pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(1)))""",
    "efficientnet": """\
body = nn.Sequential(OrderedDict(
    features=net.features, pool=nn.AdaptiveAvgPool2d(1), flatten=nn.Flatten(1)))""",
    "mobilenet_v3": """\
# The pretrained pre-logits layer (Linear + Hardswish) stays: it was learnt on ImageNet too.
body = nn.Sequential(OrderedDict(
    features=net.features, pool=net.avgpool, flatten=nn.Flatten(1),
    pre_logits=net.classifier[0], act=net.classifier[1]))""",
    "convnext": """\
body = nn.Sequential(OrderedDict(
    features=net.features, pool=net.avgpool, norm=net.classifier[0], flatten=net.classifier[1]))""",
    "vgg": """\
body = nn.Sequential(OrderedDict(
    features=net.features, pool={pool}, flatten=nn.Flatten(1)))""",
    "vit": """\
body = ViTBody(net)""",
}

_VIT_BODY = '''

class ViTEmbed(nn.Module):
    """Patch projection + class token + position embedding, taken from the torchvision ViT."""

    def __init__(self, vit):
        super().__init__()
        self.conv_proj = vit.conv_proj
        self.class_token = vit.class_token
        self.pos_embedding = vit.encoder.pos_embedding
        self.dropout = vit.encoder.dropout

    def forward(self, x):
        x = self.conv_proj(x).flatten(2).transpose(1, 2)  # [B, patches, D]
        x = torch.cat([self.class_token.expand(x.shape[0], -1, -1), x], dim=1)
        return self.dropout(x + self.pos_embedding)


class ViTBody(nn.Module):
    """Images -> the class token's final features (the ViT without its classifier)."""

    def __init__(self, vit):
        super().__init__()
        self.embed = ViTEmbed(vit)
        self.layers = vit.encoder.layers
        self.ln = vit.encoder.ln

    def forward(self, x):
        return self.ln(self.layers(self.embed(x)))[:, 0]
'''

# The augmentation presets of tl_core.data.augment, as transforms on the decoded square image.
_AUGMENT_CODE: dict[str, str] = {
    "none": "v2.CenterCrop(CROP_SIZE)",
    "light": "v2.RandomResizedCrop(CROP_SIZE, scale=(0.7, 1.0), antialias=True),\n"
             "v2.RandomHorizontalFlip()",
    "standard": "v2.RandomRotation(15),\n"
                "v2.RandomResizedCrop(CROP_SIZE, scale=(0.5, 1.0), antialias=True),\n"
                "v2.RandomHorizontalFlip(),\n"
                "v2.ColorJitter(brightness=0.2, contrast=0.2, saturation=0.2, hue=0.02)",
}

_SCHEDULE_CODE: dict[str, str] = {
    "cosine": "torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)",
    "onecycle": "torch.optim.lr_scheduler.OneCycleLR(\n"
                "        optimizer, max_lr=[group[\"lr\"] for group in optimizer.param_groups], total_steps=total_steps)",
    "step": "torch.optim.lr_scheduler.StepLR(optimizer, step_size=max(1, total_steps // 3), gamma=0.1)",
    "constant": "torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)",
}


def _classifier_code(kind: str, seed: int, balanced: bool = False, num_classes: int = 2,
                     neighbours: int = 5) -> tuple[str, str]:
    """(import line, constructor) of the scikit-learn classifier the app fits for ``kind``."""
    from tl_core.model.classical import make_classical_pipeline

    clf = make_classical_pipeline(kind, seed, balanced, num_classes, neighbours)[-1]
    module = type(clf).__module__.split("._")[0]  # the public module, e.g. sklearn.linear_model
    return f"from {module} import {type(clf).__name__}", repr(clf)


def _indent(code: str, spaces: int) -> str:
    return textwrap.indent(code, " " * spaces)


def _fmt(value: float) -> str:
    return repr(float(value))


# ----------------------------------------------------------------------------------------------
# The script
# ----------------------------------------------------------------------------------------------
def standalone_script(config: RunConfig, classes: list[str] | None = None) -> str:
    """A standalone ``train.py`` (torch + torchvision, no tl_core) that reproduces ``config``'s
    recipe on an ImageFolder given on its command line. It prints one JSON line first (parameter
    counts and hyperparameters) and then one line per epoch."""
    from tl_core.model.registry import get_backbone

    spec = get_backbone(config.model.backbone)
    head = config.model.head
    classical = head.kind in CLASSICAL_HEADS
    run_code, extra_imports = _run_code(config, classes)
    sections = [_header(config, spec, classical), _imports_code(spec, extra_imports),
                _recipe_code(config, spec, classes)]
    if not classical:
        sections.append(_freezing_code(config, spec))
    sections += [_section("Model") + _model_code(spec, head, classical), _section("Images") + _images_code(config),
                 _section("Data") + _SPLIT_CODE + _DATA_CODE, _section("Training" if not classical else "Fitting")
                 + run_code, _MAIN_GUARD]
    return "\n".join(s.rstrip("\n") + "\n" for s in sections).replace("\n\n\n\n", "\n\n\n")


def _section(title: str) -> str:
    return f"\n# {'-' * 94}\n# {title}\n# {'-' * 94}"


def _header(config: RunConfig, spec, classical: bool) -> str:
    head = config.model.head
    plan, train = config.freeze, config.train
    start = f"from {_WEIGHTS_WORDS[spec.source]}" if config.model.pretrained else \
        "from random initialisation (no transfer)"
    head_words = {"linear": "a new linear head", "mlp": f"a new MLP head ({head.hidden} hidden units)",
                  "zero_shot": "a zero-shot head made of the class names' text embeddings"}.get(
        head.kind, f"a scikit-learn classifier ({head.kind}) on the frozen backbone's features")
    if classical:
        how = "features computed once; the classifier is fitted on them"
    else:
        optimizer = OPTIMIZERS[train.optimizer].torch_class
        how = (f"{optimizer}, learning rate {train.lr:g}, {train.schedule} schedule, {train.epochs} epochs of "
               f"batch {train.batch_size}")
    freezing = FREEZE_MODE_LABELS[plan.mode].lower()
    caveat = textwrap.fill(
        "The script prints one JSON line with the model's parameter counts and the settings, then "
        + ("the accuracy of the fitted classifier" if classical else "one line per epoch")
        + ". It reproduces the recipe, not the exact numbers: random draws differ from the app's"
        + ("" if classical else ", which may train the head on cached features and in mixed precision")
        + ", and the app decodes images with its own (equivalent) code.", 96).replace("\n", "\n" + " " * 8)
    recipe = textwrap.fill(f"Recipe: {spec.name} {start}; {freezing}; {head_words}; {how}.", 96).replace("\n", "\n" + " " * 8)
    return textwrap.dedent(f'''\
        """Transfer learning on your own images, in plain PyTorch: the recipe of a TL Studio run.

        {recipe}

        Usage:
            python train.py path/to/images

        where path/to/images holds one folder per class (torchvision's ImageFolder layout):
            path/to/images/cat/001.jpg, path/to/images/dog/002.jpg, ...

        {caveat}
        Written by TL Studio; needs {_needs(spec, classical)}.
        """
        ''')


# The pretrained weights of each source library, in the script's words.
_WEIGHTS_WORDS = {"torchvision": "torchvision's ImageNet weights",
                  "timm": "timm's pretrained weights (Hugging Face hub)",
                  "open_clip": "open_clip's pretrained weights (Hugging Face hub)"}
_PIP_NAMES = {"timm": "timm", "open_clip": "open_clip_torch"}  # what `pip install` calls each library


def _needs(spec, classical: bool) -> str:
    """The packages the script needs, in words: "torch, torchvision, timm, numpy and Pillow"."""
    packages = ["torch", "torchvision", *([_PIP_NAMES[spec.source]] if spec.source in _PIP_NAMES else []),
                "numpy", "Pillow", *(["scikit-learn"] if classical else [])]
    return ", ".join(packages[:-1]) + " and " + packages[-1]


def _imports_code(spec, extra_imports: list[str]) -> str:
    """The script's imports: the standard library, then numpy, the model's library and torch, then
    the ``from`` lines."""
    torchvision = "from torchvision import datasets, models" if spec.source == "torchvision" else \
        "from torchvision import datasets"
    from_imports = sorted([*extra_imports, "from PIL import Image, ImageOps", "from torch import nn",
                           "from torch.utils.data import DataLoader, Subset, WeightedRandomSampler",
                           torchvision, "from torchvision.transforms import v2"],
                          key=lambda line: line.split()[1].lower())
    plain = sorted(["numpy as np", "torch", *([spec.source] if spec.source in _PIP_NAMES else [])])
    ordered_dict = spec.source == "torchvision" and spec.family != "vit"
    return ("import argparse\nimport json\nimport math\nimport random\n"
            + ("from collections import OrderedDict\n" if ordered_dict else "")
            + "\n" + "".join(f"import {name}\n" for name in plain) + "".join(line + "\n" for line in from_imports))


# -- the recipe, as constants at the top ---------------------------------------------------------
def _recipe_code(config: RunConfig, spec, classes: list[str] | None) -> str:
    """The constants at the top: the run, the model, the images, the split and the training."""
    recipe = [
        f"RUN_NAME = {config.name!r}",
        f"CLASSES = {list(classes)!r}  # the classes the app trained on, in label order" if classes
        else "CLASSES = None  # the app's class names were not known when this was written",
        "",
    ]
    recipe += _model_constants(config, spec) + _image_constants(config, spec) + _training_constants(config)
    return "\n".join(recipe) + "\n"


def _model_constants(config: RunConfig, spec) -> list[str]:
    head = config.model.head
    lines = [
        "# Model",
        f'BACKBONE = "{spec.name}"  # {spec.description}',
        f"PRETRAINED = {config.model.pretrained}  # start from {_WEIGHTS_WORDS[spec.source]}"
        + ("" if config.model.pretrained else " (off: random initialisation, no transfer)"),
    ]
    if head.kind not in CLASSICAL_HEADS:
        lines.append(f"FEATURE_DIM = {spec.feature_dim_for(head)}  # width of the body's output features")
        lines.append(f"HEAD = {head.kind!r}  # {HEAD_LABELS[head.kind]}")
    if head.kind == "mlp":
        lines += [f"HIDDEN = {head.hidden}  # width of the head's hidden layer",
                  f"DROPOUT = {_fmt(head.dropout)}  # dropout before the head's last layer"]
    return lines


def _image_constants(config: RunConfig, spec) -> list[str]:
    pre, data = spec.preprocess, config.data
    return ["", "# Images (the backbone's preprocessing, from its pretrained weights' configuration)",
            f"RESIZE_SIZE = {pre.resize_size}  # each image's centre square is resized to this",
            f"CROP_SIZE = {pre.crop_size}  # the network sees CROP_SIZE x CROP_SIZE crops",
            f"MEAN = {tuple(pre.mean)!r}",
            f"STD = {tuple(pre.std)!r}",
            f'AUGMENT = "{data.augment}"  # augmentation preset of the training images',
            "", "# Split: per class, held out at random with SPLIT_SEED",
            f"VAL_FRACTION = {_fmt(data.val_fraction)}",
            f"TEST_FRACTION = {_fmt(data.test_fraction)}",
            f"SPLIT_SEED = {data.split_seed}",
            f"TRAIN_FRACTION = {_fmt(data.train_fraction)}  # share of each class's training images used "
            "(validation and test stay whole)"]


def _training_constants(config: RunConfig) -> list[str]:
    train = config.train
    optimizer = OPTIMIZERS[train.optimizer]
    lines = ["", "# Training",
             f"SEED = {train.seed}",
             f"BATCH_SIZE = {train.batch_size}",
             f"NUM_WORKERS = {train.num_workers}  # data-loading processes",
             f'BALANCE = "{train.balance}"  # imbalanced classes: {BALANCE_LABELS[train.balance]}']
    if config.model.head.kind not in CLASSICAL_HEADS:
        lines += [f"EPOCHS = {train.epochs}",
                  f"LR = {_fmt(train.lr)}  # the head's learning rate",
                  f'OPTIMIZER = "{optimizer.torch_class}"  # {optimizer.label}',
                  f"WEIGHT_DECAY = {_fmt(train.weight_decay)}",
                  f'SCHEDULE = "{train.schedule}"  # the learning rate is changed after every batch',
                  f"LABEL_SMOOTHING = {_fmt(train.label_smoothing)}",
                  f'MONITOR = "{train.monitor}"  # chooses the best epoch (and stops early)',
                  f"PATIENCE = {train.early_stopping_patience}  # stop after this many epochs without "
                  "improvement (0 = never)",
                  f"TRAIN_BN = {config.freeze.train_bn}  # BatchNorm in frozen groups updates its statistics"]
    return lines + [f'DEVICE = "{train.device}"  # auto: a CUDA GPU, else Apple MPS, else the CPU']


# -- freezing ---------------------------------------------------------------------------------------
def _freezing_code(config: RunConfig, spec) -> str:
    """The layer groups, which of them learn in each epoch, and (with an lr range) their learning rates."""
    head = config.model.head
    groups = _layer_groups(spec.name, head.kind, head.pool)
    group_names = [name for name, _ in groups]
    group_lines = [f'    "{name}": {_names_code(paths)},' for name, paths in groups]
    freezing = ("# Layer groups, from the input (stem) to the new head, as TL Studio splits "
                f"{spec.name}.\n# Freezing and learning rates work per group; a group is a list of "
                "module names\n# (or of parameter names, for loose parameters such as a ViT's class "
                "token).\nLAYER_GROUPS = {\n" + "\n".join(group_lines) + "\n}\n")
    freezing += _trainable_groups_code(config.freeze, group_names)
    if config.freeze.lr_range is not None:
        freezing += _group_lr_code(config.freeze, group_names)
    return freezing


def _trainable_groups_code(plan, group_names: list[str]) -> str:
    """``trainable_groups(epoch)``: the freezing plan, as the groups that learn in an epoch."""
    from tl_core.model.freeze import trainable_groups

    if plan.mode == "gradual":
        return textwrap.dedent(f'''

            UNFREEZE_EVERY = {plan.unfreeze_every}


            def trainable_groups(epoch):
                """Gradual unfreezing: the head first, then one more group, from the top down,
                every UNFREEZE_EVERY epochs (epochs count from 1)."""
                body = [name for name in LAYER_GROUPS if name != "head"]
                k = min(len(body), (epoch - 1) // UNFREEZE_EVERY)
                return body[len(body) - k:] + ["head"]
            ''')
    if plan.mode == "lp_ft":
        return textwrap.dedent(f'''

            PROBE_EPOCHS = {plan.probe_epochs}


            def trainable_groups(epoch):
                """LP-FT: a linear probe first (only the head learns for PROBE_EPOCHS epochs), then
                every group learns (epochs count from 1)."""
                if epoch <= PROBE_EPOCHS:
                    return ["head"]
                return list(LAYER_GROUPS)
            ''')
    flags = trainable_groups(plan, group_names)
    trainable = [name for name, flag in zip(group_names, flags, strict=True) if flag]
    why = {"feature_extractor": "the backbone stays frozen: only the new head learns",
           "full": "every group learns (full fine-tuning)",
           "last_n": f"the top {plan.last_n} group(s) of the backbone and the head learn",
           "groups": "the groups chosen in the app and the head learn"}[plan.mode]
    return textwrap.dedent(f'''

        TRAINABLE = {json.dumps(trainable)}  # {why}


        def trainable_groups(epoch):
            """The groups that learn in this epoch (the same in every epoch here)."""
            return TRAINABLE
        ''')


def _group_lr_code(plan, group_names: list[str]) -> str:
    """``GROUP_LR``: the discriminative learning rates, one per group (the engine's multipliers)."""
    from tl_core.model.freeze import lr_multipliers

    mults = lr_multipliers(plan, group_names)
    lr_lines = "\n".join(f'    "{name}": LR * {m:.6g},' for name, m in zip(group_names, mults, strict=True))
    low, high = plan.lr_range
    return ("\n\n# Discriminative learning rates: the range " f"{low:g} .. {high:g} scaled so the head "
            "gets LR, spread geometrically\n# over the groups that train, lowest at the stem: early "
            "layers need the smallest changes.\n# (Groups that never train get the lowest; they "
            "have no gradient, so it is unused.)\nGROUP_LR = {\n" + lr_lines + "\n}\n")


# -- the model ----------------------------------------------------------------------------------------
def _model_code(spec, head, classical: bool) -> str:
    """``load_backbone``, ``make_body`` (the network without its classifier) and, for a trained head,
    ``TransferNet`` (the body and the new head)."""
    model_code = {"torchvision": _torchvision_model_code, "timm": _timm_model_code,
                  "open_clip": _open_clip_model_code}[spec.source](spec, head)
    return model_code if classical else model_code + _transfer_net_code(head)


def _torchvision_model_code(spec, head) -> str:
    weights_enum, weights_member = spec.option("weights_enum"), spec.option("weights_member")
    model_code = textwrap.dedent(f'''
        def load_backbone():
            """torchvision's {spec.source_name}. Its ImageNet weights are downloaded once into the torch hub
            cache (~/.cache/torch/hub/checkpoints, or $TORCH_HOME/hub/checkpoints) and read from there."""
            weights = models.{weights_enum}.{weights_member} if PRETRAINED else None
            return models.{spec.source_name}(weights=weights)


        def make_body(net):
            """The pretrained network without its ImageNet classifier: images -> feature vectors."""
        ''') + _indent(_body_code(spec, head), 4) + "\n    return body\n"
    return _VIT_BODY + model_code if spec.family == "vit" else model_code


# The timm and open_clip adapters (tl_core.model.timm_source, tl_core.model.open_clip_source) as
# script code. The body's module names are the app's, so LAYER_GROUPS names the same parameters.
_TOKEN_POOL_CODE = '''

class TokenPool(nn.Module):
    """A ViT's features as DINOv2's linear evaluation takes them (Oquab et al. 2023): the class
    token after the last norm, concatenated with the mean of the patch tokens."""

    def __init__(self, vit):
        super().__init__()
        self.vit = vit
        self.prefix = vit.num_prefix_tokens  # the class token (and register tokens, if any)

    def forward(self, x):
        tokens = self.vit.forward_features(x)  # [batch, prefix + patches, width], normed
        return torch.cat([tokens[:, 0], tokens[:, self.prefix:].mean(dim=1)], dim=1)
'''

_TIMM_VIT_BODY_CODE = '''

def make_body(net):
    """The pretrained ViT without its classifier: images -> feature vectors."""
    if tuple(net.patch_embed.img_size) != (CROP_SIZE, CROP_SIZE):
        # the position embedding is resampled to the crop (fewer patches than published: less compute)
        net.set_input_size(img_size=(CROP_SIZE, CROP_SIZE))
    net.reset_classifier(0)
    return TokenPool(net)
'''

_TIMM_BODY_CODE = '''

def make_body(net):
    """The pretrained network without its classifier: images -> timm's pooled feature vectors."""
    net.reset_classifier(0)
    return net
'''


def _timm_model_code(spec, head) -> str:
    load = textwrap.dedent(f'''
        def load_backbone():
            """timm's {spec.source_name}.
            Its pretrained weights are downloaded once from the Hugging Face hub into its cache
            (~/.cache/huggingface, or $HF_HOME) and read from there."""
            return timm.create_model("{spec.source_name}", pretrained=PRETRAINED)
        ''')
    if spec.family == "timm_vit":
        return _TOKEN_POOL_CODE + "\n" + load + _TIMM_VIT_BODY_CODE
    return load + _TIMM_BODY_CODE


def _open_clip_model_code(spec, head) -> str:
    model_name, tag = spec.option("model_name"), spec.option("tag")
    return textwrap.dedent(f'''

        class ImageTower(nn.Module):
            """The image-text model's image tower: images -> L2-normalised image embeddings."""

            def __init__(self, visual):
                super().__init__()
                self.visual = visual

            def forward(self, x):
                return nn.functional.normalize(self.visual(x), dim=-1)


        def load_backbone():
            """open_clip's {model_name} with its "{tag}" weights.
            They are downloaded once from the Hugging Face hub into its cache (~/.cache/huggingface,
            or $HF_HOME) and read from there."""
            return open_clip.create_model("{model_name}", pretrained="{tag}" if PRETRAINED else None)


        def make_body(net):
            """The image tower alone (the text tower is not needed to classify images)."""
            return ImageTower(net.visual)
        ''') + (_zero_shot_code(spec, head) if head.kind == "zero_shot" else "")


def _zero_shot_code(spec, head) -> str:
    """``zero_shot_head(classes)``: the open_clip text tower's embeddings of each class's prompts as
    a linear head (tl_core.model.zero_shot and open_clip_source.text_embeddings, as script code)."""
    from tl_core.model.open_clip_source import TEMPLATES

    words = "\n".join(f"    {name!r}: {text!r}," for name, text in head.class_words)
    templates = "\n".join(f"    {t!r}," for t in TEMPLATES)
    return textwrap.dedent('''


        # Zero-shot (Radford et al. 2021): each class's words become prompts; the text tower embeds them.
        CLASS_WORDS = {  # words for a class's prompts, several comma-separated; others: the folder name
        @WORDS@
        }
        TEMPLATES = [
        @TEMPLATES@
        ]


        def class_words(name):
            text = CLASS_WORDS.get(name) or " ".join(name.replace("_", " ").replace("-", " ").replace(".", " ").split())
            text = text or name
            return [w.strip() for w in text.split(",") if w.strip()]


        @torch.no_grad()
        def zero_shot_head(classes):
            """A linear layer whose rows are the model's temperature times each class's text direction:
            the normalised mean embedding of its prompts. The image tower's outputs are normalised too,
            so its logits are scaled cosine similarities."""
            net = load_backbone().eval()
            tokenizer = open_clip.get_tokenizer(@MODEL_NAME@)
            rows = []
            for name in classes:
                prompts = [template.format(word) for word in class_words(name) for template in TEMPLATES]
                embedded = nn.functional.normalize(net.encode_text(tokenizer(prompts)).float(), dim=-1)
                rows.append(nn.functional.normalize(embedded.mean(dim=0), dim=-1))
            directions = torch.stack(rows)
            head = nn.Linear(directions.shape[1], len(classes))
            head.weight.copy_(directions * net.logit_scale.exp())
            head.bias.zero_()
            return head
        ''').replace("@WORDS@", words.strip()).replace("@TEMPLATES@", templates.strip()).replace(
        "@MODEL_NAME@", repr(spec.option("model_name")))


def _body_code(spec, head) -> str:
    """The family's body adapter; VGG's pools to 7 x 7 (Keras-style Flatten) or to 1 x 1."""
    body_code = _BODY_CODE[spec.family]
    if spec.family == "vgg":
        pool = "nn.AdaptiveAvgPool2d((7, 7))" if head.pool == "flatten" else "nn.AdaptiveAvgPool2d(1)"
        body_code = body_code.format(pool=pool)
        if head.pool == "flatten":
            body_code = "# Keras-style Flatten: the 7 x 7 x 512 feature map, flattened (no global pooling).\n" + body_code
    return body_code


def _transfer_net_code(head) -> str:
    """``TransferNet``: the body and the new head (linear, or an MLP)."""
    if head.kind == "mlp":
        head_code = ("nn.Sequential(\n        nn.Linear(FEATURE_DIM, HIDDEN), nn.ReLU(inplace=True), "
                     "nn.Dropout(DROPOUT),\n        nn.Linear(HIDDEN, num_classes))")
        head_doc = "one hidden layer (ReLU), dropout, then a linear layer to the classes"
    else:
        head_code = "nn.Linear(FEATURE_DIM, num_classes)"
        head_doc = "one linear layer from the features to the classes"
    return textwrap.dedent('''

        class TransferNet(nn.Module):
            """The pretrained body and a new head: HEAD_DOC."""

            def __init__(self, num_classes):
                super().__init__()
                self.body = make_body(load_backbone())
                self.head = HEAD_CODE

            def forward(self, images):
                return self.head(self.body(images))
        ''').replace("HEAD_DOC", head_doc).replace("HEAD_CODE", head_code)


# -- images -------------------------------------------------------------------------------------------
def _images_code(config: RunConfig) -> str:
    """Decoding an image, and what the network sees of it at evaluation and (augmented) in training."""
    augment_code = _indent(_AUGMENT_CODE[config.data.augment] + ",", 8)
    return textwrap.dedent('''
        def load_image(path):
            """An image file as RGB, turned upright as its camera's EXIF tag says."""
            with Image.open(path) as image:
                return ImageOps.exif_transpose(image).convert("RGB")


        def center_square():
            """The centre square of the image, resized to RESIZE_SIZE (TL Studio decodes every image so)."""
            return v2.Compose([v2.ToImage(), v2.Resize(RESIZE_SIZE, antialias=True), v2.CenterCrop(RESIZE_SIZE)])


        def to_network_input():
            """uint8 pixels -> floats in [0, 1] -> normalised with the ImageNet mean and std."""
            return v2.Compose([v2.ToDtype(torch.float32, scale=True), v2.Normalize(MEAN, STD)])


        def eval_transform():
            """What the network sees at evaluation: the centre crop."""
            return v2.Compose([center_square(), v2.CenterCrop(CROP_SIZE), to_network_input()])


        def train_transform():
            """What the network sees in training (the AUGMENT preset): a new random view of each
            image every epoch."""
            return v2.Compose([
                center_square(),
        ''') + augment_code + "\n        to_network_input(),\n    ])\n"


# -- the data ----------------------------------------------------------------------------------------
# The per-class split and subset of tl_core.data.split, as script code.
_SPLIT_CODE = textwrap.dedent('''
    def split_per_class(labels, val_fraction, test_fraction, seed):
        """Train / validation / test indices, drawn class by class so each split keeps the class
        balance. Every class keeps at least one training image, and one validation (test) image
        when that fraction is above zero. TL Studio splits with this algorithm; the images can
        still differ if the app listed them in another order, or if the data came with its own
        val/ and test/ folders (the app keeps those)."""
        rng = np.random.default_rng(seed)
        train, val, test = [], [], []
        for label in sorted(set(labels)):
            members = [i for i, y in enumerate(labels) if y == label]
            need = 1 + (val_fraction > 0) + (test_fraction > 0)
            if len(members) < need:
                raise SystemExit(f"Class {label} has {len(members)} image(s); it needs at least {need} to be split.")
            order = [members[j] for j in rng.permutation(len(members))]
            n = len(order)
            n_test = max(1, math.floor(n * test_fraction + 0.5)) if test_fraction > 0 else 0
            n_val = max(1, math.floor(n * val_fraction + 0.5)) if val_fraction > 0 else 0
            while n_test + n_val > n - 1:  # keep one image for training
                if n_test > 1:
                    n_test -= 1
                else:
                    n_val -= 1
            test += order[:n_test]
            val += order[n_test:n_test + n_val]
            train += order[n_test + n_val:]
        return sorted(train), sorted(val), sorted(test)


    def subset_per_class(train, labels, fraction, seed):
        """The first max(1, round(n * fraction)) of each class's n training images, in an order
        shuffled per class by seed whatever the fraction (so a 5% subset lies inside the 10% one),
        as TL Studio's data-size sweep takes them. Validation and test images are not touched."""
        if fraction >= 1:
            return list(train)
        rng = np.random.default_rng(seed)
        kept = []
        for label in sorted({labels[i] for i in train}):
            members = sorted(i for i in train if labels[i] == label)
            order = [members[j] for j in rng.permutation(len(members))]
            kept += order[:max(1, math.floor(len(order) * fraction + 0.5))]
        return sorted(kept)
    ''')


_DATA_CODE = '''

def make_loaders(folder, augment=True, balanced=BALANCE == "sampler"):
    """The ImageFolder split per class; a DataLoader of (images, labels) per split. The training
    images are augmented (unless augment=False); the others are seen as the centre crop.
    balanced: each epoch draws as many training images as there are, with replacement, each with
    weight 1 / (images of its class), so every class is seen about equally often."""
    dataset = datasets.ImageFolder(folder, loader=load_image)
    if CLASSES is not None and dataset.classes != CLASSES:
        print(f"note: the folder's classes {dataset.classes} are not the app's {CLASSES}")
    train_idx, val_idx, test_idx = split_per_class(dataset.targets, VAL_FRACTION, TEST_FRACTION, SPLIT_SEED)
    train_idx = subset_per_class(train_idx, dataset.targets, TRAIN_FRACTION, SPLIT_SEED)
    train_images = datasets.ImageFolder(folder, transform=train_transform() if augment else eval_transform(),
                                        loader=load_image)
    eval_images = datasets.ImageFolder(folder, transform=eval_transform(), loader=load_image)

    def loader(images, indices, shuffle, sampler=None):
        return DataLoader(Subset(images, indices), batch_size=BATCH_SIZE, shuffle=shuffle and sampler is None,
                          sampler=sampler, num_workers=NUM_WORKERS)
    sampler = None
    if balanced:
        train_labels = [dataset.targets[i] for i in train_idx]
        counts = np.bincount(train_labels, minlength=len(dataset.classes))
        sampler = WeightedRandomSampler([1.0 / counts[y] for y in train_labels], len(train_idx), replacement=True)
    loaders = {"train": loader(train_images, train_idx, True, sampler), "val": loader(eval_images, val_idx, False),
               "test": loader(eval_images, test_idx, False) if test_idx else None}
    return dataset.classes, loaders


def seed_everything(seed):
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def pick_device():
    if DEVICE != "auto":
        return torch.device(DEVICE)
    if torch.cuda.is_available():
        return torch.device("cuda")
    if torch.backends.mps.is_available():
        return torch.device("mps")
    return torch.device("cpu")


def count_params(module, trainable_only=False):
    return sum(p.numel() for p in module.parameters() if p.requires_grad or not trainable_only)
'''


# -- training / fitting -------------------------------------------------------------------------------
def _run_code(config: RunConfig, classes: list[str] | None) -> tuple[str, list[str]]:
    """The training loop (or, for a classical head, the fitting) with ``main``, and the imports it
    adds (scikit-learn's)."""
    head, train = config.model.head, config.train
    if head.kind not in CLASSICAL_HEADS:
        return _training_code(config), []
    import_line, classifier = _classifier_code(head.kind, train.seed, train.balance != "none",
                                               len(classes) if classes else 2, head.neighbours)
    return _classical_code(classifier, head.kind), ["from sklearn.pipeline import make_pipeline",
                                                     "from sklearn.preprocessing import StandardScaler", import_line]


def _training_code(config: RunConfig) -> str:
    """The freezing helpers, the optimiser and schedule of the run, and the training loop with ``main``."""
    zero_shot_init = ("\n    # the class names' text embeddings are the head (training goes on from them)"
                      "\n    model.head = zero_shot_head(classes)") if config.model.head.kind == "zero_shot" else ""
    return (_FREEZE_HELPERS_CODE + "\n" + _optimizer_code(config) + _schedule_code(config)
            + _TRAINING_LOOP_CODE.replace("@ZERO_SHOT_INIT@", zero_shot_init))


def _optimizer_code(config: RunConfig) -> str:
    """``make_optimizer``: one parameter group per layer group with an lr range, else all parameters."""
    train, plan = config.train, config.freeze
    options = "".join(f", {name}={value!r}" for name, value in OPTIMIZERS[train.optimizer].options)
    if plan.lr_range is not None:
        return textwrap.dedent(f'''
            def make_optimizer(model):
                """{OPTIMIZERS[train.optimizer].torch_class} with one parameter group (and learning rate) per layer group.
                Frozen parameters are included: they get no gradient, so the optimiser skips them."""
                groups = [{{"params": params_of(model, LAYER_GROUPS[name]), "lr": GROUP_LR[name]}} for name in LAYER_GROUPS]
                return torch.optim.{OPTIMIZERS[train.optimizer].torch_class}(groups, lr=LR, weight_decay=WEIGHT_DECAY{options})
            ''')
    return textwrap.dedent(f'''
        def make_optimizer(model):
            """{OPTIMIZERS[train.optimizer].torch_class} over all parameters; frozen ones get no gradient, so it skips them."""
            return torch.optim.{OPTIMIZERS[train.optimizer].torch_class}(model.parameters(), lr=LR, weight_decay=WEIGHT_DECAY{options})
        ''')


def _schedule_code(config: RunConfig) -> str:
    """``make_scheduler``: the run's learning-rate schedule, stepped once per batch."""
    train = config.train
    return textwrap.dedent(f'''

        def make_scheduler(optimizer, total_steps):
            """{train.schedule}: stepped once per batch, over total_steps batches."""
            return {_SCHEDULE_CODE[train.schedule]}
        ''')


# Freezing by layer group, and BatchNorm in frozen groups (tl_core.model.freeze), as script code.
_FREEZE_HELPERS_CODE = textwrap.dedent('''
    def params_of(model, names):
        """The parameters of the named modules; a name may also be one loose parameter (a ViT's class token)."""
        params = []
        for name in names:
            try:
                params.append(model.get_parameter(name))
            except AttributeError:  # a module, not a parameter
                params += model.get_submodule(name).parameters()
        return params


    def modules_of(model, names):
        """The named modules (loose parameters left out)."""
        loose = dict(model.named_parameters())
        return [model.get_submodule(name) for name in names if name not in loose]


    def freeze(model, trainable):
        """Only the parameters of the groups in `trainable` learn."""
        for group, names in LAYER_GROUPS.items():
            for p in params_of(model, names):
                p.requires_grad_(group in trainable)


    def set_train_mode(model, trainable):
        """model.train(), but the BatchNorm layers of frozen groups keep their pretrained statistics."""
        model.train()
        if TRAIN_BN:
            return
        for group, names in LAYER_GROUPS.items():
            if group not in trainable:
                for module in modules_of(model, names):
                    for m in module.modules():
                        if isinstance(m, (nn.BatchNorm1d, nn.BatchNorm2d)):
                            m.eval()
    ''')

# One epoch of training, the evaluation, the best epoch and early stopping, and main(), as script code.
_TRAINING_LOOP_CODE = textwrap.dedent('''

    def class_weights(train_loader, num_classes):
        """n / (k * n_c) per class (n training images, k classes, n_c of class c): each class adds
        the same total to the training loss. The validation loss stays unweighted."""
        subset = train_loader.dataset
        counts = np.bincount([subset.dataset.targets[i] for i in subset.indices], minlength=num_classes)
        weights = np.zeros(num_classes)
        weights[counts > 0] = counts.sum() / ((counts > 0).sum() * counts[counts > 0])
        return torch.tensor(weights, dtype=torch.float32)


    def train_one_epoch(model, loader, optimizer, scheduler, loss_fn, device, steps_left):
        total_loss, correct, seen = 0.0, 0, 0
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            optimizer.zero_grad(set_to_none=True)
            logits = model(images)
            loss = loss_fn(logits, labels)
            loss.backward()
            optimizer.step()
            if steps_left > 0:  # OneCycle refuses to step past its end
                scheduler.step()
                steps_left -= 1
            total_loss += loss.item() * len(labels)
            correct += (logits.argmax(1) == labels).sum().item()
            seen += len(labels)
        return total_loss / max(seen, 1), correct / max(seen, 1), steps_left


    @torch.no_grad()
    def evaluate(model, loader, device):
        """Loss (without label smoothing) and accuracy on a held-out split."""
        model.eval()
        total_loss, correct, seen = 0.0, 0, 0
        for images, labels in loader:
            images, labels = images.to(device), labels.to(device)
            logits = model(images)
            total_loss += nn.functional.cross_entropy(logits, labels, reduction="sum").item()
            correct += (logits.argmax(1) == labels).sum().item()
            seen += len(labels)
        return total_loss / max(seen, 1), correct / max(seen, 1)


    def is_better(val_loss, val_acc, best):
        if best is None:
            return True
        return val_loss < best if MONITOR == "val_loss" else val_acc > best


    def main():
        parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
        parser.add_argument("data", help="folder with one sub-folder of images per class")
        parser.add_argument("--out", default="best_model.pt", help="where the best model's weights go")
        args = parser.parse_args()

        seed_everything(SEED)
        device = pick_device()
        classes, loaders = make_loaders(args.data)
        model = TransferNet(len(classes))@ZERO_SHOT_INIT@
        model = model.to(device)
        freeze(model, trainable_groups(1))
        optimizer = make_optimizer(model)
        total_steps = len(loaders["train"]) * EPOCHS
        scheduler = make_scheduler(optimizer, total_steps) if EPOCHS else None  # 0 epochs: pure zero-shot
        weight = class_weights(loaders["train"], len(classes)).to(device) if BALANCE == "weighted_loss" else None
        loss_fn = nn.CrossEntropyLoss(weight=weight, label_smoothing=LABEL_SMOOTHING)
        print(json.dumps({"run_name": RUN_NAME, "backbone": BACKBONE, "pretrained": PRETRAINED, "classes": classes,
                          "trainable_params": count_params(model, trainable_only=True),
                          "total_params": count_params(model), "optimizer": OPTIMIZER, "lr": LR,
                          "weight_decay": WEIGHT_DECAY, "schedule": SCHEDULE, "epochs": EPOCHS,
                          "batch_size": BATCH_SIZE, "label_smoothing": LABEL_SMOOTHING, "balance": BALANCE}))

        best, best_epoch, epochs_without_gain, steps_left = None, None, 0, total_steps
        for epoch in range(1, EPOCHS + 1):
            trainable = trainable_groups(epoch)
            freeze(model, trainable)
            set_train_mode(model, trainable)
            train_loss, train_acc, steps_left = train_one_epoch(
                model, loaders["train"], optimizer, scheduler, loss_fn, device, steps_left)
            val_loss, val_acc = evaluate(model, loaders["val"], device)
            print(f"epoch {epoch}: train loss {train_loss:.4f} acc {train_acc:.3f} | "
                  f"val loss {val_loss:.4f} acc {val_acc:.3f}")
            if is_better(val_loss, val_acc, best):
                best, best_epoch, epochs_without_gain = (val_loss if MONITOR == "val_loss" else val_acc), epoch, 0
                torch.save(model.state_dict(), args.out)
            else:
                epochs_without_gain += 1
            if PATIENCE and epochs_without_gain >= PATIENCE:
                print(f"Stopped early: {MONITOR} did not improve for {PATIENCE} epochs.")
                break

        if EPOCHS == 0:  # pure zero-shot: the class names alone classify; nothing was trained
            val_loss, val_acc = evaluate(model, loaders["val"], device)
            print(f"zero-shot: val loss {val_loss:.4f} acc {val_acc:.3f}")
            torch.save(model.state_dict(), args.out)
            print(f"Its weights are in {args.out}")
        else:
            print(f"Best epoch {best_epoch} (by {MONITOR}); its weights are in {args.out}")
        if loaders["test"] is not None:
            model.load_state_dict(torch.load(args.out, map_location=device))
            test_loss, test_acc = evaluate(model, loaders["test"], device)
            print(f"test loss {test_loss:.4f} acc {test_acc:.3f}")
    ''')

def _classical_code(classifier: str, kind: str) -> str:
    return textwrap.dedent(f'''
        @torch.no_grad()
        def extract_features(body, loader, device):
            """The frozen body's features of every image (the centre crop), and the labels."""
            body.eval()
            features, labels = [], []
            for images, y in loader:
                features.append(body(images.to(device)).cpu())
                labels.append(y)
            return torch.cat(features).numpy(), torch.cat(labels).numpy()


        def make_classifier():
            """{kind}, after standardising each feature (mean 0, variance 1)."""
            return make_pipeline(StandardScaler(), {classifier})


        def main():
            parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
            parser.add_argument("data", help="folder with one sub-folder of images per class")
            args = parser.parse_args()

            seed_everything(SEED)
            device = pick_device()
            # features of the centre crop, as in the app (BALANCE is in the classifier's class weights)
            classes, loaders = make_loaders(args.data, augment=False, balanced=False)
            body = make_body(load_backbone()).to(device)
            for p in body.parameters():
                p.requires_grad_(False)  # nothing in the backbone learns: the classifier is fitted instead
            print(json.dumps({{"run_name": RUN_NAME, "backbone": BACKBONE, "pretrained": PRETRAINED, "classes": classes,
                              "trainable_params": 0, "total_params": count_params(body), "head": {kind!r},
                              "classifier": {classifier!r}, "batch_size": BATCH_SIZE}}))

            x_train, y_train = extract_features(body, loaders["train"], device)
            classifier = make_classifier().fit(x_train, y_train)
            print(f"train acc {{classifier.score(x_train, y_train):.3f}}")
            for split in ("val", "test"):
                if loaders[split] is not None:
                    x, y = extract_features(body, loaders[split], device)
                    print(f"{{split}} acc {{classifier.score(x, y):.3f}}")
        ''')


_MAIN_GUARD = '''

if __name__ == "__main__":
    main()
'''

__all__ = ["PLACEHOLDER_DATA", "cli_command", "standalone_script"]
