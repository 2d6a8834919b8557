"""Per-backbone speed on this machine: frozen-feature extraction (the app's path) against plain
``torch.inference_mode()`` forwards of the same model (goal >= 0.9, as for torchvision), its
images/s, and the peak memory of a process that builds the model and extracts features.

Each backbone runs in its own process, so its peak memory is its own. Speed does not depend on the
weights: every model is built with random weights, so this runs offline for every backbone.

Usage: python bench/backbones.py [--quick] [--backbones dinov2_vits14,clip_vit_b32,...]
                                 [--out docs/benchmarks.md] [--save]
``--save`` writes the speeds into the server's home (``tl_core.model.speeds``) for the Model page.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

NEW_FAMILIES = ("dinov2_vits14", "dinov2_vitb14", "convnextv2_nano", "efficientnetv2_s", "mobileclip_s1",
                "clip_vit_b32", "siglip_vit_b16")
BASELINES = ("mobilenet_v2", "resnet18")  # torchvision, for comparison on the same machine


def child(name: str, count: int, rounds: int) -> None:
    """In a fresh process: decode ``count`` photos at the backbone's size, run ``bench_features``;
    print its numbers and the process's peak memory as JSON."""
    from bench.run import _status_kb, bench_features, make_photos
    from tl_core.data import decode_images, ingest
    from tl_core.model.registry import get_backbone
    from tl_core.workspace import Workspace

    spec = get_backbone(name)
    with tempfile.TemporaryDirectory() as tmp:
        ws = Workspace(Path(tmp) / "ws")
        ds = ingest(make_photos(Path(tmp) / "photos", max(1, count // 2)), dest=ws.datasets_dir / "bench")
        images = decode_images(ds, list(range(count)), spec.preprocess.resize_size, ws.cache_dir)
        result = bench_features(images, name, batch=16, rounds=rounds)
    print(json.dumps({**result, "peak_memory_mb": _status_kb("VmHWM") / 1024}))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true", help="fewer images and rounds (a smoke run)")
    p.add_argument("--backbones", default=",".join(NEW_FAMILIES + BASELINES))
    p.add_argument("--out", default=None, help="append the table to this Markdown file")
    p.add_argument("--save", action="store_true", help="save the speeds for the Model page (the server's home)")
    p.add_argument("--child", nargs=3, metavar=("NAME", "COUNT", "ROUNDS"), help=argparse.SUPPRESS)
    args = p.parse_args()
    os.environ.setdefault("TL_STUDIO_OFFLINE", "1")
    if args.child:
        child(args.child[0], int(args.child[1]), int(args.child[2]))
        return 0

    from bench.run import machine, publish
    from tl_core.model.registry import get_backbone
    from tl_core.model.speeds import BackboneSpeed, write_speeds
    from tl_core.workspace import default_home

    count, rounds = (16, 1) if args.quick else (48, 3)
    rows, speeds = [], []
    where = machine()
    for name in [n for n in args.backbones.split(",") if n]:
        spec = get_backbone(name)
        t0 = time.perf_counter()
        out = subprocess.run([sys.executable, __file__, "--child", name, str(count), str(rounds)],
                             capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        print(f"{name}: {r['ours']:.1f} img/s, ratio {r['ratio']:.3f}, peak {r['peak_memory_mb']:.0f} MB "
              f"({time.perf_counter() - t0:.0f} s)", file=sys.stderr)
        rows.append((f"{name} ({spec.source}, {spec.preprocess.crop_size} px)",
                     f"{r['ours']:.1f} vs {r['plain']:.1f} img/s; peak {r['peak_memory_mb']:.0f} MB",
                     f"{r['ratio']:.3f}", ">= 0.9"))
        speeds.append(BackboneSpeed(name, round(r["ours"], 2), round(r["peak_memory_mb"], 1), round(r["ratio"], 3),
                                    where, time.strftime("%Y-%m-%d")))
    lines = ["| backbone | frozen features vs plain inference_mode; peak memory | ratio | goal |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(r)} |" for r in rows]
    report = (f"\n## {time.strftime('%Y-%m-%d')} — backbones — {where}\n{count} decoded photos per pass, batch 16, "
              f"random-init bodies, median of {rounds}{' (quick run)' if args.quick else ''}\n\n" + "\n".join(lines) + "\n")
    publish(report, args.out)
    if args.save:
        print(f"saved for the Model page: {write_speeds(default_home(), speeds)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
