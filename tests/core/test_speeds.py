"""Backbone speeds measured on this machine: the file the benchmark writes and the Model page reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tl_core.model.speeds import BackboneSpeed, read_speeds, speeds_path, write_speeds

REPO = Path(__file__).resolve().parents[2]


def test_speeds_are_merged_per_backbone_and_a_bad_file_reads_as_none(tmp_path):
    assert read_speeds(tmp_path) == {}
    first = BackboneSpeed("a", 10.0, 500.0, 0.98, "this CPU", "2026-12-08")
    write_speeds(tmp_path, [first, BackboneSpeed("b", 5.0, 800.0, 1.0, "this CPU", "2026-12-08")])
    again = BackboneSpeed("a", 12.0, 510.0, 0.99, "this CPU", "2026-12-09")
    write_speeds(tmp_path, [again])
    assert read_speeds(tmp_path) == {"a": again, "b": BackboneSpeed("b", 5.0, 800.0, 1.0, "this CPU", "2026-12-08")}
    speeds_path(tmp_path).write_text(json.dumps({"backbones": [{"backbone": "c"}]}))  # a row missing fields
    assert read_speeds(tmp_path) == {}
    speeds_path(tmp_path).write_text("{not json")
    assert read_speeds(tmp_path) == {}


@pytest.mark.slow
def test_the_backbone_benchmark_measures_a_timm_model_and_saves_it_for_the_model_page(tmp_path):
    env = {**os.environ, "TL_STUDIO_HOME": str(tmp_path)}
    proc = subprocess.run([sys.executable, "bench/backbones.py", "--quick", "--backbones", "tiny_vit", "--save"],
                          cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert "| tiny_vit (timm, 64 px) |" in proc.stdout
    speed = read_speeds(tmp_path)["tiny_vit"]
    assert speed.images_per_s > 0 and speed.peak_memory_mb > 0 and speed.ratio_to_plain > 0 and speed.machine
