"""The Export page's pieces: the export itself and the bundle as a cached zip (both in one of the
server's bounded heavy-task slots), the last export's report read back from disk, and pass/fail
badges for its parity checks."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import streamlit as st

from tl_core import atomic
from tl_core.bounded import heavy_task
from tl_core.export.bundle import ExportReport, export_bundle, zip_bundle
from tl_core.markup import escape_markdown
from tl_core.runs import Run

from .heavy import heavy_work, waiting_notice

FORMAT_NAMES = {"torchscript": "TorchScript", "onnx": "ONNX", "safetensors": "safetensors"}


def last_report(out_dir: Path) -> dict[str, Any] | None:
    """The report of the export in ``out_dir`` (``export.json``) plus its ``stamp``, or None."""
    path = Path(out_dir) / "export.json"
    data = atomic.read_json(path, default=None)
    if not data or "report" not in data:
        return None
    return {**data["report"], "stamp": path.stat().st_mtime}


def export(run: Run, out_dir: Path, formats: list[str]) -> ExportReport:
    """``tl_core.export.bundle.export_bundle`` in one of the server's heavy-task slots (a spinner while
    waiting for one); returns its report."""
    with heavy_work():
        return export_bundle(run, out_dir, formats=formats)


@st.cache_data(max_entries=8, show_spinner="Packing the zip…")
@heavy_task()  # under the cache: a cache miss only takes a heavy-task slot
def _bundle_zip(out_dir: str, stamp: float) -> bytes:
    return zip_bundle(out_dir)


def bundle_zip(out_dir: str, stamp: float) -> bytes:
    """The bundle as zip bytes; ``stamp`` (export.json's mtime) makes a re-export repack it."""
    with waiting_notice():
        return _bundle_zip(out_dir, stamp)


def _badge(passed: bool) -> None:
    if passed:
        st.badge("passed", icon=":material/check_circle:", color="green")
    else:
        st.badge("failed", icon=":material/cancel:", color="red")


def show_checks(report: dict[str, Any]) -> None:
    """One row per exported runtime: max |difference| vs tolerance, same labels, pass/fail."""
    if report.get("ok"):
        st.success("Every exported file gives the same answers as the model in TL Studio.",
                   icon=":material/verified:")
    else:
        st.error("Some checks failed or a format could not be exported: do not use the files marked "
                 "*failed*. Export again, or pick another format.", icon=":material/error:")
    for check in report.get("checks", []):
        name, diff, tol = FORMAT_NAMES.get(check["format"], check["format"]), check["max_abs_diff"], check["tolerance"]
        c1, c2, c3, c4 = st.columns([1.2, 1.6, 1.4, 3])
        with c1:
            st.markdown(f"**{name}**")
            _badge(check["passed"])
        c2.metric("Max difference", f"{diff:.1e}", help="Largest gap between this file's probabilities and "
                  "PyTorch's, over all check images and classes. Only rounding is allowed.")
        c2.caption(f"allowed: below {tol:.0e}")
        with c3:
            st.markdown("**Same labels**")
            _badge(check["same_argmax"])
        c4.caption(f"Checked on: {escape_markdown(', '.join(check['images']))}")  # file names
    matches = report.get("preprocessing_matches_engine")
    if matches is not None:
        c1, c2 = st.columns([1.2, 6])
        with c1:
            st.markdown("**predict.py**")
            _badge(bool(matches))
        c2.caption("The bundle's predict.py prepares images exactly as TL Studio does (same pixels, bit for bit)."
                   if matches else "predict.py prepares images differently from TL Studio: its answers may differ.")
    for fmt, error in report.get("errors", {}).items():
        st.error(f"{FORMAT_NAMES.get(fmt, fmt)} could not be exported: {escape_markdown(error)}",
                 icon=":material/error:")
    for note in report.get("notes", []):  # e.g. the bundle could not be added to the run's MLflow run
        st.caption(escape_markdown(note))


def card_preview(text: str) -> str:
    """MODEL_CARD.md for st.markdown: its HTML <details> block becomes a plain heading."""
    text = text.replace("<details><summary>Full configuration</summary>", "**Full configuration**")
    text = re.sub(r"</?details>", "", text)
    # Smaller headings: the card sits inside an expander, below the page's own headings.
    return re.sub(r"^(#{1,3}) ", lambda m: "#" * (len(m.group(1)) + 2) + " ", text, flags=re.MULTILINE)
