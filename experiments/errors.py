"""User errors of the runners: each ends the command with one readable line instead of a traceback."""

from __future__ import annotations

from experiments.checkpoints import CheckpointUnreadableError
from experiments.data import DataUnavailableError
from rmt.io import CheckpointFileError
from rmt.models import WeightsUnavailableError


class RunConfigError(ValueError):
    """A setting is unusable, or the run directory holds a run made with other settings or numerics."""


USER_ERRORS = (DataUnavailableError, RunConfigError, FileNotFoundError, WeightsUnavailableError, CheckpointUnreadableError,
               CheckpointFileError)
