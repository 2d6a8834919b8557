"""The Train page's "GPUs for this run" choice (``TrainConfig.nproc``, see ``tl_core.training.distributed``)."""

from __future__ import annotations

import streamlit as st

from tl_core.jobs import launch as jobs


def gpus_for_run(value: int) -> int:
    """How many GPUs train the run together: a choice only on a machine with more than one GPU
    (elsewhere 1, shown nothing). ``value``: the draft's, kept within the machine's GPUs."""
    gpus = jobs.gpu_count()
    if gpus < 2:
        return 1
    return int(st.select_slider(
        "GPUs for this run", list(range(1, gpus + 1)), min(max(value, 1), gpus), key="nproc",
        help="One training process per GPU (DistributedDataParallel). The batch size stays the total per "
             "step, split across the GPUs, so the results match one GPU's; while this run trains, "
             "other runs wait for its GPUs."))
