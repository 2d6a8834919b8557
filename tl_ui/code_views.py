"""'Show the code': the command line and the standalone PyTorch script behind a config (Train, Results)."""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from tl_core.cli.codegen import cli_command, standalone_script
from tl_core.config import RunConfig
from tl_core.errors import TLError

from .feedback import user_errors


@st.cache_data(max_entries=16, show_spinner=False)
def _dataset_classes(dataset_dir: str, modified_ns: int) -> list[str]:
    from tl_core.data import Dataset

    return list(Dataset.load(dataset_dir).classes)


def dataset_classes(dataset_dir: Path | None) -> list[str] | None:
    """The class names of an ingested dataset (read once per version of its dataset.json)."""
    if dataset_dir is None:
        return None
    try:
        return _dataset_classes(str(dataset_dir), (Path(dataset_dir) / "dataset.json").stat().st_mtime_ns)
    except (OSError, ValueError, TLError):  # no classes to name: the script reads them from the folder
        return None


def show_code(config: RunConfig, classes: list[str] | None, key: str, data_path: str | None = None) -> None:
    """The ``python -m tl_core train`` command and a standalone ``train.py`` for ``config``, both
    copyable (the copy button of ``st.code``), the script downloadable too. Names the user typed
    reach the code only quoted (shell quoting, ``repr``), and are shown in a code block, never as
    Markdown."""
    with user_errors("Could not write the code for these settings"):
        command = cli_command(config, data_path)
        script = standalone_script(config, classes)
        st.caption("The same run from a terminal, in this project's folder:")
        st.code(command, language="bash")
        st.caption("The same recipe as one PyTorch script that needs no TL Studio: the model, what is "
                   "frozen, the head, the optimiser and schedule, the augmentation and the split. Run it "
                   "with a folder holding one sub-folder of images per class.")
        st.download_button("Download train.py", script, file_name="train.py", mime="text/x-python",
                           key=f"{key}_download", on_click="ignore", icon=":material/download:")
        st.code(script, language="python", line_numbers=True, height=480)
