"""Runs: re-run, edit and run, resume, stop, rename and delete runs; delete datasets; the class
leaderboard when the teacher turns it on."""

import streamlit as st

from tl_core.classroom import teacher as classroom
from tl_ui import get_state, intro, project_views, run_manager, start_page, teacher_views

start_page()  # opened without app.py (a deep link, first after a restart): becomes app.py's run
state = get_state()

intro(
    "Runs",
    "Every run you trained, by name. Train one again with the same settings, change a few of them "
    "first, train a stopped run on, give it a clearer name, or delete what you no longer need.",
    """
**Re-run** trains the exact saved settings again, as a new run: with the same seed it should land
close to the first one; how close tells you how much of a difference between two runs is chance.
**Edit and run** loads the settings into the Model and Train pages, so you change *one* thing and
compare. **Resume** continues a stopped or failed run from its last saved epoch.

A run without a name is labelled by what it is: backbone · strategy · head · learning rate.
From a terminal: `python -m tl_core runs`, `python -m tl_core train --config RUN_FOLDER`,
`python -m tl_core stop RUN`.
""")

project_views.render(state)  # first: a project opened here is in the lists below at once
run_manager.render_runs(state)
st.subheader("Datasets")
run_manager.render_datasets(state)

if classroom.leaderboard_visible():  # the teacher turns it on (Teacher page)
    st.subheader("Class leaderboard")
    st.caption("Everyone's runs on a dataset the teacher shared, best validation accuracy first. "
               "Set the name shown for you in the sidebar.")
    teacher_views.render_leaderboard("runs")
