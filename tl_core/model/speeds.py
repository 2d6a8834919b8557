"""Backbone speeds measured on this machine (``bench/backbones.py`` writes them), for the Model page
and the CLI: frozen-feature images/s and peak memory per backbone, with the machine they came from.

The file lives in the server's home (``TL_STUDIO_HOME``), not in a session: a teacher runs the
benchmark once for the class. No file, no speeds: the page then shows the published multiply-adds.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from pathlib import Path

from tl_core import atomic

SPEEDS_FILE = "backbone_speeds.json"


@dataclass(frozen=True)
class BackboneSpeed:
    backbone: str  # registry name
    images_per_s: float  # frozen-feature extraction at the backbone's crop, the app's path
    peak_memory_mb: float  # peak resident memory of a process that built it and extracted features
    ratio_to_plain: float  # the app's path against plain inference_mode forwards of the same model
    machine: str  # CPU / GPU, threads, torch version
    measured: str  # date


def speeds_path(home: Path) -> Path:
    return Path(home) / SPEEDS_FILE


def read_speeds(home: Path) -> dict[str, BackboneSpeed]:
    """Backbone name -> its measured speed; empty when nothing was measured here (or the file is bad)."""
    data = atomic.read_json(speeds_path(home), default={})
    found = {}
    for row in data.get("backbones", []) if isinstance(data, dict) else []:
        try:
            speed = BackboneSpeed(**row)
        except TypeError:
            continue
        found[speed.backbone] = speed
    return found


def write_speeds(home: Path, speeds: list[BackboneSpeed]) -> Path:
    """Merge ``speeds`` into the file (a backbone measured again replaces its row), whole-or-nothing."""
    rows = read_speeds(home)
    rows.update({s.backbone: s for s in speeds})
    path = speeds_path(home)
    atomic.write_json(path, {"backbones": [asdict(s) for s in rows.values()]})
    return path
