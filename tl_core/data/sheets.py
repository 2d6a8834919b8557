"""Spreadsheets (CSV, Excel) that list images: read the table, map its columns, resolve each row to
an image file, and say why a row does not resolve.

The mapping says which column holds the image (a path, or only a file name), the label, and
optionally a group (a patient, a site, a specimen: images of one group stay in one split) and a
given split. Paths go through ``safety.check_member_name``: a row naming ``../x.jpg`` or an absolute
path is a bad row with its reason and is never read.
"""

from __future__ import annotations

import csv
import io
import warnings
from collections import defaultdict
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from pathlib import PurePosixPath
from typing import TYPE_CHECKING

from tl_core.data.safety import Skip, check_member_name
from tl_core.errors import DataError

if TYPE_CHECKING:
    import pandas as pd

SHEET_EXTENSIONS = (".csv", ".tsv", ".xlsx", ".xlsm")
SPLIT_ALIASES = {"train": "train", "training": "train", "val": "val", "valid": "val",
                 "validation": "val", "dev": "val", "test": "test", "testing": "test"}
_IMAGE_NAMES = ("image", "image_path", "imagepath", "path", "file", "filename", "file_name", "filepath",
                "file_path", "img", "picture", "photo")
_LABEL_NAMES = ("label", "class", "class_name", "category", "diagnosis", "finding", "outcome", "target",
                "species", "y")
_GROUP_NAMES = ("group", "patient", "patient_id", "subject", "subject_id", "site", "specimen", "animal",
                "individual", "donor", "case")
_SPLIT_NAMES = ("split", "subset", "set", "fold_set", "partition")
MAX_XLSX_UNPACKED = 200 * 1024**2  # an .xlsx is a zip of XML: a small file may unpack to gigabytes
# An image list is a row per image and a few columns. Past these the table is not one (a hostile or
# wrong file): pandas would take seconds to minutes and gigabytes, and the mapper a select box of
# every column, on each rerun of the page. Rows: as many as an archive may hold files.
MAX_ROWS = 100_000
MAX_COLUMNS = 1_000
MAX_CELLS = 2_000_000
NO_HEADER_PREFIX = "column "  # headerless CSVs get columns "column 1", "column 2", ...


@dataclass(frozen=True)
class SheetMapping:
    image: str  # column with the image's path (relative to the sheet's folder) or its file name
    label: str  # column with the class
    group: str | None = None  # column whose value keeps images together in one split (a patient)
    split: str | None = None  # column with train/val/test as the source gave it


@dataclass(frozen=True)
class SheetRow:
    line: int  # 1-based row number as a spreadsheet program shows it (the header is line 1)
    path: str  # the file it resolved to, relative to the folder or zip root
    label: str
    group: str | None
    split: str | None


@dataclass(frozen=True)
class BadRow:
    where: str  # "<sheet> row N"
    value: str  # what its image cell says ('' when empty)
    reason: str  # written for the user


@dataclass(frozen=True)
class Resolved:
    rows: list[SheetRow]  # rows that name an image that is there
    bad: list[BadRow]  # rows that do not, with the reason


def is_sheet(name: str) -> bool:
    return PurePosixPath(name).suffix.lower() in SHEET_EXTENSIONS


def read_table(name: str, data: bytes, *, header: bool | None = None) -> pd.DataFrame:
    """The sheet's cells as text ('' for empty), columns named by the header row. A CSV whose first
    row holds no known column name (``path,label``) is taken to have no header (unless ``header``
    says so) and gets columns "column 1", "column 2", ...; Excel files are read with openpyxl (the
    first worksheet) and always have a header. Raises DataError when the file cannot be read."""
    import pandas as pd  # not at module level: reading a dataset needs no pandas

    suffix = PurePosixPath(name).suffix.lower()
    try:
        if suffix in (".xlsx", ".xlsm"):
            _check_unpacked_size(name, data)
            with warnings.catch_warnings():  # openpyxl warns about styles and data validation it ignores
                warnings.simplefilter("ignore")
                # past MAX_ROWS (+ the header and one more) the shape check refuses it anyway:
                # openpyxl stops reading there instead of parsing up to 200 MB of cells
                table = pd.read_excel(io.BytesIO(data), sheet_name=0, dtype=str, header=None,
                                      engine="openpyxl", nrows=MAX_ROWS + 2)
        else:
            text = data.decode("utf-8-sig")
            if not text.strip():
                raise pd.errors.EmptyDataError("no text")
            sep = "\t" if suffix == ".tsv" else _delimiter(text)
            first = text.lstrip().split("\n", 1)[0]
            _check_shape(name, text.count("\n") + 1, first.count(sep) + 1)  # before pandas: counted, not parsed
            table = pd.read_csv(io.StringIO(text), sep=sep,
                                dtype=str, header=None, keep_default_na=False, skip_blank_lines=True)
    except UnicodeDecodeError as exc:
        raise DataError(f"{name} is not UTF-8 text ({exc.reason} at byte {exc.start}). Save it again as "
                        "'CSV UTF-8' (or as an Excel .xlsx file) and upload that.") from exc
    except (ValueError, OSError, KeyError, ImportError, csv.Error, pd.errors.ParserError,
            pd.errors.EmptyDataError) as exc:
        if isinstance(exc, pd.errors.EmptyDataError):
            raise DataError(f"{name} is empty. It needs a row per image: its path and its label.") from exc
        raise DataError(f"{name} could not be read as a {'spreadsheet' if suffix != '.csv' else 'CSV file'} "
                        f"({exc}). Save it as CSV (UTF-8) or .xlsx and try again.") from exc
    _check_shape(name, *table.shape)
    table = table.fillna("").astype(str).map(str.strip)
    table = table.loc[(table != "").any(axis=1)].reset_index(drop=True)
    if table.empty:
        raise DataError(f"{name} has no rows. It needs a row per image: its path and its label.")
    first = [str(c) for c in table.iloc[0]]
    if suffix not in (".xlsx", ".xlsm") and not (header if header is not None else _looks_like_header(first)):
        table.columns = [f"{NO_HEADER_PREFIX}{i + 1}" for i in range(table.shape[1])]
        table.attrs["header"] = False
        return table
    table.columns = _unique_names(first)
    table = table.iloc[1:].reset_index(drop=True)
    table.attrs["header"] = True
    return table


def _check_shape(name: str, rows: int, columns: int) -> None:
    if rows > MAX_ROWS or columns > MAX_COLUMNS or rows * columns > MAX_CELLS:
        raise DataError(f"{name} has {rows:,} rows and {columns:,} columns: too large for a list of images (at most "
                        f"{MAX_ROWS:,} rows, {MAX_COLUMNS:,} columns and {MAX_CELLS:,} cells). Keep the columns "
                        "with the image, the label, the group and the split, one row per image, and upload that.")


def _check_unpacked_size(name: str, data: bytes) -> None:
    import zipfile

    try:
        with zipfile.ZipFile(io.BytesIO(data)) as zf:
            unpacked = sum(info.file_size for info in zf.infolist())
    except zipfile.BadZipFile as exc:
        raise DataError(f"{name} is not a valid Excel .xlsx file ({exc}). Save it again from Excel, "
                        "or as CSV (UTF-8).") from exc
    if unpacked > MAX_XLSX_UNPACKED:
        raise DataError(f"{name} unpacks to {unpacked / 1024**2:,.0f} MB, more than the "
                        f"{MAX_XLSX_UNPACKED // 1024**2} MB an image list needs. Save it as CSV (UTF-8) instead.")


def _delimiter(text: str) -> str:
    """',' unless the first line is clearly split by ';', tabs or '|': spreadsheet programs in many
    countries write ';'."""
    first = text.lstrip().splitlines()[0] if text.strip() else ""
    try:
        return csv.Sniffer().sniff(first, delimiters=",;\t|").delimiter
    except csv.Error:
        return ","


def _looks_like_header(cells: Sequence[str]) -> bool:
    known = set(_IMAGE_NAMES + _LABEL_NAMES + _GROUP_NAMES + _SPLIT_NAMES)
    return any(_key(c) in known for c in cells)


def _unique_names(cells: Sequence[str]) -> list[str]:
    seen: dict[str, int] = {}
    out = []
    for i, cell in enumerate(cells):
        base = cell or f"{NO_HEADER_PREFIX}{i + 1}"
        seen[base] = seen.get(base, 0) + 1
        out.append(base if seen[base] == 1 else f"{base} ({seen[base]})")
    return out


def _key(column: str) -> str:
    return column.strip().lower().replace(" ", "_").replace("-", "_")


def guess_mapping(columns: Sequence[str]) -> SheetMapping | None:
    """Columns by their usual names (image/path/file, label/class, patient/group, split); a table
    without a header maps column 1 to the image and column 2 to the label. None when no image or
    label column can be told."""
    columns = list(columns)
    if columns[:2] == [f"{NO_HEADER_PREFIX}1", f"{NO_HEADER_PREFIX}2"]:
        return SheetMapping(image=columns[0], label=columns[1])

    def find(names: tuple[str, ...], taken: Collection[str] = ()) -> str | None:
        for name in names:
            for column in columns:
                if _key(column) == name and column not in taken:
                    return column
        return None

    image = find(_IMAGE_NAMES)
    label = find(_LABEL_NAMES, {image} if image else ())
    if image is None or label is None:
        return None
    return SheetMapping(image=image, label=label, group=find(_GROUP_NAMES, {image, label}),
                        split=find(_SPLIT_NAMES, {image, label}))


def complete_mapping(mapping: SheetMapping | None, columns: Sequence[str]) -> SheetMapping | None:
    """``mapping`` with its '' fields (not chosen, e.g. a command-line flag left out) taken from
    ``guess_mapping``; None fields stay None (no such column). None when image or label stay unknown."""
    guess = guess_mapping(columns)
    if mapping is None:
        return guess

    def pick(chosen: str | None, guessed: str | None) -> str | None:
        return guessed if chosen == "" else chosen

    filled = SheetMapping(image=pick(mapping.image, guess and guess.image) or "",
                          label=pick(mapping.label, guess and guess.label) or "",
                          group=pick(mapping.group, guess and guess.group),
                          split=pick(mapping.split, guess and guess.split))
    return filled if filled.image and filled.label else None


def check_mapping(table: pd.DataFrame, mapping: SheetMapping, name: str = "The spreadsheet") -> None:
    """Raise DataError when a mapped column is not in the table, or one column is mapped twice."""
    chosen = [c for c in (mapping.image, mapping.label, mapping.group, mapping.split) if c]
    missing = [c for c in chosen if c not in table.columns]
    if missing:
        raise DataError(f"{name} has no column '{missing[0]}'. Its columns are: "
                        f"{', '.join(map(str, table.columns))}. Choose the columns again.")
    if len(set(chosen)) != len(chosen):
        raise DataError("Each column can be used for one thing only: choose different columns for the "
                        "image, the label, the group and the split.")


def resolve(table: pd.DataFrame, mapping: SheetMapping, files: Collection[str], *, base: str = "",
            refused: Mapping[str, str] | None = None, sheet_name: str = "sheet") -> Resolved:
    """Each row's image among ``files`` (posix paths relative to the folder or zip root). A path is
    read relative to ``base`` (the sheet's own folder) first, then from the root; a bare file name
    that is not found there matches the one file of that name anywhere. ``refused`` names files
    that are there but must not be read (a link leaving the folder), with the reason."""
    check_mapping(table, mapping, sheet_name)
    refused = refused or {}
    present = set(files)
    by_name: dict[str, list[str]] = defaultdict(list)
    for f in sorted(present):
        by_name[PurePosixPath(f).name.casefold()].append(f)
    rows: list[SheetRow] = []
    bad: list[BadRow] = []
    used: dict[str, int] = {}
    first_line = 2 if table.attrs.get("header", True) else 1
    for offset, record in enumerate(table.to_dict("records")):
        line = first_line + offset
        where = f"{sheet_name} row {line}"
        raw = str(record[mapping.image]).strip().replace("\\", "/")  # Windows paths are common in sheets
        label = str(record[mapping.label]).strip()
        if not raw:
            bad.append(BadRow(where, "", f"no image named in column '{mapping.image}'"))
            continue
        if not label:
            bad.append(BadRow(where, raw, f"no label in column '{mapping.label}'"))
            continue
        split = None
        if mapping.split:
            given = str(record[mapping.split]).strip()
            split = SPLIT_ALIASES.get(given.lower()) if given else None
            if given and split is None:
                bad.append(BadRow(where, raw, f"split '{given}' is not train, val or test"))
                continue
        group = (str(record[mapping.group]).strip() or None) if mapping.group else None
        try:
            rel = check_member_name(raw)
        except Skip as why:
            bad.append(BadRow(where, raw, f"{why}; a path must stay inside the folder or zip "
                                                   "with the spreadsheet"))
            continue
        candidates = [f"{base}/{rel}" if base else rel, rel]
        path = next((c for c in candidates if c in present or c in refused), None)
        if path is None and "/" not in rel:
            matches = by_name.get(rel.casefold(), [])
            if len(matches) > 1:
                bad.append(BadRow(where, raw, f"{len(matches)} files are named {rel} "
                                                       f"({', '.join(matches[:3])}); give the path instead"))
                continue
            path = matches[0] if matches else None
        if path is None:
            bad.append(BadRow(where, raw, "file not found"))
            continue
        if path in refused:
            bad.append(BadRow(where, raw, refused[path]))
            continue
        if path in used:
            bad.append(BadRow(where, raw, f"the same image as row {used[path]}; each image is listed once"))
            continue
        used[path] = line
        rows.append(SheetRow(line=line, path=path, label=label, group=group, split=split))
    return Resolved(rows=rows, bad=bad)


def find_sheets(names: Collection[str]) -> list[str]:
    """The spreadsheets among a zip's or folder's file names, shallowest first."""
    from tl_core.data.safety import is_junk

    return sorted((n for n in names if is_sheet(n) and not is_junk(n)), key=lambda n: (n.count("/"), n))
