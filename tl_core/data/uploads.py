"""An upload a user sends: what it weighs (bytes, images), the caps its ingest runs under, and
the one way it becomes a dataset.

``add_uploaded_dataset`` adds a dataset from uploaded bytes (a zip, a folder's files, images with
their class, or a spreadsheet staged with its images): the server's limits first, before a byte is
written; then the bytes staged whole or nothing (a full disk raises ``DiskFull``); then the ingest,
with progress. On any failure what it staged and the half-made dataset folder are removed, so the
workspace stays as it was. The Data page, the Teacher page (shared datasets) and the spreadsheet tab
call it; ``stage_sheet_upload`` stages a spreadsheet's files once per set of files, for the mapper.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import shutil
import tempfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import IO, Any, Protocol

from tl_core import atomic
from tl_core.data.catalog import DatasetCatalog
from tl_core.data.dataset import Dataset, ProgressFn, UploadedImage
from tl_core.data.ingest import create_dataset, ingest
from tl_core.data.safety import Limits, extension_reason, is_junk, safe_component
from tl_core.data.sheets import SheetMapping, is_sheet
from tl_core.errors import DataError
from tl_core.limits import MB, check_can_add_dataset
from tl_core.settings import Settings, load_settings
from tl_core.workspace import Workspace

STAGED_DIR = "sheet-upload"  # below a session's cache: the spreadsheet upload the mapper reads


class UploadedFile(Protocol):
    """One file a browser sent (Streamlit's ``UploadedFile`` is one): its name as sent (never
    trusted as a path) and its bytes; ``file_id``, when it has one, tells two uploads apart."""

    name: str

    def getvalue(self) -> bytes: ...


@dataclass(frozen=True)
class ZipUpload:
    """A .zip: one folder per class (train/ val/ test/ folders are kept), or a spreadsheet with its
    images."""
    file: UploadedFile


@dataclass(frozen=True)
class FolderUpload:
    """A folder's files as a browser uploads a directory: names like ``photos/cat/a.jpg``, one
    sub-folder per class. Staged as one zip, so class folders, train/val/test folders and unsafe
    names are treated as in any archive."""
    files: Sequence[UploadedFile]


@dataclass(frozen=True)
class ImagesUpload:
    """Image files each with its class (the Data page's class-by-class tab): nothing to stage, the
    ingest writes each image into the new dataset."""
    images: Sequence[UploadedImage]


@dataclass(frozen=True)
class StagedSheet:
    """A spreadsheet upload staged by ``stage_sheet_upload``: a zip of the images (an empty one when
    only the sheet came), the sheet when it came apart from them, and a dataset name."""
    images: Path
    sheet_file: Path | None
    name: str


@dataclass(frozen=True)
class SheetUpload:
    """A staged spreadsheet upload and the columns the user mapped."""
    staged: StagedSheet
    mapping: SheetMapping


DatasetUpload = ZipUpload | FolderUpload | ImagesUpload | SheetUpload


def measure_upload(source: Any) -> tuple[int, int]:
    """(bytes, images) of what a user uploads: a zip's path, a folder, a list of ``UploadedImage``,
    or a ``DatasetUpload``. Images are counted by their names (cheap: nothing is decoded)."""
    if isinstance(source, ZipUpload):
        return _measure_zip_bytes(source.file.getvalue())
    if isinstance(source, FolderUpload):
        return (sum(len(f.getvalue()) for f in source.files),
                sum(1 for f in source.files if _is_image(f.name)))
    if isinstance(source, ImagesUpload):
        return measure_upload(source.images)
    if isinstance(source, SheetUpload):
        return measure_upload(source.staged.images)
    if isinstance(source, (str, Path)):
        path = Path(source)
        if path.is_dir():
            files = [p for p in path.rglob("*") if p.is_file()]
            return (sum(p.stat().st_size for p in files),
                    sum(1 for p in files if _is_image(p.relative_to(path).as_posix())))
        if zipfile.is_zipfile(path):
            return path.stat().st_size, _zip_images(path)
        return (path.stat().st_size if path.exists() else 0), 0
    if isinstance(source, Sequence):
        return sum(len(getattr(item, "data", b"")) for item in source), len(source)
    return 0, 0


def _is_image(name: str) -> bool:
    return not is_junk(name) and extension_reason(name) is None


def _zip_images(file: Path | io.BytesIO) -> int:
    """How many members of a zip (a path, or bytes in memory) are images, by their names."""
    with zipfile.ZipFile(file) as archive:
        return sum(1 for info in archive.infolist() if not info.is_dir() and _is_image(info.filename))


def _measure_zip_bytes(data: bytes) -> tuple[int, int]:
    """``measure_upload`` of a zip still in memory (bytes that are not a zip: no images)."""
    try:
        return len(data), _zip_images(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError):
        return len(data), 0


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


# ---------------------------------------------------------------- a dataset from an upload


def add_uploaded_dataset(upload: DatasetUpload, workspace: Workspace, *,
                         new_dir: Callable[[str], Path] | None = None, name: str | None = None,
                         progress: ProgressFn | None = None, on_ingested: Callable[[Dataset], None] | None = None,
                         settings: Settings | None = None) -> Dataset:
    """Add ``upload`` to ``workspace`` as a new dataset and return it.

    1. The server's limits for ``workspace`` (``check_can_add_dataset``: its dataset count, the
       upload's bytes and images, the session's and the server's disk), before a byte is written.
    2. The bytes staged whole or nothing in a temporary folder: a zip as sent, a folder's files as
       one zip (``ImagesUpload`` needs no staging; a ``SheetUpload`` was staged by
       ``stage_sheet_upload``). A full disk raises ``DiskFull``.
    3. The ingest into ``new_dir(name)`` (a fresh folder; by default one of the workspace's
       catalog: the Teacher page passes ``classroom.new_shared_dir``), under ``upload_limits``, with
       ``progress``; ``on_ingested(ds)`` runs right after a successful import.

    On any failure (a limit, a refused or corrupt archive, a full disk, an interruption) the
    temporary folder and the half-made dataset folder are removed: the workspace is as before. A
    ``SheetUpload``'s staged files stay: they are the mapper's, replaced by the next upload.
    ``name``: the dataset's name (default: the zip's or the sheet's, or the folder's)."""
    settings = settings or load_settings()
    upload_bytes, n_images = measure_upload(upload)
    check_can_add_dataset(workspace, upload_bytes, n_images, settings=settings)
    name = name or _upload_name(upload)
    make_dir = new_dir or DatasetCatalog(workspace).new_dir
    caps = upload_limits(settings)
    with _staged_source(upload) as (source, options):
        def build(dest: Path) -> Dataset:
            ds = ingest(source, dest, limits=caps, progress=progress, name=name, **options)
            if on_ingested is not None:
                on_ingested(ds)
            return ds

        with _disk_full_said():
            dest = make_dir(name)
        return create_dataset(dest, build)


def _upload_name(upload: DatasetUpload) -> str:
    """The dataset name an upload suggests: the zip's or the sheet's name, or the folder's."""
    if isinstance(upload, ZipUpload):
        return Path(upload.file.name).stem
    if isinstance(upload, FolderUpload):
        return (upload.files[0].name.split("/")[0] if upload.files else "") or "folder"
    if isinstance(upload, SheetUpload):
        return upload.staged.name
    return "my-classes"


@contextlib.contextmanager
def _staged_source(upload: DatasetUpload) -> Iterator[tuple[Any, dict[str, Any]]]:
    """(what ``ingest`` reads, its sheet options) for ``upload``, staged for the block."""
    if isinstance(upload, ZipUpload):
        # named after the user's file, so that the ingest's messages name it
        filename = (Path(upload.file.name).stem[:60] or "upload") + ".zip"
        with staged_bytes(upload.file.getvalue(), filename) as path:
            yield path, {}
    elif isinstance(upload, FolderUpload):
        with staging_folder() as folder:
            yield write_zip(upload.files, folder / "folder.zip"), {}
    elif isinstance(upload, ImagesUpload):
        yield list(upload.images), {}
    elif isinstance(upload, SheetUpload):
        yield upload.staged.images, {"sheet": upload.mapping, "sheet_file": upload.staged.sheet_file}
    else:
        raise TypeError(f"not an upload: {type(upload).__name__}")


@contextlib.contextmanager
def _disk_full_said() -> Iterator[None]:
    """A full disk met in the block raises ``DiskFull`` (its one message), whatever raised it."""
    try:
        yield
    except BaseException as exc:
        if not isinstance(exc, atomic.DiskFull) and atomic.is_disk_full(exc):
            raise atomic.disk_full(exc) from exc
        raise


@contextlib.contextmanager
def staging_folder() -> Iterator[Path]:
    """A fresh temporary folder for the block, removed with what is in it when the block ends
    (whether it ends well or not); a full disk raises ``DiskFull``."""
    with _disk_full_said():
        folder = Path(tempfile.mkdtemp(prefix="tl-upload-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


@contextlib.contextmanager
def staged_bytes(data: bytes, filename: str) -> Iterator[Path]:
    """``data`` written whole or not at all to ``filename`` in a ``staging_folder``; its path for
    the block (an uploaded project zip, a dataset zip). A full disk raises ``DiskFull``."""
    name = Path(filename).name  # the user's name as it is (messages quote it), but only a name
    with staging_folder() as folder:
        path = folder / (name if name not in ("", ".", "..") else "upload")
        atomic.write_bytes(path, data)
        yield path


def write_zip(files: Sequence[UploadedFile], dest: Path) -> Path:
    """Write uploaded files (names like ``photos/cat/a.jpg``) as one zip at ``dest``, whole or not at
    all (a full disk raises ``DiskFull``); returns ``dest``.

    The engine's zip ingest then handles it like any archive: class folders, train/val/test
    folders and unsafe names are treated in one place.
    """
    def fill(handle: IO[bytes]) -> None:
        with zipfile.ZipFile(handle, "w", compression=zipfile.ZIP_STORED) as archive:
            for file in files:
                archive.writestr(file.name, file.getvalue())

    atomic.write_with(dest, fill)
    return dest


# ---------------------------------------------------------------- a spreadsheet upload, staged once


def stage_sheet_upload(files: Sequence[UploadedFile], cache_dir: Path) -> StagedSheet:
    """The spreadsheet tab's upload (a sheet and a zip of its images, a zip holding both, or a sheet
    with the image files) staged once per set of files, below ``cache_dir`` (the session's cache):
    every choice in the mapper reruns the tab, and writing a zip of hundreds of MB to disk on each
    was the rerun's cost. A new set replaces the one before (one per session); a failed write
    leaves no partial folder, and a full disk raises ``DiskFull``. Raises ``DataError`` for more
    than one sheet or zip, or a zip together with image files."""
    key = hashlib.sha256("\n".join(f"{getattr(f, 'file_id', None) or len(f.getvalue())}|{f.name}"
                                   for f in files).encode()).hexdigest()[:16]
    root = cache_dir / STAGED_DIR
    folder = root / key
    if not folder.is_dir():
        for old in root.glob("*"):
            shutil.rmtree(old, ignore_errors=True)
        partial = root / f"{key}.partial"
        with _disk_full_said():
            try:
                partial.mkdir(parents=True)
                _stage_sheet(files, partial)
                partial.rename(folder)
            except BaseException:
                shutil.rmtree(partial, ignore_errors=True)
                raise
    return _stage_sheet(files, folder, write=False)


def _stage_sheet(files: Sequence[UploadedFile], folder: Path, *, write: bool = True) -> StagedSheet:
    """The ``StagedSheet`` of the uploaded files, written into ``folder`` (with ``write=False``: where
    they were written); the zip holds the image files when they were uploaded one by one."""
    sheets = [f for f in files if is_sheet(f.name)]
    zips = [f for f in files if PurePosixPath(f.name).suffix.lower() == ".zip"]
    images = [f for f in files if f not in sheets and f not in zips]
    if len(sheets) > 1 or len(zips) > 1:
        raise DataError("Upload one spreadsheet and one zip at a time (or the image files): "
                        f"{len(sheets)} spreadsheets and {len(zips)} zips were given.")
    if zips and images:
        raise DataError("Upload the images either as one zip or as image files, not both.")
    archive = folder / "images.zip"
    if write and zips:
        atomic.write_bytes(archive, zips[0].getvalue(), fsync=False)
    elif write:
        write_zip(images, archive)  # an empty zip when only the sheet came
    sheet_file = None
    if sheets:
        sheet_file = folder / safe_component(PurePosixPath(sheets[0].name).name)
        if write:
            atomic.write_bytes(sheet_file, sheets[0].getvalue(), fsync=False)
    named = sheets[0] if sheets else zips[0] if zips else images[0]
    return StagedSheet(archive, sheet_file, PurePosixPath(named.name).stem[:60] or "spreadsheet")
