"""The backbone commands: ``backbones`` (which weights are on this machine), ``fetch-weights``
(download them) and ``weights import`` (add checked .pth and .safetensors files)."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def cmd_backbones(args) -> int:
    from tl_core.model.registry import list_backbones
    from tl_core.model.weights import weights_status

    rows = []
    for spec in list_backbones():
        st = weights_status(spec.name, args.weights_dir)
        rows.append((spec.name, spec.source, f"{spec.num_params / 1e6:.1f}M", f"{spec.top1:.1f}", spec.accuracy,
                     f"{spec.preprocess.crop_size}px", st.source if st.available else "missing"))
    if args.json:
        keys = ("name", "source", "params", "imagenet_acc", "acc_kind", "input", "weights")
        print(json.dumps([dict(zip(keys, r, strict=True)) for r in rows], indent=2))
        return 0
    header = ("backbone", "library", "params", "ImageNet %", "measured as", "input", "weights here")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=False)))
    missing = [r[0] for r in rows if r[-1] == "missing"]
    if missing:
        print("\nMissing weights download automatically when online (`python -m tl_core fetch-weights NAME` "
              "fetches them ahead of a class). Offline, put torchvision's .pth files in the torch hub cache "
              "(~/.cache/torch/hub/checkpoints), or any backbone's file, under the name `weights import` "
              "expects, in a folder named by TL_STUDIO_WEIGHTS. Any timm model: --backbone timm/<name>.")
    return 0

def cmd_fetch_weights(args) -> int:
    """Download backbones' weights into their library's cache (torchvision's, or the Hugging Face hub's
    for timm and open_clip): run once online, e.g. before class. One line per backbone; a backbone
    that cannot be fetched is an ``error:`` line on stderr, does not stop the others, and makes the
    exit code 2."""
    from tl_core.errors import TLError
    from tl_core.model.registry import list_backbones
    from tl_core.model.weights import load_pretrained_state_dict

    names = args.names or [spec.name for spec in list_backbones()]
    failed = 0
    for name in names:
        try:
            _, source = load_pretrained_state_dict(name, allow_download=True)
        except TLError as exc:
            failed += 1
            print(f"error: {name}: {exc}", file=sys.stderr)
            continue
        print(f"{name}: {'downloaded' if source == 'download' else 'already here (' + source + ')'}")
    return 2 if failed else 0


def cmd_weights_import(args) -> int:
    """Check and add weights files (each PATH a file, or a folder of them), one line per file."""
    from tl_core.model.weights import import_weights_file, import_weights_folder

    results = []
    for path in map(Path, args.paths):
        results += import_weights_folder(path) if path.is_dir() else [import_weights_file(path)]
    for result in results:
        print(f"{result.outcome}: {result.message}")
    return 1 if any(r.outcome == "refused" for r in results) else 0
