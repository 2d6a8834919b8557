"""Review: an Undo button undoes the change it named when it was drawn, never one more. A second
click before the page is drawn again (a double click), or a click in a second tab after the first
one undid it, came to the callback drawn for the old version and undid the change before too."""

from __future__ import annotations

from streamlit.testing.v1 import AppTest

from tests.app.conftest import SESSION, no_exceptions
from tl_core.data import Dataset, fixes


def _history_page() -> None:
    from tl_core.data import Dataset
    from tl_ui import fix_views, get_state

    fix_views.history_section(Dataset.load(get_state().dataset_dir()), key="h")
    fix_views.show_outcome("h")


def test_a_stale_undo_does_not_undo_an_older_change(home, session_workspace, tiny_dataset):
    root = session_workspace.datasets_dir / tiny_dataset
    first, second = Dataset.load(root).records[:2]
    fixes.remove(root, [first.path], reason="one")  # version 2
    fixes.remove(root, [second.path], reason="two")  # version 3
    at = AppTest.from_function(_history_page, default_timeout=30)
    at.query_params["s"] = SESSION
    at.query_params["dataset"] = tiny_dataset
    at.run()
    no_exceptions(at)
    fixes.undo(root)  # the same Undo, clicked in another tab (or the first of a double click): version 2
    at.button(key="h_undo").click().run()  # drawn for version 3
    no_exceptions(at)
    ds = Dataset.load(root)
    assert ds.version == 2 and first.path not in {r.path for r in ds.records}  # "one" is still done
    assert any("changed" in t.value for t in at.text)
