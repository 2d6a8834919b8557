"""app.py around every page: a page that ends early (end_page) still gets the sidebar."""

from __future__ import annotations

from tests.app.conftest import no_exceptions


def test_a_page_that_ends_early_still_has_the_sidebar(app):
    app.switch_page("pages/3_train.py").run()  # no dataset, no run: Train ends after its hint
    no_exceptions(app)
    assert not [b for b in app.button if b.label == "Start training"]
    sidebar = " ".join(m.value for m in app.sidebar.markdown)
    assert "Run: none yet" in sidebar and "Dataset: none yet" in sidebar


def test_every_page_starts_with_start_page():
    """A page without start_page() breaks deep links after a restart (it would run without app.py);
    the call must come before anything else the page does."""
    import ast
    from pathlib import Path

    pages = sorted((Path(__file__).resolve().parents[2] / "pages").glob("*.py"))
    assert len(pages) >= 9
    for page in pages:
        body = [node for node in ast.parse(page.read_text()).body
                if not isinstance(node, (ast.Import, ast.ImportFrom))
                and not (isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant))]
        first = body[0]
        assert (isinstance(first, ast.Expr) and isinstance(first.value, ast.Call)
                and getattr(first.value.func, "id", None) == "start_page"), page.name
