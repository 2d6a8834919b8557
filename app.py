"""TL Studio: page config, sidebar and the list of pages. Each page is a thin script in pages/."""

import streamlit as st

from tl_ui import gc_schedule, get_state, sidebar
from tl_ui.feedback import page_area

st.set_page_config(page_title="TL Studio", page_icon=":material/school:", layout="wide")

# Every page is listed here (st.navigation turns off the automatic pages/ discovery). Until it has run
# once in a server process, Streamlit may run a deep link's page file alone: each page's first call,
# tl_ui.start_page(), then runs this file instead, so these pages stay the only list.
PAGES = [
    st.Page("pages/1_data.py", title="1 · Data", icon=":material/photo_library:", url_path="data",
            default=True),
    st.Page("pages/2_model.py", title="2 · Model", icon=":material/neurology:", url_path="model"),
    st.Page("pages/3_train.py", title="3 · Train", icon=":material/model_training:", url_path="train"),
    st.Page("pages/8_compare.py", title="Compare strategies", icon=":material/compare_arrows:",
            url_path="compare"),
    st.Page("pages/4_results.py", title="4 · Results", icon=":material/insights:", url_path="results"),
    st.Page("pages/5_predict.py", title="5 · Predict", icon=":material/image_search:", url_path="predict"),
    st.Page("pages/6_export.py", title="6 · Export", icon=":material/package_2:", url_path="export"),
    st.Page("pages/7_runs.py", title="Runs", icon=":material/folder_managed:", url_path="runs"),
    st.Page("pages/9_teacher.py", title="Teacher", icon=":material/supervisor_account:", url_path="teacher"),
]

page = st.navigation(PAGES)
state = get_state()
gc_schedule.start_schedule()  # once per process: see .streamlit/config.toml [runner]
try:
    with page_area():  # a page ends early with end_page(): st.stop() would drop the sidebar below
        page.run()
finally:  # drawn after the page, so it shows what the page just changed
    sidebar.render(state)
