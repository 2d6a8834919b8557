"""Errors a user can cause. Each message says what happened and what to do next.

The CLI prints ``str(error)`` as one line; the app shows it in ``st.error``. Anything that is
not a ``TLError`` is a bug and is reported as such.
"""

from __future__ import annotations


class TLError(Exception):
    """Base class: the message is written for the user, not for a developer."""


class DataError(TLError):
    """The dataset cannot be used as given (one class, no images, unsafe archive, ...)."""


class ConfigError(TLError):
    """A setting is invalid or unknown (unknown backbone, bad learning rate, ...)."""


class WeightsUnavailable(TLError):
    """Pretrained weights for a backbone are not on this machine and cannot be downloaded."""


class WeightsRejected(WeightsUnavailable):
    """A weights file offered to ``tl_core.model.weights.import_weights`` failed one of its checks
    (``check`` names which: "file name", "hash", "safe load" or "keys and shapes")."""

    def __init__(self, check: str, message: str) -> None:
        super().__init__(message)
        self.check = check


class RunNotFound(TLError):
    """A run id does not exist in the workspace."""


class CheckpointDamaged(TLError):
    """A run's checkpoint file cannot be read (cut short, overwritten, not a checkpoint) or does not
    fit the run's model."""


class ExperimentNotFound(TLError):
    """An experiment id does not exist in the workspace."""


class TrainingOutOfMemory(TLError):
    """The device ran out of memory even at the smallest batch size we tried."""


class JobError(TLError):
    """A background job could not be started, found or controlled."""


class DiskFull(TLError, OSError):
    """A file could not be written because the disk (or the user's quota) is full. Also an OSError,
    so code that handles failed writes in general handles this one too."""


class LimitReached(TLError):
    """A limit the server's settings set (``tl_core.settings``) would be passed: too many jobs,
    datasets, runs or sessions, or too much disk. ``setting`` names the limit; the message says
    what to do (delete something, wait, or ask the teacher)."""

    def __init__(self, setting: str, message: str) -> None:
        super().__init__(message)
        self.setting = setting


class NothingToUndo(DataError):
    """``tl_core.data.fixes.undo`` on a dataset whose current version no fix made (as imported)."""
