"""``train``: a new run from DATA and the options, again from a saved ``--config``, or on from a
``--resume``d checkpoint; in this process, or in N processes with ``--nproc``."""

from __future__ import annotations

import argparse
import signal
import sys
from pathlib import Path

from tl_core.cli.common import ingest_dest, sheet_mapping, workspace_of
from tl_core.cli.options import FIELD_OPTIONS, build_config, option_dest
from tl_core.cli.progress import ProgressBar, simple_progress
from tl_core.errors import TLError


def cmd_train(args) -> int:
    from tl_core.events import Control
    from tl_core.jobs.limits import check_can_start
    from tl_core.runs import RunStore
    from tl_core.training.trainer import train

    ws = workspace_of(args)
    store = RunStore(ws)
    if args.resume:
        from tl_core.jobs.launch import is_active

        run = store.get(args.resume)
        if is_active(run):
            raise TLError(f"Run {run.id} is still {run.state}; stop it before resuming it.")
        config = run.config
        check_can_start(ws, config, new_runs=0)  # free space; the limits of the server's settings
        run.clear_stop()  # a Stop pressed earlier must not end the resumed run at once
    else:
        if args.data and not Path(args.data).exists():
            raise TLError(f"{args.data} does not exist. Give a folder of class folders, a .zip or a .csv file.")
        config = saved_config(args) if args.config else build_config(args)
        if args.data and sheet_mapping(args) is not None:  # imported here: the config has no place for columns
            import dataclasses

            from tl_core.data import ingest

            ds = ingest(args.data, dest=ingest_dest(ws, args.data), progress=simple_progress("reading"),
                        sheet=sheet_mapping(args))
            config = dataclasses.replace(config, data=dataclasses.replace(config.data, dataset_dir=str(ds.root)))
        from tl_core.model.registry import get_backbone

        get_backbone(config.model.backbone)  # an unknown name fails here, before a run folder exists
        check_can_start(ws, config)
        from tl_core.jobs.launch import with_dataset_version

        config = with_dataset_version(config)  # the run records which version of the dataset it used
        if config.train.nproc > 1:
            from tl_core.training.distributed import check_nproc

            check_nproc(config)
        run = store.create(config)
    print(f"Run {run.id} in {run.dir}", file=sys.stderr)
    if config.train.nproc > 1:
        return _train_in_ranks(run, ws, resume=bool(args.resume))
    control = Control(poll=run.stop_requested)
    previous = signal.signal(signal.SIGINT, lambda *_: control.stop())
    bar = ProgressBar()
    try:
        result = train(config, run, ws, subscribers=[bar], control=control, resume=bool(args.resume))
    finally:
        bar.close()
        signal.signal(signal.SIGINT, previous)
    val = result.get("val", {})
    if val:
        print(f"Best epoch {result.get('best_epoch')}: val accuracy {val['accuracy']:.3f}, "
              f"loss {val['loss']:.4f}")
    print(run.id)
    return 0


def _train_in_ranks(run, ws, resume: bool) -> int:
    """``train --nproc N``: train in N processes (``tl_core.jobs.running``'s torchrun ranks; no queue, as
    a one-process CLI run) and show rank 0's events as they come. Ctrl-C stops after the current step."""
    import threading

    from tl_core.jobs.running import run_job

    _, line = run.read_events()  # a resumed run's earlier events are not shown again
    bar, finished = ProgressBar(), threading.Event()

    def follow() -> None:
        nonlocal line
        while True:
            last = finished.wait(0.5)
            events, line = run.read_events(line)
            for event in events:
                bar(event)
            if last:
                return
    reader = threading.Thread(target=follow, daemon=True)
    reader.start()
    previous = signal.signal(signal.SIGINT, lambda *_: run.request_stop())
    try:
        run_job(run.dir, ws.root, resume=resume)
    finally:
        finished.set()
        reader.join(timeout=10)
        bar.close()
        signal.signal(signal.SIGINT, previous)
    status = run.status()
    if status.state == "failed":
        raise TLError(status.error or "Training failed; see worker.log in the run folder.")
    val = run.read_metrics().get("val", {})
    if val:
        print(f"Best epoch {status.best_epoch}: val accuracy {val['accuracy']:.3f}, loss {val['loss']:.4f}")
    print(run.id)
    return 0


def saved_config(args):
    """The config of ``--config`` (a run id of this workspace, a run folder, or a run's config.json),
    with the options given on the command line (only those) put over it; DATA replaces the dataset
    it trained on."""
    import dataclasses

    from tl_core.config import RunConfig
    from tl_core.errors import ConfigError
    from tl_core.workspace import is_safe_id

    path = Path(args.config)
    if not path.exists() and is_safe_id(args.config):  # a run id, as `runs` lists them
        path = workspace_of(args).runs_dir / args.config
    path = path / "config.json" if path.is_dir() else path
    try:
        config = RunConfig.from_json(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"Cannot read the config {path} ({exc.strerror}); give a run id (see "
                          "`python -m tl_core runs`), a run folder or a run's config.json.") from exc
    except ValueError as exc:
        raise ConfigError(f"{path} is not a run configuration (not valid JSON: {exc}).") from exc
    given = set(args.given_options)
    if not given and not args.data:
        return config
    flags = build_config(argparse.Namespace(**{**vars(args), "data": args.data or config.data.source}))
    sections = {section: dict(dataclasses.asdict(getattr(config, section))) for section in ("data", "freeze", "train")}
    model = dataclasses.asdict(config.model)
    head = model.pop("head")
    for flag, (section, name) in FIELD_OPTIONS.items():
        if option_dest(flag) in given:
            part = flags.model.head if section == "head" else getattr(flags, section)
            value = getattr(part, name)
            (head if section == "head" else model if section == "model" else sections[section])[name] = value
    if "batch_size" in given:  # a number turns the automatic batch size off, 'auto' on
        sections["train"]["auto_batch"] = flags.train.auto_batch
    if "seed" in given:
        sections["data"]["split_seed"] = args.seed  # as build_config does: --seed also seeds the split
    for dest, field_name in (("groups", "groups"), ("lr_range", "lr_range")):
        if dest in given:
            sections["freeze"][field_name] = getattr(flags.freeze, field_name)
    if "class_words" in given:
        head["class_words"] = flags.model.head.class_words
    if args.data:
        sections["data"].update(source=str(args.data), dataset_dir="")
    return RunConfig.from_dict({**sections, "model": {**model, "head": head},
                                "name": args.name if "name" in given else config.name})
