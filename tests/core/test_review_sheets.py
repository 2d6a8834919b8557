"""Review of spreadsheet reading (tl_core.data.sheets) with hostile sizes: a table far wider or
longer than a list of images is refused at once with a message, not parsed for minutes."""

from __future__ import annotations

import io
import time

import pytest

from tl_core.data import sheets
from tl_core.errors import DataError


def test_a_very_wide_csv_is_refused_quickly():
    row = ",".join(f'"c{i}"' for i in range(20_000))  # 0.3 MB; pandas took ~7 s on it, the mapper 4 x 20,000 options
    start = time.perf_counter()
    with pytest.raises(DataError, match="columns"):
        sheets.read_table("wide.csv", f"path,label,{row}\na.jpg,cat,{row}\n".encode())
    assert time.perf_counter() - start < 1


def test_a_csv_with_more_rows_than_an_archive_has_files_is_refused(monkeypatch):
    monkeypatch.setattr(sheets, "MAX_ROWS", 100)
    with pytest.raises(DataError, match="rows"):
        sheets.read_table("long.csv", ("path,label\n" + "a.jpg,cat\n" * 150).encode())
    assert len(sheets.read_table("ok.csv", ("path,label\n" + "a.jpg,cat\n" * 90).encode())) == 90


def test_a_wide_excel_sheet_is_refused():
    import pandas as pd

    buf = io.BytesIO()
    pd.DataFrame([[f"v{i}" for i in range(sheets.MAX_COLUMNS + 1)]],
                 columns=[f"c{i}" for i in range(sheets.MAX_COLUMNS + 1)]).to_excel(buf, index=False)
    with pytest.raises(DataError, match="columns"):
        sheets.read_table("wide.xlsx", buf.getvalue())
