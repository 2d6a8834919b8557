"""On a CUDA GPU only (marked ``gpu``: skipped with a reason elsewhere): the trainer's AMP +
channels-last step, the automatic batch size measured for real, and the Train page's GPU reading
against nvidia-smi."""

from __future__ import annotations

import shutil
import subprocess

import pytest
import torch
from torch import nn

pytestmark = pytest.mark.gpu


def test_an_amp_channels_last_train_step_on_cuda_learns():
    from tl_core.device import autocast_dtype
    from tl_core.training.trainer import train_step

    device = torch.device("cuda")
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(8, 2)).to(memory_format=torch.channels_last).to(device)
    amp_dtype = autocast_dtype(device, True)
    assert amp_dtype in (torch.bfloat16, torch.float16)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cuda") if amp_dtype == torch.float16 else None
    x = torch.randn(16, 3, 16, 16, device=device).contiguous(memory_format=torch.channels_last)
    y = (x.mean((1, 2, 3)) > 0).long()
    losses = [float(train_step(model, x, y, optimizer, nn.CrossEntropyLoss(), scaler=scaler,
                               amp_dtype=amp_dtype)[0]) for _ in range(30)]
    assert losses[-1] < losses[0] * 0.7
    assert model[0].weight.is_contiguous(memory_format=torch.channels_last)


def test_auto_batch_on_cuda_finds_a_power_of_two_that_fits_and_remembers_it(tmp_path):
    from tl_core.training.autobatch import choose_batch_size

    device = torch.device("cuda")
    model = nn.Sequential(nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                          nn.Linear(16, 2)).to(device).eval()
    stats = model[1].running_mean.clone()
    kw = dict(backbone="tiny", device=device, amp_dtype=torch.bfloat16, crop_size=32, n_classes=2, n_train=100,
              configured=8, cache_dir=tmp_path)
    first = choose_batch_size(model, **kw)
    assert first.measured and first.batch_size == 64  # a tiny model fits up to the training set's cap
    again = choose_batch_size(model, **kw)
    assert (again.batch_size, again.measured) == (64, False)
    assert model[0].weight.grad is None  # the probe leaves no gradients behind, BatchNorm's statistics
    assert torch.equal(model[1].running_mean, stats) and not model.training  # and the mode as they were


def test_the_train_pages_gpu_reading_matches_nvidia_smi():
    from tl_core.system import device_info

    if shutil.which("nvidia-smi") is None:
        pytest.skip("nvidia-smi is not installed here")
    info = device_info(0)
    out = subprocess.run(["nvidia-smi", "--query-gpu=memory.used,memory.total", "--format=csv,noheader,nounits",
                          "--id=0"], capture_output=True, text=True, check=True).stdout
    used, total = (float(v) / 1024 for v in out.strip().splitlines()[0].split(","))
    assert info.kind == "cuda" and info.name == torch.cuda.get_device_name(0)
    assert info.memory_total_gb == pytest.approx(total, rel=0.01)
    assert info.memory_used_gb == pytest.approx(used, abs=0.5)  # other processes may allocate in between
    assert info.utilization_pct is not None and 0 <= info.utilization_pct <= 100
