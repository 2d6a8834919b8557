"""Model: pick a pretrained backbone, decide which layer groups train, and pick a head."""

import dataclasses

import pandas as pd
import streamlit as st

from tl_core.classroom import teacher as classroom
from tl_core.config import (
    CLASSICAL_HEADS,
    FREEZE_MODE_LABELS,
    HEAD_HELP,
    HEAD_LABELS,
    POOLING_LABELS,
    ZERO_SHOT_HEAD,
    FreezeMode,
    FreezePlan,
    HeadConfig,
    HeadKind,
    Pooling,
)
from tl_core.markup import code_span, escape_markdown
from tl_core.model.presets import PRESETS
from tl_core.model.registry import get_backbone
from tl_core.model.weights import WEIGHT_CHECKS, weights_status
from tl_ui import get_state, intro, start_page, user_errors
from tl_ui.models import (
    backbone_names,
    backbone_table,
    backbones_with_weights,
    check_timm_name,
    freeze_diagram,
    group_report,
    import_folder_weights,
    import_uploaded_weights,
    on_disk_mb,
    speeds_note,
)
from tl_ui.widgets import choice_input
from tl_ui.zero_shot_views import class_words_editor, similar_texts_check

start_page()  # opened without app.py (a deep link, first after a restart): becomes app.py's run
state = get_state()
draft = state.draft

intro(
    "Choose a model",
    "A *backbone* is a network already trained on millions of photos (ImageNet's 1.3 million labelled ones, or "
    "far more without labels or with captions); its early layers detect edges and textures, its late layers "
    "whole objects. You keep what it learned and train a small new *head* for your classes, deciding how many "
    "of the backbone's layers may change.",
    """
**Picking a backbone.** Bigger networks (more parameters, higher ImageNet accuracy) usually transfer
better but train slower. `mobilenet_v2` is small, fast and ships with TL Studio, so it works offline.
With few images per class, a self-supervised DINOv2 probe is a strong start; an image-text model can
even classify with no training images, from the class names (the *zero-shot* head).

**Freezing.** A *frozen* layer keeps its pretrained weights.
- *Feature extractor*: the whole backbone is frozen and only the head learns. Fast, hard to overfit,
  best for small datasets (tens of images per class). The backbone's features are computed once.
- *Fine-tune the top N groups*: the last layers (the most task-specific) adapt to your images too.
- *Full fine-tuning*: everything trains; needs more images and a smaller learning rate.
- *Gradual unfreezing*: start as a feature extractor and unfreeze one more group every few epochs.

**BatchNorm.** Frozen layers normally keep their BatchNorm statistics from ImageNet; letting them update
helps when your images look very different (microscopy, X-rays).

**Discriminative learning rates** give early layers a smaller learning rate than late ones, so general
features change little while task-specific ones change more.

**The head** is the new last layer: a linear layer, a small MLP, or a classical classifier
(logistic regression, linear SVM, LDA, nearest class mean, k nearest neighbours) fitted on the
frozen features in seconds. With only a few images per class, try nearest class mean or k nearest
neighbours: they compare a new image with your images instead of learning weights.
""")

KINDS_EXPLAINED = """
Backbones differ in how they learnt before they ever see your images, and their published accuracy
measures different things, so compare numbers only within one kind.
- **Supervised on ImageNet** (ResNet, MobileNet, EfficientNet, ConvNeXt, VGG, ViT): trained to name
  ImageNet's 1,000 classes from 1.3 million labelled photos. *Top-1* is how often their first guess
  is right. Across 16 such networks, better ImageNet accuracy meant better transfer (Kornblith et al.
  2019), though not always on real-world images such as camera traps (Fang et al. 2023).
- **Self-supervised** (DINOv2): learnt from 142 million photos with no labels and no text, by
  matching views of the same image (Oquab et al. 2023). *Linear probe* is the accuracy of a linear
  head trained on its frozen features: its features alone are that good. Strong for fine-grained
  classes and few images.
- **Image-text** (CLIP, SigLIP, MobileCLIP): an image tower and a text tower trained to match photos
  with their captions (Radford et al. 2021; Zhai et al. 2023). They can classify from words alone:
  *zero-shot* is ImageNet accuracy with no ImageNet training image, only the class names. Weaker on
  specialised images (satellite, medical, counting); their features also probe well.
"""

# The widgets a recipe sets: their remembered values are dropped so they show the new draft.
RECIPE_WIDGETS = ("backbone_pick", "freeze_mode", "last_n", "unfreeze_every", "train_bn", "use_lr_range",
                  "lr_ratio", "head_kind", "mlp_hidden", "mlp_dropout", "head_pool", "knn_neighbours")


def apply_recipe(key: str, backbone: str) -> None:
    """Button callback (runs before the page, so no widget of this run has read its value yet)."""
    recipe = PRESETS[key].apply(state.draft, backbone)
    state.edit_draft(model=recipe.model, freeze=recipe.freeze, train=recipe.train,
                     data={"augment": recipe.data.augment})
    for widget in RECIPE_WIDGETS + tuple(k for k in st.session_state if str(k).startswith("group_")):
        st.session_state.pop(widget, None)


recipe = recipe_note = None
with st.expander("Start from a recipe: the classic VGG16 one (Keras style), or deep features + SVM / LDA",
                 icon=":material/menu_book:"), user_errors("Could not show the recipes"):
    recipe = PRESETS[st.selectbox("Recipe", list(PRESETS), format_func=lambda k: PRESETS[k].title,
                                  key="recipe_pick")]
    st.markdown(recipe.description)
    st.caption(f"From: {recipe.reference}")
    recipe_note = st.container()  # filled at the end, from the settings this run leaves
    c1, c2 = st.columns(2)
    recipe_status = weights_status(recipe.backbone)
    c1.button(f"Use this recipe ({recipe.backbone})", key="recipe_apply", on_click=apply_recipe,
              args=(recipe.key, recipe.backbone), type="primary" if recipe_status.available else "secondary",
              icon=":material/playlist_add_check:")
    if not recipe_status.available:
        spec = get_backbone(recipe.backbone)
        st.warning(f"{recipe.backbone}'s pretrained weights ({spec.weights_filename}) are not on this server, so "
                   f"a run with it cannot start yet. Add the file under *Add pretrained weights* below: upload it, "
                   f"or name a folder on this server that holds it (download it from {spec.weights_url}); or use the same recipe on a backbone whose weights are here.",
                   icon=":material/cloud_off:")
        fallback = next(iter(backbones_with_weights()), None)
        if fallback is not None:
            c2.button(f"Use this recipe with {fallback}", key="recipe_apply_fallback", on_click=apply_recipe,
                      args=(recipe.key, fallback), type="primary", icon=":material/swap_horiz:")
            note = recipe.on_other_backbone(fallback)
            if note:
                c2.caption(note)

st.subheader("1 · Backbone")
backbone = draft.model.backbone
with user_errors("Could not list the backbones"):
    with st.expander("Three kinds of backbone, and what their accuracy measures", icon=":material/school:"):
        st.markdown(KINDS_EXPLAINED)
    table_slot, pick_slot, status_slot = st.container(), st.container(), st.container()
    names = backbone_names(draft.model.backbone)
    backbone = pick_slot.selectbox("Backbone", names, index=names.index(draft.model.backbone)
                                   if draft.model.backbone in names else 0, key="backbone_pick")
    state.edit_draft(model={"backbone": backbone})
    spec = get_backbone(backbone)

    timm_outcome, state.timm_check = state.timm_check, None
    with pick_slot.expander("Any other timm model (for experts)", icon=":material/manage_search:",
                            expanded=timm_outcome is not None):
        st.caption("timm (PyTorch Image Models) publishes over a thousand pretrained image models. Type one of its "
                   "names, with or without the pretrained tag after the dot; it is checked (timm knows it, and it "
                   "builds) before it becomes your backbone. Its weights come from the Hugging Face hub.")
        c1, c2 = st.columns([3, 1], vertical_alignment="bottom")
        c1.text_input("timm model name", key="timm_name", placeholder="convnext_tiny.in12k_ft_in1k")
        c2.button("Check and use it", key="timm_check", on_click=check_timm_name,
                  args=(state, "timm_name", "backbone_pick"), icon=":material/manage_search:")
        if timm_outcome is not None:
            (st.success if timm_outcome.ok else st.error)(timm_outcome.headline)
            if timm_outcome.detail:
                st.text(timm_outcome.detail)  # holds the typed name: text, never Markdown

    with st.expander("Add pretrained weights (a .pth or .safetensors file: an upload or a folder)",
                     icon=":material/upload_file:", expanded=not weights_status(backbone).available):
        checks = ", ".join(WEIGHT_CHECKS)
        where = f", from {spec.weights_url}" if spec.weights_url else ""
        st.markdown(
            "Upload a weights file under the name TL Studio expects: torchvision's own name for its backbones, "
            f"the names below for timm and open_clip ones (for {escape_markdown(backbone)}: "
            f"{code_span(spec.weights_filename)}{where}). It is added only when it passes four checks ({checks}): "
            "its name is a backbone's weights file name; its sha256 matches the published one where there is one "
            "(torchvision puts its first 8 characters in the name, after the last '-'); it opens with safetensors "
            "or `torch.load(weights_only=True)`, so no code in it runs; and its layers and their shapes are "
            "exactly the backbone's.")
        upload = st.file_uploader("Weights file", type=["pth", "safetensors"], key="weights_upload")
        st.button("Check and add these weights", key="weights_add", on_click=import_uploaded_weights,
                  args=(state, upload), icon=":material/verified:")
        if classroom.teacher_enabled() and not state.teacher_unlocked:
            # a classroom server: only the teacher reads the server's folders
            st.caption("The teacher can also add every weights file of a folder on this server (after "
                       "unlocking the Teacher page).")
        else:
            folder = st.text_input("Or a folder on this server holding weights files (.pth, .safetensors), e.g. "
                                   "copied from a USB stick", key="weights_folder", placeholder="/home/teacher/weights",
                                   help="Every weights file in it is checked as an upload is, and added if it passes.")
            # Not a callback: its args would be the folder typed before this run, not the one just typed.
            if st.button("Check and add every weights file in this folder", key="weights_add_folder",
                         icon=":material/folder_open:"):
                import_folder_weights(state, folder)
        outcome, state.weights_import_outcome = state.weights_import_outcome, None
        if outcome is not None:
            (st.success if outcome.ok else st.error)(outcome.headline)
            if outcome.detail:
                st.text(outcome.detail)  # holds the uploaded file's name: text, never Markdown
            for line in outcome.lines:
                st.text(line)  # one per file of the folder, named as the teacher named it: text

    with table_slot:  # drawn after a possible import, so the weights column is fresh
        table = backbone_table()
        st.dataframe(table, hide_index=True, key="backbone_table", column_config={
            "name": st.column_config.TextColumn("Backbone", pinned=True),
            "kind": st.column_config.TextColumn("Kind", help="How it was pre-trained (see *Three kinds of backbone*)"),
            "library": st.column_config.TextColumn("Library", help="torchvision, timm or open_clip: where the model "
                                                                   "comes from"),
            "accuracy": st.column_config.TextColumn(
                "Published accuracy", width="large",
                help="On ImageNet: top-1 (supervised), linear probe (self-supervised) or zero-shot (image-text), "
                     "with its source. Compare numbers of one kind only."),
            "params (M)": st.column_config.NumberColumn("Params", format="%.1f M", width="small",
                                                        help="Parameters, in millions"),
            "relative speed": st.column_config.ProgressColumn(
                "Speed", min_value=0.0, max_value=1.0, format="%.2f", width="small",
                help="1 = the fastest here (fewer GFLOPs per image)"),
            "images/s here": st.column_config.NumberColumn(
                "Images/s here", format="%.0f", width="small",
                help="Frozen-feature extraction measured on this machine (bench/backbones.py --save)"),
            "peak memory (MB)": st.column_config.NumberColumn("Memory", format="%.0f MB", width="small",
                                                              help="Peak memory while extracting features here"),
            "weights here": st.column_config.CheckboxColumn("Weights here", width="small",
                                                            help="Pretrained weights are on this server"),
            "on disk (MB)": st.column_config.NumberColumn("On disk", format="%.0f MB", width="small",
                                                          help="Size of the weights file on this server"),
            "get them": st.column_config.TextColumn(
                "Get the weights", width="medium",
                help="Where to download a file that is not here (then add it below); the selected backbone's "
                     "status below says where to put it"),
            "description": st.column_config.TextColumn("What it is", width="large"),
        })
        st.caption(speeds_note())
    status = weights_status(backbone)
    shown = escape_markdown(backbone)
    if status.available:
        size_mb = on_disk_mb(status.path) if status.path else None
        size = f", {size_mb:.0f} MB" if size_mb is not None else ""
        status_slot.success(f"Pretrained weights for **{shown}** are on this server ({status.source}{size}).",
                            icon=":material/check_circle:")
    else:
        status_slot.warning(f"Pretrained weights for **{shown}** are not on this server. {status.how_to} "
                            "Or add the file under *Add pretrained weights* below.", icon=":material/cloud_off:")

st.subheader("2 · Which layers train")
plan = draft.freeze
with user_errors("Could not show the layer groups"):
    classes: list[str] = []
    if state.dataset_id:
        from tl_core.data import Dataset

        try:  # the session's own dataset or one the teacher shared
            classes = list(Dataset.load(state.dataset_dir() or state.dataset_id).classes)
        except Exception:  # noqa: BLE001 - the Data page explains a broken dataset
            pass
    num_classes = max(2, len(classes))
    mode = choice_input(st.radio, "Preset", FreezeMode, plan.mode, labels=FREEZE_MODE_LABELS, horizontal=True,
                        key="freeze_mode")
    body_names = [g.name for g in group_report(backbone, draft.model.head, num_classes, FreezePlan())][:-1]
    last_n, unfreeze_every, groups = plan.last_n, plan.unfreeze_every, plan.groups
    if mode == "last_n":
        last_n = st.slider("Groups to fine-tune (counted from the head)", 1, len(body_names),
                           min(max(plan.last_n, 1), len(body_names)), key="last_n")
    elif mode == "gradual":
        unfreeze_every = st.number_input("Unfreeze one more group every … epochs", 1, 20, plan.unfreeze_every,
                                         key="unfreeze_every")
    elif mode == "groups":
        cols = st.columns(min(len(body_names), 6))
        groups = tuple(name for i, name in enumerate(body_names)
                       if cols[i % len(cols)].toggle(name, value=name in plan.groups, key=f"group_{name}"))
    c1, c2 = st.columns(2)
    train_bn = c1.checkbox("Update BatchNorm statistics in frozen layers", value=plan.train_bn, key="train_bn",
                           help="Helps when your images look unlike everyday photos (microscopy, X-ray).")
    use_range = c2.checkbox("Discriminative learning rates", value=plan.lr_range is not None, key="use_lr_range",
                            disabled=mode == "feature_extractor",
                            help="Early layers learn slower than late ones.")
    lr_range = None
    if use_range and mode != "feature_extractor":
        ratio = c2.select_slider("Earliest group's learning rate, relative to the head",
                                 [1 / 1000, 1 / 100, 1 / 10, 1 / 3], value=1 / 100, key="lr_ratio",
                                 format_func=lambda v: f"1/{round(1 / v)}")
        lr_range = (ratio, 1.0)
    plan = FreezePlan(mode=mode, last_n=last_n, groups=groups, unfreeze_every=int(unfreeze_every),
                      train_bn=train_bn, lr_range=lr_range)
    state.edit_draft(freeze=plan)

    st.subheader("3 · Head")
    not_here = () if spec.zero_shot else (ZERO_SHOT_HEAD,)  # zero-shot needs a text tower
    head_kind = choice_input(st.selectbox, "Head", HeadKind, draft.model.head.kind, labels=HEAD_LABELS, exclude=not_here,
                             key="head_kind")
    if head_kind in HEAD_HELP and head_kind != ZERO_SHOT_HEAD:  # zero-shot's editor below explains it at length
        st.caption(HEAD_HELP[head_kind])
    is_vgg = get_backbone(backbone).family == "vgg"
    pool = choice_input(st.radio, "From feature map to features", Pooling, draft.model.head.pool if is_vgg else "avg",
                        labels=POOLING_LABELS, horizontal=True, key="head_pool", disabled=not is_vgg)
    if not is_vgg:
        st.caption("Flatten is VGG's: Keras flattens VGG16's 7×7×512 feature map (25,088 features) into the "
                   f"Dense layers. {backbone} ends in a global average pool, which it was trained with.")
        pool = "avg"
    head = HeadConfig(kind=head_kind, pool=pool)
    if head_kind == ZERO_SHOT_HEAD:
        head = dataclasses.replace(head, class_words=class_words_editor(classes, draft.model.head))
        similar_texts_check(state, backbone, head, classes, pretrained=draft.model.pretrained,
                            weights_dir=draft.model.weights_dir)
        st.caption("On the Train page, 0 epochs is pure zero-shot: the words alone classify and no training image "
                   "is used. More epochs train on from this start, a probe that begins from the words.")
    if head_kind == "mlp":
        c1, c2 = st.columns(2)
        head = dataclasses.replace(head, hidden=int(c1.number_input("Hidden units", 16, 4096, draft.model.head.hidden,
                                                                    key="mlp_hidden")),
                                   dropout=c2.slider("Dropout", 0.0, 0.8, draft.model.head.dropout, 0.05,
                                                     key="mlp_dropout"))
    if head_kind == "knn":
        head = dataclasses.replace(head, neighbours=int(st.number_input(
            "Neighbours that vote (k)", 1, 50, draft.model.head.neighbours, key="knn_neighbours",
            help="An odd k avoids most ties between two classes; a tie goes to the class listed first. "
                 "With fewer training images than k, all of them vote.")))
        if draft.train.balance != "none":
            st.warning("k nearest neighbours counts votes and takes no class balancing: set *Class balance* "
                       "on the Train page to none, or pick nearest class mean.")
    if head_kind in CLASSICAL_HEADS and mode != "feature_extractor":
        st.warning("Classical heads are fitted on frozen features: choose the *Feature extractor* preset.")
    state.edit_draft(model={"head": head})

    st.subheader("Layer groups, stem → head")
    report = group_report(backbone, head, num_classes, plan)
    epoch_note = ""
    if mode == "gradual":
        epoch = st.slider("Show the plan at epoch", 1, 30, 1, key="show_epoch")
        report = group_report(backbone, head, num_classes, plan, epoch)
        epoch_note = f" at epoch {epoch}"
    frame = pd.DataFrame([{"group": g.name, "parameters": g.num_params,
                           "state": "trainable" if g.trainable else "frozen",
                           "lr": f"lr × {g.lr_mult:.3g}" if plan.lr_range and g.trainable else ""}
                          for g in report])
    st.plotly_chart(freeze_diagram(frame), key="freeze_diagram")
    trainable = int(frame.loc[frame["state"] == "trainable", "parameters"].sum())
    total = int(frame["parameters"].sum())
    st.markdown(f"**{trainable:,} of {total:,} parameters will train{epoch_note}** "
                f"({trainable / max(total, 1):.1%}).", help="The head is always trainable.")
    st.caption(f"Images are resized to {spec.preprocess.resize_size} px and cropped to "
               f"{spec.preprocess.crop_size} px, as {backbone}'s pretrained weights expect.")
    st.page_link("pages/3_train.py", label="Next: train", icon=":material/arrow_forward:")

if recipe is not None and recipe.apply(state.draft, state.draft.model.backbone) == state.draft:
    recipe_note.success(f"Your settings follow this recipe on {state.draft.model.backbone}; the Train page shows "
                        "its values. Change any of them below or there.", icon=":material/check_circle:")
