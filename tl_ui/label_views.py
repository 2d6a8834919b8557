"""Domain experts' data: the class-balancing choice and its suggestion (Data and Train pages), and
the likely mislabelled images (Results page).

The numbers come from ``tl_core.training.balance`` and ``tl_core.evaluation.label_issues``; this module draws them.
Class and file names are the user's text: they go out through ``st.text`` or escaped, never as
Markdown. The mislabelled list is heavy work (a backbone pass, cross-validation): it runs on a
click, in one of the server's heavy-task slots (``tl_ui.heavy``), with a progress bar, and is kept
for the browser session in ``AppState.label_issues``. Each listed image has "Move to <suggested>"
first, then ``fix_views.image_fix_controls`` (move to another class, remove; a fix says what
changed, with Undo); a fixed image leaves the list.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from functools import partial
from pathlib import Path

import streamlit as st

from tl_core.config import BALANCE_LABELS, Balance
from tl_core.data import Dataset, fixes
from tl_core.errors import TLError
from tl_core.evaluation import label_issues
from tl_core.markup import escape_markdown
from tl_core.runs import Run
from tl_core.training.balance import SUGGEST_RATIO, imbalance_ratio, suggest_balance

from . import fix_views
from .feedback import user_errors
from .heavy import heavy_work
from .state import AppState
from .trained import checkpoint_stamp, dataset_root
from .widgets import choice_input, progress_callback, thumbnails

BALANCE_KEY = "balance"  # the Train page's radio
ISSUES_SHOWN = 24  # images listed (each one a thumbnail)
SUGGESTED = "weighted_loss"  # what the one click turns on: no image is repeated or left out

TRADE_OFF = (
    "Balancing makes every class count the same in training. *Weighted loss*: a mistake on an image of a "
    "rare class costs more. *Balanced sampling*: the rare classes' images are shown more often (repeated), "
    "the common ones' less. The price: the model guesses the rare classes more often, so it raises more "
    "false alarms for them, and overall accuracy may dip while the rare classes' recall rises. Judge it "
    "by the per-class table on **Results**, not by overall accuracy. More images of the rare classes "
    "remain the better cure.")


# ----------------------------------------------------------------------------- class balance
def imbalance_sentence(counts: Mapping[str, int]) -> str:
    """Plain words on the imbalance, naming the largest and smallest class (user text: show with st.text)."""
    big = max(counts, key=counts.__getitem__)
    small = min(counts, key=counts.__getitem__)
    ratio = imbalance_ratio(counts) or 0.0
    return (f"'{big}' has {counts[big]} images and '{small}' only {counts[small]} ({ratio:.1f} times fewer). "
            f"Trained as it is, a model learns that '{big}' is the safe guess: overall accuracy looks good "
            f"while '{small}' is often missed.")


def _turn_on(state: AppState, balance: str) -> None:
    """The suggestion's button: the draft's choice, and the Train page's radio when it is drawn."""
    state.edit_draft(train={"balance": balance})
    st.session_state.pop(BALANCE_KEY, None)  # widget state: the radio starts again from the draft


def balance_suggestion(state: AppState, counts: Mapping[str, int], *, key: str) -> None:
    """When the classes are imbalanced (``SUGGEST_RATIO`` or more) and no balancing is chosen: the
    why, the trade-off and one click to turn it on. After the click: what is on."""
    if not suggest_balance(counts):
        return
    with st.container(border=True):
        if state.draft.train.balance != "none":
            st.markdown(f":material/balance: **Imbalanced classes: balanced in training** "
                        f"({BALANCE_LABELS[state.draft.train.balance]}; change it on the Train page).")
            return
        st.markdown(f":orange[:material/balance:] **Imbalanced classes** (largest over smallest: "
                    f"{SUGGEST_RATIO:g} times or more)")
        st.text(imbalance_sentence(counts))
        st.markdown(TRADE_OFF)
        st.button("Balance the classes in training (weighted loss)", icon=":material/balance:", key=key,
                  on_click=_turn_on, args=(state, SUGGESTED),
                  help="Sets the next run's class balancing to a weighted loss (recorded in its settings).")


def balance_input(state: AppState, counts: Mapping[str, int] | None) -> str:
    """The Train page's class-balancing choice (the draft's, kept across a refresh), with the
    suggestion above it when the classes are imbalanced."""
    if counts:
        balance_suggestion(state, counts, key="balance_suggest_train")
    return choice_input(st.radio, "Class balance", Balance, state.draft.train.balance, key=BALANCE_KEY,
                        horizontal=True, labels=BALANCE_LABELS,
                        help="For classes with very different numbers of images. The validation loss "
                             "stays unweighted, so runs with and without balancing compare fairly.")


def class_counts_of(dataset_dir: Path | None) -> dict[str, int] | None:
    """Images per class of a dataset folder, or None when it cannot be read."""
    if dataset_dir is None:
        return None
    try:
        ds = Dataset.load(dataset_dir)
    except Exception:  # noqa: BLE001 - the Data page reports a damaged dataset; here only no suggestion
        return None
    counts = {c: 0 for c in ds.classes}
    for record in ds.records:
        counts[record.label] = counts.get(record.label, 0) + 1
    return counts


# ----------------------------------------------------------------------------- mislabelled images
def _current_labels(run: Run) -> dict[str, str]:
    """Record path -> class in the dataset as it is now (a relabel or removal since the list)."""
    try:
        return {r.path: r.label for r in Dataset.load(dataset_root(run)).records}
    except Exception:  # noqa: BLE001 - the dataset was deleted: nothing to list
        return {}


def _editable(root: Path) -> bool:
    """False for a dataset the teacher shared (read-only for students)."""
    try:
        fixes.check_editable(root)
    except TLError:
        return False
    return True


def issue_caption(issue: label_issues.LabelIssue) -> str:
    return (f"{Path(issue.path).name}: filed under '{issue.given}', looks like '{issue.suggested}' "
            f"({issue.confidence:.0%})")


def mislabelled_section(state: AppState, run: Run, *, key: str = "mislabelled") -> None:
    """'Likely mislabelled images': computed on a click, listed with given and suggested class."""
    st.subheader("Likely mislabelled images")
    st.markdown("Each image is judged by a model trained on the *other* images (on this run's backbone "
                "features), so a wrong label cannot vouch for itself. Images whose label that model "
                "confidently disagrees with are listed, the most suspicious first: look at each one. Some "
                "are really mislabelled, some are just hard or ambiguous.")
    stamp = checkpoint_stamp(run)
    if st.button("Find likely mislabelled images", icon=":material/label_off:", key=f"{key}_go"):
        bar = st.progress(0.0, text="Starting…")
        with user_errors("Could not look for mislabelled images", message_as_text=True), heavy_work():
            state.label_issues[run.id] = (stamp, label_issues.find_for_run(run, state.workspace,
                                                                           progress_callback(bar)))
        bar.empty()
    kept = state.label_issues.get(run.id)
    if kept is None or kept[0] != stamp:
        st.caption("Runs the backbone over every image of the dataset (features a frozen run stored are "
                   "reused) and fits a small model up to five times: seconds to a few minutes.")
        return
    report: label_issues.LabelIssueReport = kept[1]
    now = _current_labels(run)
    open_issues = [i for i in report.issues if now.get(i.path) == i.given]  # fixed ones drop out
    st.caption(escape_markdown(f"{len(report.issues)} of {report.num_images} images flagged "
                               f"({report.folds}-fold cross-validation; {report.method})."
                               + (f" {len(report.issues) - len(open_issues)} since relabelled or removed."
                                  if len(open_issues) < len(report.issues) else "")))
    fix_views.show_outcome(key)  # a fixed image leaves the list: its outcome (with Undo) is said here
    if not open_issues:
        st.success("No likely mislabelled images left in the list.", icon=":material/check_circle:")
        return
    shown = open_issues[:ISSUES_SHOWN]
    root = dataset_root(run)
    ds = Dataset.load(root)
    editable = _editable(root)
    pictures = thumbnails([root / issue.path for issue in shown])
    columns = st.columns(4)
    for n, (issue, picture) in enumerate(zip(shown, pictures, strict=True)):
        image_key = f"{key}_{hashlib.sha1(issue.path.encode('utf-8')).hexdigest()[:12]}"
        with columns[n % 4].container(border=True):
            if picture is not None:
                st.image(picture, width=150)
            st.text(issue_caption(issue))
            st.button(escape_markdown(f"Move to '{issue.suggested}'"), key=f"{image_key}_suggested",
                      icon=":material/drive_file_move:", type="primary", disabled=not editable,
                      on_click=fix_views.apply_fix,  # its outcome and Undo, as on the other fixes
                      args=(key, root, partial(fixes.relabel, root, [issue.path], issue.suggested,
                                               reason=f"likely mislabelled: looked like '{issue.suggested}'")))
            fix_views.image_fix_controls(ds, issue.path, key=image_key, reason="likely mislabelled",
                                         outcome_key=key)
    if len(open_issues) > ISSUES_SHOWN:
        st.caption(f"Showing the {ISSUES_SHOWN} most suspicious of {len(open_issues)}.")
