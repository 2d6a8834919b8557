"""Streamlit helpers shared by the pages: one session-state object, feedback, charts, sidebar.

Nothing in here trains or decodes anything; that is ``tl_core``'s job.
"""

from . import sidebar
from .feedback import end_page, intro, start_page, user_errors
from .state import AppState, get_state

__all__ = ["AppState", "end_page", "sidebar", "get_state", "intro", "start_page", "user_errors"]
