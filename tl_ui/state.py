"""The one session-state object of the app, and the ids it keeps in the URL.

Every browser session works in its own sub-workspace (``Workspace.default().for_session(id)``),
so on a shared classroom server one student's uploads and runs are not listed to another. The
session id, the current dataset, run and experiment live in ``st.query_params`` (``s``,
``dataset``, ``run``, ``experiment``): a refresh or a shared link comes back to the same place, while a new
tab without them starts a fresh workspace, unless the server holds ``max_sessions`` workspaces
already (``tl_core.limits``): then the visitor is told so, while links to existing ones keep working.
The session id is 16 random bytes: the link is the key to its workspace, so it must not be
guessable. ``get_state`` also starts the server's cache cleanup (``tl_core.classroom.cleanup``), once per process.
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass, field
from typing import Any

import streamlit as st

from tl_core import limits
from tl_core.classroom import cleanup
from tl_core.classroom import teacher as classroom
from tl_core.config import DataConfig, RunConfig
from tl_core.errors import TLError
from tl_core.runs import DRAFT_FILE, Run, RunStore, read_draft, save_draft
from tl_core.workspace import Workspace, is_safe_id

from .feedback import end_page

_KEY = "tl_studio_state"


def default_draft() -> RunConfig:
    """The config's own defaults (mobilenet_v2: bundled weights, trains offline out of the box)."""
    return RunConfig(data=DataConfig(source=""))


@dataclass
class AppState:
    session_id: str
    dataset_id: str | None = None
    run_id: str | None = None
    experiment_id: str | None = None  # the Compare page's experiment (tl_core.experiments.store)
    # The choices carried from page to page until a run is started: the data, model, freeze and train
    # settings of the next run (its data.source is filled in at the start). Change it with edit_draft().
    draft: RunConfig = field(default_factory=default_draft)
    _saved_draft: dict | None = field(default=None, repr=False, compare=False)
    _persist: bool = field(default=False, repr=False, compare=False)  # on once loaded from disk
    # -- what the pages keep for this browser session only (never on disk) -------------------
    curves: dict = field(default_factory=dict, repr=False, compare=False)  # run id -> RunCurves read so far
    predict_batch: dict | None = field(default=None, repr=False, compare=False)  # Predict's last table
    snapshots_seen: set[str] = field(default_factory=set, repr=False, compare=False)  # webcam file ids kept
    upload_generation: dict[str, int] = field(default_factory=dict, repr=False, compare=False)  # class -> uploader
    upload_refused: dict[str, list[str]] = field(default_factory=dict, repr=False, compare=False)  # class -> why not kept
    weights_import_outcome: Any = field(default=None, repr=False, compare=False)  # the Model page's last import
    timm_check: Any = field(default=None, repr=False, compare=False)  # the Model page's last timm name checked
    similar_texts: Any = field(default=None, repr=False, compare=False)  # the Model page's last zero-shot text check
    pending_delete_run: str | None = field(default=None, repr=False, compare=False)  # awaits "delete for good"
    pending_delete_dataset: str | None = field(default=None, repr=False, compare=False)
    teacher_unlocked: bool = field(default=False, repr=False, compare=False)  # the right password was typed here
    pending_teacher_delete: tuple[str, str] | None = field(default=None, repr=False, compare=False)  # (what, session)
    display_name_error: str | None = field(default=None, repr=False, compare=False)  # the sidebar's last refusal
    last_fix: Any = field(default=None, repr=False, compare=False)  # tl_ui.fix_views: the last fix, shown with Undo
    label_issues: dict = field(default_factory=dict, repr=False, compare=False)  # run id -> (stamp, Results' mislabelled list)

    @property
    def workspace(self) -> Workspace:
        return Workspace.default().for_session(self.session_id)

    @property
    def runs(self) -> RunStore:
        return RunStore(self.workspace)

    def dataset_dir(self):
        """Folder of the current dataset (one of this workspace's, or one the teacher shared), or None."""
        if not self.dataset_id:
            return None
        path = self.workspace.datasets_dir / self.dataset_id
        if (path / "dataset.json").exists():
            return path
        return classroom.shared_dataset_dir(self.dataset_id)

    def dataset_is_shared(self) -> bool:
        """The current dataset is one the teacher shared: read-only here."""
        folder = self.dataset_dir()
        return folder is not None and classroom.is_shared_dataset(folder)

    def current_run(self) -> Run | None:
        if not self.run_id:
            return None
        try:
            return self.runs.get(self.run_id)
        except TLError:
            return None

    # -- the draft survives a refresh: kept in the session workspace, not only in memory ----------
    _CHOICES_FILE = DRAFT_FILE

    def edit_draft(self, **sections: Any) -> None:
        """Change parts of the draft and save it: a section is replaced by a config object
        (``freeze=plan``) or has some fields replaced by a dict (``data={"augment": "none"}``)."""
        changes = {}
        for section, value in sections.items():
            current = getattr(self.draft, section)
            changes[section] = dataclasses.replace(current, **value) if isinstance(value, dict) else value
        self.draft = dataclasses.replace(self.draft, **changes)
        if self._persist:
            self.save_choices()  # every page's change survives a refresh, with no call to forget

    def choices(self) -> dict:
        return self.draft.to_dict()

    def save_choices(self) -> None:
        """Write the draft when it changed."""
        choices = self.choices()
        if choices != self._saved_draft:
            try:
                save_draft(self.workspace, choices)
            except OSError:  # a full disk: the draft lives on in the session; the next change tries again
                return
            self._saved_draft = choices

    def load_choices(self) -> None:
        """Read the draft back; an old or damaged file leaves the defaults."""
        try:
            data = read_draft(self.workspace)
            if data:
                draft = RunConfig.from_dict(_from_flat_choices(data) if "backbone" in data else data)
                draft.check_choices()
                self.draft, self._saved_draft = draft, draft.to_dict()
        except (AttributeError, TypeError, ValueError, TLError):
            pass  # keep the defaults
        finally:
            self._persist = True

    def select_dataset(self, dataset_id: str | None) -> None:
        self.dataset_id = dataset_id
        sync_query_params(self)

    def select_run(self, run_id: str | None) -> None:
        self.run_id = run_id
        sync_query_params(self)

    def select_experiment(self, experiment_id: str | None) -> None:
        self.experiment_id = experiment_id
        sync_query_params(self)

    # -- widgets bound to the state ----------------------------------------------------------
    DATASET_PICK = "dataset_pick"  # the Data page's dataset box (a widget key lives in st.session_state)

    def dataset_pick_key(self) -> str:
        """Key for the box that picks the current dataset, set to follow the state (a dataset just
        added becomes current); pass ``on_change=state.take_dataset_pick``."""
        st.session_state[self.DATASET_PICK] = self.dataset_id
        return self.DATASET_PICK

    def take_dataset_pick(self) -> None:
        """The box's callback: the user's pick becomes current before the page is drawn again."""
        self.select_dataset(st.session_state[self.DATASET_PICK])

    DISPLAY_NAME = "display_name_input"  # the sidebar's "Your name" box

    def display_name_key(self) -> str:
        """Key for the display-name box, filled from the session's profile the first time; pass
        ``on_change=state.take_display_name``."""
        if self.DISPLAY_NAME not in st.session_state:
            st.session_state[self.DISPLAY_NAME] = classroom.display_name(self.workspace)
        return self.DISPLAY_NAME

    def take_display_name(self) -> None:
        """The box's callback: save the name (shown as typed, cleaned); a refused one leaves the old."""
        try:
            saved = classroom.set_display_name(self.workspace, st.session_state[self.DISPLAY_NAME])
        except TLError as exc:
            self.display_name_error = str(exc)
        else:
            st.session_state[self.DISPLAY_NAME] = saved
            self.display_name_error = None


def _from_flat_choices(old: dict) -> dict:
    """The choices file TL Studio wrote before the draft was a RunConfig, as RunConfig.to_dict()
    lays it out, so an upgrade keeps each user's choices."""
    data = {"source": ""}
    data.update({key: old[key] for key in ("val_fraction", "test_fraction", "split_seed", "augment") if key in old})
    return {"data": data, "freeze": old.get("freeze", {}), "train": old.get("train", {}),
            "model": {"backbone": old["backbone"], "head": old.get("head", {}),
                      "pretrained": bool(old.get("pretrained", True))}}


def _valid(value: str | None) -> str | None:
    return value if value and is_safe_id(value) else None


def get_state() -> AppState:
    """The session's state, created on first use from the URL (or fresh) and mirrored back to it."""
    cleanup.start_schedule()  # once per server process; a no-op after the first call
    state = st.session_state.get(_KEY)
    if state is None:
        params = st.query_params
        session_id = _valid(params.get("s"))
        if session_id is None or not Workspace.default().for_session(session_id).root.exists():
            _check_new_session()
        state = AppState(session_id=session_id or secrets.token_hex(16),
                         dataset_id=_valid(params.get("dataset")), run_id=_valid(params.get("run")),
                         experiment_id=_valid(params.get("experiment")))
        state.load_choices()
        st.session_state[_KEY] = state
    sync_query_params(state)
    return state


def _check_new_session() -> None:
    """A visitor without a workspace gets one only while the server has room (``max_sessions``);
    otherwise the page says so and ends (nothing is kept, so a later visit checks again)."""
    try:
        limits.check_new_session()
    except TLError as exc:  # LimitReached, or a settings file the teacher must fix (ConfigError)
        st.error("No new workspace can be opened on this server right now.", icon=":material/block:")
        st.text(str(exc))
        end_page()


def sync_query_params(state: AppState) -> None:
    """Write the ids into the URL (page switches clear it; writing only what changed)."""
    wanted = {"s": state.session_id, "dataset": state.dataset_id, "run": state.run_id,
              "experiment": state.experiment_id}
    for key, value in wanted.items():
        if value is None:
            if key in st.query_params:
                del st.query_params[key]
        elif st.query_params.get(key) != value:
            st.query_params[key] = value

