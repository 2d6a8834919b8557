"""An upload a user sends: what it weighs (bytes, images), and the caps its ingest runs under."""

from __future__ import annotations

import zipfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from tl_core.data.safety import Limits
from tl_core.limits import MB, check_can_add_dataset
from tl_core.settings import Settings, load_settings
from tl_core.workspace import Workspace


def measure_upload(source: Any) -> tuple[int, int]:
    """(bytes, images) of what a user uploads: a zip's path, a folder, or a list of
    ``UploadedImage``. Images are counted by their names (cheap: nothing is decoded)."""
    from tl_core.data.safety import extension_reason, is_junk

    def is_image(name: str) -> bool:
        return not is_junk(name) and extension_reason(name) is None

    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            files = [p for p in path.rglob("*") if p.is_file()]
            return (sum(p.stat().st_size for p in files),
                    sum(1 for p in files if is_image(p.relative_to(path).as_posix())))
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                names = [i.filename for i in archive.infolist() if not i.is_dir()]
            return path.stat().st_size, sum(1 for name in names if is_image(name))
        return (path.stat().st_size if path.exists() else 0), 0
    if isinstance(source, Sequence):
        return sum(len(getattr(item, "data", b"")) for item in source), len(source)
    return 0, 0


def check_dataset_source(workspace: Workspace, source: Any, *, settings: Settings | None = None,
                         home: Path | None = None) -> None:
    """``check_can_add_dataset`` for an upload as ``measure_upload`` takes it."""
    upload_bytes, n_images = measure_upload(source)
    check_can_add_dataset(workspace, upload_bytes, n_images, settings=settings, home=home)


def upload_limits(settings: Settings | None = None) -> Limits:
    """The ingest caps for a dataset upload, from the settings: each file at most ``max_upload_mb``
    (``safety.upload_limits``, the caps of one image), and a backstop behind ``check_dataset_source``
    for what only unpacking shows (images compress little, so twice the upload caps is generous)."""
    import dataclasses

    from tl_core.data.safety import upload_limits as image_limits

    settings = settings or load_settings()
    default = Limits()
    max_bytes = settings.limit("max_upload_mb")
    max_images = settings.limit("max_upload_images")
    return dataclasses.replace(
        image_limits(settings),
        max_total_bytes=min(default.max_total_bytes, int(2 * max_bytes * MB)) if max_bytes else default.max_total_bytes,
        max_files=min(default.max_files, int(2 * max_images)) if max_images else default.max_files)
