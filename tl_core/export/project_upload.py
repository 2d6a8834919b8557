"""A project zip as a page sends and receives it: bytes, never a file the page writes.

``project_zip_bytes`` packs a workspace (``export_project``) into a temporary file and returns its
bytes for a download button; ``open_project_upload`` stages an uploaded project zip whole or
nothing (a full disk raises ``DiskFull``) and opens it with ``import_project``, which checks
everything in it. Either way the temporary file is removed when done, whether it went well or not.
"""

from __future__ import annotations

from tl_core.data.dataset import ProgressFn
from tl_core.data.uploads import staged_bytes, staging_folder
from tl_core.export.project import ProjectSummary, export_project
from tl_core.export.project_import import import_project
from tl_core.workspace import Workspace


def project_zip_bytes(workspace: Workspace, *, progress: ProgressFn | None = None) -> tuple[bytes, ProjectSummary]:
    """The whole workspace as a project zip's bytes (``export_project``), and what it holds."""
    with staging_folder() as folder:
        path = folder / "project.zip"
        summary = export_project(workspace, path, progress=progress)
        return path.read_bytes(), summary


def open_project_upload(data: bytes, workspace: Workspace, *, name: str,
                        progress: ProgressFn | None = None) -> ProjectSummary:
    """Add the datasets and runs of an uploaded project zip (``data``, called ``name`` by the user,
    for messages) to ``workspace``: ``import_project``'s checks and limits; nothing is added when
    it is refused."""
    with staged_bytes(data, "project.zip") as path:
        return import_project(path, workspace, progress=progress, name=name)
