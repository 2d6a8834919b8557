"""A job's life in its worker process, without the queue's wait and without the trainer itself:
marked queued and running, trained (in this process by the function the caller passes in, or in
N ranks under ``torch.distributed.run``), and how it ended written to the run folder whatever
happens.

``tl_core.jobs.worker`` runs every job of the queue through ``run_job`` (it passes the wait for a
device slot and the in-process trainer); ``python -m tl_core train --nproc N`` runs one here with
no queue, the command line being the run's worker. Nothing here imports the trainer, so the command
line's ``train`` does not sit above the worker in the import graph.

A run on several processes (``TrainConfig.nproc`` > 1) trains in ``nproc`` ranks of
``tl_core.jobs.worker_rank`` under ``torch.distributed.run``, a child in its own process group that
this process waits for: the run's recorded pid stays this process's, so stop, cancel and the
dead-worker rule work as for one process (a SIGTERM here ends the ranks too, and ranks whose worker
is gone stop by themselves). This process itself never loads torch.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import traceback
from collections.abc import Callable
from pathlib import Path

from tl_core.errors import TLError
from tl_core.events import RunCancelled
from tl_core.jobs.process import process_create_time
from tl_core.jobs.queue import Slot, gpu_count
from tl_core.runs import Run

WaitForSlot = Callable[[Run, int], Slot | None]  # (run, its nproc) -> the slot it may train in, None: cancelled
TrainHere = Callable[[Run, Slot | None], None]  # trains a one-process run in this process


def run_job(run_dir: Path, workspace_root: Path, *, resume: bool = False, wait: WaitForSlot | None = None,
            train_here: TrainHere | None = None) -> int:
    """Train the run; returns the exit status (0 done or cancelled, 1 a user error, 2 a bug, 3 the
    run's own files could not be written). Never raises: a failure that cannot even be recorded
    (a full disk) ends the process cleanly, and ``jobs.job_state`` then marks the run failed.
    ``wait``: the queue (none: train at once); ``train_here``: needed for a run on one process."""
    run = Run(run_dir)
    if not (run.dir / "config.json").is_file():  # deleted (a Start rolled back): nothing to train or write
        return 3
    try:
        return _run_job(run, workspace_root, resume, wait, train_here)
    except OSError:  # DiskFull included: the queue or the run's status could not be written
        with contextlib.suppress(OSError):  # worker.log is on the same full disk
            traceback.print_exc()
        return 3


def _run_job(run: Run, workspace_root: Path, resume: bool, wait: WaitForSlot | None,
             train_here: TrainHere | None) -> int:
    pid = os.getpid()
    run.mark_queued(pid=pid, pid_created=process_create_time(pid))
    nproc = run.config.train.nproc
    slot = None
    if wait is not None:
        slot = wait(run, nproc)
        if slot is None:
            run.append_event(RunCancelled(epoch=0, best_epoch=None))
            run.mark_cancelled()
            return 0
    try:
        if nproc > 1:  # the ranks pick their GPUs (CUDA_VISIBLE_DEVICES); this process stays without torch
            run.mark_running(pid=pid, slot=None if slot is None else slot.index)
            code = _train_ranks(run, workspace_root, slot, resume)
            if code:
                return code
        else:
            train_here(run, slot)
    except TLError as exc:
        # the trainer's own reason, "best checkpoint kept" included when true (mark_failed never raises)
        run.mark_failed(str(exc) + run.best_kept_note(), error_type=type(exc).__name__)
        return 1
    except BaseException as exc:  # a bug, or KeyboardInterrupt/SystemExit: the log keeps details
        with contextlib.suppress(OSError):  # worker.log is on the same (maybe full) disk
            traceback.print_exc()
        run.mark_failed(f"Training stopped because of an internal error ({type(exc).__name__}: {exc}). "
                        "Details are in worker.log in the run folder." + run.best_kept_note(),
                        error_type=type(exc).__name__)
        return 2
    finally:
        if slot is not None:
            slot.release()
    if run.status().active:  # train() returned without writing a final state
        if run.stop_requested():
            run.mark_cancelled()
        else:
            run.mark_finished()
    return 0


def on_gpus(run: Run) -> bool:
    """Whether the run trains on CUDA GPUs (counted without torch: the worker is still queued)."""
    device = run.config.train.device
    return (device == "auto" or device.startswith("cuda")) and gpu_count() > 0


RANKS_EXIT_WAIT_S = 10.0  # how long the ranks get to end after a SIGTERM, before they are killed


def _train_ranks(run: Run, workspace_root: Path, slot: Slot | None, resume: bool) -> int:
    """Train the run in ``nproc`` ranks under torchrun (rank 0 writes the run folder) and wait for
    them; a run they left active (a rank crashed, or was killed) is marked failed here."""
    nproc = run.config.train.nproc
    env = dict(os.environ)
    if slot is not None and on_gpus(run):  # rank r trains on the GPU of the job's r-th slot
        visible = [d.strip() for d in env.get("CUDA_VISIBLE_DEVICES", "").split(",") if d.strip()]
        gpus = [visible[i] if i < len(visible) else str(i) for i in (i % gpu_count() for i in slot.indices)]
        if len(set(gpus)) == nproc:  # (more slots than GPUs, set with TL_STUDIO_MAX_JOBS: torch's order)
            env["CUDA_VISIBLE_DEVICES"] = ",".join(gpus)
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
               "-m", "tl_core.jobs.worker_rank", str(run.dir), "--workspace", str(workspace_root),
               "--worker-pid", str(os.getpid()), *(["--resume"] if resume else [])]
    ranks = subprocess.Popen(command, stdin=subprocess.DEVNULL, env=env, start_new_session=True)

    def end_ranks(signum: int, _frame) -> None:
        _end_group(ranks)
        raise SystemExit(128 + signum)
    previous = signal.signal(signal.SIGTERM, end_ranks)
    try:
        code = ranks.wait()
    finally:
        _end_group(ranks)  # a rank left behind must not train on unseen
        signal.signal(signal.SIGTERM, previous)
    status = run.status()
    if status.active:
        if code == 0:
            return 0  # run_job says finished or cancelled
        run.mark_failed(f"The training processes stopped unexpectedly (exit status {code}). See worker.log in "
                        "the run folder, or start the run again." + run.best_kept_note(), error_type="WorkerDied")
        return 2
    return 0 if status.state in ("finished", "cancelled") else 1


def _end_group(proc: subprocess.Popen) -> None:
    """End ``proc``'s process group (torchrun and its ranks): SIGTERM, then SIGKILL."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=RANKS_EXIT_WAIT_S)
            return
        except subprocess.TimeoutExpired:
            continue

