"""May a run start? The session's jobs, runs and disk, and the free space for what the run writes.

The limits themselves and the disk checks are ``tl_core.limits``; here is what needs the run's
model (its size, its features) to estimate what it will write.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from tl_core.config import RunConfig
from tl_core.errors import LimitReached
from tl_core.limits import check_server_disk, check_session_disk, is_session_workspace, number, plural
from tl_core.runs import Run, RunStore
from tl_core.settings import Settings, load_settings
from tl_core.workspace import Workspace


def check_can_start(workspace: Workspace, config: RunConfig | None = None, *, new_runs: int = 1,
                    count_active: bool = True, is_active: Callable[[Run], bool] | None = None,
                    settings: Settings | None = None, home: Path | None = None) -> None:
    """Before a job is queued: the session's active jobs, runs and disk, the server's disk, and free
    space for what the run will write (``estimate_run_bytes``).

    ``new_runs``: runs made for it (0 when one resumes; an experiment's member count when it is
    checked once for all its runs). ``count_active=False`` skips the active-jobs limit (a member of
    an experiment checked as a whole: an experiment is one click and counts as one job).
    ``is_active`` tells a queued or training run (``jobs.is_active``, which also notices a dead
    worker; default: the state the run's folder records)."""
    settings = settings or load_settings(home)
    if is_session_workspace(workspace, home):
        active_now = is_active or (lambda run: run.status().active)
        runs = RunStore(workspace).list()
        limit = settings.limit("max_active_jobs")
        if count_active and limit is not None:
            active = sum(1 for run in runs if active_now(run))
            if active >= limit:
                raise LimitReached("max_active_jobs", (
                    f"You have {plural(active, 'job')} queued or training (the limit is {number(limit)}): wait for one to "
                    "finish or stop it on the Runs page."))
        limit = settings.limit("max_runs")
        if new_runs and limit is not None and len(runs) + new_runs > limit:
            more = f" and this makes {new_runs} more" if new_runs > 1 else ""
            raise LimitReached("max_runs", (
                f"You have {plural(len(runs), 'run')}{more} (the limit is {number(limit)}): delete runs you no longer need "
                "on the Runs page, or ask the teacher to raise max_runs."))
        check_session_disk(workspace, 0, settings)
    if config is not None:  # a head the backbone cannot have fails before a run folder exists
        from tl_core.model.registry import check_head_fits

        check_head_fits(config.model.backbone, config.model.head.kind)
    need = estimate_run_bytes(config) * max(new_runs, 1) if config is not None else 0
    check_server_disk(need, settings, home, "this run" if new_runs <= 1 else f"these {new_runs} runs")


def estimate_run_bytes(config: RunConfig) -> int:
    """About what a run writes: its checkpoints (best and last: model size x2), the decoded images
    and, for a frozen backbone, the stored features. Rough on purpose: it guards the free space."""
    from tl_core.config import feature_views
    from tl_core.errors import ConfigError
    from tl_core.model.registry import get_backbone

    try:
        spec = get_backbone(config.model.backbone)
    except ConfigError:
        return 0
    need = 2 * 4 * spec.num_params
    images = _dataset_images(config.data.dataset_dir)
    need += images * 3 * spec.preprocess.resize_size ** 2  # the uint8 decode cache (at most this size)
    if config.freeze.mode == "feature_extractor":
        need += images * spec.feature_dim * 4 * feature_views(config.data.augment, config.train.epochs)
    return need


def _dataset_images(dataset_dir: str) -> int:
    if not dataset_dir:
        return 0
    from tl_core.atomic import read_json

    try:
        data = read_json(Path(dataset_dir) / "dataset.json") or {}
    except (OSError, ValueError):
        return 0
    records = data.get("records") if isinstance(data, dict) else None
    return len(records) if isinstance(records, list) else 0
