"""Where a training job runs: the local queue (the default) or a Ray cluster.

``tl_core.jobs.launch`` is the one interface the app and the CLI call (``start_job``, ``job_state``,
``cancel``, ...); it hands the launch, state and end of a job to a backend:

- ``LocalBackend``: today's worker processes and server-wide queue (``jobs._launch``, the
  dead-worker rule), wrapped as they are;
- ``RayBackend``: chosen by the ``ray_address`` setting (``TL_STUDIO_RAY_ADDRESS``, the address of
  the cluster's dashboard, e.g. ``http://head:8265``). Each job is submitted with Ray's Job
  Submission API: its entrypoint is the worker's own command line (``python -m tl_core.jobs.worker``,
  without a queue ticket: Ray queues the jobs), with the run's resource request (CPUs, GPUs).

A Ray job's worker writes the run folder as a local one does, so the pages follow it unchanged;
this needs the folder on storage every node of the cluster mounts at the same path, and the
same Python environment on every node. The Ray job id is kept in the run folder
(``Run.record_job``), so its state survives a restart of the app. Ray is optional
(``pip install .[cluster]``): it is imported only when a Ray job is launched or looked at.
"""

from __future__ import annotations

import dataclasses
import os
import shlex
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from tl_core.errors import JobError
from tl_core.events import RunCancelled
from tl_core.runs import Run, RunStatus
from tl_core.settings import load_settings
from tl_core.workspace import Workspace

RAY = "ray"
# Environment a job takes to the cluster: TL Studio's settings, MLflow's tracking, offline mode.
# Ray shows a job's environment on its dashboard: the teacher's password never goes (a worker
# does not need it); MLflow's credentials do, as the worker logs to MLflow.
FORWARDED_ENV_PREFIXES = ("TL_STUDIO_", "MLFLOW_")
NOT_FORWARDED = frozenset({"TL_STUDIO_TEACHER_PASSWORD"})


class JobBackend(Protocol):
    """Launch, state and end of one job; ``tl_core.jobs.launch`` does the rest (limits, run folders)."""

    def launch(self, workspace: Workspace, run: Run, *, home: Path | None, resume: bool) -> None: ...

    def state(self, run: Run) -> RunStatus:
        """The run's status; a job found gone while its folder says active is marked failed first."""

    def cancel(self, run: Run) -> None:
        """After ``run.request_stop()``: end what the stop flag cannot (a job not yet started)."""

    def end(self, run: Run, wait_s: float) -> bool:
        """End the job's process now (to delete the run); False when it cannot be ended from here."""

    def alive(self, run: Run) -> bool:
        """True while the job's process runs (it may be writing the final evaluation)."""


@dataclass(frozen=True)
class LocalBackend:
    """The local queue and worker processes: ``tl_core.jobs.launch``'s own functions, handed in (this
    module cannot import ``jobs``, which chooses the backend)."""

    launch_job: Callable[..., None]
    job_state: Callable[[Run], RunStatus]
    end_job: Callable[[Run, float], bool]
    worker_alive: Callable[[Run], bool]

    def launch(self, workspace: Workspace, run: Run, *, home: Path | None, resume: bool) -> None:
        run.clear_job_record()  # trained on Ray before, resumed here
        self.launch_job(workspace, run, home=home, resume=resume)

    def state(self, run: Run) -> RunStatus:
        return self.job_state(run)

    def cancel(self, run: Run) -> None:
        pass  # the worker reads the stop flag, waiting in the queue or training

    def end(self, run: Run, wait_s: float) -> bool:
        return self.end_job(run, wait_s)

    def alive(self, run: Run) -> bool:
        return self.worker_alive(run)


# -- Ray -------------------------------------------------------------------------------------
RAY_QUEUED, RAY_RUNNING = "PENDING", "RUNNING"
RAY_FINAL = ("SUCCEEDED", "FAILED", "STOPPED")
SUBMIT_PATIENCE_S = 30.0  # how long a submission waits for a cluster that says "try again later"


def submit_when_ready(submit: Callable[[], str], *, patience_s: float = SUBMIT_PATIENCE_S,
                      sleep: Callable[[float], None] = time.sleep) -> str:
    """``submit()``, tried again while Ray answers that it cannot take a job yet ("No available
    agent to submit job, please try again later": a head node still starting its job agent, or one
    busy starting another job) for up to ``patience_s`` seconds; any other error at once."""
    deadline, wait = time.monotonic() + patience_s, 0.5
    while True:
        try:
            return submit()
        except Exception as exc:  # noqa: BLE001 - Ray's SDK raises RuntimeError with the HTTP answer
            if "try again later" not in str(exc) or time.monotonic() + wait > deadline:
                raise
        sleep(wait)
        wait = min(2 * wait, 4.0)


_clients: dict[str, Any] = {}  # one JobSubmissionClient per address (making one asks the cluster)
_clients_lock = threading.Lock()


def ray_client(address: str):
    """The Job Submission client of the cluster at ``address``. JobError when Ray is not
    installed or the cluster cannot be reached, with what to do."""
    with _clients_lock:
        client = _clients.get(address)
        if client is not None:
            return client
        try:
            from ray.job_submission import JobSubmissionClient
        except ImportError as exc:
            raise JobError("The setting ray_address sends jobs to a Ray cluster, but Ray is not installed "
                           "here: pip install -r requirements-cluster.txt, or clear TL_STUDIO_RAY_ADDRESS "
                           "to train on this machine.") from exc
        try:
            client = JobSubmissionClient(address)
        except Exception as exc:  # noqa: BLE001 - Ray raises ConnectionError, RuntimeError, ValueError...
            raise JobError(f"The Ray cluster at {address} (setting ray_address) cannot be reached ({exc}). "
                           "Check that it runs and that the address is its dashboard's, e.g. "
                           "http://head-node:8265; or clear the setting to train on this machine.") from exc
        _clients[address] = client
        return client


def worker_command(run: Run, workspace: Workspace, *, resume: bool) -> list[str]:
    """The worker's command line for a job that Ray queues (no ticket: no local queue)."""
    return [sys.executable, "-m", "tl_core.jobs.worker", str(run.dir), "--workspace", str(workspace.root),
            *(["--resume"] if resume else [])]


def forwarded_env() -> dict[str, str]:
    """What the worker on a cluster node needs of this process's environment."""
    env = {k: v for k, v in os.environ.items() if k.startswith(FORWARDED_ENV_PREFIXES) and k not in NOT_FORWARDED}
    package_parent = str(Path(__file__).resolve().parents[2])  # the folder holding tl_core/
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, os.environ.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


@dataclass(frozen=True)
class RayBackend:
    """Jobs on the Ray cluster whose dashboard is at ``address``."""

    address: str

    def resources(self, run: Run) -> tuple[float, float]:
        """(CPUs, GPUs) the job asks Ray for: the settings ray_job_cpus and ray_job_gpus (no GPU for a
        run set to train on the CPU)."""
        settings = load_settings()
        gpus = 0.0 if run.config.train.device == "cpu" else float(settings.ray_job_gpus)
        return float(settings.ray_job_cpus), gpus

    def launch(self, workspace: Workspace, run: Run, *, home: Path | None, resume: bool) -> None:
        client = ray_client(self.address)
        cpus, gpus = self.resources(run)
        run.mark_queued(pid=None, queued_at=time.time())
        try:
            job_id = submit_when_ready(lambda: client.submit_job(
                # its output goes to the run's worker.log, as a local worker's does (messages point there)
                entrypoint=f"{shlex.join(worker_command(run, workspace, resume=resume))} "
                           f">> {shlex.quote(str(run.worker_log_path))} 2>&1",
                entrypoint_num_cpus=cpus, entrypoint_num_gpus=gpus or None,
                runtime_env={"env_vars": forwarded_env()},
                metadata={"tl_studio_run": run.id}))
        except Exception as exc:  # noqa: BLE001 - Ray's errors are many; the user needs one message
            run.mark_failed(f"The Ray cluster did not take the job: {exc}")
            raise JobError(f"The Ray cluster at {self.address} did not take the job ({exc}).") from exc
        run.record_job(backend=RAY, address=self.address, job_id=job_id, submitted=time.time(),
                       cpus=cpus, gpus=gpus)

    def _ray_info(self, run: Run):
        """Ray's JobDetails of the run's job; None when Ray cannot say now (unreachable)."""
        job_id = run.job_record().get("job_id")
        if not job_id:
            return None
        try:
            return ray_client(self.address).get_job_info(job_id)
        except Exception:  # noqa: BLE001 - a cluster that does not answer now: the folder's state stands
            return None

    def state(self, run: Run) -> RunStatus:
        status = run.status()
        if not status.active:
            return status
        info = self._ray_info(run)
        if info is None:
            return status
        ray_state = str(getattr(info.status, "value", info.status))
        if ray_state == RAY_QUEUED:
            return status  # "queued": Ray queues it
        if ray_state == RAY_RUNNING:
            # the worker on its node is starting (it says "running" itself once it trains)
            return status if status.state == "running" else dataclasses.replace(status, state="running")
        status = run.status()  # Ray says it ended: the worker may have written its final state meanwhile
        if not status.active:
            return status
        message = info.message or ray_state.lower()
        if ray_state == "STOPPED":
            self._log_cancel(run)
            return run.mark_cancelled()
        return run.mark_failed(f"The job ended on the Ray cluster without finishing the run: {message}"
                               + run.best_kept_note(), error_type="RayJobFailed")

    @staticmethod
    def _log_cancel(run: Run) -> None:
        status = run.status()
        try:
            run.append_event(RunCancelled(epoch=status.epoch or 0, best_epoch=status.best_epoch))
        except OSError:  # a full disk: the status says it
            pass

    def cancel(self, run: Run) -> None:
        """A job Ray has not started yet leaves Ray's queue; a running one reads the stop flag."""
        info = self._ray_info(run)
        if info is not None and str(getattr(info.status, "value", info.status)) == RAY_QUEUED:
            self._stop(run)
            self.state(run)

    def _stop(self, run: Run) -> None:
        try:
            ray_client(self.address).stop_job(run.job_record()["job_id"])
        except Exception:  # noqa: BLE001 - already ended, or the cluster is gone: state() tells
            pass

    def end(self, run: Run, wait_s: float) -> bool:
        self._stop(run)
        deadline = time.monotonic() + wait_s
        while self.alive(run) and time.monotonic() < deadline:
            time.sleep(0.2)
        return not self.alive(run)

    def alive(self, run: Run) -> bool:
        info = self._ray_info(run)
        return info is not None and str(getattr(info.status, "value", info.status)) not in RAY_FINAL


def recorded_backend(run: Run) -> RayBackend | None:
    """The cluster backend the run's job was launched on; None for a local job."""
    record = run.job_record()
    if record.get("backend") == RAY and record.get("address"):
        return RayBackend(str(record["address"]))
    return None


def configured_backend(home: Path | None = None) -> RayBackend | None:
    """The cluster backend new jobs go to (the ray_address setting); None: the local queue."""
    address = load_settings(home).ray_address.strip()
    return RayBackend(address) if address else None
