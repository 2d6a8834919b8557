"""The backbone commands: ``backbones`` (which weights are on this machine), ``fetch-weights``
(download them) and ``weights import`` (add checked .pth files)."""

from __future__ import annotations

import json
from pathlib import Path


def cmd_backbones(args) -> int:
    from tl_core.model.registry import list_backbones
    from tl_core.model.weights import weights_status

    rows = []
    for spec in list_backbones():
        st = weights_status(spec.name, args.weights_dir)
        rows.append((spec.name, f"{spec.num_params / 1e6:.1f}M", f"{spec.top1:.1f}",
                     f"{spec.preprocess.crop_size}px", st.source if st.available else "missing"))
    if args.json:
        print(json.dumps([dict(zip(("name", "params", "top1", "input", "weights"), r, strict=False)) for r in rows], indent=2))
        return 0
    header = ("backbone", "params", "top-1", "input", "weights here")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=False)))
    missing = [r[0] for r in rows if r[-1] == "missing"]
    if missing:
        print("\nMissing weights download automatically when online, or put torchvision's .pth files in "
              "the torch hub cache (~/.cache/torch/hub/checkpoints) or a folder named by TL_STUDIO_WEIGHTS.")
    return 0

def cmd_fetch_weights(args) -> int:
    """Download backbones' weights into torchvision's cache (run once online, e.g. before class)."""
    from tl_core.model.registry import list_backbones
    from tl_core.model.weights import load_pretrained_state_dict

    names = args.names or [spec.name for spec in list_backbones()]
    for name in names:
        _, source = load_pretrained_state_dict(name, allow_download=True)
        print(f"{name}: {'downloaded' if source == 'download' else 'already here (' + source + ')'}")
    return 0


def cmd_weights_import(args) -> int:
    """Check and add torchvision .pth files (each PATH a file, or a folder of them), one line per file."""
    from tl_core.model.weights import import_weights_file, import_weights_folder

    results = []
    for path in map(Path, args.paths):
        results += import_weights_folder(path) if path.is_dir() else [import_weights_file(path)]
    for result in results:
        print(f"{result.outcome}: {result.message}")
    return 1 if any(r.outcome == "refused" for r in results) else 0
