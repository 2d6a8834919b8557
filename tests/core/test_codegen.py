"""The code behind a run: the CLI command gives back the same config, and the standalone script
builds, freezes, augments, splits and trains as the app does (run in a subprocess without tl_core)."""

from __future__ import annotations

import dataclasses
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from tests.conftest import write_image_folder
from tl_core.cli import options
from tl_core.cli import parser as cli
from tl_core.cli.codegen import cli_command, standalone_script
from tl_core.config import DataConfig, FreezePlan, HeadConfig, ModelConfig, RunConfig, TrainConfig
from tl_core.model.freeze import apply_freeze, lr_multipliers, trainable_groups
from tl_core.model.registry import get_backbone, list_backbones, transfer_model_from
from tl_core.model.weights_lookup import bundled_weights_path

DATA = "/data/my photos"  # a space: the command must quote it


def _config(**parts) -> RunConfig:
    return RunConfig(data=parts.pop("data", DataConfig(source=DATA)), **parts)


CONFIGS = {
    "defaults": _config(),
    "last_n_discriminative": _config(freeze=FreezePlan(mode="last_n", last_n=2, lr_range=(1e-5, 1e-3)),
                                     train=TrainConfig(lr=3e-4, epochs=5)),
    "mlp_head": _config(model=ModelConfig(backbone="resnet18", head=HeadConfig(kind="mlp", hidden=256, dropout=0.5))),
    "sgd_onecycle": _config(train=TrainConfig(optimizer="sgd", schedule="onecycle", label_smoothing=0.1,
                                              early_stopping_patience=3, monitor="val_acc", batch_size=16)),
    "random_init": _config(model=ModelConfig(pretrained=False), freeze=FreezePlan(mode="full"),
                           train=TrainConfig(amp=False, feature_cache=False, device="cpu", num_workers=2)),
    "classical": _config(model=ModelConfig(head=HeadConfig(kind="lda"))),
    "nearest_mean": _config(model=ModelConfig(head=HeadConfig(kind="nearest_mean"))),
    "knn": _config(model=ModelConfig(head=HeadConfig(kind="knn", neighbours=3))),
    "groups_gradual_vgg": _config(model=ModelConfig(backbone="vgg16", head=HeadConfig(kind="mlp", pool="flatten"),
                                                    weights_dir="/w"),
                                  freeze=FreezePlan(mode="groups", groups=("stage3", "stage4"), train_bn=True),
                                  data=DataConfig(source=DATA, val_fraction=0.25, test_fraction=0.1, augment="standard",
                                                  split_seed=7),
                                  train=TrainConfig(seed=7, weight_decay=0.0, schedule="step")),
    "named": _config(name="Cats vs dogs; it's 'mine' $(rm -rf ~)", freeze=FreezePlan(mode="gradual", unfreeze_every=2)),
    "lp_ft": _config(freeze=FreezePlan(mode="lp_ft", probe_epochs=3, lr_range=(1e-5, 1e-3)), train=TrainConfig(epochs=6)),
    "train_subset": _config(data=DataConfig(source=DATA, train_fraction=0.25)),
    "rmsprop_keras": _config(train=TrainConfig(optimizer="rmsprop_keras", lr=1e-4, weight_decay=0.0,
                                               schedule="constant")),
}


def parse_command(command: str) -> RunConfig:
    """What the shell and the CLI make of the command (a backslash-newline joins lines in sh)."""
    argv = shlex.split(command.replace("\\\n", ""), comments=True)
    assert argv[:4] == ["python", "-m", "tl_core", "train"]
    return options.build_config(cli.make_parser().parse_args(argv[3:]))


@pytest.mark.parametrize("name", list(CONFIGS))
def test_the_command_gives_back_the_same_config(name):
    config = CONFIGS[name]
    assert parse_command(cli_command(config)) == config


def test_keras_rmsprop_reaches_the_script_and_the_command():
    config = CONFIGS["rmsprop_keras"]
    assert "--optimizer rmsprop_keras" in cli_command(config)
    optimizer = script_namespace(config)["make_optimizer"](torch.nn.Linear(2, 2))
    assert (optimizer.defaults["alpha"], optimizer.defaults["eps"]) == (0.9, 1e-7)


def test_the_command_writes_only_what_differs_and_names_the_data():
    assert cli_command(CONFIGS["defaults"]) == "python -m tl_core train '/data/my photos'"
    command = cli_command(CONFIGS["sgd_onecycle"], data_path="other")
    assert command.startswith("python -m tl_core train other \\\n")
    assert "--optimizer sgd" in command and "--schedule onecycle" in command and "--lr " not in command
    assert parse_command(command).data.source == "other"


def test_a_split_seed_the_cli_cannot_set_is_said():
    config = _config(data=DataConfig(source=DATA, split_seed=3), train=TrainConfig(seed=1))
    command = cli_command(config)
    assert "# The CLI splits with --seed (1)" in command
    assert parse_command(command) == dataclasses.replace(config, data=dataclasses.replace(config.data, split_seed=1))


def test_an_ingested_dataset_folder_comes_back_as_the_source():
    config = _config(data=DataConfig(source="/ws/datasets/x", dataset_dir="/ws/datasets/x"))
    assert parse_command(cli_command(config)).data.source == "/ws/datasets/x"


# --------------------------------------------------------------------------------------------
# The script, executed as a module (no main()): model, freezing, lrs, augmentation, split
# --------------------------------------------------------------------------------------------
def script_namespace(config: RunConfig, classes=None) -> dict:
    script = standalone_script(config, classes)
    assert "tl_core" not in script.replace("TL Studio", "")
    namespace = {"__name__": "generated_train"}
    exec(compile(script, "train.py", "exec"), namespace)  # noqa: S102 - our own generated code
    return namespace


def app_model(config: RunConfig, num_classes: int = 3, epoch: int = 1):
    spec = get_backbone(config.model.backbone)
    with torch.device("meta"):
        model = transfer_model_from(spec, spec.build(), num_classes, config.model.head, pretrained=False)
    apply_freeze(model, config.freeze, epoch=epoch)
    return model


def script_model(namespace: dict, num_classes: int = 3, epoch: int = 1):
    namespace["PRETRAINED"] = False
    with torch.device("meta"):
        model = namespace["TransferNet"](num_classes)
    namespace["freeze"](model, namespace["trainable_groups"](epoch))
    return model


def shapes(model) -> dict[str, tuple[tuple[int, ...], bool]]:
    return {name: (tuple(p.shape), p.requires_grad) for name, p in model.named_parameters()}


# The script builds the network with torchvision alone: every torchvision backbone of the registry
# (a plugin's, such as the test session's tiny one, is not torchvision's to build).
@pytest.mark.parametrize("backbone", [spec.name for spec in list_backbones()
                                      if spec.option("module", "").startswith("torchvision.")])
def test_the_script_builds_every_backbone_as_the_app_does(backbone):
    config = _config(model=ModelConfig(backbone=backbone), freeze=FreezePlan(mode="last_n", last_n=2))
    namespace = script_namespace(config)
    assert shapes(script_model(namespace)) == shapes(app_model(config))
    assert set(namespace["LAYER_GROUPS"]) == set(app_model(config).group_names)


FOUNDATION_PLANS = {"last_n": FreezePlan(mode="last_n", last_n=2),
                    "stem_and_top": FreezePlan(mode="groups", groups=("stem", "final"))}


# timm and open_clip build the script's network (their tiny test models, on the CPU: open_clip
# moves a model to its device, which a meta tensor cannot do). "stem_and_top" trains the groups
# that hold loose parameters (a ViT's class token and position embedding, CLIP's projection).
@pytest.mark.parametrize("plan", list(FOUNDATION_PLANS))
@pytest.mark.parametrize("backbone", ["tiny_vit", "tiny_effnet", "tiny_clip"])
def test_the_script_builds_timm_and_open_clip_backbones_as_the_app_does(backbone, plan):
    from tests.tiny_foundation import add_tiny_clip_config
    from tl_core.model.freeze import set_train_mode
    from tl_core.model.registry import build_model

    add_tiny_clip_config()  # the tiny CLIP's made-up config, which open_clip reads by name
    config = _config(model=ModelConfig(backbone=backbone), freeze=FOUNDATION_PLANS[plan])
    namespace = script_namespace(config)
    namespace["PRETRAINED"] = False
    ours = namespace["TransferNet"](3)
    namespace["freeze"](ours, namespace["trainable_groups"](1))
    app = build_model(backbone, 3, config.model.head, pretrained=False)
    apply_freeze(app, config.freeze)
    assert shapes(ours) == shapes(app)
    assert any(not trainable for _, trainable in shapes(app).values())
    assert list(namespace["LAYER_GROUPS"]) == app.group_names
    # BatchNorm of frozen groups stays in eval mode, as the app's set_train_mode keeps it
    namespace["set_train_mode"](ours, namespace["trainable_groups"](1))
    set_train_mode(app, config.freeze)
    assert {n: m.training for n, m in ours.named_modules()} == {n: m.training for n, m in app.named_modules()}
    # the same network: the app's weights in the script's model give the app's features
    ours.load_state_dict(app.state_dict())
    size = get_backbone(backbone).preprocess.crop_size
    x = torch.randn(2, 3, size, size)
    ours.eval(), app.eval()
    with torch.no_grad():
        torch.testing.assert_close(ours.body(x), app.body(x))


@pytest.mark.parametrize("name", ["defaults", "last_n_discriminative", "mlp_head", "random_init",
                                  "groups_gradual_vgg"])
def test_the_script_freezes_the_parameters_the_app_freezes(name):
    config = CONFIGS[name]
    assert shapes(script_model(script_namespace(config))) == shapes(app_model(config))


@pytest.mark.parametrize("name", ["named", "lp_ft"])
def test_epoch_dependent_freezing_follows_the_engine_epoch_by_epoch(name):
    config = CONFIGS[name]
    namespace = script_namespace(config)
    names = app_model(config).group_names
    for epoch in range(1, 12):
        expected = [g for g, flag in zip(names, trainable_groups(config.freeze, names, epoch), strict=True) if flag]
        assert namespace["trainable_groups"](epoch) == expected
        assert shapes(script_model(namespace, epoch=epoch)) == shapes(app_model(config, epoch=epoch))


def test_discriminative_learning_rates_are_the_engines():
    from tl_core.model.freeze import param_groups
    from tl_core.model.optim import make_optimizer

    config = CONFIGS["last_n_discriminative"]
    namespace = script_namespace(config)
    model = script_model(namespace)
    names = list(namespace["LAYER_GROUPS"])
    expected = [config.train.lr * m for m in lr_multipliers(config.freeze, names)]
    assert [namespace["GROUP_LR"][g] for g in names] == pytest.approx(expected)
    ours = namespace["make_optimizer"](model)
    app = make_optimizer(config.train.optimizer, param_groups(app_model(config), config.freeze, config.train.lr),
                         config.train.lr, config.train.weight_decay)
    assert type(ours) is type(app)
    assert [g["lr"] for g in ours.param_groups] == pytest.approx([g["lr"] for g in app.param_groups])
    assert [len(g["params"]) for g in ours.param_groups] == [len(g["params"]) for g in app.param_groups]


@pytest.mark.parametrize("name", ["defaults", "sgd_onecycle", "groups_gradual_vgg", "rmsprop_keras"])
def test_optimizer_and_schedule_are_the_engines(name):
    from tl_core.model.optim import make_optimizer, make_scheduler

    config = CONFIGS[name]
    namespace = script_namespace(config)
    params = [torch.nn.Parameter(torch.zeros(2))]
    ours = namespace["make_optimizer"](torch.nn.Linear(2, 2))
    app = make_optimizer(config.train.optimizer, [{"params": params}], config.train.lr, config.train.weight_decay)
    assert type(ours) is type(app)
    assert ours.defaults == app.defaults  # every hyperparameter: lr, weight decay, momentum, alpha, eps...
    lrs = []
    for optimizer, make in ((ours, lambda o: namespace["make_scheduler"](o, 30)),
                            (app, lambda o: make_scheduler(config.train.schedule, o, 30))):
        scheduler, curve = make(optimizer), []
        for _ in range(30):
            optimizer.step()
            scheduler.step()
            curve.append(optimizer.param_groups[0]["lr"])
        lrs.append(curve)
    assert lrs[0] == pytest.approx(lrs[1])


def _augment_transforms(preset: str):
    """The v2 transforms inside tl_core.data.augment's preset (read from its closure)."""
    from tl_core.data.augment import make_augment

    augment = make_augment(preset, 224)
    cells = [c.cell_contents for c in augment.__closure__ or ()]
    return next(c for c in cells if hasattr(c, "transforms")).transforms


@pytest.mark.parametrize("preset", ["light", "standard"])
def test_augmentation_is_the_presets(preset):
    namespace = script_namespace(_config(data=DataConfig(source=DATA, augment=preset)))
    ours = namespace["train_transform"]().transforms[1:-1]  # between the centre square and the normalisation
    assert [repr(t) for t in ours] == [repr(t) for t in _augment_transforms(preset)]


def test_without_augmentation_training_sees_the_eval_view():
    from tl_core.data.augment import make_augment

    namespace = script_namespace(_config(data=DataConfig(source=DATA, augment="none")))
    square = torch.randint(0, 255, (3, 256, 256), dtype=torch.uint8)
    middle = torch.nn.Sequential(*namespace["train_transform"]().transforms[1:-1])
    assert torch.equal(middle(square), make_augment("none", 224)(square[None])[0])


def test_images_are_prepared_as_the_backbone_wants():
    spec = get_backbone("convnext_tiny")
    namespace = script_namespace(_config(model=ModelConfig(backbone="convnext_tiny")))
    p = spec.preprocess
    assert (namespace["RESIZE_SIZE"], namespace["CROP_SIZE"]) == (p.resize_size, p.crop_size)
    assert (namespace["MEAN"], namespace["STD"]) == (p.mean, p.std)


def test_the_split_is_the_apps(tmp_path):
    from tl_core.data import ingest
    from tl_core.data.split import make_split, subset_per_class

    folder = write_image_folder(tmp_path / "images", {"red": 7, "green": 12, "blue": 5})
    ds = ingest(folder, dest=tmp_path / "ds")
    config = _config(data=DataConfig(source=DATA, val_fraction=0.3, test_fraction=0.2, split_seed=5))
    namespace = script_namespace(config)
    from torchvision.datasets import ImageFolder

    image_folder = ImageFolder(str(folder))
    paths = [Path(p).relative_to(folder).as_posix() for p, _ in image_folder.samples]
    ours = namespace["split_per_class"](image_folder.targets, 0.3, 0.2, 5)
    app = make_split(ds, 0.3, 0.2, 5)
    for our_part, app_part in zip(ours, (app.train, app.val, app.test), strict=True):
        assert sorted(paths[i] for i in our_part) == sorted(
            f"{ds.records[i].label}/{Path(ds.records[i].path).name}" for i in app_part)
    assert len(ours[1]) == len(app.val) > 3
    # The data-size sweep's subset of the training images, too.
    assert namespace["TRAIN_FRACTION"] == 1.0
    for fraction in (0.05, 0.5):
        our_subset = namespace["subset_per_class"](ours[0], image_folder.targets, fraction, 5)
        app_subset = subset_per_class(app.train, ds.labels, fraction, 5)
        assert sorted(paths[i] for i in our_subset) == sorted(
            f"{ds.records[i].label}/{Path(ds.records[i].path).name}" for i in app_subset)
        assert len(our_subset) < len(ours[0])


def test_names_typed_by_the_user_stay_data():
    config = dataclasses.replace(CONFIGS["named"], name='x"""\nimport os; os.system("boom")  # ')
    classes = ['a"b', "c\n'd"]
    namespace = script_namespace(config, classes)
    assert namespace["RUN_NAME"] == config.name
    assert namespace["CLASSES"] == classes


# --------------------------------------------------------------------------------------------
# Run for real: the script in a subprocess (no tl_core), the command through the CLI
# --------------------------------------------------------------------------------------------
def tiny_folder(root: Path) -> Path:
    return write_image_folder(root, {"red": 8, "blue": 8}, size=(64, 64))


def run_script(script: str, data: Path, tmp_path: Path) -> tuple[dict, str]:
    """Run the script with the bundled MobileNetV2 weights in a private torch hub cache; return
    its JSON summary line and all of its output."""
    tmp_path.mkdir()
    (tmp_path / "train.py").write_text(script, encoding="utf-8")
    hub = tmp_path / "torch_home" / "hub" / "checkpoints"
    hub.mkdir(parents=True)
    bundled = bundled_weights_path("mobilenet_v2-b0353104.pth")
    if bundled is not None:
        (hub / bundled.name).symlink_to(bundled)
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env.update(TORCH_HOME=str(tmp_path / "torch_home"), CUDA_VISIBLE_DEVICES="")
    # cwd is not the repository, so `import tl_core` would fail there
    done = subprocess.run([sys.executable, "train.py", str(data), "--out", "best.pt"] if "--out" in script
                          else [sys.executable, "train.py", str(data)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = next(json.loads(line) for line in done.stdout.splitlines() if line.startswith("{"))
    return summary, done.stdout


def app_counts(config: RunConfig, num_classes: int) -> tuple[int, int]:
    from tl_core.model.registry import build_model

    model = build_model(config.model.backbone, num_classes, config.model.head, pretrained=False)
    apply_freeze(model, config.freeze)
    return (sum(p.numel() for p in model.parameters() if p.requires_grad),
            sum(p.numel() for p in model.parameters()))


def fine_tune_config(data: Path) -> RunConfig:
    """MobileNetV2 (pretrained when its bundled weights are installed), its top group fine-tuned
    with discriminative learning rates, SGD + one-cycle, one epoch."""
    pretrained = bundled_weights_path("mobilenet_v2-b0353104.pth") is not None
    return _config(data=DataConfig(source=str(data), augment="standard"), model=ModelConfig(pretrained=pretrained),
                   freeze=FreezePlan(mode="last_n", last_n=1, lr_range=(1e-4, 1e-3)),
                   train=TrainConfig(epochs=1, batch_size=4, optimizer="sgd", schedule="onecycle",
                                     label_smoothing=0.1, feature_cache=False))


def test_the_script_trains_the_apps_model_without_tl_core(tmp_path):
    data = tiny_folder(tmp_path / "images")
    config = fine_tune_config(data)
    summary, output = run_script(standalone_script(config, ["blue", "red"]), data, tmp_path / "script")
    trainable, total = app_counts(config, 2)
    assert (summary["trainable_params"], summary["total_params"]) == (trainable, total)
    assert trainable < total  # the last group and the head only
    assert summary["optimizer"] == "SGD" and summary["schedule"] == "onecycle"
    assert (summary["lr"], summary["epochs"], summary["batch_size"], summary["label_smoothing"]) == (1e-3, 1, 4, 0.1)
    assert summary["classes"] == ["blue", "red"] and "note:" not in output
    assert "epoch 1: train loss" in output and (tmp_path / "script" / "best.pt").is_file()


def test_the_script_trains_a_timm_vit_with_timm_alone(tmp_path):
    """timm builds the network in the script's own process; the ViT's top group (its last norm)
    and the head learn, as in the app."""
    data = tiny_folder(tmp_path / "images")
    config = _config(data=DataConfig(source=str(data)), model=ModelConfig(backbone="tiny_vit", pretrained=False),
                     freeze=FreezePlan(mode="last_n", last_n=1), train=TrainConfig(epochs=1, batch_size=8))
    script = standalone_script(config, ["blue", "red"])
    assert "import timm" in script and "timm.create_model" in script
    summary, output = run_script(script, data, tmp_path / "script")
    assert (summary["trainable_params"], summary["total_params"]) == app_counts(config, 2)
    assert "epoch 1: train loss" in output


@pytest.mark.slow
def test_the_command_trains_a_run_with_the_scripts_counts(tmp_path, workspace):
    from tl_core.events import RunStarted
    from tl_core.runs import RunStore

    data = tiny_folder(tmp_path / "images")
    config = fine_tune_config(data)
    argv = shlex.split(cli_command(config).replace("\\\n", ""))[3:]
    assert cli.main(["--workspace", str(workspace.root), *argv]) == 0
    (run,) = RunStore(workspace).list()
    assert run.config == config
    started = next(e for e in run.read_events()[0] if isinstance(e, RunStarted))
    assert (started.trainable_params, started.total_params) == app_counts(config, 2)


@pytest.mark.slow
def test_the_classical_script_fits_scikit_learn_on_frozen_features(tmp_path):
    data = tiny_folder(tmp_path / "images")
    config = _config(data=DataConfig(source=str(data)), model=ModelConfig(head=HeadConfig(kind="logreg"),
                                                                          pretrained=False))
    script = standalone_script(config)
    assert "from sklearn.linear_model import LogisticRegression" in script
    summary, output = run_script(script, data, tmp_path / "script")
    trainable, total = app_counts(config, 2)
    body = total - (1280 * 2 + 2)  # the app keeps the fitted classifier as a Linear head
    assert summary["trainable_params"] == 0 and summary["total_params"] == body
    assert summary["classifier"] == "LogisticRegression(max_iter=2000, random_state=0)"
    assert "val acc" in output


@pytest.mark.parametrize(("name", "classifier"), [("nearest_mean", "NearestCentroid()"),
                                                  ("knn", "KNeighborsClassifier(algorithm='brute', n_neighbors=3)")])
def test_the_prototype_and_neighbour_scripts_fit_the_apps_classifier(name, classifier):
    config = CONFIGS[name]
    script = standalone_script(config)
    assert f"from sklearn.neighbors import {classifier.split('(')[0]}" in script
    assert "--neighbours 3" in cli_command(config) if name == "knn" else "--neighbours" not in cli_command(config)
    pipeline = script_namespace(config)["make_classifier"]()
    assert repr(pipeline[-1]) == classifier and type(pipeline[0]).__name__ == "StandardScaler"


def test_every_generated_script_is_clean_python(tmp_path):
    """pyflakes (through ruff) also reads the branches a test run does not take."""
    pytest.importorskip("ruff")
    scripts = {name: standalone_script(config, ["a"]) for name, config in CONFIGS.items()}
    scripts.update({spec.name: standalone_script(_config(model=ModelConfig(backbone=spec.name)))
                    for spec in list_backbones()})
    for name, script in scripts.items():
        (tmp_path / f"{name.replace('/', '--')}.py").write_text(script, encoding="utf-8")  # timm/<name> too
    done = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--isolated", "--select", "F,E9,I",
                           str(tmp_path)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout


def test_the_zero_shot_script_makes_the_apps_head_from_the_same_words():
    """The script's zero_shot_head (open_clip alone) and the engine's, from the same text tower:
    the same prompts, templates, temperature, hence the same weights."""
    from tests.tiny_foundation import add_tiny_clip_config
    from tl_core.model import zero_shot

    add_tiny_clip_config()
    head = HeadConfig(kind="zero_shot", class_words=(("red", "crimson, scarlet"),))
    config = _config(model=ModelConfig(backbone="tiny_clip", head=head), train=TrainConfig(epochs=0))
    namespace = script_namespace(config, ["green", "red"])
    assert namespace["HEAD"] == "zero_shot" and namespace["CLASS_WORDS"] == {"red": "crimson, scarlet"}
    spec = get_backbone("tiny_clip")
    torch.manual_seed(0)
    tower = spec.build().eval()
    namespace["load_backbone"] = lambda: tower
    classes = ["green", "red", "colts-foot"]
    ours = zero_shot.head_from_text(tower, spec, zero_shot.class_words(head, classes))
    theirs = namespace["zero_shot_head"](classes)
    torch.testing.assert_close(theirs.weight, ours.weight)
    assert torch.count_nonzero(theirs.bias) == 0
