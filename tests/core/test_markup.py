"""Names inside Markdown (the model card, the app): escaped, so they read as typed and do nothing."""

from __future__ import annotations

import re
from pathlib import Path

from tl_core.markup import code_fence, code_span, escape_markdown

HOSTILE = ["![t](http://h/p.png)", "[Log in](http://h/x)", "<b>x</b>", "**bold**", "`code`", "a | b", "``two``"]
RAW_MARKUP = ["](http", "<b>", "**bold**", "`code`", "[Log in]", "a | b"]


def _unescape(text: str) -> str:  # what CommonMark makes of backslash escapes
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", text)


def test_escaped_names_read_as_typed_and_hold_no_markup():
    for name in HOSTILE:
        escaped = escape_markdown(name)
        assert _unescape(escaped) == name
        assert not any(piece in escaped for piece in RAW_MARKUP), escaped
    assert escape_markdown("two\nlines") == "two lines"  # a newline would end a table row


def test_code_spans_and_fences_cannot_be_closed_by_the_name():
    assert code_span("`code`") == "`` `code` ``"
    assert code_span("``two``") == "``` ``two`` ```"
    assert code_span("plain") == "`plain`"
    assert code_fence('{"name": "``` x"}') == "````"
    assert code_fence("{}") == "```"


def test_the_model_card_shows_hostile_names_as_text():
    from tl_core.export.bundle import ExportReport, ParityCheck, model_card
    from tl_core.model.registry import get_backbone

    classes = HOSTILE[:5]
    run_name = "![t](http://h/r.png) <b>run</b> ```"
    meta = {"name": run_name, "backbone": "mobilenet_v2",
            "data": {"class_counts": {c: 10 for c in classes}, "num_train": 40, "source": "/data/[x](http://h/s)"},
            "config": {"name": run_name, "model": {}, "freeze": {}, "train": {}},
            "per_class": [{"class": c, "precision": 1.0, "recall": 1.0, "f1": 1.0, "support": 2} for c in classes],
            "notes": ["The class <b>x</b> has few images"]}
    check = ParityCheck(format="onnx", images=["**bold** 0.png", "<b>x</b>.png"], max_abs_diff=1e-6,
                        same_argmax=True, tolerance=1e-4, passed=True)
    report = ExportReport(out_dir=Path("."), checks=[check], errors={"torchscript": "failed on [Log in](http://h/x)"})
    card = model_card(classes, get_backbone("mobilenet_v2").preprocess, meta, report)
    # The full configuration is a fenced block (shown literally); its fence is longer than the name's ```.
    fence = re.search(r"^(`{3,})json$", card, re.M).group(1)
    assert len(fence) == 4
    outside_code = re.sub(rf"^{fence}json\n.*?^{fence}$", "", card, flags=re.M | re.S)
    class_list = ", ".join(code_span(c) for c in classes)  # code spans: shown literally too
    assert class_list in outside_code
    outside_code = outside_code.replace(class_list, "")
    for piece in RAW_MARKUP[:5] + ["<b>run</b>", "[x](http"]:
        assert piece not in outside_code, piece
    assert card.startswith("# Model card: " + escape_markdown(run_name))
    assert "| \\<b\\>x\\</b\\> | 10 |" in card
