"""app.py around every page: a page that ends early (end_page) still gets the sidebar."""

from __future__ import annotations

from tests.app.conftest import no_exceptions


def test_a_page_that_ends_early_still_has_the_sidebar(app):
    app.switch_page("pages/3_train.py").run()  # no dataset, no run: Train ends after its hint
    no_exceptions(app)
    assert not [b for b in app.button if b.label == "Start training"]
    sidebar = " ".join(m.value for m in app.sidebar.markdown)
    assert "Run: none yet" in sidebar and "Dataset: none yet" in sidebar
