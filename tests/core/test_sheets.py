"""Spreadsheets that list images (tl_core/data/sheets.py and ingest): column mapping, rows that do not
resolve (missing files, bad rows, paths leaving the zip or folder), unicode, Excel, the CLI flags."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path

import pandas as pd
import pytest

from tests.conftest import synthetic_image
from tl_core.cli.parser import main
from tl_core.data import Dataset, ingest, sheets
from tl_core.data.ingest import read_sheet_source
from tl_core.data.sheets import SheetMapping, guess_mapping, read_table, resolve
from tl_core.errors import DataError


def jpeg(seed: int) -> bytes:
    buf = io.BytesIO()
    synthetic_image((200, 60, 60) if seed % 2 else (60, 60, 200), seed, (24, 24)).save(buf, "JPEG")
    return buf.getvalue()


def make_zip(path: Path, members: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return path


CSV = """image,diagnosis,patient,split
img/a1.jpg,benign,P1,train
img/a2.jpg,benign,P1,train
img/naïve ü.jpg,Épithélium,P2,val
b1.jpg,malignant,P3,train
img/missing.jpg,benign,P4,train
../outside.jpg,benign,P5,train
/etc/passwd,benign,P5,train
img/a1.jpg,benign,P1,train
img/a3.jpg,,P1,train
img/a4.jpg,benign,P1,holdout
,benign,P6,train
"""


def test_zip_with_a_csv_is_labelled_by_it_and_bad_rows_say_why(tmp_path: Path):
    members = {"data/labels.csv": CSV.encode("utf-8"), "data/img/a1.jpg": jpeg(1), "data/img/a2.jpg": jpeg(2),
               "data/img/naïve ü.jpg": jpeg(3), "data/other/b1.jpg": jpeg(4), "data/img/a3.jpg": jpeg(5),
               "data/img/a4.jpg": jpeg(6), "data/img/unlisted.jpg": jpeg(7)}
    (tmp_path / "outside.jpg").write_bytes(jpeg(8))  # a row naming it must never read it
    ds = ingest(make_zip(tmp_path / "set.zip", members), tmp_path / "ds")

    got = {Path(r.path).name: (r.label, r.group, r.split) for r in ds.records}
    assert got == {"a1.jpg": ("benign", "P1", "train"), "a2.jpg": ("benign", "P1", "train"),
                   "naïve ü.jpg": ("Épithélium", "P2", "val"),
                   "b1.jpg": ("malignant", "P3", "train")}  # a bare file name found in another folder
    assert ds.classes == ["benign", "malignant", "Épithélium"]
    reasons = {s.path: s.reason for s in ds.skipped}
    assert reasons["img/missing.jpg"] == "file not found"
    assert "inside the folder or zip" in reasons["../outside.jpg"]
    assert "inside the folder or zip" in reasons["/etc/passwd"]
    assert reasons["img/a3.jpg"] == "no label in column 'diagnosis'"
    assert "is not train, val or test" in reasons["img/a4.jpg"]
    assert reasons["data/img/unlisted.jpg"] == "not listed in labels.csv"
    assert "same image as row 2" in [s.reason for s in ds.skipped if s.path == "img/a1.jpg"][0]
    assert any(s.reason.startswith("no image named") for s in ds.skipped)
    assert not any("labels.csv" == s.path.rsplit("/", 1)[-1] for s in ds.skipped)  # the sheet is no "not an image"
    assert all(not (ds.root / r.path).resolve().is_relative_to(tmp_path / "outside.jpg") for r in ds.records)

    again = Dataset.load(ds.root)
    assert [(r.group, r.split) for r in again.records] == [(r.group, r.split) for r in ds.records]


def test_preview_lists_bad_rows_with_their_line_before_anything_is_imported(tmp_path: Path):
    members = {"labels.csv": CSV.encode("utf-8"), "img/a1.jpg": jpeg(1), "img/a2.jpg": jpeg(2)}
    source = read_sheet_source(make_zip(tmp_path / "set.zip", members))
    assert source.name == "labels.csv" and source.guess == SheetMapping("image", "diagnosis", "patient", "split")
    resolved = resolve(source.table, source.guess, source.files, base=source.base, sheet_name=source.name)
    assert [r.line for r in resolved.rows] == [2, 3]
    bad = {b.where: b.reason for b in resolved.bad}
    assert bad["labels.csv row 6"] == "file not found" and "inside the folder" in bad["labels.csv row 7"]
    assert not (tmp_path / "ds").exists()


def test_file_names_that_match_several_files_must_be_given_as_paths():
    table = pd.DataFrame({"file": ["x.jpg", "y.jpg", "a/y.jpg"], "class": ["c", "c", "d"]})
    table.attrs["header"] = True
    resolved = resolve(table, SheetMapping("file", "class"), ["a/x.jpg", "a/y.jpg", "b/y.jpg"])
    assert [(r.path, r.label) for r in resolved.rows] == [("a/x.jpg", "c"), ("a/y.jpg", "d")]
    assert "2 files are named y.jpg" in resolved.bad[0].reason


def test_csv_with_semicolons_bom_and_unicode_and_a_header_less_one(monkeypatch):
    table = read_table("x.csv", "\ufeffFile;Class;Patient\nä.jpg;Ünïcödé;p1\n".encode())
    assert list(table.columns) == ["File", "Class", "Patient"] and table.iloc[0].tolist() == ["ä.jpg", "Ünïcödé", "p1"]
    assert guess_mapping(table.columns) == SheetMapping("File", "Class", "Patient", None)
    plain = read_table("y.csv", b"a.jpg,cat\nb.jpg,dog\n")
    assert len(plain) == 2 and guess_mapping(plain.columns) == SheetMapping("column 1", "column 2")
    with pytest.raises(DataError, match="UTF-8"):
        read_table("z.csv", "file,label\nä.jpg,x\n".encode("cp1252"))
    with pytest.raises(DataError, match="empty"):
        read_table("e.csv", b"")
    bomb = io.BytesIO()
    with zipfile.ZipFile(bomb, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("xl/worksheets/sheet1.xml", b"\0" * (3 * 1024**2))
    monkeypatch.setattr(sheets, "MAX_XLSX_UNPACKED", 2 * 1024**2)
    with pytest.raises(DataError, match="unpacks to 3 MB"):
        read_table("big.xlsx", bomb.getvalue())


def test_excel_sheet_in_a_folder_with_columns_named_by_the_user(tmp_path: Path):
    study = tmp_path / "study"
    (study / "pics").mkdir(parents=True)
    for i in range(4):
        (study / "pics" / f"ñ{i}.jpg").write_bytes(jpeg(i))
    (tmp_path / "secret.jpg").write_bytes(jpeg(9))
    os.symlink(tmp_path / "secret.jpg", study / "pics" / "link.jpg")  # leaves the sheet's folder
    pd.DataFrame({"Foto": [f"pics/ñ{i}.jpg" for i in range(4)] + ["pics/link.jpg"],
                  "Befund": ["gut", "gut", "schlecht", "schlecht", "gut"],
                  "Tier": ["A", "A", "B", "C", "D"]}).to_excel(study / "liste.xlsx", index=False)
    with pytest.raises(DataError, match="Which columns"):
        ingest(study / "liste.xlsx")
    ds = ingest(study / "liste.xlsx", tmp_path / "copy", sheet=SheetMapping("Foto", "Befund", "Tier"))
    assert sorted((r.label, r.group) for r in ds.records) == [("gut", "A"), ("gut", "A"), ("schlecht", "B"),
                                                               ("schlecht", "C")]
    assert "outside the dataset folder" in {s.path: s.reason for s in ds.skipped}["pics/link.jpg"]
    with pytest.raises(DataError, match="no column 'Nope'"):
        ingest(study / "liste.xlsx", sheet=SheetMapping("Foto", "Nope"))


def test_a_class_folder_zip_with_a_stray_sheet_keeps_its_folders(tmp_path: Path):
    members = {"cat/1.jpg": jpeg(1), "cat/2.jpg": jpeg(2), "dog/1.jpg": jpeg(3), "notes.csv": b"when,who\n1,2\n"}
    ds = ingest(make_zip(tmp_path / "z.zip", members), tmp_path / "ds")
    assert ds.classes == ["cat", "dog"] and len(ds.records) == 3
    assert "spreadsheet not used" in {s.path: s.reason for s in ds.skipped}["notes.csv"]


def test_old_dataset_json_without_groups_still_loads(tmp_path: Path):
    record = {"path": "a.jpg", "label": "x", "split": None, "sha256": "0" * 64, "width": 1, "height": 1}
    (tmp_path / "dataset.json").write_text(json.dumps({"format": 1, "name": "old", "classes": ["x"],
                                                       "records": [record]}))
    assert Dataset.load(tmp_path).records[0].group is None


def test_cli_column_flags(tmp_path: Path, capsys):
    folder = tmp_path / "d"
    folder.mkdir()
    rows = ["name,dx,pt"]
    for i in range(6):
        (folder / f"{i}.jpg").write_bytes(jpeg(i))
        rows.append(f"{i}.jpg,{'a' if i % 2 else 'b'},p{i // 2}")
    (folder / "sheet.csv").write_text("\n".join(rows) + "\n")
    ws = ["--workspace", str(tmp_path / "ws")]
    assert main([*ws, "inspect", str(folder / "sheet.csv"), "--json", "--image-column", "name",
                 "--label-column", "dx", "--group-column", "pt"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["class_counts"] == {"a": 3, "b": 3} and report["skipped"] == []
    assert report["group_counts"] == {}  # no split in the sheet: inspect shows the source's split
    (folder / "sheet.csv").write_text("\n".join(r + (",set" if i == 0 else ",val" if i == 2 else ",train")
                                               for i, r in enumerate(rows)) + "\n")
    assert main([*ws, "inspect", str(folder / "sheet.csv"), "--image-column", "name", "--label-column", "dx",
                 "--group-column", "pt", "--split-column", "set"]) == 0
    out = capsys.readouterr().out
    assert "Groups per class and split:\n  train  a 2, b 3\n  val    a 1, b 0" in out
    assert "('p0' in train and validation)" in out


def test_a_sheet_uploaded_beside_a_zip_of_images(tmp_path: Path):
    images = make_zip(tmp_path / "imgs.zip", {f"x/{i}.jpg": jpeg(i) for i in range(4)})
    (tmp_path / "list.csv").write_text("picture;kind\n0.jpg;a\n1.jpg;a\n2.jpg;b\n3.jpg;b\n9.jpg;b\n", encoding="utf-8")
    source = read_sheet_source(images, tmp_path / "list.csv")
    assert source.name == "list.csv" and source.files == [f"x/{i}.jpg" for i in range(4)]
    mapping = SheetMapping("picture", "kind")
    ds = ingest(images, tmp_path / "ds", sheet=mapping, sheet_file=tmp_path / "list.csv")
    assert sorted(r.label for r in ds.records) == ["a", "a", "b", "b"]
    assert [(s.path, s.reason) for s in ds.skipped] == [("9.jpg", "file not found")]
    with pytest.raises(DataError, match="no spreadsheet"):
        read_sheet_source(images)
