"""The data commands: ``inspect`` (a dataset's health report), ``sample`` (the built-in sample
dataset) and ``dataset`` (history, undo and de-duplication of an ingested dataset)."""

from __future__ import annotations

import json
from pathlib import Path

from tl_core.cli.common import ingest_dest, sheet_mapping, workspace_of
from tl_core.cli.progress import simple_progress


def cmd_inspect(args) -> int:
    from tl_core.data import health_report, ingest

    ws = workspace_of(args)
    dest = ingest_dest(ws, args.data)
    ds = ingest(args.data, dest=dest, progress=simple_progress("reading"), sheet=sheet_mapping(args))
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


def cmd_sample(args) -> int:
    from tl_core.data.sample import make_sample_dataset

    path = make_sample_dataset(Path(args.dest), per_class=args.per_class)
    print(path)
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
        groups = neardup.near_duplicate_groups(ds, threshold, progress=simple_progress("hashing"))
        ds = fixes.drop_near_duplicates(root, groups, as_teacher=True)
    print(f"Version {ds.version}: {len(before.records) - len(ds.records)} duplicate(s) dropped, "
          f"{len(ds.records)} images left (undo with `python -m tl_core dataset undo {root}`)")
    return 0
