"""The Data page's spreadsheet import (a CSV or Excel file listing images: the column mapper, a
preview, the rows that do not resolve with the reason) and its group-aware split controls: keep the
source's split or split again keeping each group in one split, groups per class and split, leaks.

Every cell, column and file name comes from the user's file: shown with st.dataframe, st.text or
selectbox options, never through Markdown.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import PurePosixPath

import pandas as pd
import streamlit as st

from tl_core.data import Dataset, HealthReport, uploads
from tl_core.data.ingest import SheetSource, read_sheet_source
from tl_core.data.sheets import SHEET_EXTENSIONS, SheetMapping, check_mapping, resolve

from .feedback import user_errors
from .state import AppState

AddFn = Callable[..., None]  # the Data page's _add_upload(upload)
NONE = "(none)"
PREVIEW_ROWS = 10
_SPLIT_NAMES = {"train": "train", "val": "validation", "test": "test"}


def render(state: AppState, add_upload: AddFn) -> None:
    """The Spreadsheet tab: upload, map the columns, see what resolves, add the dataset."""
    st.markdown("A spreadsheet (CSV or Excel) with a row per image: the image's path or file name, its "
                "label, and if you have them a **group** (a patient, a site, an animal: all its images then "
                "stay in one split, so the model is never checked on a group it trained on) and a given "
                "split (train, val, test). Upload a zip holding the sheet and the images, or the sheet "
                "together with the images (a zip of them, or the image files).")
    files = st.file_uploader("Spreadsheet and images",
                             type=[e.lstrip(".") for e in (*SHEET_EXTENSIONS, ".zip")] +
                                  ["jpg", "jpeg", "png", "bmp", "gif", "tif", "tiff", "webp"],
                             accept_multiple_files=True, key="sheet_upload")
    if not files:
        st.caption("Nothing uploaded yet.")
        return
    with user_errors("Could not use the spreadsheet", message_as_text=True):
        # staged once per set of files (below the session's cache): the mapper's reruns do not write again
        staged = uploads.stage_sheet_upload(files, state.workspace.cache_dir)
        images, sheet_file = staged.images, staged.sheet_file
        source = read_sheet_source(images, sheet_file, uploads.upload_limits())
        detected = bool(source.table.attrs.get("header", True))  # told from the first row's names
        header = st.checkbox("The first row names the columns", value=detected,
                             help="Untick it when the first row is already an image and its label.")
        if header != detected:
            source = read_sheet_source(images, sheet_file, uploads.upload_limits(), header=header)
        mapping = _mapper(source)
        st.markdown("**The first rows**")
        st.dataframe(source.table.head(PREVIEW_ROWS), hide_index=True, key="sheet_preview")
        if mapping is None:
            return
        check_mapping(source.table, mapping, PurePosixPath(source.name).name)
        resolved = resolve(source.table, mapping, source.files, base=source.base, refused=source.refused,
                           sheet_name=PurePosixPath(source.name).name)
        groups = len({r.group for r in resolved.rows if r.group})
        st.caption(f"{len(resolved.rows)} of {len(source.table)} rows name an image"
                   + (f", from {groups} groups" if mapping.group else "") + f"; {len(resolved.bad)} do not.")
        if resolved.bad:
            with st.expander(f"Rows that do not resolve to an image ({len(resolved.bad)})", expanded=True):
                st.dataframe(pd.DataFrame({"row": [b.where for b in resolved.bad],
                                           "image": [b.value for b in resolved.bad],
                                           "why": [b.reason for b in resolved.bad]}),
                             hide_index=True, key="sheet_bad_rows")
        if not source.files:
            st.info("Add the images: a zip of them, or the image files, together with the spreadsheet.")
        if st.button(f"Add the {len(resolved.rows)} images it lists", key="add_sheet", type="primary",
                     disabled=not resolved.rows, help="Imports the images the rows name, as a new dataset"):
            add_upload(uploads.SheetUpload(staged, mapping))


def _mapper(source: SheetSource) -> SheetMapping | None:
    """Four selectboxes over the sheet's columns, starting from the columns told by their names."""
    columns = [str(c) for c in source.table.columns]
    guess = source.guess
    st.text(f"Spreadsheet: {source.name}")
    c1, c2, c3, c4 = st.columns(4)

    def pick(column, label: str, key: str, guessed: str | None, optional: bool, help_text: str) -> str | None:
        options = ([NONE] if optional else []) + columns
        index = options.index(guessed) if guessed in options else (0 if optional else None)
        chosen = column.selectbox(label, options, index=index, key=key, help=help_text,
                                  placeholder="Choose a column")
        return None if chosen in (None, NONE) else chosen

    image = pick(c1, "Image (path or file name)", "sheet_col_image", guess and guess.image, False,
                 "A path relative to the spreadsheet's folder, or only the file name.")
    label = pick(c2, "Label", "sheet_col_label", guess and guess.label, False, "The class of the image.")
    group = pick(c3, "Group (optional)", "sheet_col_group", guess and guess.group, True,
                 "A patient, site or animal: all images of one group stay in one split.")
    split = pick(c4, "Split (optional)", "sheet_col_split", guess and guess.split, True,
                 "train, val or test as given; the others are split by the page below.")
    if image is None or label is None:
        st.info("Choose the columns with the image and the label.")
        return None
    return SheetMapping(image=image, label=label, group=group, split=split)


# ---------------------------------------------------------------- the split of grouped data


def keep_given_toggle(state: AppState, ds: Dataset) -> bool:
    """Whether the split the data came with is kept; a toggle only when it came with one."""
    chosen = state.draft.data.keep_given_split
    if not any(r.split for r in ds.records):
        return chosen
    grouped = any(r.group is not None for r in ds.records)
    keep = st.toggle("Keep the split that came with the data", value=chosen,
                     help="Off: every image is split again by the shares below"
                          + (", each group in one split." if grouped else "."))
    if keep != chosen:
        state.edit_draft(data={"keep_given_split": keep})
    return keep


def split_disabled_reasons(ds: Dataset, keep_given: bool) -> tuple[str | None, str | None]:
    """Why the validation and the test share cannot be set (None when they can): the data's own
    val/ or test/ images are kept as they are."""
    if not keep_given:
        return None, None
    has = {r.split for r in ds.records}
    return (("Your data came with its own validation images; they are kept as given, so the validation "
             "share is not used." if "val" in has else None),
            ("Your data came with its own test images; they are kept as given, so the test share is not "
             "used." if "test" in has else None))


def leaks(state: AppState, ds: Dataset, report: HealthReport) -> None:
    """Groups per class and split, and the fix for a group found in two splits."""
    if report.cross_split_groups and state.draft.data.keep_given_split:
        st.button("Split again keeping each group in one split", key="fix_group_leak", type="primary",
                  icon=":material/call_split:", on_click=state.edit_draft,
                  kwargs={"data": {"keep_given_split": False}},
                  help="Ignores the split that came with the data and splits every image again by the "
                       "shares below, each group whole in train, validation or test.")
    if report.group_counts:
        with st.expander("Groups per class and split"):
            rows = [{"split": _SPLIT_NAMES[s], **counts} for s, counts in report.group_counts.items()]
            st.dataframe(pd.DataFrame(rows), hide_index=True, key="group_counts")
            if report.cross_split_groups:
                st.dataframe(pd.DataFrame({"group": list(report.cross_split_groups),
                                           "splits": [", ".join(_SPLIT_NAMES[s] for s in v)
                                                      for v in report.cross_split_groups.values()]}),
                             hide_index=True, key="leaking_groups")
