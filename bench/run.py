"""TL Studio benchmark: ratios against a baseline measured in the same run, on the same data.

1. Our trainer vs a plain hand-written PyTorch loop: same model, batch and data (images/s).
   Goal >= 0.97 with events on.
2. Feature-cached frozen-backbone training vs the same without the cache: time of the epochs
   after the first as a fraction of the first. Goal <= 1%.
3. Ingest: decode + resize into the cache, images/s per core on ~0.2 MP JPEGs. Goal >= 600.

Usage: python bench/run.py [--quick] [--out docs/benchmarks.md]
Prints a table and appends it, with the machine, to the --out file when given.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine_info import cpu_name  # noqa: E402 - from the repository, just put on the path
from tl_core import events as ev  # noqa: E402
from tl_core.backbones import build_model, get_backbone  # noqa: E402
from tl_core.config import DataConfig, FreezePlan, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.data import center_crop, decode_images, ingest  # noqa: E402
from tl_core.device import select_device  # noqa: E402
from tl_core.preprocess import Normalizer  # noqa: E402
from tl_core.runs import RunStore  # noqa: E402
from tl_core.training import train  # noqa: E402
from tl_core.workspace import Workspace  # noqa: E402


def make_photos(root: Path, n_per_class: int, size=(512, 384)) -> Path:
    """~0.2 MP JPEGs cut from scikit-image's real photos, two classes."""
    from skimage import data

    rng = np.random.default_rng(0)
    sources = {"cat": Image.fromarray(data.chelsea()), "coffee": Image.fromarray(data.coffee())}
    for name, photo in sources.items():
        (root / name).mkdir(parents=True, exist_ok=True)
        w, h = photo.size
        for i in range(n_per_class):
            s = rng.uniform(0.6, 1.0)
            cw, ch = int(w * s), int(h * s)
            x, y = int(rng.integers(0, w - cw + 1)), int(rng.integers(0, h - ch + 1))
            photo.crop((x, y, x + cw, y + ch)).resize(size).save(root / name / f"{i}.jpg", quality=90)
    return root


def batch_times(stamps: list[float], images_per_batch: int) -> float:
    """Images/s from batch-end timestamps, leaving out the first batch (warm-up, loader start)."""
    if len(stamps) < 3:
        raise SystemExit("too few batches to time; use more images")
    return images_per_batch * (len(stamps) - 1) / (stamps[-1] - stamps[0])


def plain_loop(images: torch.Tensor, labels: torch.Tensor, n_classes: int, n_train: int, backbone: str,
               batch: int, epochs: int) -> float:
    """The baseline: a hand-written loop over the same decoded images, crop and normalisation."""
    spec = get_backbone(backbone)
    device = select_device("auto")
    normalize = Normalizer(spec.preprocess.mean, spec.preprocess.std, device)
    torch.manual_seed(0)
    model = build_model(backbone, n_classes, pretrained=False).to(device).train()
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    rates = []
    for _ in range(epochs):
        order = torch.randperm(len(labels))[:n_train]
        stamps = []
        for i in range(0, n_train - batch + 1, batch):
            idx = order[i:i + batch]
            x = normalize(center_crop(images[idx], spec.preprocess.crop_size))
            y = labels[idx].to(device)
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x), y)
            loss.backward()
            opt.step()
            float(loss.detach())  # the same per-step host sync a progress display needs
            stamps.append(time.perf_counter())
        rates.append(batch_times(stamps, batch))
    return statistics.median(rates)


def bench_trainer_vs_plain(folder: Path, ws: Workspace, backbone: str, batch: int, epochs: int,
                           rounds: int = 4) -> tuple[float, float, float]:
    """Our trainer's images/s, the plain loop's (medians), and the median ratio of each trainer run
    to the plain runs around it. Every run starts a fresh model for ``epochs`` epochs."""
    ds = ingest(folder, dest=ws.datasets_dir / "photos")
    spec = get_backbone(backbone)
    images = decode_images(ds, list(range(len(ds.records))), spec.preprocess.resize_size, ws.cache_dir)
    labels = torch.tensor(ds.labels)
    n_train = len(ds.records) - len(ds.records) // 10
    cfg = RunConfig(data=DataConfig(source=str(folder), dataset_dir=str(ds.root), val_fraction=0.1, augment="none"),
                    model=ModelConfig(backbone=backbone, pretrained=False),
                    freeze=FreezePlan(mode="full"),
                    train=TrainConfig(epochs=epochs, batch_size=batch, lr=1e-3, feature_cache=False,
                                      schedule="constant"))
    # Plain, ours, plain, ours, ..., plain: each trainer run is compared with the plain runs just
    # before and after it, which cancels the drift of a shared machine's speed better than
    # comparing two medians.
    plain = [plain_loop(images, labels, len(ds.classes), n_train, backbone, batch, epochs)]
    ours = []
    for _ in range(rounds):
        run = RunStore(ws).create(cfg)
        stamps: dict[int, list[float]] = {}
        train(cfg, run, ws, subscribers=[lambda e, stamps=stamps: isinstance(e, ev.BatchEnded) and
                                         stamps.setdefault(e.epoch, []).append(time.perf_counter())])
        # Drop each epoch's last (possibly partial) batch; keep full batches only.
        ours.append(statistics.median(batch_times(s[:-1], batch) for s in stamps.values()))
        plain.append(plain_loop(images, labels, len(ds.classes), n_train, backbone, batch, epochs))
    ratios = [o / statistics.mean(plain[i:i + 2]) for i, o in enumerate(ours)]
    return statistics.median(ours), statistics.median(plain), statistics.median(ratios)


def bench_feature_cache(folder: Path, ws: Workspace, epochs: int) -> tuple[list[float], list[float]]:
    out = []
    for cache in (True, False):
        cfg = RunConfig(data=DataConfig(source=str(folder), val_fraction=0.2, augment="none"),
                        model=ModelConfig(backbone="mobilenet_v2"), freeze=FreezePlan(mode="feature_extractor"),
                        train=TrainConfig(epochs=epochs, batch_size=32, feature_cache=cache))
        run = RunStore(ws).create(cfg)
        secs: list[float] = []
        train(cfg, run, ws, subscribers=[lambda e, secs=secs: isinstance(e, ev.EpochEnded) and secs.append(e.seconds)])
        out.append(secs)
    return out[0], out[1]


def pil_reference(path: Path, size: int) -> np.ndarray:
    """The usual way (a torchvision ImageFolder pipeline): PIL opens, converts, resizes the centre
    square bilinear; no draft mode, no cache."""
    with Image.open(path) as image:
        image = image.convert("RGB")
        w, h = image.size
        side = min(w, h)
        box = ((w - side) // 2, (h - side) // 2, (w - side) // 2 + side, (h - side) // 2 + side)
        return np.asarray(image.resize((size, size), Image.Resampling.BILINEAR, box=box))


def bench_ingest(folder: Path, ws: Workspace, passes: int = 3) -> tuple[float, float, int]:
    """Images/s on one core (one process, one torch thread, as each of ``decode_images``' worker
    processes runs): ours into a fresh cache each pass, and the PIL reference over the same files,
    interleaved; the median of ``passes`` each."""
    ds = ingest(folder, dest=ws.datasets_dir / "ingest-bench")
    files = [ds.root / r.path for r in ds.records]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ours, reference = [], []
    try:
        for i in range(passes):
            t0 = time.perf_counter()
            decode_images(ds, list(range(len(ds.records))), 256, ws.cache_dir / f"fresh-{i}", workers=1)
            ours.append(len(files) / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            for path in files:
                pil_reference(path, 256)
            reference.append(len(files) / (time.perf_counter() - t0))
    finally:
        torch.set_num_threads(threads)
    return statistics.median(ours), statistics.median(reference), len(files)


def machine() -> str:
    cpu = cpu_name()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {gpu}; torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; Python {platform.python_version()}")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="fewer images and epochs (a smoke run)")
    p.add_argument("--backbone", default="mobilenet_v3_small")
    p.add_argument("--out", default=None, help="append the results to this Markdown file")
    args = p.parse_args()
    os.environ.setdefault("TL_STUDIO_OFFLINE", "1")
    n = 40 if args.quick else 150
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ws = Workspace(tmp / "ws")
        folder = make_photos(tmp / "photos", n)
        ingest_rate, pil_rate, n_ingest = bench_ingest(folder, ws)
        ours, plain, trainer_ratio = bench_trainer_vs_plain(folder, ws, args.backbone, batch=16,
                                                            epochs=1, rounds=2 if args.quick else 4)
        cached, uncached = bench_feature_cache(folder, ws, epochs=4 if args.quick else 6)
    later = statistics.mean(cached[1:]) / cached[0]
    rows = [
        ("trainer vs plain loop (images/s)", f"{ours:.1f} vs {plain:.1f}", f"{trainer_ratio:.3f}", ">= 0.97"),
        ("feature cache: later epoch / first epoch", f"{statistics.mean(cached[1:]):.3f}s / {cached[0]:.2f}s",
         f"{later:.2%}", "<= 1%"),
        ("  (same without cache: later / first)", f"{statistics.mean(uncached[1:]):.2f}s / {uncached[0]:.2f}s",
         f"{statistics.mean(uncached[1:]) / uncached[0]:.2%}", "-"),
        ("ingest, decode + resize per core (img/s)", f"{ingest_rate:.0f} ({n_ingest} JPEGs 512x384, median of 3)",
         f"{ingest_rate / 600:.2f} of goal", ">= 600"),
        ("  (ingest vs PIL open + resize, no cache)", f"{ingest_rate:.0f} vs {pil_rate:.0f}",
         f"{ingest_rate / pil_rate:.2f}", "-"),
    ]
    header = ("measure", "values", "ratio", "goal")
    lines = [f"| {' | '.join(header)} |", "|---|---|---|---|"] + [f"| {' | '.join(r)} |" for r in rows]
    table = "\n".join(lines)
    stamp = time.strftime("%Y-%m-%d")
    report = f"\n## {stamp} — {machine()}\nbackbone for (1): {args.backbone}, random init, full fine-tune, batch 16" \
             f"{' (quick run)' if args.quick else ''}\n\n{table}\n"
    publish(report, args.out)
    return 0


def publish(report: str, out: str | None) -> None:
    """Print a result section and append it to ``out`` (docs/benchmarks.md) when asked."""
    print(report)
    if out:
        with open(out, "a", encoding="utf-8") as handle:
            handle.write(report)


if __name__ == "__main__":
    sys.exit(main())
