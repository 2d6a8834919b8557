"""Export: the trained model as files that work without TL Studio, each checked against PyTorch."""

import re

import streamlit as st

from tl_core.export.bundle import FORMATS
from tl_ui import end_page, get_state, intro, start_page, user_errors
from tl_ui.export_views import FORMAT_NAMES, bundle_zip, card_preview, export, last_report, show_checks
from tl_ui.trained import pick_trained_run

start_page()  # opened without app.py (a deep link, first after a restart): becomes app.py's run
state = get_state()

# Two teacher-friendly sentences per format (what it is, who uses it).
FORMAT_HELP = {
    "onnx": ("**ONNX** (`model.onnx`) is a standard file that many programs and languages can run, "
             "without PyTorch. Use it to put the model in another app, on a phone or in a web page."),
    "torchscript": ("**TorchScript** (`model_torchscript.pt`) is the model as a self-contained PyTorch "
                    "program. Use it from Python or C++ when PyTorch is already there."),
    "safetensors": ("**safetensors** (`model.safetensors`) holds only the learned numbers, in a safe format. "
                    "Use it to continue training in PyTorch or to share the weights (e.g. on Hugging Face)."),
}

intro(
    "Export",
    "Exporting packs the trained model into files that run outside TL Studio: in another program, on "
    "another computer, without this server. Each file is checked against the original so that it gives "
    "the same answers.",
    """
**What is in the bundle (a .zip)**

- the model in the formats you pick (below),
- `labels.json`: the class names, in the order of the model's outputs,
- `preprocess.json`: how an image must be prepared (resized, cropped, normalised) before the model sees it,
- `predict.py`: a small script that classifies photos with the exported model: `python predict.py photo.jpg`,
- `MODEL_CARD.md`: what the model is, what it was trained on, how well it did, and its limits.

**The checks.** After writing each file, TL Studio runs it on real photos and compares its
probabilities with PyTorch's: the largest difference must stay below a tiny tolerance (rounding only),
and every photo must get the same class. A failed check means: do not use that file.

**Why formats differ.** *ONNX* is the most portable (Windows, phones, browsers, C#, Java);
*TorchScript* needs the PyTorch library but no Python code of ours; *safetensors* stores weights only,
so you need the network's code (TL Studio's) to use it, but it is the safest file to share.
""")

run = pick_trained_run(state, key="export_run")
if run is None:
    end_page()

st.markdown("**Formats**")
chosen = []
for fmt in FORMATS:
    c1, c2 = st.columns([1, 4])
    if c1.checkbox(FORMAT_NAMES[fmt], value=fmt != "safetensors", key=f"export_fmt_{fmt}"):
        chosen.append(fmt)
    c2.markdown(FORMAT_HELP[fmt])
with st.expander("Which format should I choose?"):
    st.markdown("""
- **Just trying the model on another computer?** ONNX: `pip install onnxruntime pillow numpy`, then
  `python predict.py photo.jpg`.
- **Building an app?** ONNX runs almost everywhere (ONNX Runtime for Python, C#, Java, JavaScript, mobile).
- **Staying in PyTorch?** TorchScript loads with one line: `torch.jit.load("model_torchscript.pt")`.
- **Training further or sharing weights?** safetensors: it cannot hide code, unlike pickled `.pt` files.
""")

out_dir = run.export_dir
if st.button("Build the bundle", type="primary", icon=":material/package_2:", key="export_go",
             disabled=not chosen, help=None if chosen else "Pick at least one format."):
    with user_errors("Could not export the model"), st.status("Exporting and checking…", expanded=True) as status:
        st.write(f"Writing {', '.join(chosen)}, labels, preprocessing and predict.py, then running each file on "
                 "real photos and comparing with PyTorch…")
        report = export(run, out_dir, chosen)  # in a bounded heavy-task slot of the server
        status.update(label=f"Exported in {report.seconds:.1f} s", state="complete" if report.ok else "error",
                      expanded=False)

# Shown from the files on disk, so the last export is still here after a refresh.
report = last_report(out_dir)
if report is None:
    st.caption("No export yet for this run: pick the formats and build the bundle.")
    end_page()

st.subheader("Checks")
show_checks(report)

st.subheader("Download")
name = re.sub(r"[^\w.-]+", "_", run.display_name()).strip("_") or run.id  # a safe file name
st.download_button("Download the bundle (.zip)", bundle_zip(str(out_dir), report["stamp"]),
                   file_name=f"{name}_model.zip", mime="application/zip", type="primary",
                   icon=":material/download:", key="export_download")
st.caption("Files: " + ", ".join(f"`{f}`" for f in report["files"]))

card = out_dir / "MODEL_CARD.md"
if card.exists():
    with st.expander("Model card (MODEL_CARD.md in the bundle)", expanded=True):
        st.markdown(card_preview(card.read_text(encoding="utf-8")))
