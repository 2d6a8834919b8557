"""The commands on saved runs: ``runs`` (list or delete), ``stop``, ``eval``, ``predict``, ``export``
(a bundle) and ``project`` (datasets and runs as one zip, and back)."""

from __future__ import annotations

import json
from pathlib import Path

from tl_core.cli.common import ingest_dest, workspace_of
from tl_core.cli.progress import simple_progress
from tl_core.errors import TLError


def cmd_stop(args) -> int:
    from tl_core.jobs.launch import job_state, stop
    from tl_core.runs import RunStore

    run = RunStore(workspace_of(args)).get(args.run)
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

    ws = workspace_of(args)
    run = RunStore(ws).get(args.run)
    if args.data:
        ds = ingest(args.data, dest=ingest_dest(ws, args.data), progress=simple_progress("reading"))
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

    run = RunStore(workspace_of(args)).get(args.run)
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

    store = RunStore(workspace_of(args))
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

    run = RunStore(workspace_of(args)).get(args.run)
    out = Path(args.out) if args.out else run.export_dir
    report = export_bundle(run, out, formats=tuple(args.format))
    print(json.dumps(report.to_dict(), indent=2, default=str))
    print(f"Bundle written to {out}")
    return 0


def cmd_project(args) -> int:
    from tl_core.export.project import export_project
    from tl_core.export.project_import import import_project

    ws = workspace_of(args)
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
