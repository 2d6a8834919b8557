"""Model: pick a pretrained backbone, decide which layer groups train, and pick a head."""

import dataclasses

import pandas as pd
import plotly.express as px
import streamlit as st

from tl_core.backbones import get_backbone, weights_status
from tl_core.config import (
    CLASSICAL_HEADS,
    FREEZE_MODE_LABELS,
    HEAD_LABELS,
    FreezeMode,
    FreezePlan,
    HeadConfig,
    HeadKind,
)
from tl_ui import get_state, intro, user_errors
from tl_ui.models import backbone_table, group_report
from tl_ui.widgets import choice_input

state = get_state()
draft = state.draft

intro(
    "Choose a model",
    "A *backbone* is a network already trained on ImageNet's 1.3 million photos; its early layers detect "
    "edges and textures, its late layers whole objects. You keep what it learned and train a small new "
    "*head* for your classes, deciding how many of the backbone's layers may change.",
    """
**Picking a backbone.** Bigger networks (more parameters, higher ImageNet accuracy) usually transfer
better but train slower. `mobilenet_v2` is small, fast and ships with TL Studio, so it works offline.

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
(logistic regression, linear SVM, LDA) fitted on the frozen features in seconds.
""")

st.subheader("1 · Backbone")
backbone = draft.model.backbone
with user_errors("Could not list the backbones"):
    table = backbone_table()
    st.dataframe(table, hide_index=True, key="backbone_table", column_config={
        "name": st.column_config.TextColumn("Backbone", width="small"),
        "description": st.column_config.TextColumn("What it is", width="large"),
        "params (M)": st.column_config.NumberColumn("Params", format="%.1f M", width="small",
                                                    help="Parameters, in millions"),
        "ImageNet top-1": st.column_config.NumberColumn("Top-1", format="%.1f %%", width="small",
                                                        help="Accuracy on ImageNet"),
        "relative speed": st.column_config.ProgressColumn(
            "Speed", min_value=0.0, max_value=1.0, format="%.2f", width="small",
            help="1 = the fastest here (fewer GFLOPs per image)"),
        "weights here": st.column_config.CheckboxColumn("Weights here", width="small",
                                                        help="Pretrained weights are on this server"),
    })
    names = list(table["name"])
    backbone = st.selectbox("Backbone", names, index=names.index(draft.model.backbone)
                            if draft.model.backbone in names else 0, key="backbone_pick")
    state.edit_draft(model={"backbone": backbone})
    status = weights_status(backbone)
    if status.available:
        st.success(f"Pretrained weights for **{backbone}** are on this server ({status.source}).",
                   icon=":material/check_circle:")
    else:
        st.warning(f"Pretrained weights for **{backbone}** are not on this server. {status.how_to}",
                   icon=":material/cloud_off:")

st.subheader("2 · Which layers train")
plan = draft.freeze
with user_errors("Could not show the layer groups"):
    num_classes = 2
    if state.dataset_id:
        from tl_core.catalog import DatasetCatalog

        try:
            num_classes = max(2, len(DatasetCatalog(state.workspace).load(state.dataset_id).classes))
        except Exception:  # noqa: BLE001 - the Data page explains a broken dataset
            pass
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
    head_kind = choice_input(st.selectbox, "Head", HeadKind, draft.model.head.kind, labels=HEAD_LABELS,
                             key="head_kind")
    head = HeadConfig(kind=head_kind)
    if head_kind == "mlp":
        c1, c2 = st.columns(2)
        head = dataclasses.replace(head, hidden=int(c1.number_input("Hidden units", 16, 4096, draft.model.head.hidden,
                                                                    key="mlp_hidden")),
                                   dropout=c2.slider("Dropout", 0.0, 0.8, draft.model.head.dropout, 0.05,
                                                     key="mlp_dropout"))
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
    fig = px.bar(frame, x="group", y="parameters", color="state", text="lr", log_y=True,
                 color_discrete_map={"trainable": "#2e7d32", "frozen": "#90a4ae"},
                 category_orders={"group": list(frame["group"])},
                 labels={"parameters": "parameters (log scale)"})
    fig.update_layout(height=320, margin={"l": 10, "r": 10, "t": 10, "b": 10})
    st.plotly_chart(fig, key="freeze_diagram")
    trainable = int(frame.loc[frame["state"] == "trainable", "parameters"].sum())
    total = int(frame["parameters"].sum())
    st.markdown(f"**{trainable:,} of {total:,} parameters will train{epoch_note}** "
                f"({trainable / max(total, 1):.1%}).", help="The head is always trainable.")
    spec = get_backbone(backbone)
    st.caption(f"Images are resized to {spec.preprocess.resize_size} px and cropped to "
               f"{spec.preprocess.crop_size} px, as {backbone}'s pretrained weights expect.")
    st.page_link("pages/3_train.py", label="Next: train", icon=":material/arrow_forward:")
