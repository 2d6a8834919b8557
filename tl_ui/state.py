"""The one session-state object of the app, and the ids it keeps in the URL.

Every browser session works in its own sub-workspace (``Workspace.default().for_session(id)``),
so on a shared classroom server one student's uploads and runs are not listed to another. The
session id, the current dataset and the current run live in ``st.query_params`` (``s``,
``dataset``, ``run``): a refresh or a shared link comes back to the same place, while a new
tab without them starts a fresh workspace.
"""

from __future__ import annotations

import dataclasses
import secrets
from dataclasses import dataclass, field

import streamlit as st

from tl_core import atomic
from tl_core.config import FreezePlan, HeadConfig, TrainConfig
from tl_core.errors import TLError
from tl_core.runs import Run, RunStore
from tl_core.workspace import Workspace, is_safe_id

_KEY = "tl_studio_state"
_PERSISTED = ("backbone", "freeze", "head", "val_fraction", "test_fraction", "split_seed", "train", "augment",
              "pretrained")
DEFAULT_BACKBONE = "mobilenet_v2"  # bundled weights: trains offline out of the box


@dataclass
class AppState:
    session_id: str
    dataset_id: str | None = None
    run_id: str | None = None
    # choices carried from page to page until a run is started
    backbone: str = DEFAULT_BACKBONE
    freeze: FreezePlan = field(default_factory=FreezePlan)
    head: HeadConfig = field(default_factory=HeadConfig)
    val_fraction: float = 0.2
    test_fraction: float = 0.0
    split_seed: int = 0
    train: TrainConfig = field(default_factory=TrainConfig)  # the Train page's settings
    augment: str = "light"
    pretrained: bool = True
    _saved_choices: dict | None = field(default=None, repr=False, compare=False)
    _persist: bool = field(default=False, repr=False, compare=False)  # on once loaded from disk
    # -- what the pages keep for this browser session only (never on disk) -------------------
    curves: dict = field(default_factory=dict, repr=False, compare=False)  # run id -> RunCurves read so far
    predict_batch: dict | None = field(default=None, repr=False, compare=False)  # Predict's last table
    snapshots_seen: set[str] = field(default_factory=set, repr=False, compare=False)  # webcam file ids kept
    upload_generation: dict[str, int] = field(default_factory=dict, repr=False, compare=False)  # class -> uploader

    def __setattr__(self, name: str, value) -> None:
        super().__setattr__(name, value)
        if name in _PERSISTED and self._persist:
            self.save_choices()  # every page's change survives a refresh, with no call to forget

    @property
    def workspace(self) -> Workspace:
        return Workspace.default().for_session(self.session_id)

    @property
    def runs(self) -> RunStore:
        return RunStore(self.workspace)

    def dataset_dir(self):
        """Folder of the current dataset, or None."""
        if not self.dataset_id:
            return None
        path = self.workspace.datasets_dir / self.dataset_id
        return path if (path / "dataset.json").exists() else None

    def current_run(self) -> Run | None:
        if not self.run_id:
            return None
        try:
            return self.runs.get(self.run_id)
        except TLError:
            return None

    # -- choices survive a refresh: kept in the session workspace, not only in memory --------
    _CHOICES_FILE = "choices.json"

    def choices(self) -> dict:
        return {"backbone": self.backbone, "freeze": dataclasses.asdict(self.freeze),
                "head": dataclasses.asdict(self.head), "val_fraction": self.val_fraction,
                "test_fraction": self.test_fraction, "split_seed": self.split_seed,
                "train": dataclasses.asdict(self.train), "augment": self.augment, "pretrained": self.pretrained}

    def save_choices(self) -> None:
        """Write the page-to-page choices when they changed."""
        choices = self.choices()
        if choices != self._saved_choices:
            atomic.write_json(self.workspace.root / self._CHOICES_FILE, choices)
            self._saved_choices = choices

    def load_choices(self) -> None:
        data = atomic.read_json(self.workspace.root / self._CHOICES_FILE)
        try:
            if not data:
                return
            from tl_core.config import RunConfig

            # RunConfig.from_dict already knows how to rebuild the typed freeze plan and head.
            cfg = RunConfig.from_dict({"data": {"source": ""}, "freeze": data["freeze"],
                                       "model": {"backbone": data["backbone"], "head": data["head"]},
                                       "train": data.get("train", {})})
            self.backbone, self.freeze, self.head = cfg.model.backbone, cfg.freeze, cfg.model.head
            self.train = cfg.train
            self.augment = data.get("augment", "light")
            self.pretrained = bool(data.get("pretrained", True))
            self.val_fraction = float(data["val_fraction"])
            self.test_fraction = float(data["test_fraction"])
            self.split_seed = int(data["split_seed"])
            self._saved_choices = self.choices()
        except (KeyError, TypeError, ValueError, TLError):
            pass  # an old or damaged file: keep the defaults
        finally:
            self._persist = True

    def select_dataset(self, dataset_id: str | None) -> None:
        self.dataset_id = dataset_id
        sync_query_params(self)

    def select_run(self, run_id: str | None) -> None:
        self.run_id = run_id
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


def _valid(value: str | None) -> str | None:
    return value if value and is_safe_id(value) else None


def get_state() -> AppState:
    """The session's state, created on first use from the URL (or fresh) and mirrored back to it."""
    state = st.session_state.get(_KEY)
    if state is None:
        params = st.query_params
        state = AppState(session_id=_valid(params.get("s")) or secrets.token_hex(8),
                         dataset_id=_valid(params.get("dataset")), run_id=_valid(params.get("run")))
        state.load_choices()
        st.session_state[_KEY] = state
    sync_query_params(state)
    return state


def sync_query_params(state: AppState) -> None:
    """Write the ids into the URL (page switches clear it; writing only what changed)."""
    wanted = {"s": state.session_id, "dataset": state.dataset_id, "run": state.run_id}
    for key, value in wanted.items():
        if value is None:
            if key in st.query_params:
                del st.query_params[key]
        elif st.query_params.get(key) != value:
            st.query_params[key] = value

