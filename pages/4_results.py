"""Results: final metrics, per-class table, confusion matrix, and runs compared."""

import pandas as pd
import streamlit as st

from tl_core.jobs import launch as jobs
from tl_core.markup import escape_markdown
from tl_core.runs import best_epoch_note, unique_labels
from tl_ui import analysis_views, code_views, end_page, fix_views, get_state, intro, start_page, user_errors
from tl_ui.charts import CURVE_LABELS, comparison_figure, curves_for
from tl_ui.label_views import mislabelled_section

start_page()  # opened without app.py (a deep link, first after a restart): becomes app.py's run
state = get_state()

intro(
    "Results",
    "Here the best saved model is judged on images it never trained on, class by class. "
    "Overall accuracy can hide a class the model always gets wrong, so read the per-class table and "
    "the confusion matrix too.",
    """
**Accuracy** is the share of held-back images classified correctly. **Precision** of a class: of the
images the model called *cat*, how many were cats. **Recall**: of the real cats, how many it found.
**F1** combines both. The **confusion matrix** counts, for each true class (row), what the model
predicted (column): the diagonal is right, everything else shows which classes it mixes up, often
classes that really do look alike.

**Comparing runs.** Change one thing at a time (backbone, freezing, learning rate, pretrained or not)
and overlay the validation curves: this is how you learn what matters for your images. A run from
random weights (*pretrained* off) shows how much the ImageNet knowledge is worth.
""")

runs = state.runs.list()
if not runs:
    st.info("No runs yet. Train one on the **Train** page.")
    st.page_link("pages/3_train.py", label="Go to Train", icon=":material/model_training:")
    end_page()

summaries = {r.id: r.summary() for r in runs}
ids = list(summaries)
names = unique_labels(runs)  # the legend's and the table's names; the pickers add state and accuracy


def _label(run_id: str) -> str:
    s = summaries[run_id]
    acc = f" · val acc {s['best_val_acc']:.1%}" if s.get("best_val_acc") is not None else ""
    return f"{names[run_id]} · {s['state']}{acc}"


current = ids.index(state.run_id) if state.run_id in ids else 0
picked = st.selectbox("Run", ids, index=current, format_func=_label, key="results_run")
if picked != state.run_id:
    state.select_run(picked)
run = state.runs.get(picked)
fix_views.run_dataset_caption(run.dataset_dir(), run.config.data.dataset_version)  # "trained on version 3 of …"
st.page_link("pages/7_runs.py", label="Re-run, resume, rename or delete runs", icon=":material/folder_managed:")

with user_errors("Could not read the run's results"):
    split_names = {"test": "test", "val": "validation"}
    evals = {split_names[split]: result for split, result in run.evaluations().items()}
    if not evals:
        st.info(f"This run is {escape_markdown(summaries[picked]['state'])} and has no evaluation yet "
                "(it is written when training ends).")
        error = run.status().error
        if error:
            st.error(escape_markdown(error))  # quotes names; an opened project's is anyone's text
        elif jobs.worker_alive(run):
            @st.fragment(run_every=2.0)
            def wait_for_evaluation() -> None:
                if run.read_evaluation("val") or not jobs.worker_alive(run):
                    st.rerun()
                st.caption(":material/hourglass_top: Waiting for the evaluation of the best checkpoint…")
            wait_for_evaluation()
    else:
        split = st.radio("Measured on", list(evals), horizontal=True, key="eval_split",
                         help="The test set is only used here, so it gives the most honest number.")
        result = evals[split]
        summary = result.summary()
        metrics = run.read_metrics()
        c1, c2, c3, c4 = st.columns(4)
        c1.metric("Accuracy", f"{result.accuracy:.1%}")
        c2.metric("Macro F1", f"{summary['macro_f1']:.3f}", help="F1 averaged over classes, each class counts the same")
        c3.metric(f"Top-{result.top_k} accuracy", f"{result.top_k_accuracy:.1%}")
        c4.metric("Best epoch", metrics.get("best_epoch") or "—",
                  help=f"The epoch whose checkpoint is evaluated here, chosen by "
                       f"{CURVE_LABELS[run.config.train.monitor]} (the run's monitor).")
        note = best_epoch_note(metrics, run.config.train.monitor)
        if note:
            st.caption(f":material/info: {escape_markdown(note)}")  # metrics.json: an opened project's is anyone's

        st.markdown("**Per class**")
        st.dataframe(pd.DataFrame(result.per_class), hide_index=True, key="per_class", column_config={
            "class": "Class",
            "precision": st.column_config.ProgressColumn("Precision", min_value=0.0, max_value=1.0, format="%.2f"),
            "recall": st.column_config.ProgressColumn("Recall", min_value=0.0, max_value=1.0, format="%.2f"),
            "f1": st.column_config.ProgressColumn("F1", min_value=0.0, max_value=1.0, format="%.2f"),
            "support": st.column_config.NumberColumn("Images", help="Images of this class in the evaluation set"),
        })

        analysis_views.render(run, result, split)

if run.checkpoint_path("best").exists():
    mislabelled_section(state, run)

with st.expander("Show the code", icon=":material/code:"), user_errors("Could not read the run's settings"):
    code_views.show_code(run.config, run.classes or None, key="results_code")

st.subheader("Compare runs")
default = [r for r in ids if summaries[r]["state"] in ("finished", "cancelled", "running")][:5]
chosen = st.multiselect("Runs to overlay", ids, default=default, format_func=_label, key="compare_runs")
if chosen:
    curves = {names[r]: curves_for(state.curves, state.runs.get(r)) for r in chosen}
    column = st.radio("Curve", ["val_acc", "val_loss", "train_loss"], horizontal=True, key="compare_metric",
                      format_func=CURVE_LABELS.get)
    st.plotly_chart(comparison_figure(curves, column), key="comparison")
table = pd.DataFrame([{**s, "name": names[run_id]} for run_id, s in summaries.items()])
table["created"] = pd.to_datetime(table["created"], unit="s", errors="coerce")
st.dataframe(table, hide_index=True, key="runs_table", column_config={
    "name": "Run", "lr": st.column_config.NumberColumn("lr", format="%.0e"),
    "best_val_acc": st.column_config.NumberColumn("best val acc", format="percent"),
    "created": st.column_config.DatetimeColumn("created", format="distance"),
})
