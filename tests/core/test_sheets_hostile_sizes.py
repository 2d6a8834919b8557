"""Review of spreadsheet reading (tl_core.data.sheets) with hostile sizes: a table far wider or
longer than a list of images is refused at once with a message, not parsed for minutes."""

from __future__ import annotations

import io

import pytest

from tl_core.data import sheets
from tl_core.errors import DataError


def test_a_very_wide_csv_is_refused_before_it_is_parsed(monkeypatch):
    row = ",".join(f'"c{i}"' for i in range(20_000))  # 0.3 MB; pandas took ~7 s on it, the mapper 4 x 20,000 options
    def no_parsing(*args, **kwargs):
        raise AssertionError("pandas parsed a table the shape check should have refused")

    import pandas as pd

    monkeypatch.setattr(pd, "read_csv", no_parsing)  # refused on its counted shape, before pandas parses it
    with pytest.raises(DataError, match="columns"):
        sheets.read_table("wide.csv", f"path,label,{row}\na.jpg,cat,{row}\n".encode())


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


def test_a_long_excel_sheet_is_read_only_up_to_the_row_limit(monkeypatch):
    import pandas as pd

    monkeypatch.setattr(sheets, "MAX_ROWS", 100)
    for rows, refused in ((150, True), (90, False)):
        buf = io.BytesIO()
        pd.DataFrame({"path": ["a.jpg"] * rows, "label": ["cat"] * rows}).to_excel(buf, index=False)
        if refused:
            with pytest.raises(DataError, match="rows"):
                sheets.read_table("long.xlsx", buf.getvalue())
        else:
            assert len(sheets.read_table("ok.xlsx", buf.getvalue())) == rows
