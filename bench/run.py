"""TL Studio benchmark: ratios against a baseline measured in the same run, on the same data.

1. Our trainer vs a plain hand-written PyTorch loop: same model, batch and data (images/s).
   Goal >= 0.97 with events on.
2. Feature-cached frozen-backbone training vs the same without the cache: time of the epochs
   after the first as a fraction of the first. Goal <= 1%.
3. Ingest: decode + resize into the cache, images/s per core on ~0.2 MP JPEGs. Goal >= 600.
4. Frozen features: ``features.extract_features`` on the app's eval batches vs a plain
   ``torch.inference_mode()`` loop over the same decoded tensors (images/s). Goal >= 0.9.
5. 12 MP JPEGs to 224 px per core: the app's DCT-scaled decode vs PIL open + convert + resize. Goal >= 3.
6. Memory: peak RSS (and private memory) of a process that decodes the cache and iterates an
   epoch's loader, at 1k, 5k and 20k small images (decoded at 96 px), first run and cached.

Usage: python bench/run.py [--quick] [--only features,decode12mp,...] [--out docs/benchmarks.md]
Prints a table and appends it, with the machine, to the --out file when given.
"""

from __future__ import annotations

import argparse
import copy
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
from tl_core.config import DataConfig, FreezePlan, ModelConfig, RunConfig, TrainConfig  # noqa: E402
from tl_core.data import center_crop, decode_images, ingest  # noqa: E402
from tl_core.device import autocast, autocast_dtype, select_device  # noqa: E402
from tl_core.model.preprocess import Normalizer  # noqa: E402
from tl_core.model.registry import build_model, get_backbone  # noqa: E402
from tl_core.runs import RunStore  # noqa: E402
from tl_core.training.trainer import train  # noqa: E402
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


def decode_vs_pil(folder: Path, ws: Workspace, name: str, size: int, passes: int) -> tuple[float, float, list[Path]]:
    """Images/s on one core (one process, one torch thread, as each of ``decode_images``' worker
    processes runs): ours into a fresh cache each pass, and the PIL reference over the same files,
    interleaved; the median of ``passes`` each, and the files."""
    ds = ingest(folder, dest=ws.datasets_dir / name)
    files = [ds.root / r.path for r in ds.records]
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    ours, reference = [], []
    try:
        for i in range(passes):
            t0 = time.perf_counter()
            decode_images(ds, list(range(len(files))), size, ws.cache_dir / f"{name}-{i}", workers=1)
            ours.append(len(files) / (time.perf_counter() - t0))
            t0 = time.perf_counter()
            for path in files:
                pil_reference(path, size)
            reference.append(len(files) / (time.perf_counter() - t0))
    finally:
        torch.set_num_threads(threads)
    return statistics.median(ours), statistics.median(reference), files


def bench_ingest(folder: Path, ws: Workspace, passes: int = 3) -> tuple[float, float, int]:
    """The ~0.2 MP photos to 256 px, ours against PIL per core (``decode_vs_pil``)."""
    ours, pil, files = decode_vs_pil(folder, ws, "ingest-bench", 256, passes)
    return ours, pil, len(files)


def bench_features(images: torch.Tensor, backbone: str, batch: int = 32, rounds: int = 4,
                   amp: bool = False) -> dict[str, float]:
    """Frozen-backbone feature extraction, the app's path for the eval view (``features.EvalBatches``
    + ``features.extract_features``, as ``Session.feature_loader`` and ``Strategy._extract`` run it),
    against a plain loop ``with torch.inference_mode(): body(normalize(center_crop(x)))`` over
    batches of the same decoded uint8 tensors; interleaved plain, ours, plain, ..., each ours against
    the plain runs either side (images/s). The plain loop is timed as written (contiguous) and, for
    reference, with the body and inputs in channels-last as ours runs them."""
    from tl_core.model.features import EvalBatches, extract_features
    from tl_core.model.preprocess import eval_view

    spec = get_backbone(backbone)
    device = select_device("auto")
    normalize = Normalizer(spec.preprocess.mean, spec.preprocess.std, device)
    amp_dtype = autocast_dtype(device, amp)  # the same precision on both sides
    torch.manual_seed(0)
    body = build_model(backbone, 2, pretrained=False).body.to(device)  # speed does not depend on the weights
    plain_body = copy.deepcopy(body).eval()
    plain_body_cl = copy.deepcopy(body).eval().to(memory_format=torch.channels_last)
    n, crop = len(images), spec.preprocess.crop_size

    def plain(model: torch.nn.Module, memory_format: torch.memory_format) -> float:
        t0 = time.perf_counter()
        with torch.inference_mode(), autocast(device, amp_dtype):
            for i in range(0, n, batch):
                model(normalize(center_crop(images[i:i + batch], crop)).contiguous(memory_format=memory_format))
        _sync(device)
        return n / (time.perf_counter() - t0)

    def ours() -> float:
        t0 = time.perf_counter()
        loader = EvalBatches(images, range(n), [0] * n, eval_view(spec.preprocess), batch,
                             pin_memory=device.type == "cuda")
        extract_features(body, loader, normalize, amp_dtype)
        _sync(device)
        return n / (time.perf_counter() - t0)

    ours(), plain(plain_body, torch.contiguous_format)  # warm-up: first-call allocations, oneDNN primitives
    plains = [plain(plain_body, torch.contiguous_format)]
    mine, plains_cl = [], []
    for _ in range(rounds):
        mine.append(ours())
        plains_cl.append(plain(plain_body_cl, torch.channels_last))
        plains.append(plain(plain_body, torch.contiguous_format))
    ratios = [o / statistics.mean(plains[i:i + 2]) for i, o in enumerate(mine)]
    return {"ours": statistics.median(mine), "plain": statistics.median(plains),
            "plain_cl": statistics.median(plains_cl), "ratio": statistics.median(ratios),
            "ratio_cl": statistics.median(o / c for o, c in zip(mine, plains_cl, strict=True))}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def make_large_photos(root: Path, n: int, size=(4000, 3000)) -> Path:
    """12 MP phone-like JPEGs (quality 90): scikit-image's photos resized up, with sensor-like noise
    so that the files (~2.3 MB) cost more like a real photo to entropy-decode."""
    from skimage import data

    rng = np.random.default_rng(1)
    sources = {"cat": Image.fromarray(data.chelsea()), "coffee": Image.fromarray(data.coffee())}
    for c, (name, photo) in enumerate(sources.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        big = np.asarray(photo.resize(size, Image.Resampling.BICUBIC), dtype=np.int16)
        for i in range(n // 2 + (c < n % 2)):
            noisy = np.clip(big + rng.integers(-8, 9, size=big.shape, dtype=np.int16), 0, 255).astype(np.uint8)
            Image.fromarray(noisy).save(root / name / f"{i}.jpg", quality=90)
    return root


def bench_large_decode(folder: Path, ws: Workspace, size: int = 224, passes: int = 3) -> dict[str, float]:
    """12 MP JPEGs to ``size``: the app's decode (libjpeg-turbo at a reduced DCT scale, into the
    cache) against PIL's usual open + convert + resize, per core (``decode_vs_pil``)."""
    ours, pil, files = decode_vs_pil(folder, ws, "large-photos", size, passes)
    megapixels = statistics.mean(Image.open(f).size[0] * Image.open(f).size[1] for f in files[:3]) / 1e6
    mb = statistics.mean(f.stat().st_size for f in files) / 1e6
    return {"ours": ours, "pil": pil, "n": len(files), "mp": megapixels, "mb": mb}


RSS_SIZES = (1_000, 5_000, 20_000)
RSS_DECODE_SIZE = 96


def make_small_photos(root: Path, n: int, size: int = 96) -> Path:
    """``n`` small JPEGs (``size``²) cut from scikit-image's photos, two classes: quick to write."""
    from skimage import data

    rng = np.random.default_rng(2)
    sources = {"cat": data.chelsea(), "coffee": data.coffee()}
    for c, (name, photo) in enumerate(sources.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        h, w = photo.shape[:2]
        for i in range(n // 2 + (c < n % 2)):
            y, x = int(rng.integers(0, h - size)), int(rng.integers(0, w - size))
            Image.fromarray(photo[y:y + size, x:x + size]).save(root / name / f"{i}.jpg", quality=85)
    return root


def rss_child(dataset_dir: str, cache_dir: str, size: int) -> None:
    """In a fresh process: decode (or load) ``dataset_dir``'s cache as training does and iterate one
    epoch of the training loader (shuffled, random crops, batch 32); print the peak memory as JSON."""
    import json
    import threading

    from tl_core.data import Dataset, make_augment
    from tl_core.model.preprocess import make_loader

    peak_anon = [0]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak_anon[0] = max(peak_anon[0], _status_kb("RssAnon"))
            time.sleep(0.02)
    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t0 = time.perf_counter()
    ds = Dataset.load(dataset_dir)
    images = decode_images(ds, list(range(len(ds.records))), size, Path(cache_dir))
    loader = make_loader(images, range(len(ds.records)), ds.labels, make_augment("light", size - 8), 32, shuffle=True)
    seen = sum(len(y) for _, y in loader)
    done.set()
    sampler.join()
    peak_anon[0] = max(peak_anon[0], _status_kb("RssAnon"))
    print(json.dumps({"images": seen, "seconds": time.perf_counter() - t0, "peak_rss_mb": _status_kb("VmHWM") / 1024,
                      "peak_anon_mb": peak_anon[0] / 1024,
                      "memory_mapped": cache_dir in Path("/proc/self/maps").read_text()}))


def _status_kb(field: str) -> int:
    """A field of /proc/self/status in kB (0 where there is no such file)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def bench_memory(root: Path, ws: Workspace, sizes=RSS_SIZES, size: int = RSS_DECODE_SIZE) -> list[dict]:
    """Peak memory of a training process against the number of images: for each N, a fresh process
    decodes the cache and iterates an epoch's loader (first run), then another one with the cache
    on disk (every later run)."""
    import json
    import subprocess

    folder = make_small_photos(root / "small", max(sizes))
    rows = []
    for n in sizes:
        part = root / f"small-{n}"
        for name in ("cat", "coffee"):  # the first n of the largest set, hard-linked (no copies)
            (part / name).mkdir(parents=True, exist_ok=True)
            for i in range(n // 2 + (name == "cat" and n % 2)):
                os.link(folder / name / f"{i}.jpg", part / name / f"{i}.jpg")
        ds = ingest(part, dest=ws.datasets_dir / f"small-{n}")
        row: dict = {"n": n, "decoded_mb": n * 3 * size * size / 2**20}
        for phase in ("first", "cached"):
            out = subprocess.run([sys.executable, __file__, "--rss-child", str(ds.root), str(ws.cache_dir / f"rss-{n}"),
                                  str(size)], capture_output=True, text=True, check=True).stdout
            row[phase] = json.loads(out.strip().splitlines()[-1])
        rows.append(row)
    return rows


def machine() -> str:
    cpu = cpu_name()
    gpu = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "no GPU"
    return (f"{cpu}, {os.cpu_count()} cores, {gpu}; torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; Python {platform.python_version()}")


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="fewer images and epochs (a smoke run)")
    p.add_argument("--backbone", default="mobilenet_v3_small")
    p.add_argument("--only", default="", help=f"comma-separated cases to run (default all): {', '.join(CASES)}")
    p.add_argument("--out", default=None, help="append the results to this Markdown file")
    p.add_argument("--rss-child", nargs=3, metavar=("DATASET", "CACHE", "SIZE"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.rss_child:
        rss_child(args.rss_child[0], args.rss_child[1], int(args.rss_child[2]))
        return 0
    os.environ.setdefault("TL_STUDIO_OFFLINE", "1")
    cases = [c for c in args.only.split(",") if c] or list(CASES)
    unknown = set(cases) - set(CASES)
    if unknown:
        raise SystemExit(f"unknown case(s) {', '.join(sorted(unknown))}; choose from {', '.join(CASES)}")
    n = 40 if args.quick else 150
    rows: list[tuple[str, str, str, str]] = []
    notes: list[str] = []
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        ws = Workspace(tmp / "ws")
        folder = make_photos(tmp / "photos", n) if {"ingest", "trainer", "cache", "features"} & set(cases) else None
        if "ingest" in cases:
            ingest_rate, pil_rate, n_ingest = bench_ingest(folder, ws)
            rows += [("ingest, decode + resize per core (img/s)",
                      f"{ingest_rate:.0f} ({n_ingest} JPEGs 512x384, median of 3)", f"{ingest_rate / 600:.2f} of goal",
                      ">= 600"),
                     ("  (ingest vs PIL open + resize, no cache)", f"{ingest_rate:.0f} vs {pil_rate:.0f}",
                      f"{ingest_rate / pil_rate:.2f}", "-")]
        if "trainer" in cases:
            ours, plain, trainer_ratio = bench_trainer_vs_plain(folder, ws, args.backbone, batch=16,
                                                                epochs=1, rounds=2 if args.quick else 4)
            rows.append(("trainer vs plain loop (images/s)", f"{ours:.1f} vs {plain:.1f}", f"{trainer_ratio:.3f}",
                         ">= 0.97"))
            notes.append(f"backbone for the trainer: {args.backbone}, random init, full fine-tune, batch 16")
        if "cache" in cases:
            cached, uncached = bench_feature_cache(folder, ws, epochs=4 if args.quick else 6)
            later = statistics.mean(cached[1:]) / cached[0]
            rows += [("feature cache: later epoch / first epoch",
                      f"{statistics.mean(cached[1:]):.3f}s / {cached[0]:.2f}s", f"{later:.2%}", "<= 1%"),
                     ("  (same without cache: later / first)",
                      f"{statistics.mean(uncached[1:]):.2f}s / {uncached[0]:.2f}s",
                      f"{statistics.mean(uncached[1:]) / uncached[0]:.2%}", "-")]
        if "features" in cases:
            ds = ingest(folder, dest=ws.datasets_dir / "features-bench")
            count = 32 if args.quick else 64
            for backbone in ("mobilenet_v2", "resnet18"):
                spec = get_backbone(backbone)
                images = decode_images(ds, list(range(count)), spec.preprocess.resize_size, ws.cache_dir)
                f = bench_features(images, backbone, batch=32, rounds=2 if args.quick else 4)
                rows += [(f"frozen features vs plain inference_mode, {backbone} (img/s)",
                          f"{f['ours']:.1f} vs {f['plain']:.1f}", f"{f['ratio']:.3f}", ">= 0.9"),
                         ("  (vs the plain loop in channels-last too)", f"{f['ours']:.1f} vs {f['plain_cl']:.1f}",
                          f"{f['ratio_cl']:.3f}", "-")]
            notes.append(f"frozen features: {count} decoded images per pass, batch 32, random-init bodies, "
                         f"{torch.get_num_threads()} torch threads")
        if "decode12mp" in cases:
            large = bench_large_decode(make_large_photos(tmp / "large", 12 if args.quick else 30), ws)
            rows += [("12 MP JPEGs to 224 px, per core (img/s)",
                      f"{large['ours']:.1f} vs PIL {large['pil']:.1f} ({large['n']} JPEGs {large['mp']:.0f} MP, "
                      f"{large['mb']:.1f} MB, median of 3)", f"{large['ours'] / large['pil']:.2f}", ">= 3")]
        if "memory" in cases:
            sizes = (500, 1_000, 2_000) if args.quick else RSS_SIZES
            results = bench_memory(tmp, ws, sizes)
            smallest = results[0]["cached"]["peak_anon_mb"]
            for r in results:
                first, again = r["first"], r["cached"]
                rows.append((f"peak RSS, {r['n']:,} images ({r['decoded_mb']:.0f} MB decoded at {RSS_DECODE_SIZE} px)",
                             f"first run {first['peak_rss_mb']:.0f} MB (private {first['peak_anon_mb']:.0f}); "
                             f"cached {again['peak_rss_mb']:.0f} MB (private {again['peak_anon_mb']:.0f}, "
                             f"{'memory-mapped' if again['memory_mapped'] else 'in RAM'}); "
                             f"{again['seconds']:.0f} s", f"{again['peak_anon_mb'] / smallest:.2f} of the smallest's",
                             "private memory bounded"))
    header = ("measure", "values", "ratio", "goal")
    lines = [f"| {' | '.join(header)} |", "|---|---|---|---|"] + [f"| {' | '.join(r)} |" for r in rows]
    table = "\n".join(lines)
    stamp = time.strftime("%Y-%m-%d")
    notes.append(f"load average at the start {load:.1f}")
    report = f"\n## {stamp} — {machine()}\n{'; '.join(notes)}{' (quick run)' if args.quick else ''}\n\n{table}\n"
    publish(report, args.out)
    return 0


CASES = ("ingest", "trainer", "cache", "features", "decode12mp", "memory")


def publish(report: str, out: str | None) -> None:
    """Print a result section and append it to ``out`` (docs/benchmarks.md) when asked."""
    print(report)
    if out:
        with open(out, "a", encoding="utf-8") as handle:
            handle.write(report)


if __name__ == "__main__":
    sys.exit(main())
