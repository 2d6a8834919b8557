"""Ship a trained model: TorchScript, ONNX and safetensors files, labels, preprocessing, a model
card and a standalone ``predict.py``, each export checked against PyTorch on real images.

``export_model`` does the work from (model, classes, preprocess, metadata); ``export_bundle`` is
the thin wrapper over a ``Run``. ``zip_bundle`` packs a bundle for a download button.
"""

from __future__ import annotations

import copy
import importlib.util
import io
import json
import tempfile
import time
import warnings
import zipfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from torch import nn

from tl_core import atomic
from tl_core.errors import ConfigError
from tl_core.markup import code_fence, code_span, escape_markdown
from tl_core.training.trackers import log_export

FORMATS = ("torchscript", "onnx", "safetensors")
MODEL_FILES = {"torchscript": "model_torchscript.pt", "onnx": "model.onnx", "safetensors": "model.safetensors"}
ONNX_OPSET = 17
# Probabilities of an exported model may differ from PyTorch's by float rounding only.
PROB_TOLERANCE = 1e-4


@dataclass(frozen=True)
class ParityCheck:
    format: str  # "torchscript" | "onnx"
    images: list[str]  # what the check ran on
    max_abs_diff: float  # largest |p_export - p_torch| over all images and classes
    same_argmax: bool  # every image gets the same class from both
    tolerance: float
    passed: bool


@dataclass
class ExportReport:
    out_dir: Path
    files: list[str] = field(default_factory=list)  # written, relative to out_dir
    checks: list[ParityCheck] = field(default_factory=list)
    preprocessing_matches_engine: bool | None = None  # predict.py's inputs == the app's, bit for bit
    errors: dict[str, str] = field(default_factory=dict)  # format -> why it could not be exported
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)  # for the user, not failures (e.g. MLflow unreachable)

    @property
    def ok(self) -> bool:
        return (not self.errors and all(c.passed for c in self.checks)
                and self.preprocessing_matches_engine is not False)

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["out_dir"], data["ok"] = str(self.out_dir), self.ok
        return data


# ----------------------------------------------------------------------------- predict.py
# The standalone script is a module of this package (tl_core/bundle_predict.py, where the app's
# decoder lives too), copied byte for byte into every bundle as predict.py.
PREDICT_SOURCE = Path(__file__).resolve().parents[1] / "bundle_predict.py"


def _load_script(path: Path):
    spec = importlib.util.spec_from_file_location(f"_tl_exported_predict_{abs(hash(path))}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- the bundle
def _check_image_files(images: Sequence[Image.Image | Path | str], folder: Path) -> tuple[list[Path], list[str]]:
    """Check images as files (PIL images are saved losslessly), and names for the report."""
    paths, names = [], []
    for i, image in enumerate(images):
        if isinstance(image, Image.Image):
            path = folder / f"check_{i}.png"
            image.convert("RGB").save(path)
            paths.append(path)
            names.append(getattr(image, "filename", "") or f"image {i}")
        else:
            paths.append(Path(image))
            names.append(Path(image).name)
    return paths, names


def default_check_images() -> list[Image.Image]:
    """Real photos (scikit-image's cat and coffee) when available, else a seeded noise image."""
    try:
        from skimage import data

        photos = [Image.fromarray(data.chelsea()), Image.fromarray(data.coffee())]
        for photo, name in zip(photos, ("chelsea", "coffee"), strict=True):
            photo.filename = name
        return photos
    except ImportError:
        rng = np.random.default_rng(0)
        noise = Image.fromarray(rng.integers(0, 256, (300, 400, 3), dtype=np.uint8))
        noise.filename = "noise"
        return [noise]


def _engine_inputs(paths: Sequence[Path], preprocess) -> torch.Tensor:
    """What the app's model sees for these files (tl_core.model.preprocess, as at prediction)."""
    from tl_core.model.preprocess import decode, model_inputs

    return model_inputs(decode(paths, preprocess), preprocess)


def _parity(fmt: str, runtime, inputs: np.ndarray, torch_probs: np.ndarray, names: list[str],
            tolerance: float) -> ParityCheck:
    probs = torch.from_numpy(np.asarray(runtime(inputs))).double().softmax(1).numpy()
    diff = float(np.abs(probs - torch_probs).max())
    same = bool((probs.argmax(1) == torch_probs.argmax(1)).all())
    return ParityCheck(fmt, names, diff, same, tolerance, bool(diff < tolerance and same))


def export_model(model: nn.Module, classes: Sequence[str], preprocess, out_dir: Path | str,
                 formats: Sequence[str] = FORMATS, *, metadata: dict[str, Any] | None = None,
                 check_images: Sequence[Image.Image | Path | str] | None = None,
                 tolerance: float = PROB_TOLERANCE) -> ExportReport:
    """Write the bundle for ``model`` (input: normalised float [B, 3, crop, crop]) to ``out_dir``.

    Each exported format is run on ``check_images`` (default: two real photos) preprocessed by the
    bundle's own predict.py, and compared with PyTorch; the report says how close they came.
    ``metadata`` feeds the model card: name, backbone, pretrained, config, metrics, data, notes.
    A format that fails to export is recorded in ``report.errors``; the others still are written.
    The bundle is written beside ``out_dir`` and moved in once complete: a full disk raises
    ``DiskFull`` and leaves the previous export as it was.
    """
    unknown = [f for f in formats if f not in FORMATS]
    if unknown:
        raise ConfigError(f"Unknown export format(s) {unknown}; choose from {', '.join(FORMATS)}.")
    out = Path(out_dir)
    with atomic.staging(out, last=("export.json",)) as stage:
        report = _write_bundle(model, classes, preprocess, stage, out, formats, metadata, check_images, tolerance)
    for stale in MODEL_FILES.values():  # a re-export with fewer formats must not ship old files
        if stale not in report.files:
            (out / stale).unlink(missing_ok=True)
    return report


def _write_bundle(model: nn.Module, classes: Sequence[str], preprocess, out: Path, final: Path,
                  formats: Sequence[str], metadata: dict[str, Any] | None,
                  check_images: Sequence[Image.Image | Path | str] | None, tolerance: float) -> ExportReport:
    """``export_model``'s work, its files written to ``out`` (the staging folder of ``final``)."""
    started = time.perf_counter()
    meta = dict(metadata or {})
    report = ExportReport(out_dir=final)
    model = copy.deepcopy(model).cpu().float().eval()  # the caller's model stays where it was
    crop = preprocess.crop_size

    def write_text(name: str, text: str) -> None:
        atomic.write_bytes(out / name, text.encode("utf-8"))
        report.files.append(name)

    write_text("labels.json", json.dumps(list(classes), indent=2))
    write_text("preprocess.json", json.dumps(preprocess.to_dict(), indent=2))
    atomic.write_bytes(out / "predict.py", PREDICT_SOURCE.read_bytes())
    report.files.append("predict.py")

    dummy = torch.zeros(1, 3, crop, crop)
    for fmt in formats:
        path = out / MODEL_FILES[fmt]
        try:
            _EXPORTERS[fmt](model, dummy, path, classes, meta)
            report.files.append(path.name)
        except Exception as exc:  # noqa: BLE001 - one format failing must not lose the others
            if atomic.is_disk_full(exc):  # not this format's fault: no export fits
                raise
            report.errors[fmt] = f"{type(exc).__name__}: {exc}"

    script = _load_script(out / "predict.py")
    with tempfile.TemporaryDirectory() as tmp:
        paths, names = _check_image_files(check_images or default_check_images(), Path(tmp))
        pre = preprocess.to_dict()
        inputs = np.stack([script.model_input(p, pre) for p in paths])
        report.preprocessing_matches_engine = bool(np.array_equal(inputs, _engine_inputs(paths, preprocess).numpy()))
    with torch.no_grad():
        torch_probs = model(torch.from_numpy(inputs)).double().softmax(1).numpy()
    for fmt in ("torchscript", "onnx"):
        if fmt in formats and fmt not in report.errors:
            runtime = script.load_runtime(out / MODEL_FILES[fmt])
            report.checks.append(_parity(fmt, runtime, inputs, torch_probs, names, tolerance))

    report.seconds = time.perf_counter() - started
    write_text("MODEL_CARD.md", model_card(classes, preprocess, meta, report))
    report.files.append("export.json")
    atomic.write_json(out / "export.json", {"report": report.to_dict(), "metadata": meta})
    return report


def _export_torchscript(model, dummy, path, classes, meta) -> None:
    # Traced, not scripted: timm's and open_clip's models do not script, and a trace of a fixed
    # input size is all a bundle needs (the crop is fixed; the batch axis stays free).
    buffer = io.BytesIO()
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch.jit's deprecation notice
        # timm's ViTs check the input size in Python; the trace keeps the crop's answer, as wanted
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        traced = torch.jit.trace(model, dummy)
        torch.jit.save(traced, buffer)
    atomic.write_bytes(path, buffer.getvalue())


def _export_onnx(model, dummy, path, classes, meta) -> None:
    import onnx

    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the TorchScript-based exporter's deprecation notice
        # dynamo=False: the TorchScript-based exporter needs no onnxscript and handles every
        # registered backbone; the batch axis stays dynamic.
        torch.onnx.export(model, (dummy,), buffer, input_names=["image"], output_names=["logits"],
                          dynamic_axes={"image": {0: "batch"}, "logits": {0: "batch"}},
                          opset_version=ONNX_OPSET, dynamo=False)
    proto = onnx.load_from_string(buffer.getvalue())
    onnx.checker.check_model(proto)
    for key, value in (("labels", json.dumps(list(classes))), ("backbone", str(meta.get("backbone", "")))):
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, value
    atomic.write_bytes(path, proto.SerializeToString())


def _export_safetensors(model, dummy, path, classes, meta) -> None:
    from safetensors.torch import save_model

    info = {"backbone": str(meta.get("backbone", "")), "classes": json.dumps(list(classes)),
            "head": json.dumps(meta.get("config", {}).get("model", {}).get("head", {})),
            "format": "TL Studio TransferModel state_dict"}
    with atomic.replacing(path) as tmp:  # save_model drops shared tensors; it wants a file name
        save_model(model, str(tmp), metadata=info)


_EXPORTERS = {"torchscript": _export_torchscript, "onnx": _export_onnx, "safetensors": _export_safetensors}


# ----------------------------------------------------------------------------- model card
def _fmt(value: Any) -> str:
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def model_card(classes: Sequence[str], preprocess, meta: dict[str, Any], report: ExportReport) -> str:
    """MODEL_CARD.md: what the model is, what it was trained on, how well it did, its limits. Names
    the user gave (run, classes, files, data source) are escaped: text, never a link or an image."""
    md = escape_markdown
    name = md(meta.get("name") or meta.get("run_id") or "TL Studio model")
    backbone = meta.get("backbone", "?")
    pretrained = meta.get("pretrained", True)
    data = meta.get("data", {})
    metrics = meta.get("metrics", {})
    lines = [f"# Model card: {name}", "",
             f"An image classifier for {len(classes)} classes, trained with TL Studio by transfer learning "
             f"from **{backbone}** ({'pretrained weights' if pretrained else 'random initialisation, not pretrained'}).",
             "", "## Classes", "", ", ".join(code_span(c) for c in classes), "", "## Input", "",
             f"RGB image; EXIF orientation applied; shorter side resized to {preprocess.resize_size} px "
             f"(bilinear, antialiased), centre square, centre crop {preprocess.crop_size}x{preprocess.crop_size}; "
             f"values / 255 normalised with mean {list(preprocess.mean)} and std {list(preprocess.std)}. "
             "`predict.py` does exactly this. The model returns logits; softmax gives probabilities.", ""]
    lines += ["## Training data", ""]
    counts = data.get("class_counts") or {}
    if counts:
        lines += ["| class | images |", "|---|---|"] + [f"| {md(c)} | {n} |" for c, n in counts.items()] + [""]
    for key, label in (("num_train", "Training images"), ("num_val", "Validation images"),
                       ("num_test", "Test images"), ("source", "Source")):
        if data.get(key) not in (None, ""):
            lines.append(f"- {label}: {md(data[key])}")
    if not data:
        lines.append("- Not recorded.")
    lines += ["", "## Training configuration", ""]
    config = meta.get("config")
    if config:
        config_json = json.dumps(config, indent=2, sort_keys=True)
        fence = code_fence(config_json)  # the run's name is in it: it must not close the block
        model_cfg, freeze, train = config.get("model", {}), config.get("freeze", {}), config.get("train", {})
        lines += [f"- Head: {model_cfg.get('head', {}).get('kind', '?')}; freezing: {freeze.get('mode', '?')}",
                  f"- Epochs: {train.get('epochs')}, batch size {train.get('batch_size')}, optimizer "
                  f"{train.get('optimizer')}, learning rate {train.get('lr')}, schedule {train.get('schedule')}",
                  f"- Augmentation: {config.get('data', {}).get('augment', '?')}; seed {train.get('seed')}",
                  "", "<details><summary>Full configuration</summary>", "", f"{fence}json",
                  config_json, fence, "</details>"]
    else:
        lines.append("- Not recorded.")
    lines += ["", "## Metrics", ""]
    shown = False
    for split in ("val", "test"):
        if isinstance(metrics.get(split), dict):
            shown = True
            lines.append(f"- {split}: " + ", ".join(f"{k} {_fmt(v)}" for k, v in metrics[split].items()))
    per_class = meta.get("per_class") or []
    if per_class:
        lines += ["", f"Per class, on the {meta.get('per_class_split', 'validation')} images:", "",
                  "| class | precision | recall | F1 | support |", "|---|---|---|---|---|"]
        lines += [f"| {md(r['class'])} | {r['precision']:.3f} | {r['recall']:.3f} | {r['f1']:.3f} | {r['support']} |"
                  for r in per_class]
    if not shown and not per_class:
        lines.append("- Not recorded.")
    lines += ["", "## Known limits", ""] + [f"- {note}" for note in _limits(classes, meta)]
    lines += ["", "## Files", "",
              f"- `model.onnx`: ONNX (opset {ONNX_OPSET}), input `image` [batch, 3, {preprocess.crop_size}, "
              f"{preprocess.crop_size}] float32, output `logits`",
              "- `model_torchscript.pt`: TorchScript (`torch.jit.load`), same input and output",
              f"- `model.safetensors`: weights of the PyTorch model (rebuild it with TL Studio: "
              f"`build_model('{backbone}', {len(classes)}, head, pretrained=False)` then "
              "`safetensors.torch.load_model`)",
              "- `labels.json`: class names in output order; `preprocess.json`: the input recipe",
              "- `predict.py`: `python predict.py photo.jpg` (ONNX) or `--model model_torchscript.pt`",
              "", "## Export checks", ""]
    for check in report.checks:
        lines.append(f"- {check.format}: max |probability difference| vs PyTorch {check.max_abs_diff:.2e} "
                     f"(tolerance {check.tolerance:.0e}), same predicted class: {check.same_argmax} "
                     f"on {', '.join(md(i) for i in check.images)} -> {'passed' if check.passed else 'FAILED'}")
    if report.preprocessing_matches_engine is not None:
        lines.append("- predict.py preprocessing identical to the app's: "
                     f"{'yes' if report.preprocessing_matches_engine else 'NO'}")
    for fmt, error in report.errors.items():
        lines.append(f"- {fmt}: not exported ({md(error)})")
    lines += ["", f"Exported {time.strftime('%Y-%m-%d %H:%M')} by TL Studio."]
    return "\n".join(lines) + "\n"


def _limits(classes: Sequence[str], meta: dict[str, Any]) -> list[str]:
    data = meta.get("data", {})
    counts = data.get("class_counts") or {}
    notes = [f"It only knows these {len(classes)} classes: any other image is still given one of them, "
             "often with high confidence. There is no 'none of these' answer.",
             "It sees the centre crop only: objects near the edges of a non-square photo may be cut off.",
             "Its metrics come from held-out images of the same collection as the training images; expect "
             "lower accuracy on photos taken elsewhere (other cameras, lighting, backgrounds)."]
    if counts:
        smallest, largest = min(counts.values()), max(counts.values())
        if smallest < 50:
            notes.append(f"Few examples: the smallest class has {smallest} images, so the metrics are uncertain "
                         "(a handful of images changes them by several points).")
        if smallest and largest / smallest >= 3:
            notes.append(f"Imbalanced classes ({largest} vs {smallest} images): the model may favour the larger ones.")
    if not meta.get("pretrained", True):
        notes.append("Trained from random initialisation, not from pretrained weights: expect it to generalise poorly.")
    ece = meta.get("ece")
    if isinstance(ece, float) and ece > 0.05:
        notes.append(f"Confidences are not well calibrated (expected calibration error {ece:.3f}); "
                     "do not read a probability as a frequency.")
    notes += [escape_markdown(note) for note in meta.get("notes", [])]  # they may quote a name
    return notes


# ----------------------------------------------------------------------------- runs and zips
def run_metadata(run) -> dict[str, Any]:
    """Model-card facts of a run: config, metrics, data counts, per-class metrics, calibration."""
    from tl_core.evaluation.analysis import reliability
    from tl_core.events import RunStarted

    config = run.config
    meta: dict[str, Any] = {"name": config.name or run.id, "run_id": run.id, "backbone": config.model.backbone,
                            "pretrained": config.model.pretrained, "config": config.to_dict(),
                            "metrics": run.read_metrics()}
    meta["metrics"] = {k: v for k, v in meta["metrics"].items() if k in ("val", "test", "best_epoch")}
    data: dict[str, Any] = {"source": config.data.source}
    try:
        events, _ = run.read_events()
        started = [e for e in events if isinstance(e, RunStarted)]
        if started:
            data.update(num_train=started[-1].num_train, num_val=started[-1].num_val)
    except (OSError, ValueError, KeyError):
        pass
    ds = _run_dataset(run)
    if ds is not None:
        data["class_counts"] = {c: sum(1 for r in ds.records if r.label == c) for c in ds.classes}
    meta["data"] = data
    split, evaluation = next(iter(run.evaluations().items()), ("val", None))
    if evaluation is not None:
        meta["per_class"], meta["per_class_split"] = evaluation.per_class, split
        preds = evaluation.predictions
        if preds:
            meta["ece"] = reliability([p["probs"] for p in preds], [p["true"] for p in preds]).ece
    return meta


def _run_dataset(run):
    """The run's ingested dataset (``Run.dataset_dir``), or None if gone."""
    from tl_core.data.dataset import Dataset

    folder = run.dataset_dir()
    try:
        return Dataset.load(folder) if folder else None
    except Exception:  # noqa: BLE001 - deleted or damaged: the card and the checks say less
        return None


def run_check_images(run, limit: int = 4) -> list[Path]:
    """A few of the run's own images (one per class) for the export checks, if still on disk."""
    ds = _run_dataset(run)
    if ds is None:
        return []
    return [ds.path_of(records[0]) for records in ds.examples(1, max_classes=limit, on_disk=True).values()]


def export_bundle(run, out_dir: Path | str, formats: Sequence[str] = FORMATS, kind: str = "best") -> ExportReport:
    """Export a run's ``kind`` checkpoint (see ``export_model``); the checks use real photos and
    a few of the run's own images."""
    from tl_core.model.loading import load_model
    from tl_core.model.registry import get_backbone

    model = load_model(run, kind)
    preprocess = get_backbone(run.config.model.backbone).preprocess
    images: list[Image.Image | Path] = [*default_check_images(), *run_check_images(run)]
    report = export_model(model, run.classes, preprocess, out_dir, formats, metadata=run_metadata(run),
                          check_images=images)
    if (note := log_export(run, report.out_dir)) is not None:
        report.notes.append(note)
    return report




def zip_bundle(out_dir: Path | str) -> bytes:
    """The bundle as a .zip (files under a folder named like ``out_dir``), for a download button."""
    root = Path(out_dir)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.endswith(".tmp")):
            info = zipfile.ZipInfo(f"{root.name}/{path.relative_to(root).as_posix()}", date_time=(2020, 1, 1, 0, 0, 0))
            info.compress_type = zipfile.ZIP_DEFLATED
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes())
    return buffer.getvalue()
