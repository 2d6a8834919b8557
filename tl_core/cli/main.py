"""``python -m tl_core``: the engine from the command line.

Errors a user can cause print one line (no traceback) and exit with status 2. ``inspect`` exits
with status 1 when the dataset cannot be trained on (its problems are printed).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
from pathlib import Path
from typing import Any

from tl_core.errors import TLError


# --------------------------------------------------------------------------------------------
# Subscribers: the progress bar is one more listener on the trainer's event stream
# --------------------------------------------------------------------------------------------
class ProgressBar:
    """Draws tqdm bars for data preparation and each epoch, and prints one line per epoch."""

    def __init__(self, stream=sys.stderr) -> None:
        self.stream = stream
        self.bar = None
        self.bar_key: Any = None
        self.steps_per_epoch = 0  # from RunStarted: the length of each epoch's bar

    def _bar(self, key: Any, total: int, desc: str):
        from tqdm import tqdm

        if self.bar_key != key:
            self.close()
            self.bar = tqdm(total=total, desc=desc, file=self.stream, leave=False, dynamic_ncols=True)
            self.bar_key = key
        return self.bar

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar, self.bar_key = None, None

    def __call__(self, event) -> None:
        from tl_core import events as ev

        if isinstance(event, ev.Progress):
            bar = self._bar(("progress", event.phase), event.total, event.phase)
            bar.n = event.done
            if event.images_per_s is not None:  # the engine's rate over the last seconds, not tqdm's own
                left = "" if event.seconds_left is None else f"{event.seconds_left:.0f}s"
                bar.set_postfix(img_s=f"{event.images_per_s:.0f}", left=left, refresh=False)
            bar.refresh()
        elif isinstance(event, ev.RunStarted):
            self.close()
            print(f"Training on {event.device}: {event.num_train} train / {event.num_val} val images, "
                  f"{len(event.classes)} classes, {event.trainable_params:,} of {event.total_params:,} "
                  f"parameters train" + (" (cached backbone features)" if event.feature_cache else ""),
                  file=self.stream)
            self.steps_per_epoch = event.steps_per_epoch
        elif isinstance(event, ev.BatchEnded):
            bar = self._bar(("epoch", event.epoch), self.steps_per_epoch, f"epoch {event.epoch}")
            bar.update(1)
            bar.set_postfix(loss=f"{event.loss:.3f}", img_s=f"{event.images_per_s:.0f}", refresh=False)
        elif isinstance(event, ev.EpochEnded):
            self.close()
            print(f"epoch {event.epoch}: train loss {event.train_loss:.4f} acc {event.train_acc:.3f} | "
                  f"val loss {event.val_loss:.4f} acc {event.val_acc:.3f} | {event.seconds:.1f}s",
                  file=self.stream)
        elif isinstance(event, ev.Note):
            self.close()
            print(event.message, file=self.stream)
        elif isinstance(event, ev.RunCancelled):
            self.close()
            print(f"Stopped after epoch {event.epoch}; the best checkpoint (epoch {event.best_epoch}) is kept.",
                  file=self.stream)


# --------------------------------------------------------------------------------------------
# Commands
# --------------------------------------------------------------------------------------------
def _workspace(args):
    from tl_core.workspace import Workspace

    return Workspace(Path(args.workspace)) if args.workspace else Workspace.default()


def cmd_inspect(args) -> int:
    from tl_core.data import health_report, ingest

    ws = _workspace(args)
    dest = _ingest_dest(ws, args.data)
    ds = ingest(args.data, dest=dest, progress=_simple_progress("reading"), sheet=_sheet_mapping(args))
    report = health_report(ds)
    status = 0 if report.ok else 1  # scripts can tell a dataset that cannot be trained on
    if args.json:
        print(json.dumps(report.to_dict(), indent=2, default=str))
        return status
    print(f"Dataset {ds.name}: {report.num_images} images, {len(ds.classes)} classes ({ds.root})")
    for name, count in report.class_counts.items():
        print(f"  {name:<30} {count:>6}")
    if report.imbalance_ratio:
        print(f"Imbalance ratio (largest / smallest class): {report.imbalance_ratio:.2f}")
    s = report.size_summary
    if s:
        print("Image sizes: " + ", ".join(f"{k} {v:g}" for k, v in s.items()))
    if report.skipped:
        print(f"Skipped {len(report.skipped)} files:")
        for item in report.skipped[:50]:
            print(f"  {item['path']}: {item['reason']}")
    for group in report.duplicate_groups[:20]:
        print("duplicate images: " + ", ".join(group))
    if report.group_counts:
        print("Groups per class and split:")
        for split_name, counts in report.group_counts.items():
            print(f"  {split_name:<6} " + ", ".join(f"{c} {n}" for c, n in counts.items()))
    for w in report.warnings:
        print(f"warning: {w}")
    for e in report.errors:
        print(f"problem: {e}")
    return status


def _sheet_mapping(args):
    """The spreadsheet columns named by --image-column, --label-column, --group-column and
    --split-column (those left out are told by their names), or None when no flag is given."""
    from tl_core.data.sheets import SheetMapping

    flags = [getattr(args, f"{name}_column", None) for name in ("image", "label", "group", "split")]
    if not any(flags):
        return None
    return SheetMapping(*(flag or "" for flag in flags))


def _add_sheet_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--image-column", default="", metavar="COLUMN",
                        help="spreadsheet DATA (.csv/.xlsx, alone or in the zip or folder): the column with each "
                             "image's path or file name (default: one named image, path or file)")
    parser.add_argument("--label-column", default="", metavar="COLUMN",
                        help="spreadsheet: the column with the class (default: one named label or class)")
    parser.add_argument("--group-column", default="", metavar="COLUMN",
                        help="spreadsheet: images sharing its value (a patient, a site) stay in one split "
                             "(default: one named group, patient, subject or site)")
    parser.add_argument("--split-column", default="", metavar="COLUMN",
                        help="spreadsheet: train/val/test as given (default: one named split)")


def _ingest_dest(ws, source: str) -> Path | None:
    from tl_core.training.session import dataset_slug

    return ws.datasets_dir / dataset_slug(source)


def _simple_progress(desc: str):
    from tqdm import tqdm

    state: dict[str, Any] = {}

    def report(done: int, total: int, message: str = "") -> None:
        if "bar" not in state:
            state["bar"] = tqdm(total=total, desc=desc, file=sys.stderr, leave=False)
        state["bar"].n = done
        state["bar"].refresh()
        if done >= total:
            state["bar"].close()
    return report


def cmd_backbones(args) -> int:
    from tl_core.model.registry import list_backbones
    from tl_core.model.weights import weights_status

    rows = []
    for spec in list_backbones():
        st = weights_status(spec.name, args.weights_dir)
        rows.append((spec.name, f"{spec.num_params / 1e6:.1f}M", f"{spec.top1:.1f}",
                     f"{spec.preprocess.crop_size}px", st.source if st.available else "missing"))
    if args.json:
        print(json.dumps([dict(zip(("name", "params", "top1", "input", "weights"), r, strict=False)) for r in rows], indent=2))
        return 0
    header = ("backbone", "params", "top-1", "input", "weights here")
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(str(v).ljust(w) for v, w in zip(row, widths, strict=False)))
    missing = [r[0] for r in rows if r[-1] == "missing"]
    if missing:
        print("\nMissing weights download automatically when online, or put torchvision's .pth files in "
              "the torch hub cache (~/.cache/torch/hub/checkpoints) or a folder named by TL_STUDIO_WEIGHTS.")
    return 0


# `train` options that set one config field: the field gives the type, choices, default and help.
# Flag -> (section, field name); a section is a RunConfig part, or "head" for the model's head.
_FIELD_OPTIONS: dict[str, tuple[str, str]] = {
    "--backbone": ("model", "backbone"), "--weights-dir": ("model", "weights_dir"),
    "--head": ("head", "kind"), "--hidden": ("head", "hidden"), "--dropout": ("head", "dropout"),
    "--pool": ("head", "pool"),
    "--freeze": ("freeze", "mode"), "--last-n": ("freeze", "last_n"), "--unfreeze-every": ("freeze", "unfreeze_every"),
    "--probe-epochs": ("freeze", "probe_epochs"), "--train-bn": ("freeze", "train_bn"),
    "--epochs": ("train", "epochs"), "--batch-size": ("train", "batch_size"), "--lr": ("train", "lr"),
    "--optimizer": ("train", "optimizer"), "--weight-decay": ("train", "weight_decay"),
    "--schedule": ("train", "schedule"), "--label-smoothing": ("train", "label_smoothing"),
    "--patience": ("train", "early_stopping_patience"), "--monitor": ("train", "monitor"),
    "--balance": ("train", "balance"),
    "--augment": ("data", "augment"), "--val": ("data", "val_fraction"), "--test": ("data", "test_fraction"),
    "--train-fraction": ("data", "train_fraction"),
    "--seed": ("train", "seed"),  # build_config also gives it to the split
    "--device": ("train", "device"), "--workers": ("train", "num_workers"), "--nproc": ("train", "nproc"),
    # switches that turn a default-on field off
    "--random-init": ("model", "pretrained"), "--no-amp": ("train", "amp"),
    "--no-feature-cache": ("train", "feature_cache"),
    "--resplit": ("data", "keep_given_split"),
}


def _field(section: str, name: str):
    """The dataclass field behind an option, and its resolved type (Literal aliases included)."""
    import dataclasses
    import typing

    from tl_core import config

    cls = {"data": config.DataConfig, "model": config.ModelConfig, "head": config.HeadConfig,
           "freeze": config.FreezePlan, "train": config.TrainConfig}[section]
    return next(f for f in dataclasses.fields(cls) if f.name == name), typing.get_type_hints(cls)[name]


def _dest(flag: str) -> str:
    return flag.lstrip("-").replace("-", "_")


def _add_field_option(parser: argparse.ArgumentParser, flag: str, section: str, name: str) -> None:
    import typing

    from tl_core.config import LABELS

    fld, hint = _field(section, name)
    help_text = fld.metadata["help"].replace("%", "%%")
    if hint is bool:  # a switch: giving it flips the field's default
        parser.add_argument(flag, action="store_true",
                            help=f"turns {'off' if fld.default else 'on'} (default {'on' if fld.default else 'off'}): "
                                 f"{help_text}")
        return
    kwargs: dict[str, Any] = {"default": fld.default}
    if typing.get_origin(hint) is typing.Literal:
        kwargs["choices"] = typing.get_args(hint)
        labels = LABELS.get(hint)
        if labels:
            help_text += " (" + "; ".join(f"{c}: {labels[c]}" for c in kwargs["choices"]).replace("%", "%%") + ")"
    elif (section, name) == ("train", "batch_size"):
        kwargs["type"] = _batch_size
        help_text += "; 'auto': the largest that fits on a CUDA GPU (TrainConfig.auto_batch)"
    elif hint in (int, float):
        kwargs["type"] = hint
    parser.add_argument(flag, help=help_text + " (default: %(default)s)", **kwargs)


def _batch_size(text: str) -> int | str:
    """--batch-size: a whole number, or ``auto``."""
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"give a whole number or 'auto', not {text!r}") from None


def build_config(args):
    from tl_core.config import DataConfig, FreezePlan, HeadConfig, ModelConfig, RunConfig, TrainConfig

    values: dict[str, dict[str, Any]] = {"data": {}, "model": {}, "head": {}, "freeze": {}, "train": {}}
    for flag, (section, name) in _FIELD_OPTIONS.items():
        value = getattr(args, _dest(flag))
        fld, hint = _field(section, name)
        values[section][name] = (value != fld.default) if hint is bool else value  # a switch flips the default
    if values["train"]["batch_size"] == "auto":
        values["train"].update(batch_size=_field("train", "batch_size")[0].default, auto_batch=True)
    values["data"]["split_seed"] = args.seed
    values["freeze"]["groups"] = tuple(g for g in (args.groups or "").split(",") if g)
    values["freeze"]["lr_range"] = tuple(float(v) for v in args.lr_range.split(",")) if args.lr_range else None
    return RunConfig(
        data=DataConfig(source=str(args.data), **values["data"]),
        model=ModelConfig(head=HeadConfig(**values["head"]), **values["model"]),
        freeze=FreezePlan(**values["freeze"]),
        train=TrainConfig(**values["train"]),
        name=args.name or "",
    )


def cmd_train(args) -> int:
    from tl_core.events import Control
    from tl_core.jobs.limits import check_can_start
    from tl_core.runs import RunStore
    from tl_core.training.trainer import train

    ws = _workspace(args)
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
        if args.data and _sheet_mapping(args) is not None:  # imported here: the config has no place for columns
            import dataclasses

            from tl_core.data import ingest

            ds = ingest(args.data, dest=_ingest_dest(ws, args.data), progress=_simple_progress("reading"),
                        sheet=_sheet_mapping(args))
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
    """``train --nproc N``: train in N processes (``tl_core.jobs.worker``'s torchrun ranks; no queue, as
    a one-process CLI run) and show rank 0's events as they come. Ctrl-C stops after the current step."""
    import threading

    from tl_core.jobs.worker import run_job

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
        run_job(run.dir, ws.root, None, resume=resume)
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
        path = _workspace(args).runs_dir / args.config
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
    for flag, (section, name) in _FIELD_OPTIONS.items():
        if _dest(flag) in given:
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
    if args.data:
        sections["data"].update(source=str(args.data), dataset_dir="")
    return RunConfig.from_dict({**sections, "model": {**model, "head": head},
                                "name": args.name if "name" in given else config.name})


def _given_options(argv: list[str]) -> set[str]:
    """The ``train`` options typed on the command line (abbreviations included), as argparse dests:
    ``--config`` keeps the saved value of every option not given, even one equal to its default."""
    probe = make_parser()
    for action in _all_actions(probe):
        action.default = argparse.SUPPRESS  # an option not given then leaves no attribute
    args, _ = probe.parse_known_args(argv)
    return set(vars(args)) - {"command", "func", "workspace", "data"}


def _all_actions(parser: argparse.ArgumentParser):
    # argparse has no public walk over sub-commands' options; _actions has been stable since 3.2
    for action in parser._actions:
        yield action
        if isinstance(action, argparse._SubParsersAction):
            for sub in action.choices.values():
                yield from _all_actions(sub)


def cmd_stop(args) -> int:
    from tl_core.jobs.launch import job_state, stop
    from tl_core.runs import RunStore

    run = RunStore(_workspace(args)).get(args.run)
    current = job_state(run)  # a run whose worker is gone is failed, not something to stop
    if not current.active:
        print(f"Run '{run.display_name()}' ({run.id}) is {current.state}; nothing to stop.")
        return 0
    status = stop(run, wait_s=args.wait)
    if status.active:
        print(f"Asked run '{run.display_name()}' ({run.id}) to stop; it is still {status.state} after "
              f"{args.wait:g}s and stops after its current batch. Check with `python -m tl_core runs`.")
    else:
        print(f"Run '{run.display_name()}' ({run.id}) is {status.state}; its best checkpoint is kept.")
    return 0


def cmd_eval(args) -> int:
    from tl_core.data import ingest
    from tl_core.evaluation.metrics import evaluate_logits, predict_tensors
    from tl_core.model.loading import load_model
    from tl_core.model.preprocess import decode
    from tl_core.model.registry import get_backbone
    from tl_core.runs import RunStore

    ws = _workspace(args)
    run = RunStore(ws).get(args.run)
    if args.data:
        ds = ingest(args.data, dest=_ingest_dest(ws, args.data), progress=_simple_progress("reading"))
        classes = run.classes
        unknown = sorted(set(ds.classes) - set(classes))
        if unknown:
            raise TLError(f"Classes {unknown} are not among the run's classes {classes}; "
                          "evaluate on a folder with the same class names.")
        pre = get_backbone(run.config.model.backbone).preprocess
        images = decode([Path(ds.root) / r.path for r in ds.records], pre)
        logits = predict_tensors(load_model(run), images, pre)
        result = evaluate_logits(logits, [classes.index(r.label) for r in ds.records], classes,
                                 [r.path for r in ds.records])
    else:
        result = run.read_evaluation("val")
        if result is None:
            raise TLError(f"Run {run.id} has no evaluation yet (state: {run.state}); "
                          "give a DATA folder to evaluate on, or finish training first.")
    if args.json:
        print(json.dumps(result.summary(), indent=2))
        return 0
    print(f"accuracy {result.accuracy:.4f}  loss {result.loss:.4f}  top-{result.top_k} {result.top_k_accuracy:.4f}"
          f"  ({len(result.predictions)} images)")
    print(f"{'class':<24}{'precision':>10}{'recall':>10}{'f1':>10}{'n':>7}")
    for row in result.per_class:
        print(f"{row['class']:<24}{row['precision']:>10.3f}{row['recall']:>10.3f}{row['f1']:>10.3f}{row['support']:>7}")
    return 0


def cmd_predict(args) -> int:
    from tl_core.evaluation.metrics import predict
    from tl_core.runs import RunStore

    run = RunStore(_workspace(args)).get(args.run)
    missing = [p for p in args.images if not Path(p).exists()]
    if missing:
        raise TLError(f"Image file not found: {missing[0]}")
    results = predict(run, [Path(p) for p in args.images], top_k=args.top_k)
    for path, top in zip(args.images, results, strict=False):
        print(path + ": " + ", ".join(f"{label} {p:.3f}" for label, p in top))
    return 0


def cmd_runs(args) -> int:
    from tl_core.jobs.launch import is_active, job_state
    from tl_core.runs import RunStore

    store = RunStore(_workspace(args))
    if args.delete:
        store.delete(args.delete, is_active=is_active)  # a run whose worker is gone has failed: it can go
        print(f"Deleted run {args.delete}")
        return 0
    runs = store.list()
    for run in runs:  # the app's rule: a queued or running run whose worker is gone has failed
        job_state(run)
    rows = [r.summary() for r in runs]
    if args.json:
        print(json.dumps(rows, indent=2, default=str))
        return 0
    if not rows:
        print("No runs yet. Start one with `python -m tl_core train DATA`.")
    table = [(r["name"], r["state"], f"{r['best_val_acc']:.3f}" if isinstance(r.get("best_val_acc"), float) else "-",
              r["id"]) for r in rows]
    if table:
        header = ("run", "state", "val acc", "id")
        widths = [max(len(row[i]) for row in [header, *table]) for i in range(len(header))]
        for row in [header, *table]:
            print("  ".join(v.ljust(w) for v, w in zip(row, widths, strict=True)).rstrip())
    return 0


def cmd_export(args) -> int:
    from tl_core.export.bundle import export_bundle
    from tl_core.runs import RunStore

    run = RunStore(_workspace(args)).get(args.run)
    out = Path(args.out) if args.out else run.export_dir
    report = export_bundle(run, out, formats=tuple(args.format))
    print(json.dumps(report.to_dict(), indent=2, default=str))
    print(f"Bundle written to {out}")
    return 0


def cmd_project(args) -> int:
    from tl_core.export.project import export_project
    from tl_core.export.project_import import import_project

    ws = _workspace(args)
    if args.project_command == "export":
        summary = export_project(ws, Path(args.out), datasets=args.dataset, runs=args.run)
        verb = f"Wrote {args.out}"
    else:
        summary = import_project(Path(args.archive), ws)
        verb = f"Imported into {ws.root}"
    print(f"{verb}: {len(summary.datasets)} dataset(s), {len(summary.runs)} run(s), "
          f"{summary.files} files, {summary.bytes / 1024**2:,.1f} MB")
    for item in summary.datasets:
        print(f"  dataset {item.name}  ({item.id})")
    for item in summary.runs:
        print(f"  run {item.name}  ({item.id})")
    for note in summary.notes:
        print(f"note: {note}")
    return 0


def cmd_fetch_weights(args) -> int:
    """Download backbones' weights into torchvision's cache (run once online, e.g. before class)."""
    from tl_core.model.registry import list_backbones
    from tl_core.model.weights import load_pretrained_state_dict

    names = args.names or [spec.name for spec in list_backbones()]
    for name in names:
        _, source = load_pretrained_state_dict(name, allow_download=True)
        print(f"{name}: {'downloaded' if source == 'download' else 'already here (' + source + ')'}")
    return 0


def cmd_weights_import(args) -> int:
    """Check and add torchvision .pth files (each PATH a file, or a folder of them), one line per file."""
    from tl_core.model.weights import import_weights_file, import_weights_folder

    results = []
    for path in map(Path, args.paths):
        results += import_weights_folder(path) if path.is_dir() else [import_weights_file(path)]
    for result in results:
        print(f"{result.outcome}: {result.message}")
    return 1 if any(r.outcome == "refused" for r in results) else 0


def cmd_sample(args) -> int:
    from tl_core.data.sample import make_sample_dataset

    path = make_sample_dataset(Path(args.dest), per_class=args.per_class)
    print(path)
    return 0


def cmd_cleanup(args) -> int:
    from tl_core.classroom.cleanup import clean

    report = clean(_workspace(args).root, budget_gb=args.budget_gb, dry_run=args.dry_run)
    for entry in report.removed:
        print(f"{'would remove' if args.dry_run else 'removed'} {entry.path} ({entry.size / 1024**2:,.1f} MB)")
    for path in report.temp_removed:
        print(f"{'would remove' if args.dry_run else 'removed'} {path} (stale temporary file)")
    for path in report.sessions_removed:
        print(f"{'would remove' if args.dry_run else 'removed'} {path} (an empty workspace, unused for a day)")
    print(report.summary())
    return 0


def cmd_settings(args) -> int:
    from dataclasses import fields

    from tl_core.settings import Settings, load_settings, settings_file, sources

    home = _workspace(args).root
    settings, origin = load_settings(home), sources(home)
    rows = [(f.name, "(set)" if f.name == "teacher_password" and settings.teacher_password else
             str(getattr(settings, f.name)), origin[f.name], f.metadata.get("help", "")) for f in fields(Settings)]
    if args.json:
        print(json.dumps({name: {"value": getattr(settings, name) if name != "teacher_password" else bool(
            settings.teacher_password), "source": source} for name, _, source, _ in rows}, indent=2))
        return 0
    path = settings_file(home)
    print(f"Settings file: {path if path else 'none (' + str(home / 'settings.toml') + ' is read when it exists)'}")
    width = max(len(r[0]) for r in rows)
    for name, value, source, help_text in rows:
        print(f"{name:<{width}}  {value:>8}  {source:<28}  {help_text}")
    return 0


def cmd_dataset(args) -> int:
    """History, undo and de-duplication of an ingested dataset (a folder with dataset.json). The
    command line is the server's operator: a shared dataset can be fixed here (as the teacher)."""
    import time

    from tl_core.data import Dataset, fixes, neardup

    root = Path(args.dir)
    if args.dataset_command == "history":
        ds = Dataset.load(root)
        print(f"Dataset {ds.name}: version {ds.version}, {len(ds.records)} images")
        for change in fixes.history(root):
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(change.when))
            reason = f" ({change.reason})" if change.reason else ""
            print(f"  v{change.version:<4} {when}  {change.summary}{reason}")
        return 0
    if args.dataset_command == "undo":
        ds = fixes.undo(root, as_teacher=True)
        print(f"Back to version {ds.version}: {len(ds.records)} images")
        return 0
    before = Dataset.load(root)
    ds = fixes.drop_exact_duplicates(root, as_teacher=True)
    if args.near:
        threshold = neardup.DEFAULT_THRESHOLD if args.threshold is None else args.threshold
        groups = neardup.near_duplicate_groups(ds, threshold, progress=_simple_progress("hashing"))
        ds = fixes.drop_near_duplicates(root, groups, as_teacher=True)
    print(f"Version {ds.version}: {len(before.records) - len(ds.records)} duplicate(s) dropped, "
          f"{len(ds.records)} images left (undo with `python -m tl_core dataset undo {root}`)")
    return 0


# --------------------------------------------------------------------------------------------
def make_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m tl_core", description="TL Studio engine: transfer learning on your images.")
    p.add_argument("--workspace", help="workspace folder (default: $TL_STUDIO_HOME or ~/.tl_studio)")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("inspect", help="health report of a dataset (folder, zip or csv)")
    s.add_argument("data")
    s.add_argument("--json", action="store_true")
    _add_sheet_options(s)
    s.set_defaults(func=cmd_inspect)

    s = sub.add_parser("backbones", help="list backbones and whether their weights are on this machine")
    s.add_argument("--weights-dir", default=None)
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_backbones)

    s = sub.add_parser("train", help="train a run on DATA (or again from a saved --config)")
    s.add_argument("data", nargs="?", default="", help="folder of class folders, a zip of them, or a path,label csv")
    s.add_argument("--name", default="")
    s.add_argument("--resume", metavar="RUN", help="resume RUN from its last checkpoint (DATA not needed)")
    s.add_argument("--config", metavar="RUN",
                   help="train a saved run (its id, run folder or config.json) again as a new run: exactly, "
                        "except for the options given on this command line, which override it (DATA "
                        "replaces its dataset)")
    for flag, (section, name) in _FIELD_OPTIONS.items():
        _add_field_option(s, flag, section, name)
    s.add_argument("--groups", default="", help="comma-separated trainable groups (with --freeze groups)")
    s.add_argument("--lr-range", default="", help="discriminative learning rates LOW,HIGH")
    _add_sheet_options(s)
    s.set_defaults(func=cmd_train)

    s = sub.add_parser("eval", help="metrics of RUN on its validation split or on DATA")
    s.add_argument("run")
    s.add_argument("data", nargs="?")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_eval)

    s = sub.add_parser("predict", help="top-k predictions of RUN for image files")
    s.add_argument("run")
    s.add_argument("images", nargs="+")
    s.add_argument("--top-k", type=int, default=3)
    s.set_defaults(func=cmd_predict)

    s = sub.add_parser("stop", help="stop RUN (queued or training) after its current batch; the best checkpoint is kept")
    s.add_argument("run")
    s.add_argument("--wait", type=float, default=30.0, metavar="SECONDS",
                   help="how long to wait for the run to stop (default: %(default)s)")
    s.set_defaults(func=cmd_stop)

    s = sub.add_parser("runs", help="list runs by name (or delete one that is not training)")
    s.add_argument("--delete", metavar="RUN")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_runs)

    s = sub.add_parser("export", help="export RUN as a bundle (TorchScript, ONNX, safetensors, predict.py)")
    s.add_argument("run")
    s.add_argument("--format", nargs="+", default=["torchscript", "onnx", "safetensors"],
                   choices=["torchscript", "onnx", "safetensors"])
    s.add_argument("--out", default=None)
    s.set_defaults(func=cmd_export)

    s = sub.add_parser("project", help="a project (datasets, runs, best checkpoints) as one zip to take to "
                                       "another TL Studio, and back")
    verbs = s.add_subparsers(dest="project_command", required=True)
    s = verbs.add_parser("export", help="write the workspace's datasets and runs (or those named) to OUT (.zip)")
    s.add_argument("out")
    s.add_argument("--run", action="append", default=None, help="a run id to export (repeat; brings its dataset)")
    s.add_argument("--dataset", action="append", default=None, help="a dataset id to export (repeat)")
    s.set_defaults(func=cmd_project)
    s = verbs.add_parser("import", help="add the datasets and runs of a project zip to the workspace (checked first)")
    s.add_argument("archive")
    s.set_defaults(func=cmd_project)

    s = sub.add_parser("fetch-weights", help="download backbones' ImageNet weights for offline use later")
    s.add_argument("names", nargs="*", help="backbone names (default: all)")
    s.set_defaults(func=cmd_fetch_weights)

    s = sub.add_parser("weights", help="add torchvision .pth weights files to this machine (checked first)")
    weights = s.add_subparsers(dest="weights_command", required=True)
    s = weights.add_parser("import", help="check each .pth file (name, sha256, safe load, keys and shapes) and add "
                                          "those that pass where the weights lookup reads them")
    s.add_argument("paths", nargs="+", metavar="PATH", help="a .pth file, or a folder of them")
    s.set_defaults(func=cmd_weights_import)

    s = sub.add_parser("sample", help="write the built-in sample dataset (coloured shapes) to DEST")
    s.add_argument("dest")
    s.add_argument("--per-class", type=int, default=40)
    s.set_defaults(func=cmd_sample)

    s = sub.add_parser("cleanup", help="delete the least recently used caches of all workspaces over the "
                                       "cache budget (never a training job's) and stale temporary files")
    s.add_argument("--budget-gb", type=float, default=None, help="instead of the cache_budget_gb setting")
    s.add_argument("--dry-run", action="store_true", help="only list what would be removed")
    s.set_defaults(func=cmd_cleanup)

    s = sub.add_parser("settings", help="the server's settings (limits, cleanup) in force and where each comes from")
    s.add_argument("--json", action="store_true")
    s.set_defaults(func=cmd_settings)

    s = sub.add_parser("dataset", help="history, undo and de-duplication of an ingested dataset (DIR holds "
                                       "dataset.json); each fix is a new version, image files are never deleted")
    verbs = s.add_subparsers(dest="dataset_command", required=True)
    for verb, text in (("history", "the versions and what changed in each"),
                       ("undo", "back to the version before the last change"),
                       ("dedupe", "drop identical copies (keep the first of each), and near-identical ones with --near")):
        v = verbs.add_parser(verb, help=text)
        v.add_argument("dir")
        v.set_defaults(func=cmd_dataset)
        if verb == "dedupe":
            v.add_argument("--near", action="store_true", help="also near-identical images (perceptual hashes)")
            v.add_argument("--threshold", type=int, default=None,  # neardup's, imported only when used
                           help="bits of 64 two hashes may differ by to count as near-identical (default: 6)")
    return p


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    args = make_parser().parse_args(argv)
    if args.command == "train":
        if not args.data and not args.resume and not args.config:
            print("error: give a DATA folder, zip or csv to train on (or --config FILE, or --resume RUN)",
                  file=sys.stderr)
            return 2
        if args.resume and args.config:
            print("error: --resume trains a run on with its own config; leave out --config", file=sys.stderr)
            return 2
        args.given_options = _given_options(argv) if args.config else set()
    try:
        return args.func(args)
    except TLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:  # a path given on the command line: missing, unreadable, not a folder, ...
        where = f": {exc.filename}" if exc.filename else ""
        print(f"error: {exc.strerror or exc}{where}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
