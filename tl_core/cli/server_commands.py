"""The server's commands: ``cleanup`` (caches over the budget, stale temporary files) and
``settings`` (the settings in force and where each comes from)."""

from __future__ import annotations

import json

from tl_core.cli.common import workspace_of


def cmd_cleanup(args) -> int:
    from tl_core.classroom.cleanup import clean

    report = clean(workspace_of(args).root, budget_gb=args.budget_gb, dry_run=args.dry_run)
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

    home = workspace_of(args).root
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
