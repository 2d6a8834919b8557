"""The pages keep what they remember in the one session-state object (``tl_ui.state.AppState``),
not under bare ``st.session_state`` keys of their own."""

from __future__ import annotations

import re

from tests.app.conftest import REPO, no_exceptions

# Every page and helper keeps its session data in AppState. The exceptions own widget state only:
# state.py is AppState itself; analysis_views sets its select boxes' values (keyed widgets) when a
# confusion-matrix cell is clicked; fix_views reads its select boxes' values in the buttons' callbacks
# (a callback runs before the rerun, so the value is read there, not captured when drawn); models.py's
# timm-name check reads the typed name in its button's callback and sets the backbone box to it.
WIDGET_STATE_ONLY = {"tl_ui/state.py", "tl_ui/analysis_views.py", "tl_ui/fix_views.py", "tl_ui/models.py"}
MOVED = sorted(str(p.relative_to(REPO)) for pattern in ("pages/*.py", "tl_ui/*.py", "app.py")
               for p in REPO.glob(pattern) if str(p.relative_to(REPO)) not in WIDGET_STATE_ONLY)


def test_moved_files_use_no_bare_session_state_keys():
    bare = re.compile(r"session_state\s*(\[|\.get\(|\.setdefault\()")
    found = {path: bare.findall((REPO / path).read_text(encoding="utf-8")) for path in MOVED}
    assert {path: hits for path, hits in found.items() if hits} == {}


def test_the_state_object_holds_the_pages_session_data(app):
    from tl_ui.state import _KEY

    app.run()
    no_exceptions(app)
    state = app.session_state[_KEY]
    assert state.curves == {} and state.predict_batch is None
    assert state.snapshots_seen == set() and state.upload_generation == {}


def test_no_page_calls_st_stop():
    """st.stop() makes Streamlit drop what app.py draws after the page (the sidebar): pages end
    early with tl_ui.end_page() instead."""
    pages = [path for path in MOVED if path.startswith("pages/")]
    assert len(pages) >= 8
    assert {path for path in pages if "st.stop()" in (REPO / path).read_text(encoding="utf-8")} == set()
