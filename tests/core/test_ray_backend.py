"""Jobs on a Ray cluster: a local Ray (started here, torn down after) takes two real jobs through
``jobs.start_job``; one waits in Ray's queue and is cancelled there, the other trains and writes
its run folder; a job that dies on Ray is failed with Ray's message; states survive a restart."""

from __future__ import annotations

import shutil
import socket
import tempfile
from pathlib import Path

import pytest

from tests.conftest import wait_for
from tests.tiny_backbone import NAME as TINY
from tl_core.config import DataConfig, FreezePlan, ModelConfig, RunConfig, TrainConfig
from tl_core.events import EpochEnded, RunCancelled, RunFinished
from tl_core.jobs import backends as job_backends
from tl_core.jobs import launch as jobs
from tl_core.runs import RunStore

ray = pytest.importorskip("ray", reason="Ray is not installed (pip install -r requirements-cluster.txt)")
pytest.importorskip("ray.job_submission", reason="Ray's job submission needs ray[default]")

pytestmark = pytest.mark.slow


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ray_address():
    """A local Ray cluster with 2 CPUs and its dashboard (the Job Submission API); its address."""
    temp = tempfile.mkdtemp(prefix="tlray")  # short: Ray's socket paths must fit in 107 bytes
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("RAY_AUTH_MODE", "disabled")  # a local test cluster: no token written to ~/.ray
        context = ray.init(num_cpus=2, include_dashboard=True, dashboard_host="127.0.0.1",
                           dashboard_port=_free_port(), _temp_dir=temp, log_to_driver=False,
                           configure_logging=False)
        try:
            yield "http://" + context.dashboard_url
        finally:
            job_backends._clients.clear()
            ray.shutdown()
            shutil.rmtree(temp, ignore_errors=True)


def tiny_config(folder: Path) -> RunConfig:
    return RunConfig(data=DataConfig(source=str(folder), val_fraction=0.25, augment="none"),
                     model=ModelConfig(backbone=TINY), freeze=FreezePlan(mode="feature_extractor"),
                     train=TrainConfig(epochs=1, batch_size=8, lr=1e-2, schedule="constant", num_workers=0,
                                       device="cpu"))




def ray_status(run) -> str:
    client = job_backends.ray_client(run.job_record()["address"])
    return str(client.get_job_status(run.job_record()["job_id"]).value)


def test_two_jobs_on_ray_one_cancelled_in_its_queue(ray_address, workspace, tmp_path, monkeypatch):
    from tests.conftest import write_image_folder

    folder = write_image_folder(tmp_path / "small", {"red": 6, "green": 6})
    monkeypatch.setenv("TL_STUDIO_RAY_ADDRESS", ray_address)
    monkeypatch.setenv("TL_STUDIO_RAY_JOB_CPUS", "2")  # the cluster's 2 CPUs: the second job waits in Ray's queue
    session = workspace.for_session("student1")
    store = RunStore(session)
    first = store.get(jobs.start_job(session, tiny_config(folder)))
    second = store.get(jobs.start_job(session, tiny_config(folder)))
    for run in (first, second):
        record = run.job_record()
        assert record["backend"] == "ray" and record["address"] == ray_address and record["job_id"]
        assert record["cpus"] == 2.0 and record["gpus"] == 0.0  # a CPU run asks for no GPU
    assert jobs.queue_position(first) is None  # the local queue is bypassed: Ray queues

    wait_for(lambda: ray_status(first) != "PENDING", timeout=180, every=0.5)
    assert ray_status(second) == "PENDING" and jobs.job_state(second).state == "queued"
    jobs.cancel(second)
    assert wait_for(lambda: (s := jobs.job_state(second)).state == "cancelled" and s, timeout=60)
    assert ray_status(second) == "STOPPED"
    events, _ = second.read_events()
    assert [type(e) for e in events] == [RunCancelled]
    assert not jobs.worker_alive(second)

    status = wait_for(lambda: (s := jobs.job_state(first)).state in ("finished", "failed") and s, timeout=180,
                      every=0.5)
    assert status.state == "finished", (first.dir / "worker.log").read_text() if (first.dir / "worker.log").exists() else status
    assert ray_status(first) == "SUCCEEDED" and not jobs.worker_alive(first)
    events, _ = first.read_events()
    assert sum(isinstance(e, EpochEnded) for e in events) == 1 and isinstance(events[-1], RunFinished)
    assert first.read_evaluation("val") is not None and first.has_checkpoint("best")
    assert first.worker_log_path.is_file()  # the worker's output, as a local worker's

    # After a restart of the app (no client cached, fresh handles), the run folder still names the job.
    job_backends._clients.clear()
    assert jobs.job_state(RunStore(session).get(first.id)).state == "finished"


def test_a_job_that_dies_on_ray_is_failed_with_rays_message(ray_address, workspace, tmp_path):
    from tests.conftest import write_image_folder

    run = RunStore(workspace).create(tiny_config(write_image_folder(tmp_path / "small", {"red": 4, "green": 4})))
    client = job_backends.ray_client(ray_address)
    # the backend's own patience: a cluster still starting its job agent says "try again later"
    job_id = job_backends.submit_when_ready(
        lambda: client.submit_job(entrypoint="python -c 'import sys; sys.exit(3)'"))
    run.mark_running(pid=2**22 + 7)  # a pid on some node of the cluster: not this machine's business
    run.record_job(backend="ray", address=ray_address, job_id=job_id)
    status = wait_for(lambda: (s := jobs.job_state(run)).state != "running" and s, timeout=60)
    assert status.state == "failed"
    assert "Ray cluster" in status.error and "exit code 3" in status.error.lower(), status.error
