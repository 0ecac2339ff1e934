"""User errors of the runners: each ends the command with one readable line instead of a traceback."""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import TypeVar

from experiments.checkpoints import CheckpointUnreadableError
from experiments.data import DataUnavailableError
from rmt.io import CheckpointFileError
from rmt.models import WeightsUnavailableError

T = TypeVar("T")


class RunConfigError(ValueError):
    """A setting is unusable, or the run directory holds a run made with other settings or numerics."""


USER_ERRORS = (DataUnavailableError, RunConfigError, FileNotFoundError, WeightsUnavailableError, CheckpointUnreadableError,
               CheckpointFileError)


def run_or_exit(run: Callable[..., T], *args, extra: tuple[type[Exception], ...] = ()) -> T:
    """`run(*args)`; a user error (missing data or runs, a clashing run folder) exits with `error: ...`."""
    try:
        return run(*args)
    except (*USER_ERRORS, *extra) as exc:
        sys.exit(f"error: {exc}")
