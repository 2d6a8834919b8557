"""What the command handlers share: the workspace of ``--workspace``, the spreadsheet columns named
by ``--image-column`` and the others, and where an ingested dataset is kept."""

from __future__ import annotations

from pathlib import Path


def workspace_of(args):
    """The workspace of ``--workspace``, else the default one ($TL_STUDIO_HOME or ~/.tl_studio)."""
    from tl_core.workspace import Workspace

    return Workspace(Path(args.workspace)) if args.workspace else Workspace.default()


def sheet_mapping(args):
    """The spreadsheet columns named by --image-column, --label-column, --group-column and
    --split-column (those left out are told by their names), or None when no flag is given."""
    from tl_core.data.sheets import SheetMapping

    flags = [getattr(args, f"{name}_column", None) for name in ("image", "label", "group", "split")]
    if not any(flags):
        return None
    return SheetMapping(*(flag or "" for flag in flags))


def ingest_dest(ws, source: str) -> Path | None:
    """Where the dataset read from ``source`` is kept in the workspace ``ws``."""
    from tl_core.training.session import dataset_slug

    return ws.datasets_dir / dataset_slug(source)
