"""Compare strategies: one click queues a run per transfer strategy; the experiment view compares them."""

import streamlit as st

from tl_ui import end_page, experiment_views, get_state, intro, start_page

start_page()  # opened without app.py (a deep link, first after a restart): becomes app.py's run
state = get_state()

intro(
    "Compare strategies",
    "Train the same network on the same images in several ways, one click, and see which works best "
    "on your data: a frozen backbone with a new head, fine-tuning some or all of it, or no transfer at all.",
    """
**What is compared.** Every strategy trains on the same split, with the same seed, backbone, epochs
and batch size (set on the Model and Train pages); only what learns differs. *Linear probe*: the
backbone stays frozen and only a new last layer learns. *Classical heads* fit a scikit-learn
classifier on the same frozen features. *Fine-tune top N*: the last N groups of the backbone learn
too, with one learning rate or with lower ones for lower groups. *LP-FT*: a linear probe first, then
everything fine-tunes. *Full fine-tune*: everything learns from the start. *Random init*: the same
network from random weights, which shows what the pretrained weights are worth.

*How much data is enough* trains the chosen strategies on 5 to 100% of each class's training images
(the validation images stay the same) and draws accuracy against images per class. *Freeze depth*
freezes the lowest k layer groups and fine-tunes the rest, from everything (k = 0) to nothing.

*Zero-shot* (image-text backbones: CLIP, SigLIP, MobileCLIP) trains nothing: the class names become
the classifier, so it shows what the words alone reach before any of your images. *Which backbone?*
trains the same linear probe on every backbone whose weights are on this machine and plots its
accuracy on your images against its published ImageNet accuracy and against its speed here: do
better ImageNet models transfer better on your images?

The runs wait in the queue and train one after another; frozen members share one pass of the
backbone over the images (each share of the images computes its own once).
""")

with st.expander("New comparison", expanded=state.experiment_id is None, icon=":material/tune:"):
    experiment_views.strategy_form(state)

experiment = experiment_views.experiment_picker(state)
if experiment is None:
    end_page()
experiment_views.experiment_view(state, experiment)
