"""One rank of a run trained by several processes (``TrainConfig.nproc`` > 1):
``python -m torch.distributed.run --standalone --nproc_per_node N -m tl_core.jobs.worker_rank RUN_DIR
--workspace ROOT --worker-pid PID``, started by ``tl_core.jobs.worker`` once the job has its slot(s).

Each rank joins the process group (``tl_core.training.distributed``) and trains with
``tl_core.training.trainer.train``; rank 0 alone writes the run folder. The ranks stop, as a one-process
run does, when the run's stop flag is set; they fail (best checkpoint kept) when the worker that
started them is gone (killed: ``jobs.job_state`` has marked the run failed, and nothing would
follow the ranks).
Exit status: 0 done or stopped, 1 a user error (recorded by rank 0), 2 a bug (see worker.log).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import traceback
from pathlib import Path

from tl_core.errors import JobError, TLError
from tl_core.events import Control
from tl_core.jobs.process import process_alive, process_create_time
from tl_core.runs import Run
from tl_core.training import distributed
from tl_core.workspace import Workspace

WORKER_CHECK_S = 2.0  # how often rank 0 checks that its worker still runs


def stop_poll(run: Run, worker_pid: int | None):
    """True once the run's stop flag is set; JobError once its worker has gone."""
    created = process_create_time(worker_pid) if worker_pid else None
    checked = [time.monotonic()]

    def poll() -> bool:
        if run.stop_requested():
            return True
        if worker_pid and time.monotonic() - checked[0] > WORKER_CHECK_S:
            checked[0] = time.monotonic()
            if not process_alive(worker_pid, created):
                raise JobError("The worker process of this run ended while its training processes ran; "
                               "resume the run to train on from its last checkpoint.")
        return False
    return poll


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tl_core.jobs.worker_rank", description=__doc__)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("--workspace", type=Path, required=True, help="workspace root of the run")
    parser.add_argument("--resume", action="store_true", help="train on from the run's last checkpoint")
    parser.add_argument("--worker-pid", type=int, default=None, help="the worker that started the ranks")
    args = parser.parse_args(argv)
    from tl_core.training.trainer import train

    run = Run(args.run_dir)
    config = run.config
    group = distributed.init_group(config.train.device)
    try:
        config = dataclasses.replace(config, train=dataclasses.replace(config.train, device=str(group.device)))
        train(config, run if group.is_main else distributed.ReadOnlyRun(run), Workspace(args.workspace),
              control=Control(poll=stop_poll(run, args.worker_pid)), resume=args.resume, group=group)
    except TLError:
        return 1  # rank 0's trainer recorded it
    except BaseException:  # noqa: BLE001 - the log keeps the details; the worker marks the run failed
        traceback.print_exc()
        return 2
    finally:
        distributed.close_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
