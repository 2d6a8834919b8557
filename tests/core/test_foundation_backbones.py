"""timm and open_clip backbones: the curated entries against their libraries' own models, the
offline weights path and its refusals, any timm name, and the zero-shot head's mechanism.

No weights can be downloaded here: curated models are built on the meta device (shapes only), and
the plumbing runs on the tiny test models of tests/tiny_foundation.py with random weights saved as
the files the lookup reads.
"""

from __future__ import annotations

import hashlib
import json
import pickle
from collections import Counter
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from tests import tiny_foundation
from tl_core.config import HeadConfig
from tl_core.errors import ConfigError, WeightsRejected
from tl_core.model import open_clip_source, weights_lookup, zero_shot
from tl_core.model.registry import build_model, get_backbone, list_backbones, transfer_model_from
from tl_core.model.weights import import_weights, load_pretrained_state_dict, weights_status

CURATED = ["dinov2_vits14", "dinov2_vitb14", "convnextv2_nano", "efficientnetv2_s", "mobileclip_s1",
           "clip_vit_b32", "siglip_vit_b16"]
TINY = ["tiny_vit", "tiny_effnet", "tiny_clip"]


@pytest.fixture
def weights_folder(tmp_path, monkeypatch) -> Path:
    """An empty TL_STUDIO_WEIGHTS folder, offline, and an empty Hugging Face cache."""
    import huggingface_hub.constants

    folder = tmp_path / "weights"
    folder.mkdir()
    monkeypatch.setenv(weights_lookup.ENV_WEIGHTS, str(folder))
    monkeypatch.setenv(weights_lookup.ENV_OFFLINE, "1")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(tmp_path / "hf"))
    return folder


def _covered_once(model) -> bool:
    counts = Counter(id(p) for _, modules in model.groups() for m in modules for p in m.parameters())
    return set(counts) == {id(p) for p in model.parameters()} and set(counts.values()) == {1}


# ----------------------------------------------------------------------------- the curated list


def test_the_curated_list_names_each_family_with_its_library():
    specs = {s.name: s for s in list_backbones()}
    for name, source in [("dinov2_vits14", "timm"), ("dinov2_vitb14", "timm"), ("convnextv2_nano", "timm"),
                         ("efficientnetv2_s", "timm"), ("mobileclip_s1", "open_clip"), ("clip_vit_b32", "open_clip"),
                         ("siglip_vit_b16", "open_clip")]:
        spec = specs[name]
        assert spec.source == source and spec.description and spec.accuracy_source
        assert 50 < spec.top1 < 100 and spec.accuracy in ("top-1", "linear probe", "zero-shot")
        assert spec.zero_shot == (source == "open_clip")
        assert spec.weights_url.startswith("https://huggingface.co/")
    assert specs["dinov2_vits14"].accuracy == "linear probe" and specs["clip_vit_b32"].accuracy == "zero-shot"


@pytest.mark.parametrize("name", CURATED)
def test_a_curated_entry_matches_its_librarys_model(name):
    """Built on the meta device: the spec's numbers are the model's own, its groups cover every
    parameter once, its features are as wide as said, its preprocessing is the library's."""
    spec = get_backbone(name)
    with torch.device("meta"):
        source = spec.build()
        assert sum(p.numel() for p in source.parameters()) == spec.option("file_params", spec.num_params)
        model = transfer_model_from(spec, source, 3, HeadConfig(), pretrained=False)
    size = spec.preprocess.crop_size
    with FlopCounterMode(display=False) as flops:
        features = model.body(torch.empty(1, 3, size, size, device="meta"))
    assert features.shape == (1, spec.feature_dim)
    assert flops.get_total_flops() / 2e9 == pytest.approx(spec.gflops, rel=0.02)
    assert _covered_once(model) and model.group_names[-1] == "head" and 4 <= len(model.group_names) <= 8
    if spec.source == "open_clip":
        import open_clip

        assert sum(p.numel() for p in model.body.parameters()) == spec.num_params
        model_name, tag = spec.source_name.split("/")
        assert (model_name, tag) in open_clip.list_pretrained()
        published = open_clip.get_pretrained_cfg(model_name, tag)
        assert tuple(published["mean"]) == spec.preprocess.mean and tuple(published["std"]) == spec.preprocess.std
        assert published["interpolation"] == spec.preprocess.interpolation
        assert open_clip.get_model_config(model_name)["vision_cfg"].get("image_size", 224) == size
    else:
        import timm
        from timm.models import get_pretrained_cfg

        assert spec.source_name in timm.list_models(pretrained=True)
        published = get_pretrained_cfg(spec.source_name)
        assert published.mean == spec.preprocess.mean and published.std == spec.preprocess.std
        assert published.interpolation == spec.preprocess.interpolation


def test_dinov2_features_are_the_class_token_and_the_mean_patch_token():
    spec = get_backbone("tiny_vit")
    model = transfer_model_from(spec, spec.build(), 2, HeadConfig(), pretrained=False).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        tokens = model.body.vit.forward_features(x)  # after the last norm
        features = model.body(x)
    prefix = model.body.vit.num_prefix_tokens
    torch.testing.assert_close(features, torch.cat([tokens[:, 0], tokens[:, prefix:].mean(1)], dim=1))
    assert tokens.shape[1] == prefix + (64 // 16) ** 2  # the position embedding follows the 64 px crop


# ----------------------------------------------------------------------------- weights, offline


@pytest.mark.parametrize("name", TINY)
def test_a_saved_weights_file_is_found_offline_and_loaded_exactly(name, weights_folder):
    assert not weights_status(name).available and weights_status(name).source is None  # offline: no download
    path = tiny_foundation.save_weights(name, weights_folder, seed=3)
    assert path.name == get_backbone(name).weights_filename and path.suffix == ".safetensors"
    status = weights_status(name)
    assert status.available and status.source == "weights_dir" and status.path == path
    model = build_model(name, num_classes=3)
    state, _ = load_pretrained_state_dict(name)
    body_state = model.body.state_dict()
    assert model.pretrained and _covered_once(model)
    # every loaded tensor is in the model, unchanged (the body reuses the library's modules)
    loaded = {id(t): t for t in body_state.values()}
    assert len(loaded) > 0
    some_key = next(k for k in state if "weight" in k)
    matches = [v for v in body_state.values() if v.shape == state[some_key].shape and torch.equal(v, state[some_key])]
    assert matches, f"{some_key} was not loaded"


def _hub_cache_file(hf_root: Path, repo_id: str, filename: str, data: bytes, blob_name: str | None = None) -> Path:
    """A file in the Hugging Face cache's layout: blobs/<sha256>, snapshots/<rev>/<file> -> blob."""
    repo = hf_root / ("models--" + repo_id.replace("/", "--"))
    blob = repo / "blobs" / (blob_name or hashlib.sha256(data).hexdigest())
    blob.parent.mkdir(parents=True)
    blob.write_bytes(data)
    revision = "0" * 40
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(revision)
    snapshot = repo / "snapshots" / revision / filename
    snapshot.parent.mkdir(parents=True)
    snapshot.symlink_to(Path("../..") / "blobs" / blob.name)
    return snapshot


def test_the_hugging_face_cache_is_read_and_its_checksum_checked(weights_folder, tmp_path):
    import huggingface_hub.constants

    data = tiny_foundation.save_weights("tiny_vit", tmp_path / "elsewhere").read_bytes()
    hf_root = Path(huggingface_hub.constants.HF_HUB_CACHE)
    cached = _hub_cache_file(hf_root, "timm/test_vit.r160_in1k", "model.safetensors", data)
    status = weights_status("tiny_vit")
    assert status.available and status.source == "hub_cache" and status.path == cached
    assert build_model("tiny_vit", 2).pretrained

    # the same file under a blob name that is not its sha256: damaged or replaced, refused
    import shutil

    shutil.rmtree(hf_root)
    _hub_cache_file(hf_root, "timm/test_vit.r160_in1k", "model.safetensors", data, blob_name="ab" * 32)
    status = weights_status("tiny_vit")
    assert not status.available and "checksum does not match" in status.how_to


def test_a_users_file_is_refused_for_a_wrong_key_a_wrong_shape_a_pickle_or_a_bad_name(weights_folder, tmp_path):
    from safetensors.torch import save_file

    spec = get_backbone("tiny_vit")
    good = tiny_foundation.save_weights("tiny_vit", tmp_path / "good")
    state = tiny_foundation.load_state(good)

    renamed = dict(state)
    renamed["not_a_layer.weight"] = renamed.pop(next(iter(renamed)))
    path = tmp_path / "renamed" / spec.weights_filename
    path.parent.mkdir()
    save_file(renamed, str(path))
    with pytest.raises(WeightsRejected, match="keys and shapes.*1 missing.*1 unexpected"):
        import_weights(path, dest_dir=weights_folder)

    reshaped = dict(state)
    key = next(k for k, v in reshaped.items() if v.ndim == 2)
    reshaped[key] = torch.zeros(reshaped[key].shape[0] + 1, reshaped[key].shape[1])
    path = tmp_path / "reshaped" / spec.weights_filename
    path.parent.mkdir()
    save_file(reshaped, str(path))
    with pytest.raises(WeightsRejected, match="of another shape"):
        import_weights(path, dest_dir=weights_folder)

    class RunsCode:
        def __reduce__(self):
            return (print, ("this would run",))

    pickled = tmp_path / "pickled" / spec.weights_filename  # a pickle under a safetensors name
    pickled.parent.mkdir()
    pickled.write_bytes(pickle.dumps({"w": RunsCode()}))
    with pytest.raises(WeightsRejected, match="safe load"):
        import_weights(pickled, dest_dir=weights_folder)

    with pytest.raises(WeightsRejected, match="file name"):
        import_weights(good, "model.safetensors", dest_dir=weights_folder)
    assert list(weights_folder.iterdir()) == []  # nothing refused was kept

    saved = import_weights(good, dest_dir=weights_folder)
    assert saved == weights_folder / spec.weights_filename and weights_status("tiny_vit").available


def test_a_pth_pickle_that_would_run_code_is_refused(weights_folder, tmp_path):
    """torchvision's own format for the same check: torch.load(weights_only=True) refuses it."""
    import dataclasses

    from tl_core.model import registry

    class RunsCode:
        def __reduce__(self):
            return (print, ("this would run",))

    data = pickle.dumps({"w": RunsCode()})
    name = f"tiny_vit-{hashlib.sha256(data).hexdigest()[:8]}.pth"  # its name carries its own hash
    spec = get_backbone("tiny_vit")
    patched = dataclasses.replace(spec, weights=dataclasses.replace(spec.weights, filename=name))
    with pytest.MonkeyPatch.context() as patch:
        patch.setitem(registry._REGISTRY, "tiny_vit", patched)
        with pytest.raises(WeightsRejected, match="safe load"):
            import_weights(data, name, dest_dir=weights_folder)


# ----------------------------------------------------------------------------- any timm name


def test_any_timm_name_is_checked_and_added_and_a_wrong_one_gets_close_matches(monkeypatch):
    from tl_core.model import registry

    monkeypatch.setattr(registry, "_REGISTRY", dict(registry._REGISTRY))  # the added name goes with the test
    spec = get_backbone("timm/test_convnext")  # an architecture: timm's default pretrained tag
    assert spec.source == "timm" and spec.source_name.startswith("test_convnext.")
    assert spec.feature_dim > 0 and spec.num_params > 0 and spec.gflops > 0
    assert get_backbone("timm/test_convnext") is spec and spec in list_backbones()
    model = build_model("timm/test_convnext", 2, pretrained=False).eval()
    with torch.no_grad():
        assert model(torch.randn(1, 3, 64, 64)).shape == (1, 2)
    with pytest.raises(ConfigError, match="test_convnext"):
        get_backbone("timm/test_convnextt")
    with pytest.raises(ConfigError, match="Did you mean dinov2_vits14"):
        get_backbone("dinov2_vits")


# ----------------------------------------------------------------------------- zero-shot


def test_class_words_come_from_the_user_or_the_folder_name():
    head = HeadConfig(kind="zero_shot", class_words=(("cls_03", "coltsfoot, yellow wildflower"),))
    assert zero_shot.class_words(head, ["Golden_Retriever", "cls_03", "colts-foot"]) == [
        ["Golden Retriever"], ["coltsfoot", "yellow wildflower"], ["colts foot"]]


def test_zero_shot_predicts_the_class_whose_text_is_the_images_embedding(monkeypatch):
    """A text tower whose embedding of class "b"'s prompts equals the image's embedding, and of
    class "a"'s its opposite: the head predicts "b", from prompts built of the edited words."""
    import open_clip

    spec = get_backbone("tiny_clip")
    model = spec.build().eval()
    body = transfer_model_from(spec, spec.build(), 2, HeadConfig(), pretrained=False).body.eval()
    body.load_state_dict({f"visual.{k}": v for k, v in model.visual.state_dict().items()})
    x = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        image = body(x)[0]
    prompts_seen: list[str] = []
    monkeypatch.setattr(open_clip, "get_tokenizer", lambda name: lambda prompts: prompts_seen.extend(prompts) or prompts)
    monkeypatch.setattr(model, "encode_text",
                        lambda prompts: torch.stack([image * 3 if "banana" in p else -image for p in prompts]))
    head = zero_shot.head_from_text(model, spec, zero_shot.class_words(
        HeadConfig(kind="zero_shot", class_words=(("b", "banana"),)), ["a", "b"]))
    with torch.no_grad():
        logits = head(body(x))
    assert logits.argmax(1).item() == 1
    scale = float(model.logit_scale.detach().exp())
    torch.testing.assert_close(logits[0], torch.tensor([-scale, scale]), rtol=1e-4, atol=1e-4)
    assert prompts_seen == [t.format("a") for t in open_clip_source.TEMPLATES] + \
        [t.format("banana") for t in open_clip_source.TEMPLATES]


def test_zero_shot_needs_an_image_text_backbone():
    with pytest.raises(ConfigError, match="text tower"):
        zero_shot.zero_shot_head("tiny_vit", HeadConfig(kind="zero_shot"), ["a", "b"], pretrained=False)


# ----------------------------------------------------------------------------- the command line


def test_the_cli_lists_the_families_and_trains_them(workspace, image_folder, weights_folder, capsys):
    from tl_core.cli.parser import main
    from tl_core.runs import RunStore

    assert main(["backbones", "--json"]) == 0
    rows = {r["name"]: r for r in json.loads(capsys.readouterr().out)}
    for name in CURATED:
        assert rows[name]["source"] in ("timm", "open_clip") and rows[name]["weights"] == "missing"
    assert rows["dinov2_vits14"]["acc_kind"] == "linear probe" and rows["resnet18"]["source"] == "torchvision"

    ws = ["--workspace", str(workspace.root)]
    common = ["--epochs", "1", "--augment", "none", "--batch-size", "8"]
    assert main([*ws, "train", str(image_folder), "--backbone", "tiny_vit", "--random-init", *common]) == 0
    tiny_foundation.save_weights("tiny_clip", weights_folder)
    assert main([*ws, "train", str(image_folder), "--backbone", "tiny_clip", "--head", "zero_shot", "--epochs", "0",
                 "--class-words", "red=crimson, scarlet", "--augment", "none"]) == 0
    runs = RunStore(workspace).list()
    zero = next(r for r in runs if r.config.model.head.kind == "zero_shot")
    assert zero.status().state == "finished" and zero.config.train.epochs == 0
    assert zero.config.model.head.class_words == (("red", "crimson, scarlet"),)
    assert len(zero.read_metrics()["history"]) == 1
    vit = next(r for r in runs if r.config.model.backbone == "tiny_vit")
    assert vit.status().state == "finished" and not vit.config.model.pretrained


def test_listing_backbones_imports_neither_timm_nor_open_clip():
    """The registry knows the curated entries without their libraries: pages and workers that
    never build a timm or open_clip model do not pay for importing them."""
    import subprocess
    import sys

    code = ("import sys, tl_core.model.registry as r; r.list_backbones(); "
            "print(sorted(m for m in ('timm', 'open_clip') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_siglips_tokenizer_missing_is_said_with_what_to_install(monkeypatch):
    import open_clip

    def no_transformers(name):
        raise ModuleNotFoundError("No module named 'transformers'")

    monkeypatch.setattr(open_clip, "get_tokenizer", no_transformers)
    with pytest.raises(ConfigError, match="pip install transformers"):
        open_clip_source.text_embeddings(get_backbone("siglip_vit_b16"), None, [["cat"], ["dog"]])


def test_a_head_the_backbone_cannot_have_or_bad_words_fail_before_a_run_folder_exists(workspace, image_folder, capsys):
    from tl_core.cli.parser import main
    from tl_core.runs import RunStore

    ws = ["--workspace", str(workspace.root)]
    assert main([*ws, "train", str(image_folder), "--backbone", "tiny_vit", "--head", "zero_shot", "--epochs", "0"]) == 2
    assert "without a text tower" in capsys.readouterr().err
    assert main([*ws, "train", str(image_folder), "--backbone", "tiny_clip", "--head", "zero_shot",
                 "--class-words", "red"]) == 2
    assert capsys.readouterr().err.startswith("error: --class-words takes CLASS=WORDS")
    assert RunStore(workspace).list() == []
