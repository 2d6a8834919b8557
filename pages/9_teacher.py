"""Teacher: every session's work, the queue, shared datasets and the leaderboard, behind a password."""

import streamlit as st

from tl_core.classroom import teacher as classroom
from tl_ui import end_page, get_state, start_page, teacher_views

start_page()  # opened without app.py (a deep link, first after a restart): becomes app.py's run
state = get_state()
st.title("Teacher")

if not classroom.teacher_enabled():
    st.info("The Teacher page is off on this server: no teacher password is set. Set one with the "
            "environment variable `TL_STUDIO_TEACHER_PASSWORD` or `teacher_password` in `settings.toml`, "
            "then restart TL Studio (README: *Running it for a class*, *The teacher's page*).",
            icon=":material/lock:")
    end_page()

if not state.teacher_unlocked:
    st.markdown("Sessions, the job queue, shared datasets and the class leaderboard. "
                "Students cannot open this page without the password.")
    teacher_views.login(state)
    end_page()

teacher_views.lock_button(state)
sessions = classroom.list_sessions()
teacher_views.render_sessions(state, sessions)
teacher_views.render_queue()
teacher_views.render_sharing(sessions)
teacher_views.render_leaderboard_switch()
