"""Export: every format agrees with PyTorch on real photos, and the standalone predict.py prints
the engine's labels."""

from __future__ import annotations

import io
import json
import subprocess
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tl_core.config import DataConfig, ModelConfig, RunConfig
from tl_core.errors import ConfigError
from tl_core.export.bundle import PROB_TOLERANCE, export_bundle, export_model, zip_bundle
from tl_core.model.registry import build_model, get_backbone
from tl_core.runs import RunStore

BACKBONE = "mobilenet_v3_small"  # the smallest registered backbone; random init (offline)
CLASSES = ["cat", "coffee", "other"]


def confident_model() -> torch.nn.Module:
    """A random-init TransferModel whose head gives clear winners, so that 'same class' is a
    meaningful check and not decided by rounding between near-equal probabilities."""
    torch.manual_seed(0)
    model = build_model(BACKBONE, len(CLASSES), pretrained=False).eval()
    with torch.no_grad():
        for p in model.head.parameters():
            p.normal_(0, 0.5)
    return model


@pytest.fixture(scope="module")
def exported(tmp_path_factory, real_photos):
    """One run with a checkpoint, exported once through ``export_bundle``; plus the image files."""
    root = tmp_path_factory.mktemp("export")
    from tl_core.workspace import Workspace

    store = RunStore(Workspace(root / "home"))
    config = RunConfig(data=DataConfig(source="photos"), name="cats vs coffee",
                       model=ModelConfig(backbone=BACKBONE, pretrained=False))
    run = store.create(config)
    model = confident_model()
    run.write_classes(CLASSES)
    run.save_checkpoint("best", {"model": model.state_dict()})
    run.write_metrics({"best_epoch": 3, "val": {"accuracy": 0.875, "loss": 0.4, "n": 8}})

    images = root / "images"
    images.mkdir()
    photos = {"chelsea.jpg": real_photos["chelsea"], "coffee.png": real_photos["coffee"]}
    # A big JPEG (decoded in draft mode) and one whose EXIF says "rotate 90": both paths of the decoder.
    photos["big.jpg"] = real_photos["coffee"].resize((1200, 800))
    for name, photo in photos.items():
        photo.save(images / name)
    exif = Image.Exif()
    exif[0x0112] = 6
    real_photos["chelsea"].save(images / "rotated.jpg", exif=exif)
    paths = sorted(images.iterdir())

    report = export_bundle(run, root / "bundle")
    return {"run": run, "report": report, "dir": root / "bundle", "paths": paths, "model": model}


def engine_probs(model, paths, backbone: str = BACKBONE) -> np.ndarray:
    """What the app predicts: the training decode (tl_core.data) + the evaluation path."""
    from tl_core.data import decode_square
    from tl_core.evaluation.metrics import predict_tensors

    pre = get_backbone(backbone).preprocess
    batch = torch.stack([torch.from_numpy(np.array(decode_square(p, pre.resize_size))) for p in paths])
    return predict_tensors(model, batch, pre).softmax(1).numpy()


def test_onnx_and_torchscript_match_pytorch_on_real_photos(exported):
    report = exported["report"]
    assert report.ok, report.to_dict()
    assert {c.format for c in report.checks} == {"torchscript", "onnx"}
    for check in report.checks:
        assert check.passed and check.same_argmax and check.max_abs_diff < PROB_TOLERANCE
        assert {"chelsea", "coffee"} <= set(check.images)
    assert report.preprocessing_matches_engine is True
    names = {p.name for p in exported["dir"].iterdir()}
    assert {"model.onnx", "model_torchscript.pt", "model.safetensors", "labels.json", "preprocess.json",
            "MODEL_CARD.md", "predict.py", "export.json"} <= names
    assert json.loads((exported["dir"] / "labels.json").read_text()) == CLASSES
    assert json.loads((exported["dir"] / "preprocess.json").read_text()) == get_backbone(BACKBONE).preprocess.to_dict()


@pytest.mark.parametrize("model_file", ["model.onnx", "model_torchscript.pt"])
def test_standalone_predict_script_prints_the_engines_labels(exported, model_file):
    bundle, paths = exported["dir"], exported["paths"]
    script = (bundle / "predict.py").read_text()
    assert "tl_core" not in script.replace("tl_core.data", "")  # only a comment names the source
    # -I: isolated mode, nothing from this repository is importable.
    out = subprocess.run([sys.executable, "-I", "predict.py", "--json", "--top-k", "3", "--model", model_file,
                          *map(str, paths)], cwd=bundle, capture_output=True, text=True, timeout=300, check=True)
    results = json.loads(out.stdout)
    expected = engine_probs(exported["model"], paths)
    assert [r["path"] for r in results] == [str(p) for p in paths]
    assert [r["label"] for r in results] == [CLASSES[i] for i in expected.argmax(1)]
    got = np.array([[dict(r["top_k"])[c] for c in CLASSES] for r in results])
    np.testing.assert_allclose(got, expected, atol=PROB_TOLERANCE)
    # The plain output: one tab-separated line per image.
    text = subprocess.run([sys.executable, "-I", "predict.py", str(paths[0])], cwd=bundle,
                          capture_output=True, text=True, timeout=300, check=True).stdout
    assert text.split("\t")[:2] == [str(paths[0]), results[0]["label"]]


def test_predict_script_is_the_packages_module_copied_byte_for_byte(exported):
    import tl_core.bundle_predict as bundle_predict
    from tl_core.data import cache, safety

    assert (exported["dir"] / "predict.py").read_bytes() == Path(bundle_predict.__file__).read_bytes()
    assert callable(bundle_predict.main) and callable(bundle_predict.model_input)
    # One copy of the decoder: the app decodes with the very functions the bundle ships.
    assert cache.decode_square is bundle_predict.decode_square
    assert safety.open_rgb is bundle_predict.open_rgb and safety.to_rgb is bundle_predict.to_rgb


def test_the_decoder_module_imports_neither_torch_nor_tl_core():
    """predict.py runs where TL Studio is not installed, and checking an upload does not load torch."""
    code = ("import sys; import tl_core.bundle_predict, tl_core.data.safety; "
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "False"
    source = Path(__file__).parents[2].joinpath("tl_core", "bundle_predict.py").read_text()
    assert "from tl_core" not in source and "import tl_core" not in source and "from ." not in source


def test_predict_script_runs_on_python_3_8():
    """The bundle goes to machines without TL Studio, often with an older Python: vermin (a
    static minimum-version checker) finds nothing in it that needs more than 3.8."""
    script = Path(__file__).parents[2].joinpath("tl_core", "bundle_predict.py")
    vermin = "import sys, vermin; sys.argv[0] = 'vermin'; sys.exit(vermin.main())"
    out = subprocess.run([sys.executable, "-c", vermin, "-q", "--no-tips", "--violations", "-t=3.8-", str(script)],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stdout + out.stderr


def test_predict_script_without_torch_or_simplejpeg_gives_the_same_labels(exported):
    """An ONNX-only install: PIL decodes the same pixels and resizes within a grey level of torch's
    kernel, so the labels are the engine's and the probabilities barely move."""
    bundle, paths = exported["dir"], exported["paths"]
    runner = ("import runpy, sys; sys.modules['torch'] = sys.modules['simplejpeg'] = None; "
              "sys.argv = ['predict.py', *sys.argv[1:]]; runpy.run_path('predict.py', run_name='__main__')")
    out = subprocess.run([sys.executable, "-I", "-c", runner, "--json", "--top-k", "3", "--model", "model.onnx",
                          *map(str, paths)], cwd=bundle, capture_output=True, text=True, timeout=300, check=True)
    results = json.loads(out.stdout)
    expected = engine_probs(exported["model"], paths)
    assert [r["label"] for r in results] == [CLASSES[i] for i in expected.argmax(1)]
    got = np.array([[dict(r["top_k"])[c] for c in CLASSES] for r in results])
    np.testing.assert_allclose(got, expected, atol=1e-3)


def test_safetensors_weights_rebuild_the_same_model(exported, real_photos):
    from safetensors import safe_open
    from safetensors.torch import load_model

    path = exported["dir"] / "model.safetensors"
    with safe_open(str(path), "pt") as handle:
        meta = handle.metadata()
    assert json.loads(meta["classes"]) == CLASSES and meta["backbone"] == BACKBONE
    rebuilt = build_model(BACKBONE, len(CLASSES), pretrained=False).eval()
    load_model(rebuilt, str(path))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        torch.testing.assert_close(rebuilt(x), exported["model"](x))


def test_model_card_states_data_config_metrics_checks_and_limits(exported):
    card = (exported["dir"] / "MODEL_CARD.md").read_text()
    assert card.startswith("# Model card: cats vs coffee")
    for needle in ("`cat`, `coffee`, `other`", BACKBONE, "random initialisation", "accuracy 0.8750",
                   "Known limits", "no 'none of these' answer", "onnx: max |probability difference|",
                   "identical to the app's: yes", "shorter side resized to 256"):
        assert needle in card, needle


def test_zip_bundle_holds_every_file_under_one_folder(exported):
    data = zip_bundle(exported["dir"])
    with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
        assert sorted(names) == sorted(f"bundle/{p.name}" for p in exported["dir"].iterdir())
        assert archive.read("bundle/labels.json") == (exported["dir"] / "labels.json").read_bytes()
    assert zip_bundle(exported["dir"]) == data  # same bytes each time: fixed timestamps


def test_a_subset_of_formats_and_unknown_formats(tmp_path):
    model = confident_model()
    pre = get_backbone(BACKBONE).preprocess
    noise = Image.fromarray(np.random.default_rng(0).integers(0, 256, (240, 320, 3), dtype=np.uint8))
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "model.onnx").write_bytes(b"from an earlier export")
    report = export_model(model, CLASSES, pre, tmp_path / "b", formats=("safetensors",), check_images=[noise])
    assert report.ok and report.checks == [] and report.preprocessing_matches_engine
    assert not (tmp_path / "b" / "model.onnx").exists() and (tmp_path / "b" / "model.safetensors").exists()
    with pytest.raises(ConfigError, match="Unknown export format"):
        export_model(model, CLASSES, pre, tmp_path / "c", formats=("tflite",))


def test_a_model_on_another_device_is_left_untouched(tmp_path):
    model = confident_model().train()
    export_model(model, CLASSES, get_backbone(BACKBONE).preprocess, tmp_path / "b", formats=("safetensors",),
                 check_images=[Image.new("RGB", (300, 260), (90, 120, 30))])
    assert model.training  # export worked on a copy in eval mode
    assert Path(tmp_path / "b" / "predict.py").exists()


def test_predict_script_agrees_with_the_apps_predict_function(exported):
    from tl_core.evaluation.metrics import predict

    bundle, paths = exported["dir"], exported["paths"]
    out = subprocess.run([sys.executable, "-I", "predict.py", "--json", *map(str, paths)], cwd=bundle,
                         capture_output=True, text=True, timeout=300, check=True)
    app = predict(exported["run"], paths, top_k=1)
    assert [r["label"] for r in json.loads(out.stdout)] == [top[0][0] for top in app]


def test_a_knn_head_exports_with_parity_and_its_safetensors_rebuild_it(tmp_path, real_photos):
    """A k-nearest-neighbours head keeps its training features as buffers: TorchScript and ONNX
    vote as PyTorch does on real photos, and the weights file rebuilds it into a fresh model."""
    from safetensors.torch import load_model

    from tl_core.config import HeadConfig
    from tl_core.model.classical import fit_classical
    from tl_core.model.preprocess import decode, model_inputs

    head = HeadConfig(kind="knn", neighbours=3)
    torch.manual_seed(0)
    model = build_model(BACKBONE, len(CLASSES), head, pretrained=False).eval()
    pre = get_backbone(BACKBONE).preprocess
    photos = tmp_path / "photos"
    photos.mkdir()
    rng = np.random.default_rng(0)
    paths, labels = [], []
    for label, name in enumerate(("chelsea", "coffee")):  # crops of each photo as its class's images
        photo = real_photos[name]
        for i in range(4):
            w, h = photo.size
            s = int(min(w, h) * rng.uniform(0.5, 0.9))
            x, y = int(rng.integers(0, w - s)), int(rng.integers(0, h - s))
            paths.append(photos / f"{name}{i}.png")
            photo.crop((x, y, x + s, y + s)).save(paths[-1])
            labels.append(label)
    with torch.no_grad():
        features = model.body(model_inputs(decode(paths, pre), pre))
    model.head = fit_classical("knn", features, torch.tensor(labels), len(CLASSES), neighbours=3)

    checks = [real_photos["chelsea"], real_photos["coffee"], real_photos["coffee"].resize((500, 300))]
    report = export_model(model, CLASSES, pre, tmp_path / "b", check_images=checks)
    assert report.ok, report.to_dict()
    assert {c.format for c in report.checks} == {"torchscript", "onnx"}
    assert all(c.passed and c.same_argmax for c in report.checks)

    rebuilt = build_model(BACKBONE, len(CLASSES), head, pretrained=False).eval()
    load_model(rebuilt, str(tmp_path / "b" / "model.safetensors"))
    x = torch.randn(2, 3, 224, 224)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


# ---------------------------------------------------------------------------------------------
# timm and open_clip backbones: traced, checked, and predicted with their own preprocessing
# ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("backbone", ["tiny_vit", "tiny_effnet", "tiny_clip"])
def test_timm_and_open_clip_models_export_and_predict_with_their_own_preprocessing(backbone, tmp_path, real_photos):
    torch.manual_seed(0)
    model = build_model(backbone, len(CLASSES), pretrained=False).eval()
    with torch.no_grad():
        for p in model.head.parameters():
            p.normal_(0, 0.5 if backbone != "tiny_clip" else 20.0)  # CLIP's features are unit vectors
    paths = []
    for name in ("chelsea", "coffee"):
        paths.append(tmp_path / f"{name}.jpg")
        real_photos[name].save(paths[-1])
    report = export_model(model, CLASSES, get_backbone(backbone).preprocess, tmp_path / "bundle",
                          metadata={"backbone": backbone}, check_images=paths)
    assert report.ok, report.to_dict()
    assert {c.format for c in report.checks} == {"torchscript", "onnx"}
    preprocess = json.loads((tmp_path / "bundle" / "preprocess.json").read_text())
    assert preprocess == get_backbone(backbone).preprocess.to_dict()
    out = subprocess.run([sys.executable, "-I", "predict.py", "--json", "--top-k", "3", *map(str, paths)],
                         cwd=tmp_path / "bundle", capture_output=True, text=True, timeout=300, check=True)
    results = json.loads(out.stdout)
    expected = engine_probs(model, paths, backbone)
    assert [r["label"] for r in results] == [CLASSES[i] for i in expected.argmax(1)]
    got = np.array([[dict(r["top_k"])[c] for c in CLASSES] for r in results])
    np.testing.assert_allclose(got, expected, atol=PROB_TOLERANCE)


def test_a_trained_timm_vit_run_exports_with_checks_that_pass(trained_vit_run_dir, tmp_path):
    from tl_core.runs import Run

    run = Run(trained_vit_run_dir)
    assert run.config.model.backbone == "tiny_vit"
    report = export_bundle(run, tmp_path / "bundle")
    assert report.ok, report.to_dict()
    assert len(report.checks) == 2 and all(len(c.images) > 2 for c in report.checks)  # photos + its own images
    card = (tmp_path / "bundle" / "MODEL_CARD.md").read_text()
    assert "tiny_vit" in card and "crop 64x64" in card
