"""What bench/gpu.py drives, on CPU: it skips cleanly without CUDA, its step functions (the trainer's
and the plain AMP loop's) train, its readings table copes with missing values; and the CPU paths it
measures: frozen features in channels-last and in batches, the decode cache memory-mapped."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from bench import gpu  # noqa: E402 - the repository root, just put on the path


@pytest.mark.skipif(torch.cuda.is_available(), reason="this checks the machine without CUDA")
def test_without_cuda_the_gpu_bench_says_skipped_and_exits_zero(tmp_path):
    out = tmp_path / "bench.md"
    done = subprocess.run([sys.executable, str(ROOT / "bench" / "gpu.py"), "--out", str(out)],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("no CUDA device: skipped")
    assert not out.exists()  # nothing measured, nothing appended


def test_the_trainer_step_and_the_plain_amp_step_train_on_the_same_batches():
    device = torch.device("cpu")
    batches = gpu.synthetic_batches(3, 2, 32, device)
    assert batches[0][0].dtype == torch.uint8 and batches[0][0].shape == (2, 3, 32, 32)
    for step in (gpu.trainer_step_fn("mobilenet_v3_small", device, channels_last=True),
                 gpu.plain_step_fn("mobilenet_v3_small", device)):
        assert gpu.images_per_s(step, batches, device, warmup=1) > 0


def test_halved_sizes_and_stats_rows_read_what_the_run_and_the_readings_say():
    from tl_core import events as ev
    from tl_core.system import DeviceInfo

    seen = [ev.Note("Out of memory: retrying epoch 1 with batch size 256."), ev.Note("Resumed after epoch 1."),
            ev.Note("Out of memory: retrying epoch 1 with batch size 128.")]
    assert gpu.halved_sizes(seen) == [256, 128]
    reading = DeviceInfo("cuda", "GPU", memory_used_gb=10.0, memory_total_gb=140.0, utilization_pct=90.0)
    rows = gpu.stats_rows([(reading, (10240.0, 143360.0, 90.0), 10.01, 0.05)] * 3)
    assert rows[0][2] == "1.000" and rows[1][2] == "1.000" and "50 ms" in rows[2][1]
    no_smi = gpu.stats_rows([(DeviceInfo("cuda", "GPU", 10.0, 140.0, None), None, 10.0, 0.01)])
    assert no_smi[0][2] == "-" and "n/a" in no_smi[1][1]
    assert gpu.table(rows).count("\n") == len(rows) + 1


def test_frozen_features_run_channels_last_and_eval_batches_match_the_loader():
    from tl_core.data import center_crop
    from tl_core.model.features import EvalBatches, extract_features
    from tl_core.model.preprocess import Normalizer, make_loader

    torch.manual_seed(0)
    body = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    reference = nn.Sequential(nn.Conv2d(3, 4, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten())
    reference.load_state_dict(body.state_dict())
    normalize = Normalizer((0.5, 0.5, 0.5), (0.25, 0.25, 0.25), torch.device("cpu"))
    images = torch.randint(0, 256, (7, 3, 12, 12), dtype=torch.uint8)
    view = lambda batch: center_crop(batch, 8)  # noqa: E731
    indices, labels = [5, 0, 3, 6, 1], [1, 0, 1, 0, 1]
    batches = EvalBatches(images, indices, labels, view, batch_size=2)
    via_loader = make_loader(images, indices, labels, view, 2, shuffle=False)
    assert len(batches) == len(via_loader) == 3
    for (x, y), (x2, y2) in zip(batches, via_loader, strict=True):
        assert torch.equal(x, x2) and torch.equal(y, y2)
    feats, got = extract_features(body, batches, normalize)
    assert body[0].weight.is_contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        expected = reference(normalize(view(images[indices])))
    assert torch.allclose(feats, expected, atol=1e-5) and got.tolist() == labels
    assert not feats.is_inference()  # a head trains on them
    head = nn.Linear(4, 2)
    nn.functional.cross_entropy(head(feats), got).backward()


def test_a_decode_cache_on_disk_is_memory_mapped(image_folder, tmp_path, monkeypatch):
    from tl_core.data import decode_images, ingest

    ds = ingest(image_folder)
    first = decode_images(ds, range(6), 16, tmp_path / "c")  # small: decoded in RAM, then stored
    modes = []
    real_load = np.load
    monkeypatch.setattr(np, "load", lambda *a, **k: modes.append(k.get("mmap_mode")) or real_load(*a, **k))
    again = decode_images(ds, range(6), 16, tmp_path / "c")
    assert modes == ["c"] and torch.equal(first, again)
    again[0] = 0  # copy-on-write: the file is untouched
    assert torch.equal(decode_images(ds, range(6), 16, tmp_path / "c"), first)
