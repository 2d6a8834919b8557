"""What the pages say of a job that runs on a Ray cluster (``tl_core.jobs.backends``); the run
folder says where its job went, so a page needs nothing else."""

from __future__ import annotations

from tl_core.jobs.backends import RAY
from tl_core.markup import escape_markdown
from tl_core.runs import Run


def queued_note(run: Run) -> str | None:
    """The Train page's line for a run waiting in a Ray cluster's queue (Markdown); None for a
    job of this server's own queue."""
    record = run.job_record()
    if record.get("backend") != RAY:
        return None
    asks = [f"{float(record.get('cpus') or 0):g} CPU"]
    if record.get("gpus"):
        asks.append(f"{float(record['gpus']):g} GPU")
    return (f"Waiting in the queue of the Ray cluster at {escape_markdown(str(record.get('address', '?')))} "
            f"for {' and '.join(asks)}. It starts by itself.")
