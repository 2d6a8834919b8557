"""Training jobs: each run trains in its own worker process, one job per device at a time.

``start_job`` creates the run folder and starts ``python -m tl_core.jobs.worker`` (``resume_job`` starts
one for an existing run, from its last checkpoint; ``rerun`` trains a run's saved config again as a
new run; ``stop`` and ``delete_run`` end and remove one); the worker waits
its turn in a queue shared by every session of the server (``tl_core.jobs.queue``), trains, and
writes the run folder. A page (any tab, any refresh) follows the job by reading that folder;
closing the page never stops it. The worker processes are started and ended by
``tl_core.jobs.process``; a crashed worker never blocks the queue, and ``job_state`` marks its run
failed.

This module is the one interface the pages and the CLI call: the jobs' lifecycle here, and the
queue's status (``jobs_root``, ``queue_position``, ``running_jobs``, ...) and process liveness
(``process_alive``, ...) from the modules that own them.

With the ``ray_address`` setting, jobs go to a Ray cluster instead (``tl_core.jobs.backends``):
the functions below stay the one interface, and hand the launch, state and end of a job to the
backend it was launched on (recorded in its run folder).
"""

from __future__ import annotations

import contextlib
import dataclasses
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from tl_core import atomic
from tl_core.config import RunConfig
from tl_core.errors import DataError, DiskFull, JobError
from tl_core.jobs import backends as job_backends
from tl_core.jobs.limits import check_can_start
from tl_core.jobs.process import end_worker, process_alive, process_create_time, start_worker, started_workers
from tl_core.jobs.queue import (
    ENV_MAX_JOBS,
    STALE_TICKET_S,
    drop_tickets,
    gpu_count,
    jobs_root,
    max_jobs,
    new_ticket_path,
    queue_position,
    running_jobs,
    waiting_tickets,
    write_ticket,
)
from tl_core.runs import Run, RunStatus, RunStore
from tl_core.workspace import Workspace

# job_state adds Run.best_kept_note(): "the best checkpoint is kept" is said only when it is.
DEAD_WORKER_REASON = ("The training process stopped unexpectedly (it may have run out of memory or "
                      "disk space, or been killed). See worker.log in the run folder, or start the "
                      "run again.")


# -- public API for pages and the CLI -----------------------------------------------------------
def start_job(workspace: Workspace, config: RunConfig, *, home: Path | None = None,
              in_batch: bool = False) -> str:
    """Create a run for ``config`` in ``workspace`` and train it in a worker process.

    Returns the run id at once; the run is "queued" until the device is free. ``home`` is the
    server-wide root holding the queue (default: ``Workspace.default().root``). LimitReached
    when a limit of the server's settings would be passed (``tl_core.limits``); ``in_batch``: one
    run of an experiment, whose caller checked the limits once for all its runs.
    """
    check_can_start(workspace, config, new_runs=0 if in_batch else 1, count_active=not in_batch,
                           is_active=is_active, home=home)
    config = with_dataset_version(config)
    if config.train.nproc > 1:
        from tl_core.training.distributed import check_nproc  # torch: only for a run on several processes

        check_nproc(config)
    run = RunStore(workspace).create(config)  # validates the config: ConfigError for bad values
    _launch_or_undo(workspace, run, home, resume=False,
                    undo=lambda workers: _roll_back_start(run, workers, home))
    return run.id


def _launch_or_undo(workspace: Workspace, run: Run, home: Path | None, *, resume: bool,
                    undo: Callable[[list[subprocess.Popen]], None]) -> None:
    """Launch ``run``; when that fails half-way (a full disk, a process that could not start),
    ``undo`` gets the worker processes it started for the run, and the error is raised again (an
    OSError of a full disk as DiskFull)."""
    launched = set(started_workers())
    try:
        _launch_backend(home).launch(workspace, run, home=home, resume=resume)
    except BaseException as exc:
        undo([proc for pid, proc in started_workers().items() if pid not in launched
              and str(run.dir) in map(str, proc.args)])
        if isinstance(exc, OSError) and not isinstance(exc, DiskFull) and atomic.is_disk_full(exc):
            raise atomic.disk_full(exc) from exc
        raise


def with_dataset_version(config: RunConfig) -> RunConfig:
    """``config`` with ``data.dataset_version`` set to the version its ingested dataset is at now
    (``tl_core.data.fixes`` makes new ones), so the run says which records it trained on. Read
    from dataset.json directly: the queue's process stays free of the data package."""
    if not config.data.dataset_dir:
        return config  # ingested when the run starts: version 1 of a new dataset
    data = atomic.read_json(Path(config.data.dataset_dir) / "dataset.json")
    version = data.get("version", 1) if isinstance(data, dict) else 0  # 0: not recorded
    if not isinstance(version, int):
        version = 0
    return dataclasses.replace(config, data=dataclasses.replace(config.data, dataset_version=version))


def _roll_back_start(run: Run, workers: list[subprocess.Popen], home: Path | None) -> None:
    """Undo a Start that failed half-way (a full disk, a process that could not start): end the
    worker it may have started, drop its ticket and remove the run folder, so no empty or
    half-made run is listed and no ticket holds up the queue."""
    _end_launch(run, workers, home)
    shutil.rmtree(run.dir, ignore_errors=True)


def _end_launch(run: Run, workers: list[subprocess.Popen], home: Path | None) -> None:
    """End the workers a failed launch started and drop ``run``'s queue tickets."""
    for proc in workers:
        proc.kill()
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
    drop_tickets(run.id, home)


def rerun(workspace: Workspace, run: Run, *, home: Path | None = None) -> str:
    """Train ``run``'s saved config again, exactly, as a new run; returns the new run's id.
    DataError when the dataset it trained on is gone (a re-run would read nothing)."""
    config = run.config
    folder = config.data.dataset_dir or config.data.source
    if not folder or not Path(folder).exists():
        raise DataError(f"The dataset run '{run.display_name()}' trained on is gone ({folder or 'no path'}); "
                        "add it again on the Data page, then use 'Edit and run' to train on it.")
    return start_job(workspace, config, home=home)


def resume_job(workspace: Workspace, run: Run, *, home: Path | None = None) -> None:
    """Train a stopped or failed ``run`` on from its last checkpoint, in a new worker process
    (the epochs done are kept; with no checkpoint yet it starts from the first epoch)."""
    status = job_state(run)
    if status.active:
        raise JobError(f"Run '{run.display_name()}' is still {status.state}; it cannot be resumed while it trains.")
    if status.state == "finished":
        raise JobError(f"Run '{run.display_name()}' has finished all its epochs; re-run it, or use "
                       "'Edit and run' to train longer.")
    check_can_start(workspace, run.config, new_runs=0, is_active=is_active, home=home)
    before = run.status()
    run.clear_stop()  # the Stop that ended it must not end the resumed run at once

    def put_back(workers: list[subprocess.Popen]) -> None:
        """A resume that failed half-way: end its worker, drop its ticket and put the run back as
        it was (stopped or failed, its checkpoints kept), never listed as queued with no worker
        behind it. Unlike a Start's, the folder stays."""
        _end_launch(run, workers, home)
        with contextlib.suppress(OSError):  # the old status is no bigger than the new one
            atomic.write_json(run.dir / "status.json", before.to_dict())

    _launch_or_undo(workspace, run, home, resume=True, undo=put_back)


def _launch(workspace: Workspace, run: Run, *, home: Path | None, resume: bool) -> None:
    """Queue a ticket for ``run`` and start its worker process."""
    created = time.time()
    ticket = new_ticket_path(jobs_root(home), run.id)
    write_ticket(ticket, run.dir, None, created)
    run.mark_queued(pid=None, queued_at=created)

    log = open(run.worker_log_path, "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = start_worker(
            [sys.executable, "-m", "tl_core.jobs.worker", str(run.dir), "--workspace",
             str(workspace.root), "--ticket", str(ticket), "--slots", str(max_jobs()),
             *(["--resume"] if resume else [])], log)
    except OSError as exc:
        ticket.unlink(missing_ok=True)
        run.mark_failed(f"Could not start the training process: {exc}")
        raise JobError(f"Could not start the training process ({exc}).") from exc
    finally:
        log.close()
    pid_created = process_create_time(proc.pid)
    write_ticket(ticket, run.dir, proc.pid, created)
    if run.state == "queued":  # the worker may already have moved on; never step back
        run.mark_queued(pid=proc.pid, pid_created=pid_created)


def job_state(run: Run) -> RunStatus:
    """The run's status; a queued/running run whose worker (or cluster job) is gone is marked failed first."""
    return _backend_of(run).state(run)


def _local_job_state(run: Run) -> RunStatus:
    status = run.status()
    if not status.active:
        return status
    if status.pid is None:
        launched = status.queued_at or status.created or 0.0
        if time.time() - float(launched) < STALE_TICKET_S:
            return status  # the worker is being launched right now
    elif process_alive(status.pid, status.pid_created):
        return status
    status = run.status()  # re-read: the worker may have finished in the meantime
    if not status.active:
        return status
    return run.mark_failed(DEAD_WORKER_REASON + run.best_kept_note(), error_type="WorkerDied")


def cancel(run: Run) -> None:
    """Ask the job to stop after the current batch (the best checkpoint is kept).

    A queued job leaves the queue without training. Returns at once; the worker writes the
    final "cancelled" state.
    """
    run.request_stop()
    _backend_of(run).cancel(run)
    job_state(run)


STOP_WAIT_S = 30.0  # how long stop() waits for the worker to end the run by itself


def stop(run: Run, *, wait_s: float = STOP_WAIT_S, poll_s: float = 0.2) -> RunStatus:
    """Ask the job to stop and wait up to ``wait_s`` seconds for its final state (the best
    checkpoint is kept). Returns the status then: still active when the worker is slow (it
    stops after the current batch; computing cached features can take longer)."""
    cancel(run)
    deadline = time.monotonic() + wait_s
    while True:
        status = job_state(run)
        if not status.active or time.monotonic() >= deadline:
            return status
        time.sleep(poll_s)


def delete_run(store: RunStore, run: Run, *, grace_s: float = 10.0) -> None:
    """Delete ``run``; one still queued or training is stopped first: asked to stop, given
    ``grace_s`` seconds, then its worker is ended (nothing of the run is kept, so nothing is lost),
    and the folder goes only once the worker has exited, so it never writes into a half-deleted
    folder. JobError when a run trained by another program (the CLI) does not stop in time: only
    workers started by ``start_job`` are ever ended from here."""
    if job_state(run).active:
        stop(run, wait_s=grace_s)
    ended = _backend_of(run).end(run, min(grace_s, 5.0))
    if job_state(run).active:
        if not ended:
            raise JobError(f"Run '{run.display_name()}' is still stopping (it stops after its current "
                           "batch); try again in a moment.")
        run.mark_cancelled()  # ended by us: say so, so that the store lets it go
    store.delete(run.id, is_active=is_active)


def worker_alive(run: Run) -> bool:
    """True while the run's worker process still runs (it may be writing the final evaluation)."""
    return _backend_of(run).alive(run)


def _local_worker_alive(run: Run) -> bool:
    status = run.status()
    return process_alive(status.pid, status.pid_created)


def is_active(run: Run) -> bool:
    return job_state(run).active


# -- backends (tl_core.jobs.backends) -----------------------------------------------------------
# Looked up when called, not bound now: a test (or a later patch) that replaces _launch reaches the backend.
_LOCAL = job_backends.LocalBackend(launch_job=lambda *args, **kw: _launch(*args, **kw),
                                   job_state=lambda run: _local_job_state(run),
                                   end_job=lambda run, wait_s: end_worker(run, wait_s),
                                   worker_alive=lambda run: _local_worker_alive(run))


def _launch_backend(home: Path | None) -> job_backends.JobBackend:
    """Where a job starting now goes: the Ray cluster of the ray_address setting, else this machine."""
    return job_backends.configured_backend(home) or _LOCAL


def _backend_of(run: Run) -> job_backends.JobBackend:
    """Where the run's job was launched (its run folder says so)."""
    return job_backends.recorded_backend(run) or _LOCAL


__all__ = ["DEAD_WORKER_REASON", "ENV_MAX_JOBS", "STOP_WAIT_S", "cancel", "delete_run", "gpu_count", "is_active",
           "job_state", "jobs_root", "max_jobs", "process_alive", "process_create_time", "queue_position", "rerun",
           "resume_job", "running_jobs", "start_job", "stop", "waiting_tickets", "with_dataset_version",
           "worker_alive"]
