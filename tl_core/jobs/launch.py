"""Training jobs: each run trains in its own worker process, one job per device at a time.

``start_job`` creates the run folder and starts ``python -m tl_core.jobs.worker`` (``resume_job`` starts
one for an existing run, from its last checkpoint; ``rerun`` trains a run's saved config again as a
new run; ``stop`` and ``delete_run`` end and remove one); the worker waits
its turn in a queue shared by every session of the server, trains, and writes the run folder.
A page (any tab, any refresh) follows the job by reading that folder; closing the page never
stops it. The queue lives below the *server-wide* workspace root (``Workspace.default()``),
not below a session's sub-workspace, so all sessions of a classroom server share the device:

    <home>/jobs/queue/<ticket>.json   one per waiting job, oldest first (FIFO)
    <home>/jobs/slot-<i>.lock         held (fcntl.flock) by the worker that trains on device i
    <home>/jobs/slot-<i>.json         which run holds slot i, for the status line

A flock is released by the kernel when its process dies, so a crashed worker never blocks
the queue, and ``job_state`` marks its run failed.

With the ``ray_address`` setting, jobs go to a Ray cluster instead (``tl_core.jobs.backends``):
the functions below stay the one interface, and hand the launch, state and end of a job to the
backend it was launched on (recorded in its run folder).
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import psutil

from tl_core import atomic
from tl_core.config import RunConfig
from tl_core.errors import DataError, DiskFull, JobError
from tl_core.jobs import backends as job_backends
from tl_core.jobs.limits import check_can_start
from tl_core.runs import Run, RunStatus, RunStore
from tl_core.workspace import Workspace

ENV_MAX_JOBS = "TL_STUDIO_MAX_JOBS"  # jobs that may train at once (default: one per GPU, else 1)
QUEUE_POLL_S = 0.5  # how often a waiting worker checks whether its turn has come
STALE_TICKET_S = 120.0  # a ticket whose worker never reported a pid is dropped after this

# job_state adds Run.best_kept_note(): "the best checkpoint is kept" is said only when it is.
DEAD_WORKER_REASON = ("The training process stopped unexpectedly (it may have run out of memory or "
                      "disk space, or been killed). See worker.log in the run folder, or start the "
                      "run again.")


def jobs_root(home: Path | None = None) -> Path:
    """The server-wide folder holding the job queue and device slots."""
    root = Path(home) if home is not None else Workspace.default().root
    path = root / "jobs"
    (path / "queue").mkdir(parents=True, exist_ok=True)
    return path


def max_jobs() -> int:
    """How many jobs may train at the same time: ``TL_STUDIO_MAX_JOBS``, else one per CUDA device,
    or 1 on CPU/MPS. Asks torch only in a process that has imported it already (the app's server,
    the CLI); elsewhere it counts GPUs without torch, so a worker waiting in the queue stays light."""
    env = os.environ.get(ENV_MAX_JOBS)
    if env:
        try:
            return max(1, int(env))
        except ValueError:
            pass
    torch = sys.modules.get("torch")
    if torch is not None:
        return max(1, torch.cuda.device_count())
    return max(1, _count_gpus_without_torch())


def gpu_count() -> int:
    """CUDA GPUs this process may use: torch's count where it is loaded, else counted without it."""
    torch = sys.modules.get("torch")
    if torch is not None:
        return torch.cuda.device_count()
    return _count_gpus_without_torch()


def _count_gpus_without_torch() -> int:
    """NVIDIA GPUs the driver lists (``/proc/driver/nvidia/gpus``), limited by CUDA_VISIBLE_DEVICES."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    if visible is not None:
        return len([d for d in visible.split(",") if d.strip() and d.strip() != "-1"])
    gpus = Path("/proc/driver/nvidia/gpus")
    try:
        return sum(1 for _ in gpus.iterdir())
    except OSError:
        return 0


# -- process liveness ------------------------------------------------------------------------
def process_alive(pid: int | None, create_time: float | None = None) -> bool:
    """True while ``pid`` runs (zombies count as dead; a recycled pid is caught by its start time)."""
    if not pid:
        return False
    try:
        proc = psutil.Process(int(pid))
        if proc.status() == psutil.STATUS_ZOMBIE:
            return False
        if create_time is not None and abs(proc.create_time() - float(create_time)) > 1.0:
            return False
        return True
    except (psutil.Error, ValueError):
        return False


def process_create_time(pid: int) -> float | None:
    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


# -- queue -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Ticket:
    path: Path
    run_dir: str
    pid: int | None
    pid_created: float | None
    created: float

    @property
    def run_id(self) -> str:
        return Path(self.run_dir).name


def _read_ticket(path: Path) -> Ticket | None:
    data = atomic.read_json(path)
    if not isinstance(data, dict):
        return None
    return Ticket(path, str(data.get("run_dir", "")), data.get("pid"), data.get("pid_created"),
                  float(data.get("created", 0.0)))


def _write_ticket(path: Path, run_dir: Path, pid: int | None, created: float) -> None:
    atomic.write_json(path, {"run_dir": str(run_dir), "pid": pid, "created": created,
                             "pid_created": process_create_time(pid) if pid else None})


def waiting_tickets(root: Path) -> list[Ticket]:
    """Live tickets, oldest first; tickets of dead or never-started workers are removed."""
    tickets = []
    for path in sorted((root / "queue").glob("*.json")):
        ticket = _read_ticket(path)
        if ticket is None:
            continue
        if ticket.pid is None:
            alive = time.time() - ticket.created < STALE_TICKET_S
        else:
            alive = process_alive(ticket.pid, ticket.pid_created)
        if alive:
            tickets.append(ticket)
        else:
            path.unlink(missing_ok=True)
    return tickets


def queue_position(run: Run, home: Path | None = None) -> int | None:
    """1 when the run is next to start, 2 when one job waits before it, ...; None when not waiting."""
    for index, ticket in enumerate(waiting_tickets(jobs_root(home)), start=1):
        if ticket.run_id == run.id and Path(ticket.run_dir) == run.dir:
            return index
    return None


def running_jobs(home: Path | None = None) -> list[dict[str, Any]]:
    """Jobs holding a device slot right now, server-wide: [{"slot", "run_id", "pid"}]."""
    root = jobs_root(home)
    jobs = []
    for path in sorted(root.glob("slot-*.json")):
        info = atomic.read_json(path) or {}
        if process_alive(info.get("pid"), info.get("pid_created")):
            jobs.append({"slot": info.get("slot"), "run_id": Path(info.get("run_dir", "")).name,
                         "pid": info.get("pid")})
    return jobs


class Slot:
    """A device slot held by this process (a flock on ``slot-<i>.lock``); ``others``: the further
    slots of a job on several GPUs (``TrainConfig.nproc``), released with it."""

    def __init__(self, root: Path, index: int, handle: IO[bytes], run_dir: Path) -> None:
        self.root, self.index, self._handle = root, index, handle
        self.others: list[Slot] = []
        atomic.write_json(root / f"slot-{index}.json",
                          {"slot": index, "run_dir": str(run_dir), "pid": os.getpid(),
                           "pid_created": process_create_time(os.getpid()), "since": time.time()})

    @property
    def indices(self) -> list[int]:
        return [self.index, *(other.index for other in self.others)]

    def release(self) -> None:
        for other in self.others:
            other.release()
        (self.root / f"slot-{self.index}.json").unlink(missing_ok=True)
        fcntl.flock(self._handle, fcntl.LOCK_UN)
        self._handle.close()


def _try_slot(root: Path, slots: int, run_dir: Path, count: int = 1) -> Slot | None:
    """``count`` free slots, all or none (the first holds the others)."""
    held: list[Slot] = []
    for index in range(slots):
        if len(held) == count:
            break
        handle = open(root / f"slot-{index}.lock", "ab")  # noqa: SIM115 - kept open while held
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            continue
        held.append(Slot(root, index, handle, run_dir))
    if len(held) < count:
        for slot in held:
            slot.release()
        return None
    held[0].others = held[1:]
    return held[0]


def wait_for_slot(run: Run, ticket_path: Path, *, slots: int | None = None,
                  poll_s: float = QUEUE_POLL_S, count: int = 1) -> Slot | None:
    """Block until this run is first in the queue and a slot is free (FIFO across the server);
    ``count`` slots for a job on several GPUs (at most ``slots``).

    Returns None when the user cancelled while waiting. Called by the worker process.
    """
    root = ticket_path.parent.parent
    slots = slots or max_jobs()
    count = max(1, min(count, slots))
    while True:
        if run.stop_requested():
            ticket_path.unlink(missing_ok=True)
            for ticket in waiting_tickets(root):
                if ticket.run_dir == str(run.dir):
                    ticket.path.unlink(missing_ok=True)  # renamed by "move to front"
            return None
        waiting = waiting_tickets(root)
        first = waiting[0] if waiting else None
        # The ticket is found by its run folder too: the Teacher page's "move to front" renames it.
        if first is None or first.path == ticket_path or first.run_dir == str(run.dir):
            slot = _try_slot(root, slots, run.dir, count)
            if slot is not None:
                ticket_path.unlink(missing_ok=True)
                if first is not None:
                    first.path.unlink(missing_ok=True)
                return slot
        time.sleep(poll_s)


# -- public API for pages and the CLI -----------------------------------------------------------
_children: dict[int, subprocess.Popen] = {}  # reaped by a thread, so no zombie stays behind


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
    launched = set(_children)
    try:
        _launch_backend(home).launch(workspace, run, home=home, resume=resume)
    except BaseException as exc:
        undo([proc for pid, proc in list(_children.items()) if pid not in launched
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
    with contextlib.suppress(OSError):
        for ticket in (jobs_root(home) / "queue").glob(f"*-{run.id}.json"):
            ticket.unlink(missing_ok=True)


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
    root = jobs_root(home)
    created = time.time()
    ticket = root / "queue" / f"{time.time_ns():020d}-{run.id}.json"
    _write_ticket(ticket, run.dir, None, created)
    run.mark_queued(pid=None, queued_at=created)

    package_parent = str(Path(__file__).resolve().parents[2])  # the folder holding tl_core/
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_parent, env.get("PYTHONPATH")) if p)
    env.setdefault("PYTHONUNBUFFERED", "1")
    log = open(run.worker_log_path, "ab")  # noqa: SIM115 - handed to the child
    try:
        proc = subprocess.Popen(
            [sys.executable, "-m", "tl_core.jobs.worker", str(run.dir), "--workspace",
             str(workspace.root), "--ticket", str(ticket), "--slots", str(max_jobs()),
             *(["--resume"] if resume else [])],
            stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True)  # its own process group: a Ctrl-C of the app leaves it be
    except OSError as exc:
        ticket.unlink(missing_ok=True)
        run.mark_failed(f"Could not start the training process: {exc}")
        raise JobError(f"Could not start the training process ({exc}).") from exc
    finally:
        log.close()
    _children[proc.pid] = proc
    threading.Thread(target=_reap, args=(proc,), daemon=True).start()
    pid_created = process_create_time(proc.pid)
    _write_ticket(ticket, run.dir, proc.pid, created)
    if run.state == "queued":  # the worker may already have moved on; never step back
        run.mark_queued(pid=proc.pid, pid_created=pid_created)


def _reap(proc: subprocess.Popen) -> None:
    proc.wait()
    _children.pop(proc.pid, None)


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


def _end_local_worker(run: Run, wait_s: float) -> bool:
    """End the run's worker (see ``_recorded_worker``); False when there is none to end from here."""
    worker = _recorded_worker(run)
    if worker is None:
        return False
    _end_process(worker, exit_wait_s=wait_s)
    return True


def _recorded_worker(run: Run) -> psutil.Process | None:
    """The live worker process of ``run``: only one whose start time the run recorded (a worker of
    ``start_job``), so neither a process that reused the pid nor this process (a run trained
    in-process by the CLI or a test) is ever taken for it."""
    status = run.status()
    if status.pid_created is None or status.pid == os.getpid():
        return None
    if not process_alive(status.pid, status.pid_created):
        return None
    try:
        return psutil.Process(int(status.pid))
    except psutil.Error:
        return None


def _end_process(proc: psutil.Process, exit_wait_s: float, kill_wait_s: float = 5.0) -> None:
    """Give ``proc`` ``exit_wait_s`` seconds to exit by itself, then terminate it, then kill it."""
    try:
        proc.wait(timeout=exit_wait_s)
        return
    except psutil.TimeoutExpired:
        pass
    except psutil.NoSuchProcess:
        return
    try:
        proc.terminate()
        proc.wait(timeout=kill_wait_s)
    except psutil.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=kill_wait_s)
    except psutil.NoSuchProcess:
        pass


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
                                   end_job=lambda run, wait_s: _end_local_worker(run, wait_s),
                                   worker_alive=lambda run: _local_worker_alive(run))


def _launch_backend(home: Path | None) -> job_backends.JobBackend:
    """Where a job starting now goes: the Ray cluster of the ray_address setting, else this machine."""
    return job_backends.configured_backend(home) or _LOCAL


def _backend_of(run: Run) -> job_backends.JobBackend:
    """Where the run's job was launched (its run folder says so)."""
    return job_backends.recorded_backend(run) or _LOCAL
