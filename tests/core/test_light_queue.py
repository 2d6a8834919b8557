"""A job waiting in the queue is a light process: it has not imported torch (~500 MB) yet."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

from tl_core.config import DataConfig, RunConfig
from tl_core.jobs import launch as jobs
from tl_core.jobs import queue as job_queue
from tl_core.jobs import worker
from tl_core.runs import RunStore

WAITING_RSS_LIMIT = 150 * 1024**2


def test_the_worker_module_imports_no_torch():
    code = "import sys, tl_core.jobs.worker; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.strip() == "False"


def test_max_jobs_counts_without_importing_torch():
    code = ("import os, sys; os.environ.pop('TL_STUDIO_MAX_JOBS', None); from tl_core.jobs import launch as jobs; "
            "n = jobs.max_jobs(); print(n >= 1, 'torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parents[2])
    assert out.stdout.split() == ["True", "False"]


def test_max_jobs_reads_the_variable_then_the_visible_gpus(monkeypatch):
    monkeypatch.setenv(jobs.ENV_MAX_JOBS, "3")
    assert jobs.max_jobs() == 3
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    monkeypatch.delenv(jobs.ENV_MAX_JOBS)
    monkeypatch.delitem(sys.modules, "torch", raising=False)
    assert jobs.max_jobs() == 2


@pytest.mark.slow
def test_a_waiting_worker_stays_small_and_leaves_when_cancelled(workspace, tmp_path, monkeypatch):
    monkeypatch.setenv(jobs.ENV_MAX_JOBS, "1")
    root = jobs.jobs_root(workspace.root)
    held = job_queue._try_slot(root, 1, tmp_path)  # another job trains: the new one must wait
    assert held is not None
    try:
        run = RunStore(workspace).create(RunConfig(data=DataConfig(source=str(tmp_path))))
        jobs._launch(workspace, run, home=workspace.root, resume=False)
        pid = None
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            status = run.status()
            if status.pid and status.pid_created and jobs.process_alive(status.pid):
                pid = status.pid
                break
            time.sleep(0.2)
        assert pid is not None, (run.dir / "worker.log").read_text()
        time.sleep(3.0)  # well into its waiting loop
        process = psutil.Process(pid)
        assert run.status().state == "queued"
        assert process.cmdline()[-2:] == ["--slots", "1"]  # counted by the launcher, not by the worker
        mapped = " ".join(m.path for m in process.memory_maps())
        assert "libtorch" not in mapped
        assert process.memory_info().rss < WAITING_RSS_LIMIT
        # it gives way to the app's pages on shared cores (nice is capped at 19)
        assert process.nice() >= min(psutil.Process().nice() + worker.WORKER_NICENESS, 19)
        jobs.cancel(run)
        process.wait(timeout=30)
        assert run.status().state == "cancelled"
    finally:
        held.release()
