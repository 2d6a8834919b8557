"""Limits a teacher sets: each check refuses the step that would pass a limit, names the setting and
says what to do; the engine's entry points (start, resume, experiments) obey them."""

from __future__ import annotations

import os
import zipfile

import pytest

from tl_core import limits
from tl_core.config import DataConfig, RunConfig
from tl_core.data import UploadedImage, uploads
from tl_core.errors import LimitReached
from tl_core.experiments import plan as experiments
from tl_core.jobs import launch as jobs
from tl_core.jobs import limits as job_limits
from tl_core.runs import RunStore
from tl_core.settings import Settings, replace
from tl_core.workspace import Workspace

ROOMY = Settings(min_free_disk_mb=0)  # tests must not depend on the machine's free space


@pytest.fixture(autouse=True)
def fresh_sizes():
    limits.forget_sizes()
    yield
    limits.forget_sizes()


@pytest.fixture
def session(workspace):
    return workspace.for_session("student1")


def config(tmp_path) -> RunConfig:
    return RunConfig(data=DataConfig(source=str(tmp_path)))


def queued_run(ws, tmp_path):
    run = RunStore(ws).create(config(tmp_path))
    run.mark_queued(pid=os.getpid(), pid_created=jobs.process_create_time(os.getpid()))
    return run


def test_active_jobs_of_a_session_are_limited(session, tmp_path):
    settings = replace(ROOMY, max_active_jobs=2)
    queued_run(session, tmp_path)
    job_limits.check_can_start(session, settings=settings)  # one is fine
    queued_run(session, tmp_path)
    with pytest.raises(LimitReached) as caught:
        job_limits.check_can_start(session, settings=settings, is_active=jobs.is_active)
    assert caught.value.setting == "max_active_jobs"
    assert str(caught.value) == ("You have 2 jobs queued or training (the limit is 2): wait for one to finish "
                                 "or stop it on the Runs page.")
    # an experiment's member is checked with the experiment, not one by one
    job_limits.check_can_start(session, settings=settings, count_active=False, new_runs=0)


def test_a_dead_worker_does_not_count_as_an_active_job(session, tmp_path):
    settings = replace(ROOMY, max_active_jobs=1)
    run = RunStore(session).create(config(tmp_path))
    run.mark_queued(pid=2**22 + 12345, pid_created=1.0)  # no such process
    job_limits.check_can_start(session, settings=settings, is_active=jobs.is_active)
    assert run.status().state == "failed"


def test_runs_of_a_session_are_limited_and_0_means_no_limit(session, tmp_path):
    for _ in range(3):
        RunStore(session).create(config(tmp_path))
    with pytest.raises(LimitReached, match="You have 3 runs .the limit is 3.*max_runs") as caught:
        job_limits.check_can_start(session, settings=replace(ROOMY, max_runs=3))
    assert caught.value.setting == "max_runs"
    job_limits.check_can_start(session, settings=replace(ROOMY, max_runs=0))
    job_limits.check_can_start(session, new_runs=0, settings=replace(ROOMY, max_runs=3))  # a resume adds none
    with pytest.raises(LimitReached, match="this makes 2 more"):
        job_limits.check_can_start(session, new_runs=2, settings=replace(ROOMY, max_runs=4))


def test_session_limits_do_not_apply_to_the_cli_workspace(workspace, tmp_path):
    for _ in range(3):
        queued_run(workspace, tmp_path)
    job_limits.check_can_start(workspace, settings=replace(ROOMY, max_runs=1, max_active_jobs=1))
    assert not limits.is_session_workspace(workspace)
    assert limits.is_session_workspace(workspace.for_session("abc"))


def test_session_disk_is_limited(session):
    session.root.mkdir(parents=True)
    (session.root / "big.bin").write_bytes(b"x" * (2 * limits.MB))
    with pytest.raises(LimitReached, match="Your workspace uses 2 MB.*max_session_disk_mb") as caught:
        job_limits.check_can_start(session, settings=replace(ROOMY, max_session_disk_mb=1))
    assert caught.value.setting == "max_session_disk_mb"
    job_limits.check_can_start(session, settings=replace(ROOMY, max_session_disk_mb=3))
    with pytest.raises(LimitReached, match="2 MB more with this"):
        limits.check_can_add_dataset(session, 2 * limits.MB, 1, settings=replace(ROOMY, max_session_disk_mb=3))


def test_a_session_over_its_disk_limit_gives_up_its_own_caches_first(session, tmp_path):
    settings = replace(ROOMY, max_session_disk_mb=3)
    cache = session.cache_dir / "decoded-x.npy"
    cache.write_bytes(b"x" * (2 * limits.MB))
    (session.root / "data.bin").write_bytes(b"x" * (2 * limits.MB))
    run = queued_run(session, tmp_path)  # a job may read the cache: it stays, the limit is reached
    with pytest.raises(LimitReached, match="max_session_disk_mb"):
        limits.check_can_add_dataset(session, settings=settings)
    assert cache.exists()
    run.mark_finished()
    limits.check_can_add_dataset(session, settings=settings)  # the cache went; the data stays
    assert not cache.exists() and (session.root / "data.bin").exists()


def test_free_space_is_checked_everywhere_with_a_clear_message(workspace, monkeypatch):
    monkeypatch.setattr(limits, "free_disk_bytes", lambda path=None: 500 * limits.MB)
    with pytest.raises(LimitReached, match="the server's disk is full|The server's disk is full") as caught:
        job_limits.check_can_start(workspace, settings=Settings(min_free_disk_mb=1000))
    assert caught.value.setting == "min_free_disk_mb"
    assert "ask the teacher" in str(caught.value)
    job_limits.check_can_start(workspace, settings=Settings(min_free_disk_mb=100))
    with pytest.raises(LimitReached, match="this upload needs about 600 MB"):
        limits.check_can_add_dataset(workspace, 300 * limits.MB, settings=Settings(min_free_disk_mb=100,
                                                                                   max_upload_mb=0))


def test_total_disk_of_the_server_is_limited(workspace):
    (workspace.root / "sessions" / "a").mkdir(parents=True)
    (workspace.root / "sessions" / "a" / "f.bin").write_bytes(b"x" * (2 * limits.MB))
    with pytest.raises(LimitReached, match="max_total_disk_gb") as caught:
        job_limits.check_can_start(workspace, settings=replace(ROOMY, max_total_disk_gb=0.001))
    assert caught.value.setting == "max_total_disk_gb"


def test_uploads_datasets_and_sessions_are_limited(session, workspace):
    settings = replace(ROOMY, max_upload_mb=1, max_upload_images=10, max_datasets=2)
    limits.check_can_add_dataset(session, limits.MB, 10, settings=settings)
    with pytest.raises(LimitReached, match=r"This upload is 2 MB \(the limit is 1 MB per upload\)"):
        limits.check_can_add_dataset(session, 2 * limits.MB, 1, settings=settings)
    with pytest.raises(LimitReached, match="11 images .the limit is 10 per upload.*max_upload_images"):
        limits.check_can_add_dataset(session, 1, 11, settings=settings)
    for name in ("a", "b"):
        (session.datasets_dir / name).mkdir()
        (session.datasets_dir / name / "dataset.json").write_text("{}")
    with pytest.raises(LimitReached, match="You have 2 datasets .the limit is 2.*max_datasets") as caught:
        limits.check_can_add_dataset(session, 1, 1, settings=settings)
    assert caught.value.setting == "max_datasets"

    limits.check_new_session(settings=replace(ROOMY, max_sessions=2))  # one session so far
    workspace.for_session("student2").datasets_dir  # noqa: B018 - makes the folder
    with pytest.raises(LimitReached, match="2 workspaces.*max_sessions.*link") as caught:
        limits.check_new_session(settings=replace(ROOMY, max_sessions=2))
    assert caught.value.setting == "max_sessions"


def test_measure_upload_counts_images_of_zips_folders_and_uploads(tmp_path, image_folder):
    archive = tmp_path / "a.zip"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("cats/1.jpg", b"x" * 100)
        zf.writestr("cats/2.png", b"x" * 100)
        zf.writestr("__MACOSX/cats/._1.jpg", b"x")
        zf.writestr("notes.txt", b"hello")
    assert uploads.measure_upload(archive) == (archive.stat().st_size, 2)
    size, images = uploads.measure_upload(image_folder)
    assert images == 36 and size > 0
    sent = [UploadedImage(name="a.jpg", data=b"x" * 10, label="a"), UploadedImage(name="b.jpg", data=b"y" * 5, label="b")]
    assert uploads.measure_upload(sent) == (15, 2)
    with pytest.raises(LimitReached, match="max_upload_images"):
        uploads.check_dataset_source(Workspace(tmp_path), archive, settings=replace(ROOMY, max_upload_images=1))


def test_upload_limits_follow_the_settings():
    caps = uploads.upload_limits(Settings(max_upload_mb=10, max_upload_images=100))
    assert caps.max_total_bytes == 20 * limits.MB and caps.max_files == 200 and caps.max_file_bytes == 10 * limits.MB
    unlimited = uploads.upload_limits(Settings(max_upload_mb=0, max_upload_images=0))
    assert unlimited.max_total_bytes == 4 * limits.GB


def test_folder_sizes_are_remembered_for_a_few_seconds(tmp_path):
    (tmp_path / "a").write_bytes(b"x" * 1000)
    assert limits.folder_bytes(tmp_path) == 1000
    (tmp_path / "b").write_bytes(b"x" * 500)
    assert limits.folder_bytes(tmp_path) == 1000  # cached
    assert limits.folder_bytes(tmp_path, max_age_s=0) == 1500
    limits.forget_sizes()
    assert limits.folder_bytes(tmp_path) == 1500


def test_a_run_estimate_counts_checkpoints(tmp_path):
    need = job_limits.estimate_run_bytes(config(tmp_path))
    assert 2 * 4 * 3_000_000 < need < 200 * limits.MB  # mobilenet_v2: 3.5 M parameters, two checkpoints


def test_start_resume_and_experiments_obey_the_limits(session, tmp_path, monkeypatch):
    monkeypatch.setenv("TL_STUDIO_MIN_FREE_DISK_MB", "0")
    monkeypatch.setenv("TL_STUDIO_MAX_ACTIVE_JOBS", "1")
    def launch(workspace, run, **kwargs):  # no worker: the run is queued by this (live) process
        run.mark_queued(pid=os.getpid(), pid_created=jobs.process_create_time(os.getpid()))

    monkeypatch.setattr(jobs, "_launch", launch)
    running = queued_run(session, tmp_path)
    before = {r.id for r in RunStore(session).list()}
    with pytest.raises(LimitReached, match="1 job queued or training"):
        jobs.start_job(session, config(tmp_path))
    assert {r.id for r in RunStore(session).list()} == before  # no run was made
    stopped = RunStore(session).create(config(tmp_path))
    stopped.mark_cancelled()
    with pytest.raises(LimitReached):
        jobs.resume_job(session, stopped)
    base = config(tmp_path)
    with pytest.raises(LimitReached):
        experiments.start_experiment(session, base, ["linear_probe", "full_finetune"])
    running.mark_cancelled()
    monkeypatch.setenv("TL_STUDIO_MAX_RUNS", "4")
    with pytest.raises(LimitReached, match="this makes 3 more"):
        experiments.start_experiment(session, base, ["linear_probe", "full_finetune", "random_init"])
    experiment = experiments.start_experiment(session, base, ["linear_probe", "full_finetune"])
    assert all(m.run_id for m in experiment.members)  # one experiment over the active-jobs limit: allowed


def test_the_cli_train_checks_the_free_space_before_making_a_run(workspace, image_folder, monkeypatch, capsys):
    from tl_core.cli import parser as cli

    monkeypatch.setenv("TL_STUDIO_MIN_FREE_DISK_MB", str(10**9))  # a petabyte kept free: never there
    code = cli.main(["--workspace", str(workspace.root), "train", str(image_folder), "--epochs", "1"])
    assert code == 2
    assert "The server's disk is full" in capsys.readouterr().err
    assert RunStore(workspace).list() == []
