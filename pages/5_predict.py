"""Predict: the trained model on new photos (uploads, webcam, a folder or a zip), with Grad-CAM."""

import streamlit as st

from tl_ui import end_page, get_state, intro, start_page, user_errors
from tl_ui.charts import plot_label
from tl_ui.heavy import heavy_work
from tl_ui.predict_views import (
    collect_images,
    explain_uploads,
    predict_all,
    rejected_message,
    results_table,
    show_prediction,
    unsure_below,
)
from tl_ui.trained import gradcam_controls, pick_trained_run

start_page()  # opened without app.py (a deep link, first after a restart): becomes app.py's run
state = get_state()
DETAILED = 8  # images shown one by one with their chart; more are listed in a table

intro(
    "Predict",
    "Now the trained model meets photos it has never seen: yours, the webcam's, or a whole folder. "
    "This is the real test of transfer learning: if it is right here, it has learned your classes and not "
    "just memorised your training images.",
    """
**What you see.** For each image, the model's *top choices* with a probability each (they add up to
100 % over all classes), and with **Grad-CAM** a heat map of the regions that pushed it towards its
answer. If the heat sits on the background instead of the object, the model may have learned a shortcut
(for example: all *cat* photos were taken indoors).

**Its limits.** The model only knows the classes it was trained on. A photo of something else still
gets one of them, sometimes with high confidence: there is no *none of these* answer. Photos unlike the
training ones (another camera, lighting or background) are where it fails first; try some on purpose.

**A whole folder.** Upload a folder or a .zip to classify many images at once, then download the
table as a CSV file (opens in any spreadsheet).
""")

run = pick_trained_run(state, key="predict_run")
if run is None:
    end_page()

classes = run.classes
c1, c2 = st.columns([1, 2])
top_k = c1.slider("Top choices shown", 1, min(5, len(classes)), min(3, len(classes)), key="predict_top_k",
                  help="How many of the model's best guesses to show per image.")
with c2:
    cam = gradcam_controls(run, key="predict_cam", default_on=True)
st.caption("Classes this model knows:")
st.text(", ".join(classes))  # class names: text, never Markdown

photos_tab, webcam_tab, batch_tab = st.tabs([":material/image: Photos", ":material/photo_camera: Webcam",
                                             ":material/folder_zip: A folder or a zip"])

with photos_tab:
    files = st.file_uploader("Upload one or more photos", accept_multiple_files=True, key="predict_files",
                             help="JPEG, PNG, BMP, GIF, TIFF or WebP. Nothing is added to your dataset.")
    if files:
        with user_errors("Could not classify the photos"):
            images, rejected = collect_images(files)
            rejected_message(rejected)
            with st.spinner("Classifying…"):
                predictions = predict_all(run, images, top_k)
            cams = explain_uploads(run, images[:DETAILED], cam)
            for i, (image, top, explained) in enumerate(zip(images, predictions, cams, strict=False)):
                show_prediction(run, image, top, explained, key=f"photo_{i}")
                st.divider()
            if len(images) > DETAILED:
                st.caption(f"The first {DETAILED} are shown in detail; all {len(images)} are below.")
                st.dataframe(results_table(images, predictions), hide_index=True, key="photos_table")

with webcam_tab:
    st.caption("Hold an object in front of the camera and take a photo. The browser asks for permission first.")
    snapshot = st.camera_input("Take a photo", key="predict_camera")
    if snapshot is not None:
        with user_errors("Could not classify the photo"):
            images, rejected = collect_images([snapshot])
            rejected_message(rejected)
            predictions, cams = predict_all(run, images, top_k), explain_uploads(run, images, cam)
            for image, top, explained in zip(images, predictions, cams, strict=True):
                show_prediction(run, image, top, explained, key="webcam")

with batch_tab:
    st.markdown("Classify many images at once and download the answers as a table.")
    left, right = st.columns(2)
    with left:
        folder = st.file_uploader("A folder of images", accept_multiple_files="directory", key="predict_folder")
    with right:
        archives = st.file_uploader("Or a .zip of images", type=["zip"], accept_multiple_files=True,
                                    key="predict_zip")
    uploads = [*(folder or []), *(archives or [])]
    if uploads and st.button("Classify them all", type="primary", icon=":material/play_arrow:",
                             key="predict_batch_go"):
        # One heavy-task slot for the whole batch (checking thousands of files is heavy too).
        with user_errors("Could not classify the images"), heavy_work():
            bar = st.progress(0.0, text="Checking the files…")
            images, rejected = collect_images(uploads)

            def report(done: int, total: int) -> None:
                bar.progress(done / total, text=f"Classified {done} of {total} images")

            predictions = predict_all(run, images, top_k, progress=report)
            bar.empty()
            # Kept in the session: the download button reruns the page, the table must stay.
            state.predict_batch = {
                "run": run.id, "table": results_table(images, predictions) if images else None,
                "rejected": rejected}
    batch = state.predict_batch
    if batch and batch["run"] == run.id:
        rejected_message(batch["rejected"])
        table = batch["table"]
        if table is None:
            st.warning("None of these files is an image the model can read.", icon=":material/warning:")
        else:
            import plotly.express as px

            counts = table["prediction"].value_counts().reindex(classes, fill_value=0).reset_index()
            counts.columns = ["class", "images"]
            counts["class"] = counts["class"].map(plot_label)
            chart, numbers = st.columns([2, 1])
            fig = px.bar(counts, x="class", y="images", text="images", title="Predicted class of each image")
            fig.update_layout(height=300, margin={"l": 10, "r": 10, "t": 40, "b": 10})
            chart.plotly_chart(fig, key="batch_counts")
            numbers.metric("Images classified", len(table))
            unsure = unsure_below(len(classes))
            numbers.metric(f"Unsure (< {unsure:.0%})", int((table["confidence"] < unsure).sum()),
                           help="Images whose best class got less than this probability: check them by eye.")
            st.dataframe(table, hide_index=True, key="batch_table", column_config={
                "confidence": st.column_config.ProgressColumn("confidence", min_value=0.0, max_value=1.0,
                                                              format="percent")})
            st.download_button("Download the table (CSV)", table.to_csv(index=False).encode("utf-8"),
                               file_name=f"predictions_{run.id}.csv", mime="text/csv",
                               icon=":material/download:", key="batch_csv")
