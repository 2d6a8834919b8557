"""TL Studio on a CUDA GPU: ratios against a baseline measured in the same run (under 5 minutes).

1. Full fine-tune: the trainer's step (``training.train_step`` with its optimiser, mixed precision,
   channels-last model and the per-batch loss read-out its events need) against a plain
   hand-written AMP loop, on the same synthetic on-device batches. Goal >= 0.9.
2. Frozen-backbone feature extraction (the app's path) against plain ``torch.inference_mode()``
   batched inference at the same precision. Goal >= 0.9.
3. Per backbone family: mixed precision against fp32, channels-last against contiguous (train step).
4. Automatic batch size (``tl_core.training.autobatch``) as a run asks for it, checked by a real step at
   that size; and the out-of-memory fallback (halve and go on) of a real run on a forced OOM
   (the process's share of GPU memory capped).
5. The Train page's GPU reading (``system.device_info``) against nvidia-smi and the driver,
   under load.

Usage: python bench/gpu.py [--out docs/benchmarks.md]   (or: make bench-gpu)
Without a CUDA device it prints "no CUDA device: skipped" and exits 0.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.machine_info import cpu_name  # noqa: E402 - from the repository, just put on the path
from tl_core.device import autocast_dtype  # noqa: E402
from tl_core.model.optim import make_optimizer  # noqa: E402
from tl_core.model.preprocess import Normalizer  # noqa: E402
from tl_core.model.registry import build_model  # noqa: E402
from tl_core.training.trainer import train_step  # noqa: E402

FAMILIES = {"resnet": "resnet50", "mobilenet_v2": "mobilenet_v2", "mobilenet_v3": "mobilenet_v3_large",
            "efficientnet": "efficientnet_b0", "convnext": "convnext_tiny", "vit": "vit_b_16", "vgg": "vgg16"}
TIME_BUDGET_S = 270  # the whole script stays under five minutes: later sections are skipped past it

Row = tuple[str, str, str, str]


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def synthetic_batches(n: int, batch: int, size: int, device: torch.device, seed: int = 0) -> list[tuple]:
    """``n`` on-device (uint8 images, labels) batches: what both loops train on."""
    g = torch.Generator().manual_seed(seed)
    return [(torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g).to(device),
             torch.randint(0, 10, (batch,), generator=g).to(device)) for _ in range(n)]


def images_per_s(step: Callable[[torch.Tensor, torch.Tensor], object], batches: list[tuple], device: torch.device,
                 warmup: int = 3) -> float:
    for x, y in batches[:warmup]:
        step(x, y)
    sync(device)
    t0 = time.perf_counter()
    for x, y in batches[warmup:]:
        step(x, y)
    sync(device)
    return sum(len(y) for _, y in batches[warmup:]) / (time.perf_counter() - t0)


# -- 1. the trainer's step vs a plain AMP loop -------------------------------------------------
def trainer_step_fn(backbone: str, device: torch.device, amp: bool = True,
                    channels_last: bool | None = None) -> Callable[[torch.Tensor, torch.Tensor], object]:
    """The trainer's step as a run sets it up (``train_session.open_session``, ``make_optimisation``,
    ``EpochLoop._run_batches``): channels-last model on CUDA, bf16/fp16 autocast, AdamW, a
    GradScaler for fp16, normalisation on the device, loss and accuracy read each batch."""
    torch.manual_seed(0)
    model = build_model(backbone, 10, pretrained=False)
    if channels_last is None:
        channels_last = device.type == "cuda"  # the trainer's default
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    model = model.to(device).train()
    amp_dtype = autocast_dtype(device, amp)
    spec_norm = Normalizer((0.485, 0.456, 0.406), (0.229, 0.224, 0.225), device)
    spec_norm.memory_format = torch.channels_last if channels_last else torch.contiguous_format
    optimizer = make_optimizer("adamw", [{"params": [p for p in model.parameters() if p.requires_grad]}], 1e-3, 1e-4)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    loss_fn = nn.CrossEntropyLoss()

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        loss, correct = train_step(model, spec_norm(x), y, optimizer, loss_fn, scaler=scaler, amp_dtype=amp_dtype)
        float(loss), float(correct)  # the BatchEnded event's read-out: one host sync per batch
    return step


def plain_step_fn(backbone: str, device: torch.device) -> Callable[[torch.Tensor, torch.Tensor], object]:
    """A hand-written AMP loop as a tutorial has it: contiguous model, autocast, AdamW, no read-out."""
    torch.manual_seed(0)
    model = build_model(backbone, 10, pretrained=False).to(device).train()
    dtype = autocast_dtype(device, True) or torch.bfloat16
    mean = torch.tensor((0.485, 0.456, 0.406), device=device).view(1, 3, 1, 1) * 255
    std = torch.tensor((0.229, 0.224, 0.225), device=device).view(1, 3, 1, 1) * 255
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=1e-4)
    scaler = torch.amp.GradScaler("cuda", enabled=dtype == torch.float16 and device.type == "cuda")

    def step(x: torch.Tensor, y: torch.Tensor) -> None:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(device.type, dtype=dtype):
            loss = nn.functional.cross_entropy(model((x.float() - mean) / std), y)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    return step


def bench_trainer_vs_plain(device: torch.device, backbone: str = "resnet50", batch: int = 128, steps: int = 20,
                           rounds: int = 3, size: int = 224) -> Row:
    batches = synthetic_batches(steps, batch, size, device)
    ours_step, plain_step = trainer_step_fn(backbone, device), plain_step_fn(backbone, device)
    plain = [images_per_s(plain_step, batches, device)]
    ours = []
    for _ in range(rounds):  # plain, ours, plain, ...: each ours against the plain runs either side
        ours.append(images_per_s(ours_step, batches, device))
        plain.append(images_per_s(plain_step, batches, device))
    ratio = statistics.median(o / statistics.mean(plain[i:i + 2]) for i, o in enumerate(ours))
    return (f"full fine-tune, trainer step vs plain AMP loop, {backbone} b{batch} (img/s)",
            f"{statistics.median(ours):.0f} vs {statistics.median(plain):.0f}", f"{ratio:.3f}", ">= 0.9")


# -- 2. frozen features vs plain inference ------------------------------------------------------
def bench_features_gpu(device: torch.device, backbone: str = "resnet50", n: int = 1024, batch: int = 256) -> list[Row]:
    from bench.run import bench_features

    images = torch.randint(0, 256, (n, 3, 256, 256), dtype=torch.uint8)  # decoded uint8, on the CPU as the cache is
    f = bench_features(images, backbone, batch=batch, rounds=3, amp=True)
    return [(f"frozen features vs plain inference_mode, {backbone} b{batch} AMP (img/s)",
             f"{f['ours']:.0f} vs {f['plain']:.0f}", f"{f['ratio']:.3f}", ">= 0.9"),
            ("  (vs the plain loop in channels-last too)", f"{f['ours']:.0f} vs {f['plain_cl']:.0f}",
             f"{f['ratio_cl']:.3f}", "-")]


# -- 3. per family: AMP vs fp32, channels-last vs contiguous -------------------------------------
def bench_families(device: torch.device, families: dict[str, str] = FAMILIES, batch: int = 64, steps: int = 8,
                   size: int = 224, deadline: float = float("inf")) -> list[Row]:
    rows = []
    batches = synthetic_batches(steps + 3, batch, size, device, seed=1)
    for family, backbone in families.items():
        if time.monotonic() > deadline:
            rows.append((f"{family} ({backbone})", "skipped: time budget", "-", "-"))
            continue
        rate = {}
        for amp in (False, True):
            for cl in (False, True):
                rate[amp, cl] = images_per_s(trainer_step_fn(backbone, device, amp=amp, channels_last=cl), batches,
                                             device)
                if device.type == "cuda":
                    torch.cuda.empty_cache()
        rows.append((f"{family} ({backbone}) train step b{batch}: AMP / fp32; channels-last / contiguous",
                     f"fp32 {rate[False, False]:.0f}, fp32+CL {rate[False, True]:.0f}, AMP {rate[True, False]:.0f}, "
                     f"AMP+CL {rate[True, True]:.0f} img/s",
                     f"{rate[True, True] / rate[False, True]:.2f}; {rate[True, True] / rate[True, False]:.2f}", "-"))
    return rows


# -- 4. automatic batch size and the out-of-memory fallback -------------------------------------
def bench_auto_batch(device: torch.device, backbone: str = "convnext_tiny", size: int = 320) -> Row:
    """What a run with ``auto_batch`` picks for a full fine-tune, then one real step at that size."""
    from tl_core.training.autobatch import HEADROOM, choose_batch_size

    torch.manual_seed(0)
    model = build_model(backbone, 10, pretrained=False).to(memory_format=torch.channels_last).to(device)
    amp_dtype = autocast_dtype(device, True)
    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        choice = choose_batch_size(model, backbone=backbone, device=device, amp_dtype=amp_dtype, crop_size=size,
                                   n_classes=10, n_train=100_000, configured=32, cache_dir=Path(cache))
        seconds = time.perf_counter() - t0
        again = choose_batch_size(model, backbone=backbone, device=device, amp_dtype=amp_dtype, crop_size=size,
                                  n_classes=10, n_train=100_000, configured=32, cache_dir=Path(cache))
    del model
    torch.cuda.empty_cache()
    step = trainer_step_fn(backbone, device)
    torch.cuda.reset_peak_memory_stats(device)
    base = torch.cuda.memory_allocated(device)
    x, y = synthetic_batches(1, choice.batch_size, size, device, seed=2)[0]
    for _ in range(2):  # the optimiser's state exists after the first step
        step(x, y)
    sync(device)
    peak = torch.cuda.max_memory_allocated(device) - base
    total = torch.cuda.get_device_properties(device).total_memory
    ok = peak <= (1 - HEADROOM) * total
    return (f"auto batch, {backbone} full fine-tune {size} px AMP",
            f"batch {choice.batch_size} in {seconds:.1f} s (remembered: {again.batch_size}, "
            f"{'recalled' if not again.measured else 'measured again'}); real steps peak "
            f"{peak / 2**30:.1f} of {total / 2**30:.0f} GiB", f"{peak / total:.2f} of memory",
            f"fits, <= {1 - HEADROOM:.2f}" + ("" if ok else " NOT MET"))


def bench_oom_fallback(device: torch.device, batch: int = 512, cap_gib: float = 4.0) -> Row:
    """A real run (``training.train``, mobilenet_v2 full fine-tune) asked for ``batch`` while the process
    may use only ``cap_gib`` of GPU memory: it should halve until a batch fits and finish."""
    from bench.run import make_photos
    from tl_core.config import DataConfig, FreezePlan, ModelConfig, RunConfig, TrainConfig
    from tl_core.runs import RunStore
    from tl_core.training.trainer import train
    from tl_core.workspace import Workspace

    total = torch.cuda.get_device_properties(device).total_memory
    torch.cuda.empty_cache()
    torch.cuda.set_per_process_memory_fraction(min(1.0, cap_gib * 2**30 / total), device)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            ws = Workspace(Path(tmp) / "ws")
            folder = make_photos(Path(tmp) / "photos", 300, size=(320, 240))
            cfg = RunConfig(data=DataConfig(source=str(folder), val_fraction=0.1, augment="none"),
                            model=ModelConfig(backbone="mobilenet_v2", pretrained=False), freeze=FreezePlan(mode="full"),
                            train=TrainConfig(epochs=1, batch_size=batch, schedule="constant", feature_cache=False))
            run = RunStore(ws).create(cfg)
            seen: list = []
            t0 = time.perf_counter()
            train(cfg, run, ws, subscribers=[seen.append])
            seconds = time.perf_counter() - t0
            sizes = [batch] + halved_sizes(seen)
            state = run.state
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        torch.cuda.empty_cache()
    return (f"OOM fallback, a real run at batch {batch} with {cap_gib:g} GiB allowed",
            f"batch {' -> '.join(map(str, sizes))}; run {state} in {seconds:.0f} s", "-",
            "halves and finishes" + ("" if state == "finished" and len(sizes) > 1 else " NOT MET"))


def halved_sizes(events: list) -> list[int]:
    """The batch sizes a run went down to on out-of-memory, from its Notes."""
    from tl_core import events as ev

    return [int(e.message.rsplit(" ", 1)[1].rstrip(".")) for e in events
            if isinstance(e, ev.Note) and e.message.startswith("Out of memory: retrying")]


# -- 5. the Train page's GPU reading vs nvidia-smi ---------------------------------------------
def nvidia_smi_now(index: int = 0) -> tuple[float, float, float] | None:
    """(used MiB, total MiB, utilisation %) straight from nvidia-smi."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    out = subprocess.run([exe, "--query-gpu=memory.used,memory.total,utilization.gpu", "--format=csv,noheader,nounits",
                          f"--id={index}"], capture_output=True, text=True, timeout=10, check=True).stdout
    used, total, util = (float(v) for v in out.strip().splitlines()[0].split(","))
    return used, total, util


def bench_gpu_stats(device: torch.device, seconds: float = 6.0) -> list[Row]:
    """Under a training load (a thread stepping resnet50), the Train page's reading (``device_info``)
    and nvidia-smi, read back to back; and the driver's free/total (``torch.cuda.mem_get_info``)."""
    from tl_core.system import device_info

    step = trainer_step_fn("resnet50", device)
    batches = synthetic_batches(4, 128, 224, device, seed=3)
    stop = threading.Event()

    def load() -> None:
        while not stop.is_set():
            for x, y in batches:
                step(x, y)
    worker = threading.Thread(target=load, daemon=True)
    worker.start()
    time.sleep(2.0)  # the load reaches its steady state
    samples = []
    t_end = time.monotonic() + seconds
    while time.monotonic() < t_end:
        t0 = time.perf_counter()
        ours = device_info(device.index or 0)
        took = time.perf_counter() - t0
        smi = nvidia_smi_now(device.index or 0)
        free, total = torch.cuda.mem_get_info(device)
        samples.append((ours, smi, (total - free) / 2**30, took))
        time.sleep(0.5)
    stop.set()
    worker.join()
    return stats_rows(samples)


def stats_rows(samples: list[tuple]) -> list[Row]:
    """Rows from (device_info reading, nvidia-smi (used MiB, total MiB, util %) or None, driver's used
    GiB, seconds the reading took) samples; a missing value is shown as missing, not as a ratio."""
    def median(values: list) -> float | None:
        values = [v for v in values if v is not None]
        return statistics.median(values) if values else None

    def ratio(a: float | None, b: float | None) -> str:
        return f"{a / b:.3f}" if a is not None and b else "-"

    def shown(v: float | None, fmt: str) -> str:
        return "n/a" if v is None else format(v, fmt)
    mem_ours = median([s[0].memory_used_gb for s in samples])
    mem_smi = median([s[1][0] / 1024 if s[1] else None for s in samples])
    mem_driver = median([s[2] for s in samples])
    util_ours = median([s[0].utilization_pct for s in samples])
    util_smi = median([s[1][2] if s[1] else None for s in samples])
    return [("Train page GPU memory vs nvidia-smi vs driver (GiB, under load)",
             f"{shown(mem_ours, '.2f')} vs {shown(mem_smi, '.2f')} vs {shown(mem_driver, '.2f')} "
             f"({len(samples)} readings)", ratio(mem_ours, mem_smi), "~1.00"),
            ("Train page GPU utilisation vs nvidia-smi (median %)",
             f"{shown(util_ours, '.0f')} vs {shown(util_smi, '.0f')}", ratio(util_ours, util_smi), "~1.00"),
            ("  (one Train page reading takes)", f"{statistics.median(s[3] for s in samples) * 1000:.0f} ms", "-",
             "< 1000 ms")]


# -- the run ----------------------------------------------------------------------------------
def machine(device: torch.device) -> str:
    props = torch.cuda.get_device_properties(device)
    driver = ""
    exe = shutil.which("nvidia-smi")
    if exe:
        try:
            driver = subprocess.run([exe, "--query-gpu=driver_version", "--format=csv,noheader", f"--id={device.index or 0}"],
                                    capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            pass
    return (f"{props.name}, {props.total_memory / 2**30:.0f} GiB, driver {driver or '?'}, CUDA {torch.version.cuda}; "
            f"{cpu_name()}, {os.cpu_count()} cores; torch {torch.__version__}; Python {platform.python_version()}")


def table(rows: list[Row]) -> str:
    header = ("measure", "values", "ratio", "goal")
    lines = [f"| {' | '.join(header)} |", "|---|---|---|---|"] + [f"| {' | '.join(r)} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--out", default=None, help="append the results to this Markdown file")
    p.add_argument("--only", default="", help="comma-separated sections: trainer,features,families,autobatch,oom,stats")
    args = p.parse_args(argv)
    if not torch.cuda.is_available():
        print("no CUDA device: skipped (bench/gpu.py measures the GPU path; run it on a machine with one)")
        return 0
    os.environ.setdefault("TL_STUDIO_OFFLINE", "1")
    device = torch.device("cuda", torch.cuda.current_device())
    start = time.monotonic()
    deadline = start + TIME_BUDGET_S
    sections: dict[str, Callable[[], list[Row]]] = {
        "trainer": lambda: [bench_trainer_vs_plain(device)],
        "features": lambda: bench_features_gpu(device),
        "stats": lambda: bench_gpu_stats(device),
        "autobatch": lambda: [bench_auto_batch(device)],
        "oom": lambda: [bench_oom_fallback(device)],
        "families": lambda: bench_families(device, deadline=deadline),
    }
    wanted = [s for s in args.only.split(",") if s] or list(sections)
    rows: list[Row] = []
    timings = []
    for name in wanted:
        if name not in sections:
            raise SystemExit(f"unknown section {name!r}; choose from {', '.join(sections)}")
        if time.monotonic() > deadline:
            rows.append((name, "skipped: the time budget was spent", "-", "-"))
            continue
        t0 = time.monotonic()
        try:
            rows += sections[name]()
        except Exception as exc:  # noqa: BLE001 - one failing section must not lose the others' results
            rows.append((name, f"FAILED: {type(exc).__name__}: {str(exc)[:200]}".replace("|", "/").replace("\n", " "),
                         "-", "-"))
        timings.append(f"{name} {time.monotonic() - t0:.0f} s")
        torch.cuda.empty_cache()
    stamp = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    report = (f"\n## GPU, {stamp} — {machine(device)}\nbench/gpu.py in {time.monotonic() - start:.0f} s "
              f"({', '.join(timings)})\n\n{table(rows)}\n")
    from bench.run import publish

    publish(report, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
