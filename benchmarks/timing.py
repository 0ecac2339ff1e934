"""The one timer of the benchmark scripts: wall time of a call, CUDA synchronised before and after."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import torch

T = TypeVar("T")


def timed(fn: Callable[[], T], device: torch.device) -> tuple[float, T]:
    """(seconds, result) of `fn()`; on a CUDA device the queued work before and inside the call is waited for."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t0 = time.perf_counter()
    out = fn()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - t0, out
