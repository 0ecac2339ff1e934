"""User errors of the runners: each ends the command with one readable line instead of a traceback."""

from __future__ import annotations

from experiments.checkpoints import CheckpointUnreadableError
from experiments.data import DataUnavailableError
from rmt.io import CheckpointFileError
from rmt.models import UnknownModelError, WeightsUnavailableError


class RunConfigError(ValueError):
    """A setting is unusable, or the run directory holds a run made with other settings or numerics."""


# Besides the suite's own: paths that are missing, not writable, or a file where a folder is needed (and back).
USER_ERRORS = (DataUnavailableError, RunConfigError, WeightsUnavailableError, UnknownModelError, CheckpointUnreadableError, CheckpointFileError,
               FileNotFoundError, PermissionError, NotADirectoryError, IsADirectoryError, FileExistsError)
