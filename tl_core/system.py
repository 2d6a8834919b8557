"""What the machine offers: device name, GPU memory/utilisation, CPU use. For status lines."""

from __future__ import annotations

import shutil
import subprocess
import time
from dataclasses import dataclass

import psutil


@dataclass(frozen=True)
class DeviceInfo:
    kind: str  # "cuda", "mps" or "cpu"
    name: str  # e.g. "NVIDIA H100 80GB HBM3" or "CPU (2 cores)"
    memory_used_gb: float | None = None  # GPU memory in use (all processes), else None
    memory_total_gb: float | None = None
    utilization_pct: float | None = None  # GPU utilisation (nvidia-smi) or CPU use (psutil)
    ram_used_pct: float | None = None  # system memory in use

    def summary(self) -> str:
        """One line for a status bar."""
        parts = [self.name]
        if self.memory_total_gb:
            parts.append(f"{self.memory_used_gb or 0:.1f}/{self.memory_total_gb:.0f} GB")
        if self.utilization_pct is not None:
            parts.append(f"{self.utilization_pct:.0f}% busy")
        return " · ".join(parts)


def _nvidia_smi(index: int) -> tuple[float, float, float] | None:
    """(used GB, total GB, utilisation %) of GPU ``index`` from nvidia-smi, or None."""
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    try:
        out = subprocess.run([exe, "--query-gpu=memory.used,memory.total,utilization.gpu",
                              "--format=csv,noheader,nounits", f"--id={index}"],
                             capture_output=True, text=True, timeout=5, check=True).stdout
        used, total, util = (float(v) for v in out.strip().splitlines()[0].split(","))
        return used / 1024, total / 1024, util
    except (OSError, subprocess.SubprocessError, ValueError, IndexError):
        return None


DEVICE_INFO_TTL_S = 1.0  # a measurement is reused this long: the status lines of every session ask

_measured: dict[int, tuple[float, DeviceInfo]] = {}  # index -> (monotonic time, info)


def device_info(index: int = 0) -> DeviceInfo:
    """The device training uses by default (CUDA device ``index`` > MPS > CPU), measured at most
    ``DEVICE_INFO_TTL_S`` ago: on a classroom server 30 sessions' live views and sidebars ask every
    second or two, and on a GPU each measurement starts an ``nvidia-smi`` process."""
    now = time.monotonic()
    cached = _measured.get(index)
    if cached is not None and now - cached[0] < DEVICE_INFO_TTL_S:
        return cached[1]
    info = _measure(index)
    _measured[index] = (time.monotonic(), info)
    return info


def _measure(index: int) -> DeviceInfo:
    import torch

    ram = psutil.virtual_memory().percent
    if torch.cuda.is_available():
        name = torch.cuda.get_device_name(index)
        smi = _nvidia_smi(index)
        if smi is not None:
            used, total, util = smi
        else:  # without nvidia-smi: free/total from the driver, no utilisation
            free, total_b = torch.cuda.mem_get_info(index)
            used, total, util = (total_b - free) / 2**30, total_b / 2**30, None
        return DeviceInfo("cuda", name, used, total, util, ram)
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return DeviceInfo("mps", "Apple GPU (MPS)", None, None, None, ram)
    cores = psutil.cpu_count(logical=True) or 1
    return DeviceInfo("cpu", f"CPU ({cores} cores)", None, None, _cpu_percent(), ram)


_cpu_primed = False


def _cpu_percent() -> float:
    """CPU use since the previous call (psutil keeps the last sample). Only the first call of a
    process blocks, for a 0.1 s sample; the Train page's 1 s refresh must not wait on every call."""
    global _cpu_primed
    if not _cpu_primed:
        _cpu_primed = True
        return psutil.cpu_percent(interval=0.1)
    return psutil.cpu_percent(interval=None)
