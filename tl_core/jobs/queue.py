"""The server-wide job queue: tickets in arrival order and one device slot per job that trains.

The queue lives below the *server-wide* workspace root (``Workspace.default()``), not below a
session's sub-workspace, so all sessions of a classroom server share the device:

    <home>/jobs/queue/<ticket>.json   one per waiting job, oldest first (FIFO)
    <home>/jobs/slot-<i>.lock         held (fcntl.flock) by the worker that trains on device i
    <home>/jobs/slot-<i>.json         which run holds slot i, for the status line

A flock is released by the kernel when its process dies, so a crashed worker never blocks
the queue. The worker waits here (``wait_for_slot``) before it imports torch: nothing in this
module loads it, so a waiting job stays a light process.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

from tl_core import atomic
from tl_core.jobs.process import process_alive, process_create_time
from tl_core.runs import Run
from tl_core.workspace import Workspace

ENV_MAX_JOBS = "TL_STUDIO_MAX_JOBS"  # jobs that may train at once (default: one per GPU, else 1)
QUEUE_POLL_S = 0.5  # how often a waiting worker checks whether its turn has come
STALE_TICKET_S = 120.0  # a ticket whose worker never reported a pid is dropped after this


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


def new_ticket_path(root: Path, run_id: str) -> Path:
    """Where a new ticket of run ``run_id`` goes in the queue below ``root``: its name sorts after
    every ticket written before it (FIFO) and ends with the run id."""
    return root / "queue" / f"{time.time_ns():020d}-{run_id}.json"


def drop_tickets(run_id: str, home: Path | None = None) -> None:
    """Remove the queue's tickets of run ``run_id`` (none there, or a folder that cannot be read: nothing)."""
    with contextlib.suppress(OSError):
        for ticket in (jobs_root(home) / "queue").glob(f"*-{run_id}.json"):
            ticket.unlink(missing_ok=True)


def write_ticket(path: Path, run_dir: Path, pid: int | None, created: float) -> None:
    """Write the ticket at ``path`` for the worker of ``run_dir`` (``pid``: None until it started)."""
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
