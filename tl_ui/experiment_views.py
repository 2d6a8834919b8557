"""The Compare page's widgets: pick strategies and start an experiment, pick a past one, and its
live view (overlaid curves, the table, the explanation) read from the member runs' folders."""

from __future__ import annotations

import dataclasses
import time

import pandas as pd
import streamlit as st

from tl_core.config import RunConfig
from tl_core.errors import TLError
from tl_core.experiments import plan as experiments
from tl_core.experiments.report import explain
from tl_core.experiments.store import KINDS, Experiment, ExperimentStore
from tl_core.experiments.strategies import DEFAULT_STRATEGIES, STRATEGIES, StrategyOptions, unavailable
from tl_core.experiments.table import experiment_table
from tl_core.markup import escape_markdown
from tl_core.model.registry import body_group_names
from tl_core.runs import ACTIVE_STATES, RunStore
from tl_ui.charts import backbone_figure, comparison_figure, curves_for, sweep_figure
from tl_ui.feedback import user_errors
from tl_ui.state import AppState

MIN_FINISHED_FOR_EXPLANATION = 2
SWEEP_AXES = {"data_size": ("images per class", "training images per class (mean, log scale)", True),
              "freeze_depth": ("x", "frozen body groups (0 = fine-tune all)", False)}
BUTTONS = {"strategies": "Compare", "backbones": "Compare the backbones"}
CURVE_TABS = {"Validation accuracy": "val_acc", "Validation loss": "val_loss", "Training loss": "train_loss"}


def strategy_form(state: AppState) -> None:
    """The experiment's kind, then its choices (strategies with their one-line explanations, N for
    the top-N ones, shares of the images, discriminative learning rates), a name, and one button
    (disabled without a dataset) that queues the experiment and makes it current."""
    kind = st.radio("Experiment", list(KINDS), format_func=KINDS.get, horizontal=True,
                    key="experiment_kind")
    dataset_dir = state.dataset_dir()
    base = state.draft
    if dataset_dir is None:
        st.info("First choose a dataset (one click: the built-in sample).")
        st.page_link("pages/1_data.py", label="Go to Data", icon=":material/photo_library:")
    else:
        network = "its backbone" if kind == "backbones" else base.model.backbone
        st.caption(f"Every member trains {network} for {base.train.epochs} epochs, batch "
                   f"{base.train.batch_size}, learning rate {base.train.lr:g}, seed {base.train.seed}, on the "
                   f"same split ({base.data.val_fraction:.0%} held out for validation, split seed "
                   f"{base.data.split_seed}). Change these on the Model and Train pages. Dataset:")
        st.text(state.dataset_id)  # its id may carry the name the user typed: text, never Markdown
    keys: list[str] = []
    fractions: list[float] = []
    top_n, discriminative = 2, True
    backbones: list[str] = []
    if kind == "freeze_depth":
        groups = len(body_group_names(base.model.backbone))
        st.caption(f"{base.model.backbone} has {groups} layer groups below the head. For k = 0 … {groups}, the "
                   f"lowest k groups stay frozen and the rest fine-tunes with a new linear head: from a full "
                   f"fine-tune (k = 0) to a linear probe (k = {groups}).")
        discriminative = st.checkbox("Also with discriminative learning rates (a second line)", value=True,
                                     key="discriminative",
                                     help="Lower groups learn more slowly, down to 1/100 of the head's rate.")
        runs = groups + 1 + (groups if discriminative else 0)
    elif kind == "backbones":
        backbones = _backbone_choice(base)
        runs = len(backbones)
    else:
        top_n = int(st.number_input("N: backbone groups the top-N strategies fine-tune", 1, 12, 2, key="top_n",
                                    help="Counted from the head: 1 = only the last group of the backbone."))
        options = StrategyOptions(top_n=top_n)
        sweep = kind == "data_size"
        not_offered = unavailable(base)
        offered = [k for k in STRATEGIES if k not in not_offered]
        defaults = experiments.DEFAULT_SWEEP_STRATEGIES if sweep else (*DEFAULT_STRATEGIES, "zero_shot")
        keys = st.multiselect("Strategies", offered, format_func=lambda k: STRATEGIES[k].label_for(options),
                              default=[k for k in offered if k in defaults],
                              key="sweep_strategies" if sweep else "strategies")
        if sweep:
            fractions = st.multiselect("Shares of each class's training images", list(experiments.DATA_FRACTIONS),
                                       default=list(experiments.DATA_FRACTIONS), format_func="{:.0%}".format,
                                       key="fractions",
                                       help="The validation images stay the same for every member.")
        st.markdown("\n".join(f"- **{STRATEGIES[k].label_for(options)}**: {STRATEGIES[k].explanation}"
                              for k in offered))
        for key, why in not_offered.items():
            st.caption(f"Not offered: {STRATEGIES[key].label_for(options)}. {why}")
        runs = len(keys) * (len(fractions) if sweep else 1)
    st.caption(f"{runs} runs, one after another.")
    name = st.text_input("Experiment name (optional)", key="experiment_name", max_chars=80)
    if st.button(BUTTONS.get(kind, "Start the sweep"), type="primary",
                 icon=":material/compare_arrows:", key="compare",
                 disabled=dataset_dir is None or runs == 0):
        with user_errors("Could not start the experiment"):
            config = dataclasses.replace(base, data=dataclasses.replace(
                base.data, source=str(dataset_dir), dataset_dir=str(dataset_dir)))
            if kind == "data_size":
                experiment = experiments.start_data_size(state.workspace, config, keys, name, fractions=fractions,
                                                         top_n=top_n)
            elif kind == "freeze_depth":
                experiment = experiments.start_freeze_depth(state.workspace, config, name,
                                                            discriminative=discriminative)
            elif kind == "backbones":
                experiment = experiments.start_which_backbone(state.workspace, config, backbones, name)
            else:
                experiment = experiments.start_experiment(state.workspace, config, keys, name, top_n=top_n)
            state.select_experiment(experiment.id)
            st.rerun()


def _backbone_choice(base: RunConfig) -> list[str]:
    """"Which backbone?": tick among the backbones whose weights are here (all by default); the
    others are named, with where to get them."""
    here, missing = experiments.backbones_here(base.model.weights_dir)
    st.caption("Each backbone trains the same linear probe: frozen, with a new linear layer on its "
               "average-pooled features. The validation accuracy is plotted against the backbone's published "
               "ImageNet accuracy and against its speed here (images/s of feature extraction).")
    chosen = st.multiselect("Backbones (those whose weights are on this machine)", here, default=here,
                            key="backbones")
    if missing:
        st.caption(f"Not offered, their weights are not on this machine: {escape_markdown(', '.join(missing))}. The Model page "
                   "says how to get them (download once, `python -m tl_core fetch-weights`, or a weights folder).")
    return chosen


def experiment_picker(state: AppState) -> Experiment | None:
    """A box of the workspace's experiments (newest first); the one chosen becomes current (and
    goes into the URL). Returns the current experiment, or None when there is none."""
    found = ExperimentStore(state.workspace).list()
    if not found:
        return None
    ids = [e.id for e in found]
    if state.experiment_id not in ids:
        state.select_experiment(ids[0])
    by_id = {e.id: e for e in found}
    chosen = st.selectbox("Experiment", ids, index=ids.index(state.experiment_id),
                          format_func=lambda i: f"{by_id[i].name} ({time.strftime('%d %b %H:%M', time.localtime(by_id[i].created))})")
    if chosen != state.experiment_id:
        state.select_experiment(chosen)
    return by_id[chosen]


def _table_for_people(table: pd.DataFrame, kind: str) -> pd.DataFrame:
    hidden = ["key", "run", "series", "x"]
    if kind != "data_size":
        hidden += ["train images", "images per class"]
    shown = table.drop(columns=hidden).copy()
    if kind == "freeze_depth":
        shown.insert(1, "frozen groups", table["x"])
    if kind == "backbones":
        shown = shown.rename(columns={"strategy": "backbone"})
        shown.insert(1, "published ImageNet acc (%)", table["x"])
        shown.insert(2, "published as", table["series"])
    for column in ("final val acc", "best val acc"):
        shown[column] = shown[column].map(lambda v: None if pd.isna(v) else f"{v:.1%}")
    return shown


def _backbone_charts(table: pd.DataFrame) -> None:
    """"Which backbone?": validation accuracy against the published accuracy and against the speed."""
    left, right = st.columns(2)
    with left:
        st.plotly_chart(backbone_figure(table, "x", "published ImageNet accuracy (%)"),
                        key="experiment_backbone_published")
    with right:
        st.plotly_chart(backbone_figure(table, "images/s", "images/s of feature extraction here (log scale)",
                                        log_x=True), key="experiment_backbone_speed")
    st.caption("Each point is a backbone's best validation accuracy, its marker what its published number "
               "measures: a supervised network's ImageNet top-1, a self-supervised one's linear probe, an "
               "image-text model's zero-shot accuracy. Speed: the backbone's pass over your images on this "
               "machine; a backbone whose features came from the store (an earlier run) has none.")


def _any_active(state: AppState, experiment: Experiment) -> bool:
    runs = RunStore(state.workspace)
    for member in experiment.members:
        try:
            if member.run_id and runs.get(member.run_id).state in ACTIVE_STATES:
                return True
        except TLError:
            continue
    return False


def experiment_view(state: AppState, experiment: Experiment) -> None:
    """The experiment, live while its members train (a fragment that polls the run folders)."""
    active = _any_active(state, experiment)

    @st.fragment(run_every=2.0 if active else None)
    def live(was_active: bool) -> None:
        table = experiment_table(state.workspace, experiment)
        if was_active and not table["state"].isin(ACTIVE_STATES).any():
            st.rerun()  # the last member ended: redraw once, with no timer
        st.subheader("Experiment")
        st.text(experiment.name)  # typed by the user: text, never Markdown
        counts = table["state"].value_counts()
        st.caption(" · ".join(f"{n} {s}" for s, n in counts.items()) +
                   ". Members train one after another; each is also a normal run on the Results and Runs pages.")
        runs = RunStore(state.workspace)
        curves = {}
        for member in experiment.members:
            try:
                curves[member.label] = curves_for(state.curves, runs.get(member.run_id))
            except TLError:
                continue  # deleted on the Runs page
        if experiment.kind in SWEEP_AXES:
            x, x_label, log_x = SWEEP_AXES[experiment.kind]
            st.plotly_chart(sweep_figure(table, x, x_label, log_x), key="experiment_sweep")
            st.caption("Each point is one member's best validation accuracy; points appear as members finish "
                       "epochs. The curves of each member, epoch by epoch, are below.")
        if experiment.kind == "backbones":
            _backbone_charts(table)
        for tab, column in zip(st.tabs(list(CURVE_TABS)), CURVE_TABS.values(), strict=True):
            with tab:
                st.plotly_chart(comparison_figure(curves, column), key=f"experiment_{column}")
        st.dataframe(_table_for_people(table, experiment.kind), hide_index=True, key="experiment_table", column_config={
            "wall time (s)": st.column_config.NumberColumn(format="%.0f"),
            "images/s": st.column_config.NumberColumn(format="%.0f"),
            "trainable params": st.column_config.NumberColumn(format="%d")})
        st.caption("Best val acc: the highest validation accuracy of any epoch. Images/s: the backbone's "
                   "feature extraction for frozen members (empty when their features came from the shared "
                   "store), else the median over training steps.")
        sentences = explain(table, experiment.kind)
        if sentences:
            st.subheader("What this shows")
            # our sentences, with backbone and strategy names: shown as they read, never as Markdown
            st.markdown("\n".join(f"- {escape_markdown(s)}" for s in sentences))
        elif (table["state"] == "finished").sum() < MIN_FINISHED_FOR_EXPLANATION:
            st.caption("The explanation appears once two members have finished.")

    with user_errors("Could not show the experiment"):
        live(active)
