"""The worker process of one training job: ``python -m tl_core.jobs.worker RUN_DIR --workspace ROOT``.

Started by ``tl_core.jobs.launch.start_job`` (and by ``jobs.resume_job`` with ``--resume``: train on from
the run's last checkpoint). It waits for a device slot in the server-wide queue,
trains with ``tl_core.training.trainer.train`` and leaves the outcome in the run folder. The stop flag
file (``Run.request_stop``) ends it cooperatively, keeping the best checkpoint.

The queue is light: nothing this module imports up to ``wait_for_slot`` loads torch (the launcher
passes ``--slots``), so a waiting job costs a few tens of MB; torch comes with its turn.

A run on several processes (``TrainConfig.nproc`` > 1) takes one slot per GPU (one slot on CPU),
then trains in ``nproc`` ranks of ``tl_core.jobs.worker_rank`` under ``torch.distributed.run``, a child
in its own process group that this worker waits for: the run's recorded pid stays this worker's,
so stop, cancel and the dead-worker rule work as for one process (a SIGTERM here ends the ranks
too, and ranks whose worker is gone stop by themselves). This process itself never loads torch.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import subprocess
import sys
import traceback
from pathlib import Path

from tl_core.errors import TLError
from tl_core.events import Control, RunCancelled
from tl_core.jobs.process import process_create_time
from tl_core.jobs.queue import Slot, gpu_count, max_jobs, wait_for_slot
from tl_core.runs import Run
from tl_core.workspace import Workspace


def _cuda_devices() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def run_job(run_dir: Path, workspace_root: Path, ticket: Path | None, resume: bool = False,
            slots: int | None = None) -> int:
    """Train the run; returns the exit status (0 done or cancelled, 1 a user error, 2 a bug, 3 the
    run's own files could not be written). Never raises: a failure that cannot even be recorded
    (a full disk) ends the process cleanly, and ``jobs.job_state`` then marks the run failed."""
    run = Run(run_dir)
    if not (run.dir / "config.json").is_file():  # deleted (a Start rolled back): nothing to train or write
        return 3
    try:
        return _run_job(run, workspace_root, ticket, resume, slots)
    except OSError:  # DiskFull included: the queue or the run's status could not be written
        with contextlib.suppress(OSError):  # worker.log is on the same full disk
            traceback.print_exc()
        return 3


def _run_job(run: Run, workspace_root: Path, ticket: Path | None, resume: bool, slots: int | None) -> int:
    pid = os.getpid()
    run.mark_queued(pid=pid, pid_created=process_create_time(pid))
    nproc = run.config.train.nproc
    slot = None
    if ticket is not None:
        slot = wait_for_slot(run, ticket, slots=slots or max_jobs(), count=nproc if _on_gpus(run) else 1)
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
            config = run.config
            if (slot is not None and config.train.device == "auto" and 0 < slot.index < _cuda_devices()):
                # one job per GPU: the job holding slot i trains on cuda:i (more slots than GPUs,
                # set with TL_STUDIO_MAX_JOBS, share the default device)
                config = dataclasses.replace(config, train=dataclasses.replace(
                    config.train, device=f"cuda:{slot.index}"))
            run.mark_running(pid=pid, slot=None if slot is None else slot.index)
            from tl_core.training.trainer import train

            train(config, run, Workspace(workspace_root), control=Control(poll=run.stop_requested), resume=resume)
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


def _on_gpus(run: Run) -> bool:
    """Whether the run trains on CUDA GPUs (counted without torch: the worker is still queued)."""
    device = run.config.train.device
    return (device == "auto" or device.startswith("cuda")) and gpu_count() > 0


RANKS_EXIT_WAIT_S = 10.0  # how long the ranks get to end after a SIGTERM, before they are killed


def _train_ranks(run: Run, workspace_root: Path, slot: Slot | None, resume: bool) -> int:
    """Train the run in ``nproc`` ranks under torchrun (rank 0 writes the run folder) and wait for
    them; a run they left active (a rank crashed, or was killed) is marked failed here."""
    nproc = run.config.train.nproc
    env = dict(os.environ)
    if slot is not None and _on_gpus(run):  # rank r trains on the GPU of the job's r-th slot
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


WORKER_NICENESS = 10  # how much a training job gives way to the app's own server process


def _yield_to_the_app() -> None:
    """Lower this process's CPU priority: on a classroom server the students' pages (the Streamlit
    process) must stay responsive while jobs train on the same cores; a job on an idle machine
    still gets every cycle. (A GPU job is not slowed: the GPU is not shared with the pages.)"""
    with contextlib.suppress(OSError, AttributeError):  # not on this platform: train as is
        os.nice(WORKER_NICENESS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tl_core.jobs.worker", description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--workspace", type=Path, required=True, help="workspace root of the run")
    parser.add_argument("--ticket", type=Path, default=None, help="queue ticket (omit: no queue)")
    parser.add_argument("--resume", action="store_true", help="train on from the run's last checkpoint")
    parser.add_argument("--slots", type=int, default=None,
                        help="jobs that may train at once (the launcher counts them; omit: counted here)")
    args = parser.parse_args(argv)
    _yield_to_the_app()
    return run_job(args.run_dir, args.workspace, args.ticket, resume=args.resume, slots=args.slots)


if __name__ == "__main__":
    sys.exit(main())
