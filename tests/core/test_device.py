"""Device choice, seeds, precision and out-of-memory detection (tl_core.device)."""

from __future__ import annotations

import random

import pytest
import torch

from tl_core.device import autocast, autocast_dtype, is_out_of_memory, seed_everything, select_device
from tl_core.errors import ConfigError


def test_select_device():
    assert select_device("cpu") == torch.device("cpu")
    assert select_device("auto").type in ("cuda", "mps", "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="'auto' or 'cpu'"):
            select_device("cuda")


def test_seed_everything_repeats_every_generator():
    draws = []
    for _ in range(2):
        seed_everything(3)
        draws.append((random.random(), torch.rand(1).item()))
    assert draws[0] == draws[1]


def test_full_precision_off_cuda():
    cpu = torch.device("cpu")
    assert autocast_dtype(cpu, True) is None and autocast_dtype(cpu, False) is None
    with autocast(cpu, None):
        assert torch.ones(1).dtype == torch.float32


def test_out_of_memory_is_recognised_by_type_or_message():
    assert is_out_of_memory(torch.cuda.OutOfMemoryError("CUDA out of memory."))
    assert is_out_of_memory(RuntimeError("MPS backend out of memory"))
    assert not is_out_of_memory(RuntimeError("shape mismatch"))
