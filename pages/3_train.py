"""Train: hyperparameters, augmentation preview, start/stop a job, live curves read from the run folder."""

import dataclasses

import streamlit as st

from tl_core.config import AUGMENT_LABELS, AugmentPreset, Optimizer, Schedule, TrainConfig
from tl_core.jobs import launch as jobs
from tl_core.markup import escape_markdown
from tl_core.model.registry import get_backbone
from tl_core.runs import ACTIVE_STATES
from tl_core.system import device_info
from tl_ui import cluster_views, code_views, end_page, get_state, intro, start_page, user_errors
from tl_ui.charts import FEATURES_EXPLAINED, curves_for, format_seconds
from tl_ui.ddp_views import gpus_for_run
from tl_ui.label_views import balance_input, class_counts_of
from tl_ui.models import augment_preview
from tl_ui.widgets import choice_input, epochs_input, poll_every, steps_with

start_page()  # opened without app.py (a deep link, first after a restart): becomes app.py's run
state = get_state()
draft = state.draft  # the last settings of this session (kept across a refresh), else the defaults
DEFAULTS = draft.train

intro(
    "Train",
    "Training shows your labelled images to the network again and again (one pass is an *epoch*) and nudges "
    "the trainable weights to make fewer mistakes. The curves below show whether it is learning: loss should "
    "fall and validation accuracy rise; when they stop improving, more epochs do not help.",
    """
**Reading the curves.** *Loss* measures how wrong the predictions are (lower is better). *Training*
numbers are measured on the images the model learns from, *validation* numbers on held-back images.
If training accuracy keeps rising while validation accuracy falls, the model is *overfitting*:
memorising your images instead of learning the classes. Then use fewer epochs, more augmentation,
more images, or freeze more layers.

**The settings.** The *learning rate* is the size of each nudge: too high and the loss jumps around,
too low and nothing happens. The *batch size* is how many images are looked at per nudge.
*Augmentation* shows the network slightly changed copies of each image (cropped, flipped) so it learns
what does not matter. The best model (lowest validation loss) is saved after every epoch, so stopping
early never loses it.

Training runs on the server in the background: you can switch pages, reload, or open a second tab.
On a shared server, runs wait in a queue for the device; the place in the queue is shown here.
""")

run = state.current_run()
run_state_now = jobs.job_state(run).state if run is not None else None
run_active = run_state_now in ACTIVE_STATES

with st.expander("New run", expanded=not run_active, icon=":material/tune:"):
    dataset_dir = state.dataset_dir()
    if dataset_dir is None:
        st.info("First choose a dataset (one click: the built-in sample).")
        st.page_link("pages/1_data.py", label="Go to Data", icon=":material/photo_library:")
    else:
        spec = get_backbone(draft.model.backbone)
        st.markdown(f"**{draft.model.backbone}** · {draft.freeze.mode.replace('_', ' ')} · "
                    f"head: {draft.model.head.kind} · "
                    f"dataset `{state.dataset_id}` (change on the Data and Model pages)")
        c1, c2, c3, c4 = st.columns(4)
        epochs = epochs_input(c1.number_input, DEFAULTS.epochs, draft.model.head.kind, key="epochs")
        batch_size = c2.select_slider("Batch size", steps_with([4, 8, 16, 32, 64, 128], DEFAULTS.batch_size),
                                      DEFAULTS.batch_size, key="batch_size",
                                      help="Images per step; halved automatically if memory runs out.")
        lr = c3.select_slider("Learning rate", steps_with([1e-5, 3e-5, 1e-4, 3e-4, 1e-3, 3e-3, 1e-2], DEFAULTS.lr),
                              DEFAULTS.lr, key="lr",
                              format_func=lambda v: f"{v:g}",
                              help="1e-3 suits a new head; use 1e-4 or less when fine-tuning the backbone.")
        optimizer = choice_input(c4.selectbox, "Optimizer", Optimizer, DEFAULTS.optimizer, key="optimizer")
        c1, c2, c3, c4 = st.columns(4)
        schedule = choice_input(c1.selectbox, "Schedule", Schedule, DEFAULTS.schedule, key="schedule")
        weight_decay = c2.select_slider("Weight decay", steps_with([0.0, 1e-5, 1e-4, 1e-3, 1e-2], DEFAULTS.weight_decay),
                                        DEFAULTS.weight_decay,
                                        key="weight_decay", format_func=lambda v: f"{v:g}",
                                        help="A pull towards small weights, against overfitting.")
        label_smoothing = c3.slider("Label smoothing", 0.0, max(0.3, DEFAULTS.label_smoothing), DEFAULTS.label_smoothing, 0.05,
                                    key="label_smoothing", help="0.1 helps when some labels are wrong.")
        patience = c4.number_input("Early stopping (epochs)", 0, max(50, DEFAULTS.early_stopping_patience),
                                   DEFAULTS.early_stopping_patience,
                                   key="patience", help="Stop after this many epochs without improvement; 0 = off.")
        c1, c2, c3 = st.columns(3)
        pretrained = c1.toggle("Start from pretrained weights", draft.model.pretrained, key="pretrained",
                               help="Off = random initialisation: no transfer learning (for comparison).")
        feature_cache = c2.toggle("Compute frozen features once", DEFAULTS.feature_cache, key="feature_cache",
                                  help="With a frozen backbone, run it once per image and train only the head: "
                                       "much faster.")
        run_name = c3.text_input("Run name (optional)", key="run_name")
        nproc = gpus_for_run(DEFAULTS.nproc)

        augment = choice_input(st.radio, "Augmentation", AugmentPreset, draft.data.augment, horizontal=True,
                               key="augment", labels=lambda p: f"{p}: {AUGMENT_LABELS[p]}")
        with user_errors("Could not preview the augmentation"):
            views = augment_preview(str(dataset_dir), augment, spec.name)
            st.image(views, width=110, caption=None)
            st.caption("Each row: one training image as the network may see it in four different epochs.")

        balance = balance_input(state, class_counts_of(dataset_dir))
        train_config = TrainConfig(epochs=int(epochs), batch_size=int(batch_size), lr=float(lr),
                                   optimizer=optimizer, schedule=schedule, weight_decay=float(weight_decay),
                                   label_smoothing=float(label_smoothing), balance=balance,
                                   early_stopping_patience=int(patience), feature_cache=feature_cache,
                                   nproc=nproc)
        state.edit_draft(train=train_config, data={"augment": augment},
                         model={"pretrained": pretrained})  # survive a refresh

        if st.button("Start training", type="primary", icon=":material/play_arrow:", key="start"):
            with user_errors("Could not start training"):
                draft = state.draft
                config = dataclasses.replace(
                    draft, data=dataclasses.replace(draft.data, source=str(dataset_dir), dataset_dir=str(dataset_dir)),
                    name=run_name.strip())
                config.validate()
                state.select_run(jobs.start_job(state.workspace, config))
                st.rerun()

if dataset_dir is not None:
    with st.expander("Show the code", icon=":material/code:"):  # expanders cannot nest: under "New run"
        code_views.show_code(dataclasses.replace(state.draft, name=run_name.strip()),
                             code_views.dataset_classes(dataset_dir), key="train_code", data_path=str(dataset_dir))

if run is None:
    end_page()


def stop_run(run_id: str) -> None:
    jobs.cancel(state.runs.get(run_id))
    st.toast("Stopping after the current batch; the best checkpoint is kept.")


@st.fragment(run_every=poll_every(run_state_now, 1.0))
def live_view(run_id: str, was_state: str | None) -> None:
    current = state.runs.get(run_id)
    status = jobs.job_state(current)
    run_state = status.state
    if was_state in ACTIVE_STATES and run_state != was_state:
        # The job started (poll each second from now on) or ended: redraw the whole page once
        # (the timer, form and sidebar up to date) before saying so. Said only after that rerun,
        # a click on another page made on seeing the news cannot be overtaken by this rerun,
        # which would keep the user here.
        st.rerun()
    curves = curves_for(state.curves, current)
    st.subheader("Run")
    st.text(current.display_name())  # the user's name for it: text, never Markdown

    if run_state == "queued" and (on_cluster := cluster_views.queued_note(current)):
        st.info(on_cluster, icon=":material/hourglass_top:")
    elif run_state == "queued":
        position = jobs.queue_position(current)
        ahead = len(jobs.running_jobs())
        st.info(f"Waiting for the device: place **{position or '?'}** in the queue, {ahead} job(s) training now. "
                "It starts by itself.", icon=":material/hourglass_top:")
    elif run_state == "running":
        total = curves.started.epochs if curves.started else current.config.train.epochs
        epoch_now = curves.epochs[-1]["epoch"] if curves.epochs else 0
        st.progress(curves.progress(), text=f"Epoch {epoch_now} of {total} done")
        extraction = curves.extraction()
        if extraction is not None:
            st.progress(extraction.done / max(extraction.total, 1), text=curves.extraction_text())
        elif curves.phase and not curves.batches:
            st.caption(escape_markdown(f"{curves.phase.message or curves.phase.phase}: "
                                       f"{curves.phase.done} of {curves.phase.total}"))
        if curves.features_cached():
            st.caption(FEATURES_EXPLAINED)
    elif run_state == "finished":
        st.success("Training finished. The best checkpoint is saved; see **Results**.", icon=":material/check_circle:")
    elif run_state == "cancelled":
        st.warning("Training was stopped; the best checkpoint so far is kept.", icon=":material/stop_circle:")
    elif run_state == "failed":
        st.error(escape_markdown(status.error) if status.error else "Training failed.", icon=":material/error:")

    c1, c2, c3, c4 = st.columns(4)
    last = curves.epochs[-1] if curves.epochs else {}
    c1.metric("Validation accuracy", f"{last['val_acc']:.1%}" if last.get("val_acc") is not None else "—")
    c2.metric("Images / s", f"{curves.images_per_s:.0f}" if curves.images_per_s else "—")
    c3.metric("Time left", format_seconds(curves.eta_seconds()) if run_state == "running" else "—")
    info = device_info()
    if info.kind == "cuda":
        c4.metric(info.name, f"{info.memory_used_gb:.1f}/{info.memory_total_gb:.0f} GB",
                  f"{info.utilization_pct:.0f}% busy" if info.utilization_pct is not None else None,
                  delta_color="off")
    else:
        c4.metric(f"{info.name} in use", f"{info.utilization_pct or 0:.0f}%", f"RAM {info.ram_used_pct:.0f}%",
                  delta_color="off")

    cols = st.columns(3)
    for col, metric in zip(cols, ("loss", "accuracy", "lr"), strict=True):
        col.plotly_chart(curves.figure(metric), key=f"curve_{metric}")
    for note in curves.notes[-3:]:
        st.caption(f":material/info: {escape_markdown(note)}")  # the engine's notes may quote a file

    if run_state in ACTIVE_STATES:
        # a callback: it runs before the next script run, so a click is never lost to the
        # st.rerun() above when the run starts or ends at the same moment
        st.button("Stop training", icon=":material/stop:", key="stop", on_click=stop_run, args=(run_id,))
    if run_state in ("finished", "cancelled"):
        st.page_link("pages/4_results.py", label="See the results", icon=":material/insights:")


with user_errors("Could not show the run"):
    live_view(run.id, run_state_now)
