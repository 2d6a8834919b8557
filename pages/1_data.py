"""Data: bring images in (sample, zip, folder, per-class uploads, webcam, downloads), check them, split."""

from pathlib import Path

import pandas as pd
import streamlit as st

from tl_core import data as tl_data
from tl_core import limits
from tl_core.classroom import teacher as classroom
from tl_core.data import downloads, uploads
from tl_core.data import sample as tl_sample
from tl_core.data.catalog import DatasetCatalog
from tl_core.errors import DataError
from tl_core.workspace import Workspace
from tl_ui import class_builder, end_page, fix_views, get_state, intro, sheet_views, start_page, user_errors
from tl_ui.charts import plot_label
from tl_ui.feedback import notice
from tl_ui.health_charts import class_bar, size_histogram, split_bar
from tl_ui.label_views import balance_suggestion
from tl_ui.widgets import progress_callback, thumbnails

start_page()  # opened without app.py (a deep link, first after a restart): becomes app.py's run
state = get_state()
catalog = DatasetCatalog(state.workspace)

intro(
    "Your images",
    "Transfer learning starts from a network that has already learned to see on millions of photos; "
    "you only teach it **your** classes, so a few dozen labelled images per class are often enough. "
    "The quality of these images decides the result more than any setting, so look at them first.",
    """
**What happens on this page**

1. **Bring images in.** Each class is a folder of images (`cats/…`, `dogs/…`), a zip of such folders,
   images you upload class by class, or webcam snapshots. The built-in *sample* works offline in one click.
2. **Check their health.** We count images per class, look for duplicates, tiny or broken files, and
   classes that are much bigger than others (the model then learns to favour the big class).
3. **Split them.** Part of each class is held back as a *validation set*: the model never trains on it,
   so its accuracy there tells us how well it will do on new photos. A *test set* is kept for one final,
   honest check after all choices are made.

*Classroom tip:* ask the class to predict which classes the model will confuse before training,
then compare with the confusion matrix on the Results page.
""")


def _make_in_place(name: str, write) -> None:
    """Make a dataset on the server (a sample): ``write(dest)`` writes an image folder into a fresh
    dataset folder, which is then ingested where it is and becomes the current dataset."""
    limits.check_can_add_dataset(state.workspace)  # the server's limits before a byte is written
    bar = st.progress(0.0, text="Reading images…")

    def build(dest: Path) -> tl_data.Dataset:
        write(dest)
        return tl_data.ingest(dest, progress=progress_callback(bar), name=name)

    try:
        ds = tl_data.create_dataset(catalog.new_dir(name), build)
    finally:
        bar.empty()
    _added(ds)


def _add_upload(upload: uploads.DatasetUpload, *, name: str | None = None, on_ingested=None) -> None:
    """Add an upload as a new dataset (``uploads.add_uploaded_dataset``: the limits, the bytes
    staged, the ingest; nothing is left behind on failure) and make it the current dataset.
    ``on_ingested(ds)`` runs right after a successful import, before any Streamlit call that a click
    could interrupt."""
    bar = st.progress(0.0, text="Reading images…")
    try:
        ds = uploads.add_uploaded_dataset(upload, state.workspace, name=name, progress=progress_callback(bar),
                                          on_ingested=on_ingested)
    finally:
        bar.empty()
    _added(ds)


def _added(ds: tl_data.Dataset) -> None:
    state.select_dataset(ds.root.name)
    st.toast(f"Dataset added: {len(ds.records)} images in {len(ds.classes)} classes.")  # its name: in the sidebar, as text


st.subheader("1 · Choose images")
tabs = st.tabs([":material/bolt: Sample (one click)", ":material/folder_zip: Zip", ":material/folder: Folder",
                ":material/photo_camera: Class by class (upload or webcam)", ":material/cloud_download: Download",
                ":material/table_view: Spreadsheet (CSV, Excel)"])

with tabs[0]:
    st.markdown("Four classes of generated shapes: works offline and trains in under a minute.")
    if st.button("Use the sample dataset", type="primary", icon=":material/bolt:", key="use_sample"):
        with user_errors("Could not make the sample"), st.spinner("Making the sample…"):
            _make_in_place("shapes", lambda dest: tl_sample.make_sample_dataset(
                dest, cache_dir=Workspace.default().cache_dir / "samples"))
    package = dict(tl_sample.package_samples())
    if package:
        st.markdown("Or an image set that comes with an installed package:")
        c1, c2 = st.columns([3, 1])
        name = c1.selectbox("Package sample", list(package), format_func=lambda n: f"{n}: {package[n]}",
                            key="package_pick", label_visibility="collapsed")
        if c2.button("Use it", key="use_package"):
            with user_errors("Could not make the sample"), st.spinner("Writing the images…"):
                _make_in_place(name, lambda dest: tl_sample.make_package_sample(name, dest))

with tabs[1]:
    archive = st.file_uploader("A .zip with one folder per class (train/ val/ test/ folders are kept)",
                               type="zip", key="zip_upload")
    if archive is not None and st.button("Add this zip as a new dataset", key="add_zip", type="primary",
                                         help="Nothing is read until you click: check it is the right file."):
        with user_errors("Could not read the zip", message_as_text=True):
            _add_upload(uploads.ZipUpload(archive))

with tabs[2]:
    folder = st.file_uploader("A folder with one sub-folder per class", accept_multiple_files="directory",
                              key="folder_upload")
    if folder and st.button("Add this folder", key="add_folder", type="primary"):
        with user_errors("Could not read the folder", message_as_text=True):
            _add_upload(uploads.FolderUpload(folder))

with tabs[3]:
    class_builder.render(state, _add_upload)

with tabs[4]:
    st.markdown("Well-known datasets from torchvision (downloaded once to this server; needs internet).")
    choice = st.selectbox("Dataset", list(downloads.DOWNLOADABLE), key="download_choice",
                          format_func=lambda name: f"{name}: {downloads.DOWNLOADABLE[name].description} "
                                                   f"(~{downloads.DOWNLOADABLE[name].size_mb} MB)")
    limit = st.number_input("Images per class to keep", 10, 1000, 50, step=10, key="download_limit")
    if st.button("Download", key="download", icon=":material/cloud_download:"):
        with user_errors("Could not download"), st.spinner(f"Downloading {choice}…"):
            limits.check_can_add_dataset(state.workspace)
            ds = tl_data.create_dataset(catalog.new_dir(choice), lambda dest: downloads.download_dataset(
                choice, dest, per_class=int(limit), cache_dir=Workspace.default().root / "downloads"))
            state.select_dataset(ds.root.name)

with tabs[5]:
    sheet_views.render(state, _add_upload)

entries = catalog.list()
shared = classroom.shared_catalog().list()  # the teacher's, for the whole class: read-only here
if entries or shared:
    ids = [e.id for e in entries] + [e.id for e in shared]
    labels = {e.id: f"{e.name} · {e.num_images} images, {e.num_classes} classes ({e.id})" for e in entries}
    labels.update({e.id: f"{e.name} · {e.num_images} images, {e.num_classes} classes (shared by the teacher, "
                         "read-only)" for e in shared})
    if state.dataset_id not in ids:
        state.select_dataset(ids[0])
    st.selectbox("Current dataset", ids, format_func=labels.get, key=state.dataset_pick_key(),
                 on_change=state.take_dataset_pick)

if not state.dataset_dir():
    st.info("No dataset yet. Click **Use the sample dataset** above to try TL Studio in two clicks.")
    end_page()

with user_errors("Could not open the dataset", message_as_text=True):  # messages quote class names
    ds = tl_data.Dataset.load(state.dataset_dir())
    if state.dataset_is_shared():
        st.info("The teacher shared this dataset with the class: it is read-only here (train on it as it is; "
                "to change it, add your own copy above).", icon=":material/group:")
    st.subheader("2 · Health report")
    # Drawn once the split below is chosen: the report looks for duplicates leaking across it.
    report_area = st.container()

    st.subheader("3 · Split")
    keep_given = sheet_views.keep_given_toggle(state, ds)
    own_val, own_test = sheet_views.split_disabled_reasons(ds, keep_given)
    if own_val or own_test:
        st.info(" ".join(r for r in (own_val, own_test) if r))
    c1, c2, c3 = st.columns(3)
    chosen = state.draft.data
    state.edit_draft(data={
        "val_fraction": c1.slider("Validation share", 0.05, 0.5, chosen.val_fraction, 0.05, disabled=bool(own_val),
                                  help=own_val or "Held back from training to measure accuracy on unseen images."),
        "test_fraction": c2.slider("Test share", 0.0, 0.4, chosen.test_fraction, 0.05, disabled=bool(own_test),
                                   help=own_test or "Kept aside for one final check; 0 = no test set."),
        "split_seed": int(c3.number_input("Shuffle seed", 0, 10_000, chosen.split_seed,
                                          help="The same seed gives the same split every time."))})
    chosen = state.draft.data
    try:
        split = tl_data.make_split(ds, chosen.val_fraction, chosen.test_fraction, chosen.split_seed,
                                   keep_given=keep_given)
    except DataError as exc:  # the report still says what is wrong; the split's error comes after it
        split, split_error = None, exc
    else:
        split_error = None
    with report_area:
        near = fix_views.near_duplicate_search(ds, state.workspace)  # None until switched on
    report = tl_data.health_report(ds, split, near_duplicates=near)

    with report_area:
        for message in report.errors:
            notice("error", message)  # it may quote class or file names: shown as text
        for message in report.warnings:
            notice("warning", message)
        sheet_views.leaks(state, ds, report)
        balance_suggestion(state, report.class_counts, key="balance_suggest_data")
        c1, c2, c3, c4 = st.columns(4)
        c1.metric("Images", report.num_images)
        c2.metric("Classes", len(report.class_counts))
        c3.metric("Skipped files", len(report.skipped))
        c4.metric("Duplicate groups", len(report.duplicate_groups))

        left, right = st.columns(2)
        left.plotly_chart(class_bar(report), key="class_bar")  # built once per server for these numbers
        right.plotly_chart(size_histogram(report), key="size_hist")

        st.markdown("**A few images of each class**")
        examples = ds.examples(per_class=8)
        for label in ds.classes:
            shown = examples.get(label, [])  # cached by content: every copy of the sample shares them
            thumbs = [t for t in thumbnails([ds.path_of(r) for r in shown], digests=[r.sha256 for r in shown]) if t]
            st.text(f"{label} ({report.class_counts.get(label, 0)})")  # a class name: text, never Markdown
            if thumbs:
                st.image(thumbs, width=96)

        if report.skipped:
            with st.expander(f"Skipped files ({len(report.skipped)}): not used for training", expanded=True):
                st.dataframe(pd.DataFrame(report.skipped), hide_index=True, key="skipped_table",
                             column_config={"path": "File", "reason": "Why it was skipped"})
        if report.duplicate_groups:
            with st.expander(f"Duplicate images ({len(report.duplicate_groups)} groups)"):
                st.dataframe(pd.DataFrame({"identical files": [", ".join(g) for g in report.duplicate_groups]}),
                             hide_index=True)
        fix_views.dataset_fixes(ds, report)  # drop duplicates, near-duplicate groups, history and Undo

    if split_error is not None:
        raise split_error
    split_names = {"train": "train", "val": "validation", "test": "test"}
    rows = [{"split": shown, "class": plot_label(label), "images": report.split_counts.get(key, {}).get(label, 0)}
            for key, shown in split_names.items() for label in ds.classes]
    st.plotly_chart(split_bar(rows), key="split_bar")
    st.page_link("pages/2_model.py", label="Next: choose a model", icon=":material/arrow_forward:")
