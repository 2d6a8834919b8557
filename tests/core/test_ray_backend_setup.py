"""The Ray backend's choices that need no cluster: which backend a job goes to, what the job takes
along, and what a user is told when Ray is missing (tests/core/test_ray_backend.py runs real jobs)."""

from __future__ import annotations

import sys

import pytest

from tl_core.errors import JobError
from tl_core.jobs import backends as job_backends
from tl_core.runs import RunStore


def test_jobs_go_to_ray_only_with_its_address(monkeypatch):
    monkeypatch.delenv("TL_STUDIO_RAY_ADDRESS", raising=False)
    assert job_backends.configured_backend() is None
    monkeypatch.setenv("TL_STUDIO_RAY_ADDRESS", "http://head:8265")
    assert job_backends.configured_backend() == job_backends.RayBackend("http://head:8265")


def test_a_run_follows_the_backend_it_was_launched_on(workspace, tmp_path):
    from tests.core.test_jobs import tiny_config

    run = RunStore(workspace).create(tiny_config(tmp_path))
    assert job_backends.recorded_backend(run) is None  # a local job
    run.record_job(backend="ray", address="http://head:8265", job_id="raysubmit_1")
    assert job_backends.recorded_backend(run) == job_backends.RayBackend("http://head:8265")
    run.clear_job_record()
    assert job_backends.recorded_backend(run) is None


def test_the_job_takes_settings_and_mlflow_along_but_not_the_teacher_password(workspace, tmp_path, monkeypatch):
    from tests.core.test_jobs import tiny_config

    monkeypatch.setenv("TL_STUDIO_MAX_JOBS", "3")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow:5000")
    monkeypatch.setenv("TL_STUDIO_TEACHER_PASSWORD", "secret phrase")
    monkeypatch.setenv("UNRELATED_SECRET", "x")
    env = job_backends.forwarded_env()
    assert env["TL_STUDIO_MAX_JOBS"] == "3" and env["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert env["TL_STUDIO_HOME"] == str(workspace.root)
    assert "TL_STUDIO_TEACHER_PASSWORD" not in env and "UNRELATED_SECRET" not in env
    run = RunStore(workspace).create(tiny_config(tmp_path))
    command = job_backends.worker_command(run, workspace, resume=True)
    assert command[1:4] == ["-m", "tl_core.jobs.worker", str(run.dir)] and "--ticket" not in command  # Ray queues
    assert command[-1] == "--resume"


def test_without_ray_installed_the_user_is_told_what_to_do(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray.job_submission", None)  # as if Ray were not installed
    with pytest.raises(JobError, match="requirements-cluster.txt"):
        job_backends.ray_client("http://nowhere.test:8265")


def test_a_submission_waits_for_a_cluster_that_says_try_again_later():
    """Ray answers 'No available agent to submit job, please try again later' while its job agent
    starts: the submission is tried again (within its patience); any other error is raised at once."""
    answers = [RuntimeError("Request failed with status code 500: No available agent to submit job, "
                            "please try again later.")] * 2 + ["raysubmit_1"]
    waits: list[float] = []

    def submit() -> str:
        answer = answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer

    assert job_backends.submit_when_ready(submit, sleep=waits.append) == "raysubmit_1"
    assert waits == [0.5, 1.0]

    def refused() -> str:
        raise RuntimeError("Request failed with status code 400: bad runtime_env")

    with pytest.raises(RuntimeError, match="bad runtime_env"):
        job_backends.submit_when_ready(refused, sleep=waits.append)
    assert waits == [0.5, 1.0]  # not tried again

    def never_ready() -> str:
        raise RuntimeError("No available agent to submit job, please try again later.")

    with pytest.raises(RuntimeError, match="try again later"):
        job_backends.submit_when_ready(never_ready, patience_s=0.0, sleep=waits.append)
