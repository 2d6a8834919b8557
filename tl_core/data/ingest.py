"""Turn what a user has (a folder, a zip, a CSV or Excel sheet, uploaded files) into a checked ``Dataset``.

Every file is read once: hashed (duplicates, cache keys) and fully decoded (corrupt and truncated
files are skipped with a reason). Zips and uploads are written below ``dest/images`` under
sanitised names; folders and sheets are used in place unless ``dest`` is given, then copied.

A zip or folder holding a spreadsheet (``sheets.py``) whose columns can be told is labelled by it
rather than by class folders; the sheet's rows that name no usable image are skipped with the reason.
"""

from __future__ import annotations

import dataclasses
import io
import os
import shutil
import zipfile
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from tl_core import atomic
from tl_core.data.dataset import DATASET_FILE, Dataset, ImageRecord, Note, ProgressFn, Skipped, UploadedImage
from tl_core.data.safety import (
    Limits,
    Skip,
    UniqueNames,
    check_archive_caps,
    check_member_name,
    extension_reason,
    inspect_image,
    is_junk,
    safe_component,
    sha256_bytes,
    zip_member_is_symlink,
)
from tl_core.data.sheets import (
    SheetMapping,
    complete_mapping,
    find_sheets,
    guess_mapping,
    is_sheet,
    read_table,
    resolve,
)
from tl_core.errors import DataError

IMAGES_DIR = "images"  # below dest: extracted/copied files, laid out as [split/]class/file
_SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                  "validation": "val", "test": "test", "testing": "test"}


@dataclass
class _Entry:
    name: str  # as the source names it (shown in Skipped)
    read: Callable[[], bytes]
    rel: str = ""  # layout path [wrapper/][split/]class/.../file (folders and zips)
    label: str | None = None  # given directly (CSV, uploads)
    split: str | None = None
    group: str | None = None  # from a spreadsheet's group column: kept in one split
    in_place: str | None = None  # path relative to the dataset root when the file is used where it is


def ingest(source: Path | str | Sequence[UploadedImage], dest: Path | None = None, *,
           limits: Limits | None = None, progress: ProgressFn | None = None, name: str | None = None,
           sheet: SheetMapping | None = None, sheet_file: Path | None = None) -> Dataset:
    """Check and import images; see the module docstring. Raises DataError when the source cannot be
    used at all (missing, unsafe archive, no usable image); single bad files are in ``skipped``.
    ``name`` is the name shown to the user; by default the folder's, zip's or CSV's name.

    ``sheet`` maps a spreadsheet's columns (else they are guessed from their names); the sheet is
    ``sheet_file`` when given (a sheet uploaded beside a zip or folder of images), else the one in
    the zip or folder, else ``source`` itself when it is a .csv or .xlsx file."""
    ds = _ingest(source, dest, limits or Limits(), progress, _SheetChoice(sheet, sheet_file))
    if name and name.strip() and name.strip() != ds.name:
        ds = dataclasses.replace(ds, name=name.strip())
        ds.save()
    return ds


@dataclass(frozen=True)
class _SheetChoice:
    mapping: SheetMapping | None = None  # None: guessed from the column names
    file: Path | None = None  # a sheet outside the folder or zip of images
    inside: str | None = None  # the sheet's path inside the folder (a .csv ingested as such)

    @property
    def explicit(self) -> bool:
        """Whether the user asked for a sheet, so that a sheet that cannot be used is an error."""
        return self.mapping is not None or self.file is not None or self.inside is not None


def _ingest(source: Path | str | Sequence[UploadedImage], dest: Path | None, limits: Limits,
            progress: ProgressFn | None, sheet: _SheetChoice) -> Dataset:
    dest = Path(dest) if dest is not None else None
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if path.is_dir():
            return _ingest_folder(path, dest, limits, progress, sheet)
        if not path.is_file():
            raise DataError(f"{path} does not exist. Choose a folder of class folders, a .zip, or a .csv "
                            "or .xlsx file.")
        if is_sheet(path.name):
            return _ingest_sheet_file(path, dest, limits, progress, sheet.mapping)
        if path.suffix.lower() == ".zip" or zipfile.is_zipfile(path):
            if dest is None:
                raise DataError("A zip file needs a destination folder to be unpacked into (dest).")
            return _ingest_zip(path, dest, limits, progress, sheet)
        raise DataError(f"{path.name} is not a folder, .zip, .csv or .xlsx file. Put one folder per class "
                        "into a zip file and import that.")
    uploads = list(source)
    if dest is None:
        raise DataError("Uploaded images need a destination folder to be saved into (dest).")
    return _ingest_uploads(uploads, dest, limits, progress)


# ---------------------------------------------------------------- sources


def _ingest_folder(root: Path, dest: Path | None, limits: Limits, progress: ProgressFn | None,
                   sheet: _SheetChoice, *, name: str | None = None, source: str | None = None) -> Dataset:
    files, dirs, leaving = _walk(root)
    copy = dest is not None and dest.resolve() != root.resolve()
    entries = [_Entry(name=f, rel=f, read=_file_reader(root / f, limits),
                      in_place=None if copy else f) for f in files]
    labelled = _apply_sheet(entries, sheet, {s.path: s.reason for s in leaving}, limits,
                            report_unlisted=sheet.inside is None)
    if labelled is not None:
        entries, dirs = labelled.entries, [] if labelled.by_sheet else dirs
        # A sheet file ingested as such reports only its own rows, not what else its folder holds.
        leaving = [*([] if sheet.inside else leaving), *labelled.skipped]
    if copy:
        _check_counts(len(entries), sum((root / e.rel).stat().st_size for e in entries), limits, root.name)
    return _build(entries, dirs, dest if copy else root, name or root.name, source or str(root), limits,
                  progress, pre_skipped=leaving)


def _ingest_sheet_file(path: Path, dest: Path | None, limits: Limits, progress: ProgressFn | None,
                       mapping: SheetMapping | None) -> Dataset:
    """A .csv or .xlsx naming images by paths relative to its own folder (or by file names in it)."""
    return _ingest_folder(path.parent, dest, limits, progress, _SheetChoice(mapping, inside=path.name),
                          name=path.stem, source=str(path))


def _walk(root: Path) -> tuple[list[str], list[str], list[Skipped]]:
    """(files, folders, links leaving ``root``) below ``root``, as posix paths relative to it."""
    files: list[str] = []
    dirs: list[str] = []
    leaving: list[Skipped] = []  # links that point out of the folder: neither followed nor imported
    real_root = root.resolve()
    for here, subdirs, names in os.walk(root):  # does not follow directory links
        rel_here = Path(here).relative_to(root).as_posix()
        prefix = "" if rel_here == "." else rel_here + "/"
        kept_dirs = []
        for d in sorted(d for d in subdirs if not is_junk(d)):
            if _leaves(root / (prefix + d), real_root):
                leaving.append(Skipped(prefix + d, "link to a folder outside the dataset folder (not followed)"))
            else:
                kept_dirs.append(d)
        subdirs[:] = kept_dirs
        dirs.extend(prefix + d for d in subdirs)
        for n in sorted(names):
            if prefix == "" and n == DATASET_FILE:
                continue
            if _leaves(root / (prefix + n), real_root):
                leaving.append(Skipped(prefix + n, "link to a file outside the dataset folder (not imported)"))
            else:
                files.append(prefix + n)
    return files, dirs, leaving


def _leaves(path: Path, real_root: Path) -> bool:
    """Whether ``path`` is a symbolic link whose target is outside ``real_root``: a
    dataset folder must not import, say, the server's own files through a link a student put in it."""
    if not path.is_symlink():
        return False
    try:
        return not path.resolve(strict=False).is_relative_to(real_root)
    except (OSError, RuntimeError):  # a link loop
        return True


def _ingest_zip(path: Path, dest: Path, limits: Limits, progress: ProgressFn | None,
                sheet: _SheetChoice = _SheetChoice()) -> Dataset:
    with _open_zip(path, path.name) as zf:
        entries, dirs, unsafe = _zip_members(zf, limits, path.name)
        labelled = _apply_sheet(entries, sheet, {}, limits)
        if labelled is not None:
            entries, unsafe = labelled.entries, [*unsafe, *labelled.skipped]
            dirs = [] if labelled.by_sheet else dirs
        return _build(entries, dirs, dest, path.stem, str(path), limits, progress, pre_skipped=unsafe)


def _open_zip(file: Path | io.BytesIO, name: str) -> zipfile.ZipFile:
    try:
        return zipfile.ZipFile(file)
    except (zipfile.BadZipFile, OSError) as exc:
        raise DataError(f"{name} is not a valid zip file ({exc}). Re-create the zip and try again.") from exc


def _zip_members(zf: zipfile.ZipFile, limits: Limits, name: str) -> tuple[list[_Entry], list[str], list[Skipped]]:
    """(files to read, folders, members refused by name or type) of an archive whose size caps
    (``check_archive_caps``, which raises DataError) it passes."""
    infos = zf.infolist()
    check_archive_caps(infos, limits, name)
    entries: list[_Entry] = []
    dirs: list[str] = []
    unsafe: list[Skipped] = []
    for info in infos:
        try:
            rel = check_member_name(info.filename)
        except Skip as why:
            unsafe.append(Skipped(info.filename, str(why)))
            continue
        if info.is_dir():
            dirs.append(rel)
        elif zip_member_is_symlink(info):
            unsafe.append(Skipped(info.filename, "symbolic link in the archive (not followed)"))
        else:
            entries.append(_Entry(name=info.filename, rel=rel, read=_zip_reader(zf, info, limits)))
    return entries, dirs, unsafe


@dataclass
class _Labelled:
    entries: list[_Entry]  # by_sheet: the files the sheet lists (label, split, group set); else all but sheets
    skipped: list[Skipped]  # its bad rows, files it does not list, other sheets, sheets not used
    by_sheet: bool  # False: no sheet could be used, the class-folder layout labels the images


@dataclass(frozen=True)
class SheetSource:
    """A spreadsheet found for a zip or folder, before its columns are mapped: what the mapper shows."""
    name: str  # the sheet's path inside the zip or folder, or its own file name
    table: Any  # pandas.DataFrame of text cells (see sheets.read_table)
    guess: SheetMapping | None  # columns told by their names, or None
    files: list[str]  # the files a row may name (posix, relative to the zip or folder)
    base: str  # the sheet's folder inside the zip or folder ('' at the top or outside)
    refused: dict[str, str]  # files there that must not be read, with the reason


def read_sheet_source(source: Path, sheet_file: Path | None = None, limits: Limits | None = None, *,
                      header: bool | None = None) -> SheetSource:
    """The sheet of a zip or folder of images (``sheet_file`` when given, else the shallowest sheet
    inside), read but not yet mapped: for the app's column mapper. Raises DataError when there is
    none or it cannot be read. Nothing is extracted and no image is read."""
    limits = limits or Limits()
    source = Path(source)
    if source.is_dir():
        names, _, leaving = _walk(source)
        refused = {s.path: s.reason for s in leaving}
        read = {n: _file_reader(source / n, limits) for n in names}
        return _sheet_source(source.name, names, read, refused, sheet_file, limits, header)
    with _open_zip(source, source.name) as zf:
        entries, _, _ = _zip_members(zf, limits, source.name)
        names = [e.rel for e in entries if not is_junk(e.rel)]
        read = {e.rel: e.read for e in entries}
        return _sheet_source(source.name, names, read, {}, sheet_file, limits, header)


def _sheet_source(where: str, names: list[str], read: dict[str, Callable[[], bytes]], refused: dict[str, str],
                  sheet_file: Path | None, limits: Limits, header: bool | None) -> SheetSource:
    if sheet_file is not None:
        name, base, data = sheet_file.name, "", _read_or_fail(sheet_file.name, _file_reader(sheet_file, limits))
    else:
        found = find_sheets(names)
        if not found:
            raise DataError(f"{where} holds no spreadsheet (.csv or .xlsx). Add one that lists each image "
                            "with its label, or upload it beside the images.")
        name = found[0]
        base, data = PurePosixPath(name).parent.as_posix().strip("."), _read_or_fail(name, read[name])
    table = read_table(name, data, header=header)
    files = [n for n in names if not is_sheet(n)]
    return SheetSource(name=name, table=table, guess=guess_mapping(list(table.columns)), files=files,
                       base=base, refused=refused)


def _read_or_fail(name: str, read: Callable[[], bytes]) -> bytes:
    try:
        return read()
    except Skip as why:
        raise DataError(f"The spreadsheet {name} could not be read: {why}.") from None


def _apply_sheet(entries: list[_Entry], sheet: _SheetChoice, refused: dict[str, str], limits: Limits, *,
                 report_unlisted: bool = True) -> _Labelled | None:
    """Label ``entries`` (a zip's or folder's files) by a spreadsheet, or None when there is no
    usable one (the class-folder layout then applies; a sheet found but not usable is reported)."""
    sheets = [e for e in entries if is_sheet(e.rel) and not is_junk(e.rel)]
    others = [e for e in entries if e not in sheets]
    candidates: list[tuple[str, str, Callable[[], bytes]]]  # (name, base folder, read)
    if sheet.file is not None:
        candidates = [(sheet.file.name, "", _file_reader(sheet.file, limits))]
    elif sheet.inside is not None:
        candidates = [(e.rel, "", e.read) for e in sheets if e.rel == sheet.inside]
    else:
        order = {n: i for i, n in enumerate(find_sheets([e.rel for e in sheets]))}
        candidates = [(e.rel, PurePosixPath(e.rel).parent.as_posix().strip("."), e.read)
                      for e in sorted(sheets, key=lambda e: order[e.rel])]
    if not candidates and sheet.explicit:
        raise DataError("No spreadsheet (.csv or .xlsx) was found with the images. Add one that lists each "
                        "image with its label.")
    notes: list[Skipped] = []
    for name, base, read in candidates:
        try:
            data = _read_or_fail(name, read)
            table = read_table(name, data)
            if sheet.mapping is not None and sheet.mapping.image not in ("", *table.columns):
                # the user's columns say otherwise whether the first row names the columns
                table = read_table(name, data, header=not table.attrs["header"])
        except DataError as exc:
            if sheet.explicit:
                raise
            notes.append(Skipped(name, f"spreadsheet not used: {exc}"))
            continue
        mapping = complete_mapping(sheet.mapping, list(table.columns))
        if mapping is None:
            if sheet.explicit:
                raise DataError(f"Which columns of {name} hold the image and the label? Its columns are: "
                                f"{', '.join(map(str, table.columns))}. Name them (image, label), or choose "
                                "them in the app's column mapper (--image-column and --label-column on the "
                                "command line).")
            notes.append(Skipped(name, "spreadsheet not used: no column named image/path/file and "
                                       "label/class; choose its columns in the app's Spreadsheet tab"))
            continue
        resolved = resolve(table, mapping, [e.rel for e in others], base=base, refused=refused,
                           sheet_name=PurePosixPath(name).name)
        if not resolved.rows and not sheet.explicit:  # notes that came with class folders, say
            notes.append(Skipped(name, "spreadsheet not used: none of its rows names an image here"))
            continue
        by_rel = {e.rel: e for e in others}
        listed: list[_Entry] = []
        for row in resolved.rows:
            entry = by_rel[row.path]
            entry.label, entry.split, entry.group = row.label, row.split, row.group
            listed.append(entry)
        skipped = [Skipped(b.value or b.where, b.reason) for b in resolved.bad]
        if report_unlisted:
            chosen = set(id(e) for e in listed)
            skipped += [Skipped(e.name, f"not listed in {PurePosixPath(name).name}") for e in others
                        if id(e) not in chosen and not is_junk(e.rel)]
        skipped += [Skipped(e.name, f"another spreadsheet ({name}) lists the images") for e in sheets
                    if e.rel != name]
        return _Labelled(listed, notes + skipped, by_sheet=True)
    if not sheets:
        return None
    return _Labelled(others, notes, by_sheet=False)  # class folders label the images; the sheets are reported


def _ingest_uploads(uploads: list[UploadedImage], dest: Path, limits: Limits,
                    progress: ProgressFn | None) -> Dataset:
    _check_counts(len(uploads), sum(len(u.data) for u in uploads), limits, "The upload")
    entries: list[_Entry] = []
    bad: list[Skipped] = []
    for up in uploads:
        try:
            rel = check_member_name(up.name)
        except Skip as why:
            bad.append(Skipped(up.name, str(why)))
            continue
        if not up.label.strip():
            bad.append(Skipped(up.name, "no class given for this image"))
            continue
        data = up.data
        entries.append(_Entry(name=up.name, rel=rel, read=lambda data=data: data, label=up.label.strip()))
    return _build(entries, [], dest, "uploads", "uploaded images", limits, progress, pre_skipped=bad)


# ---------------------------------------------------------------- files used as they are


@dataclass(frozen=True)
class CheckedImage:
    name: str  # as handed in; a file from a zip is named "<zip name>/<path inside>"
    data: bytes
    width: int  # after EXIF orientation
    height: int


def check_images(files: Iterable[tuple[str, bytes]],
                 limits: Limits | None = None) -> tuple[list[CheckedImage], list[Skipped]]:
    """``(name, bytes)`` files a user hands in to be used as they are (to classify, not to import):
    every image decoded once, a ``.zip`` read in memory with the checks and wording of a zip
    import. Junk (``__MACOSX``, ``.DS_Store``) is dropped silently; every other file that cannot
    be used, a whole unusable zip included, comes back as ``Skipped`` with the reason."""
    limits = limits or Limits()
    good: list[CheckedImage] = []
    bad: list[Skipped] = []
    for name, data in files:
        if is_junk(name):
            continue
        if PurePosixPath(name).suffix.lower() == ".zip":
            try:
                more_good, more_bad = _check_zip(name, data, limits)
            except DataError as exc:
                more_good, more_bad = [], [Skipped(name, str(exc))]
            good += more_good
            bad += more_bad
            continue
        checked = _checked_image(name, lambda data=data: data, limits)
        (good if isinstance(checked, CheckedImage) else bad).append(checked)
    return good, bad


def _check_zip(name: str, data: bytes, limits: Limits) -> tuple[list[CheckedImage], list[Skipped]]:
    with _open_zip(io.BytesIO(data), name) as zf:
        entries, _, unsafe = _zip_members(zf, limits, name)
        good: list[CheckedImage] = []
        bad = [Skipped(f"{name}/{s.path}", s.reason) for s in unsafe]  # reported even if junk-like, as ingest does
        for entry in entries:
            if is_junk(entry.rel):
                continue
            reason = extension_reason(entry.rel)
            checked = (Skipped(f"{name}/{entry.name}", reason) if reason
                       else _checked_image(f"{name}/{entry.rel}", entry.read, limits, f"{name}/{entry.name}"))
            (good if isinstance(checked, CheckedImage) else bad).append(checked)
    return good, bad


def _checked_image(name: str, read: Callable[[], bytes], limits: Limits,
                   skipped_name: str | None = None) -> CheckedImage | Skipped:
    try:
        data = read()
        width, height = inspect_image(data, limits)
    except Skip as why:
        return Skipped(skipped_name or name, str(why))
    return CheckedImage(name, data, width, height)


# ---------------------------------------------------------------- a new dataset, whole or nothing


def create_dataset(dest: Path, build: Callable[[Path], Dataset]) -> Dataset:
    """Run ``build(dest)``, which makes a dataset in the fresh folder ``dest`` and returns it. If
    it fails or is interrupted (any exception, a page rerun included), ``dest`` is removed, so no
    half-made dataset is ever listed; a full disk (met by ``build``'s own writes too: PIL saving a
    sample image, a download) raises ``DiskFull``."""
    try:
        return build(dest)
    except BaseException as exc:
        shutil.rmtree(dest, ignore_errors=True)
        if not isinstance(exc, atomic.DiskFull) and atomic.is_disk_full(exc):
            raise atomic.disk_full(exc) from exc
        raise


# ---------------------------------------------------------------- shared


def _check_counts(files: int, total_bytes: int, limits: Limits, name: str) -> None:
    if files > limits.max_files:
        raise DataError(f"{name} has {files:,} files, more than the limit of {limits.max_files:,}. "
                        "Import fewer images at a time.")
    if total_bytes > limits.max_total_bytes:
        raise DataError(f"{name} is {total_bytes / 1024**3:.1f} GiB, more than the limit of "
                        f"{limits.max_total_bytes / 1024**3:.1f} GiB. Use fewer or smaller images.")


def _file_reader(path: Path, limits: Limits) -> Callable[[], bytes]:
    def read() -> bytes:
        try:
            if path.stat().st_size > limits.max_file_bytes:
                raise Skip(f"file is larger than {limits.max_file_bytes // 1024**2} MiB")
            return path.read_bytes()
        except FileNotFoundError:
            raise Skip("file not found") from None
        except OSError as exc:
            raise Skip(f"file could not be read ({exc.strerror or exc})") from None
    return read


def _zip_reader(zf: zipfile.ZipFile, info: zipfile.ZipInfo, limits: Limits) -> Callable[[], bytes]:
    def read() -> bytes:
        if info.flag_bits & 0x1:
            raise Skip("password-protected in the archive")
        if info.file_size > limits.max_file_bytes:
            raise Skip(f"file is larger than {limits.max_file_bytes // 1024**2} MiB")
        try:
            with zf.open(info) as handle:  # zipfile stops at the declared size and checks the CRC
                return handle.read(limits.max_file_bytes + 1)
        except NotImplementedError:
            raise Skip("compressed with a method that is not supported; re-create the zip") from None
        except (zipfile.BadZipFile, OSError, EOFError, RuntimeError) as exc:
            raise Skip(f"damaged inside the archive ({exc})") from None
    return read


def _layout(rels: list[str]) -> tuple[int, bool]:
    """(wrapper folders to drop, whether the top level is train/val/test) for class-folder layouts."""
    parts = [r.split("/") for r in rels]
    drop = 0
    while parts and all(len(p) >= drop + 3 for p in parts):
        first = {p[drop] for p in parts}
        if len(first) != 1 or next(iter(first)).lower() in _SPLIT_ALIASES:
            break
        drop += 1
    tops = {_SPLIT_ALIASES.get(p[drop].lower(), "") for p in parts if len(p) > drop + 1}
    has_splits = "train" in tops and "" not in tops
    return drop, has_splits


def _build(entries: list[_Entry], dirs: list[str], root: Path, name: str, source: str, limits: Limits,
           progress: ProgressFn | None, pre_skipped: Sequence[Skipped] = ()) -> Dataset:
    skipped: list[Skipped] = list(pre_skipped)
    candidates: list[_Entry] = []
    for entry in entries:
        if entry.rel and is_junk(entry.rel):
            continue  # OS droppings (__MACOSX, .DS_Store, Thumbs.db, hidden files): nobody's images
        reason = extension_reason(entry.rel or entry.name)
        if reason:
            skipped.append(Skipped(entry.name, reason))
        else:
            candidates.append(entry)

    # Labels from the folder layout, for folders and zips.
    classes: set[str] = set()
    layout_entries = [e for e in candidates if e.label is None]
    if layout_entries:
        drop, has_splits = _layout([e.rel for e in layout_entries])
        for d in dirs:  # class folders without usable images still count: the health report names them
            parts = d.split("/")[drop:]
            if has_splits and parts and _SPLIT_ALIASES.get(parts[0].lower()):
                parts = parts[1:]
            elif has_splits:
                continue
            if len(parts) >= 1 and not is_junk(d) and parts[0]:
                classes.add(parts[0])
        kept = []
        for e in candidates:
            if e.label is not None:
                kept.append(e)
                continue
            parts = e.rel.split("/")[drop:]
            if has_splits:
                split = _SPLIT_ALIASES.get(parts[0].lower()) if len(parts) > 1 else None
                if split is None:
                    skipped.append(Skipped(e.name, "not inside a train/, val/ or test/ folder"))
                    continue
                e.split, parts = split, parts[1:]
            if len(parts) < 2:
                skipped.append(Skipped(e.name, "not inside a class folder; put each image into a folder "
                                               "named after its class"))
                continue
            e.label = parts[0]
            kept.append(e)
        candidates = kept

    writer = _Writer(root) if any(e.in_place is None for e in candidates) else None
    records: list[ImageRecord] = []
    notes: list[Note] = []
    total = len(candidates)
    for done, e in enumerate(candidates, start=1):
        said: list[str] = []
        try:
            data = e.read()
            width, height = inspect_image(data, limits, said)
        except Skip as why:
            skipped.append(Skipped(e.name, str(why)))
        else:
            assert e.label is not None
            path = e.in_place if e.in_place is not None else writer.write(e, data)  # type: ignore[union-attr]
            records.append(ImageRecord(path=path, label=e.label, split=e.split, sha256=sha256_bytes(data),
                                       width=width, height=height, group=e.group))
            classes.add(e.label)
            notes += [Note(e.name, text) for text in said]
        if progress is not None:
            progress(done, total, f"Checked {PurePosixPath(e.name).name}")

    if not records:
        reasons = "; ".join(f"{s.path}: {s.reason}" for s in skipped[:3])
        raise DataError(f"No usable images found in {name}" + (f" ({reasons})" if reasons else "") +
                        ". Put one folder per class, each holding JPEG or PNG images.")
    ds = Dataset(root=root, name=name, classes=sorted(classes), records=records, skipped=skipped, source=source,
                 notes=notes)
    ds.save()
    return ds


class _Writer:
    """Writes accepted files below root/images as [split/]class/file with safe, unique names."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.names = UniqueNames()
        self.class_dirs: dict[str, str] = {}
        self.dir_names = UniqueNames()
        images = root / IMAGES_DIR
        if images.exists() and (root / DATASET_FILE).exists():
            shutil.rmtree(images)  # re-import into the same dataset folder: ours to replace
        images.mkdir(parents=True, exist_ok=True)

    def write(self, entry: _Entry, data: bytes) -> str:
        assert entry.label is not None
        if entry.label not in self.class_dirs:
            self.class_dirs[entry.label] = self.dir_names.claim("", safe_component(entry.label, 80))
        folder = f"{IMAGES_DIR}/{entry.split + '/' if entry.split else ''}{self.class_dirs[entry.label]}"
        file_name = self.names.claim(folder, safe_component(PurePosixPath(entry.rel or entry.name).name))
        rel = f"{folder}/{file_name}"
        target = self.root / rel
        # Whole or nothing, but not fsynced one by one: dataset.json, written last and atomically, commits.
        atomic.write_bytes(target, data, fsync=False)
        return rel



