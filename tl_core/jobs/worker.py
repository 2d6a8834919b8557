"""The worker process of one training job: ``python -m tl_core.jobs.worker RUN_DIR --workspace ROOT``.

Started by ``tl_core.jobs.launch.start_job`` (and by ``jobs.resume_job`` with ``--resume``: train on from
the run's last checkpoint). It waits for a device slot in the server-wide queue,
trains with ``tl_core.training.trainer.train`` and leaves the outcome in the run folder. The stop flag
file (``Run.request_stop``) ends it cooperatively, keeping the best checkpoint.

The queue is light: nothing this module imports up to ``wait_for_slot`` loads torch (the launcher
passes ``--slots``), so a waiting job costs a few tens of MB; torch comes with its turn.

A run on several processes (``TrainConfig.nproc`` > 1) takes one slot per GPU (one slot on CPU),
then trains in ``nproc`` ranks under ``torch.distributed.run`` (``tl_core.jobs.running``, which also
keeps the job's life: its marks, and its outcome written whatever happens). This process itself
never loads torch then.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
from pathlib import Path

from tl_core.events import Control
from tl_core.jobs import running
from tl_core.jobs.queue import Slot, max_jobs, wait_for_slot
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
    def wait(run: Run, nproc: int) -> Slot | None:
        return wait_for_slot(run, ticket, slots=slots or max_jobs(), count=nproc if running.on_gpus(run) else 1)

    def train_here(run: Run, slot: Slot | None) -> None:
        _train_here(run, workspace_root, slot, resume)
    return running.run_job(run_dir, workspace_root, resume=resume, wait=None if ticket is None else wait,
                           train_here=train_here)


def _train_here(run: Run, workspace_root: Path, slot: Slot | None, resume: bool) -> None:
    """A run on one process: trained in this one, on the GPU of its slot."""
    config = run.config
    if (slot is not None and config.train.device == "auto" and 0 < slot.index < _cuda_devices()):
        # one job per GPU: the job holding slot i trains on cuda:i (more slots than GPUs,
        # set with TL_STUDIO_MAX_JOBS, share the default device)
        config = dataclasses.replace(config, train=dataclasses.replace(
            config.train, device=f"cuda:{slot.index}"))
    run.mark_running(pid=os.getpid(), slot=None if slot is None else slot.index)
    from tl_core.training.trainer import train

    train(config, run, Workspace(workspace_root), control=Control(poll=run.stop_requested), resume=resume)


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
