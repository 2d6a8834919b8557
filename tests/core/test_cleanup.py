"""Cache cleanup: least recently used first, down to the budget, never a busy workspace's; stale
temporary files go; the schedule starts once per process; the CLI runs it."""

from __future__ import annotations

import os
import threading
import time

import pytest

from tl_core.classroom import cleanup
from tl_core.cli import parser as cli
from tl_core.config import DataConfig, RunConfig
from tl_core.jobs import launch as jobs
from tl_core.runs import RunStore
from tl_core.workspace import Workspace

MB = 1024**2
HOUR = 3600.0


def cache_file(ws: Workspace, name: str, size_mb: int, age_h: float):
    path = ws.root / "cache" / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x" * (size_mb * MB))
    when = time.time() - age_h * HOUR
    os.utime(path, (when, when))
    return path


@pytest.fixture
def home(workspace):
    return workspace.root


def test_least_recently_used_caches_go_first_down_to_the_budget(home):
    a, b = Workspace(home).for_session("a"), Workspace(home).for_session("b")
    oldest = cache_file(a, "decoded-1.npy", 2, age_h=30)
    older = cache_file(b, "features/features-1.npy", 2, age_h=20)
    newer = cache_file(a, "features/features-2.npy", 2, age_h=10)
    default = cache_file(Workspace(home), "decoded-2.npy", 2, age_h=5)
    report = cleanup.clean(home, budget_gb=4.5 * MB / cleanup.GB)
    assert [e.path for e in report.removed] == [oldest, older]
    assert not oldest.exists() and not older.exists() and newer.exists() and default.exists()
    assert report.freed_bytes == 4 * MB and report.cache_bytes == 8 * MB
    assert "removed 2" in report.summary()


def test_a_workspace_with_a_queued_or_training_job_keeps_its_caches(home, tmp_path):
    busy, idle = Workspace(home).for_session("busy"), Workspace(home).for_session("idle")
    used = cache_file(busy, "decoded-1.npy", 2, age_h=30)
    free = cache_file(idle, "decoded-2.npy", 2, age_h=1)
    run = RunStore(busy).create(RunConfig(data=DataConfig(source=str(tmp_path))))
    run.mark_running(pid=os.getpid(), pid_created=jobs.process_create_time(os.getpid()))
    report = cleanup.clean(home, budget_gb=1 * MB / cleanup.GB)
    assert used.exists() and not free.exists()
    assert report.kept_in_use == 1
    run.mark_finished()
    cleanup.clean(home, budget_gb=1 * MB / cleanup.GB)
    assert not used.exists()


def test_a_cache_file_just_written_is_left_alone(home):
    fresh = cache_file(Workspace(home).for_session("a"), "decoded-1.npy", 2, age_h=0)
    cleanup.clean(home, budget_gb=1 * MB / cleanup.GB)
    assert fresh.exists()


def test_no_budget_dry_run_and_stale_temporary_files(home):
    ws = Workspace(home).for_session("a")
    kept = cache_file(ws, "decoded-1.npy", 2, age_h=30)
    assert cleanup.clean(home, budget_gb=0).removed == []
    report = cleanup.clean(home, budget_gb=1 * MB / cleanup.GB, dry_run=True)
    assert [e.path for e in report.removed] == [kept] and kept.exists()

    stale = ws.root / "runs" / "r1" / ".status.json.abc.tmp"
    stale.parent.mkdir(parents=True)
    stale.write_text("half")
    os.utime(stale, (time.time() - 7 * HOUR,) * 2)
    young = ws.root / "cache" / ".features-1.npy.def.tmp"
    young.write_text("being written")
    report = cleanup.clean(home, budget_gb=0)
    assert report.temp_removed == [stale] and not stale.exists() and young.exists()


def test_the_budget_comes_from_the_settings(home, monkeypatch):
    old = cache_file(Workspace(home).for_session("a"), "decoded-1.npy", 2, age_h=30)
    monkeypatch.setenv("TL_STUDIO_CACHE_BUDGET_GB", "0.001")
    cleanup.clean(home)
    assert not old.exists()


def test_the_schedule_starts_once_per_process(home, monkeypatch):
    started = threading.Event()
    release = threading.Event()

    def loop(where):
        assert where == home
        started.set()
        release.wait(10)

    monkeypatch.setattr(cleanup, "_loop", loop)
    monkeypatch.setattr(cleanup, "_schedule", None)
    try:
        assert cleanup.start_schedule(home) is True
        assert started.wait(5)
        assert cleanup.start_schedule(home) is False
    finally:
        release.set()


def test_the_cli_cleans_and_prints_the_settings(home, capsys, monkeypatch):
    old = cache_file(Workspace(home).for_session("a"), "decoded-1.npy", 2, age_h=30)
    assert cli.main(["--workspace", str(home), "cleanup", "--budget-gb", "0.001", "--dry-run"]) == 0
    assert "would remove" in capsys.readouterr().out and old.exists()
    assert cli.main(["--workspace", str(home), "cleanup", "--budget-gb", "0.001"]) == 0
    assert not old.exists()

    monkeypatch.setenv("TL_STUDIO_MAX_RUNS", "7")
    (home / "settings.toml").write_text("max_datasets = 3\nteacher_password = 'secret'\n")
    assert cli.main(["--workspace", str(home), "settings"]) == 0
    out = capsys.readouterr().out
    lines = {line.split()[0]: line for line in out.splitlines()[1:]}
    assert "7" in lines["max_runs"] and "TL_STUDIO_MAX_RUNS" in lines["max_runs"]
    assert " 3 " in lines["max_datasets"] and "settings.toml" in lines["max_datasets"]
    assert "secret" not in out


def test_empty_idle_session_workspaces_go_and_others_stay(home):
    def session(name: str, files: dict[str, str], age_h: float):
        root = Workspace(home).for_session(name).root
        for rel, text in files.items():
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            (root / rel).write_text(text)
        when = time.time() - age_h * HOUR
        for path in [root, *root.rglob("*")]:
            os.utime(path, (when, when))
        return root

    visited = session("visited", {"choices.json": "{}", "cache/decoded-1.npy": "x", "runs/.keep": ""}, age_h=30)
    (visited / "runs" / ".keep").unlink()
    os.utime(visited / "runs", (time.time() - 30 * HOUR,) * 2)
    recent = session("recent", {"choices.json": "{}"}, age_h=2)
    worked = session("worked", {"choices.json": "{}", "datasets/d/dataset.json": "{}"}, age_h=300)
    photos = session("photos", {"snapshots/cat/1.jpg": "x"}, age_h=300)
    report = cleanup.clean(home, budget_gb=0)
    assert report.sessions_removed == [visited]
    assert not visited.exists() and recent.exists() and worked.exists() and photos.exists()


@pytest.mark.parametrize("command", ["cleanup", "settings"])
def test_the_new_commands_help_prints(command, capsys):
    with pytest.raises(SystemExit) as info:
        cli.main([command, "--help"])
    assert info.value.code == 0
    assert "usage:" in capsys.readouterr().out
