"""One training epoch over an in-memory split with the training step captured as a CUDA graph.

A step (forward, backward, L1 / clip, optimizer step, masks, the epoch's loss and accuracy sums) launches ~100
small kernels; at Fig. 1 sizes on a GPU their launches, not their arithmetic, set the epoch time.  Here the step
is captured once per epoch for the full batch shape and replayed per batch: one index copy and one graph launch.

Conventions:
- The graph is captured afresh every epoch: the learning rate is a Python float the optimizer bakes into its
  kernels, and a pruning step between epochs changes shapes, parameters and masks.  A capture costs milliseconds.
  The previous graph, its memory pool and the gradients allocated in it are released before the next capture,
  so GPU memory stays flat however often shapes change.
- The first `WARMUP_STEPS` batches of an epoch run eagerly on a side stream (real training steps: they create
  lazy state such as momentum buffers and library workspaces before capture); the last partial batch runs
  eagerly too.  Eager and graphed steps run the same kernels on the same numbers.
- A failed capture (an operation that cannot be captured, e.g. a host sync in a custom model) falls back to the
  eager loop for the rest of the run with one warning; the batch whose capture failed is then run eagerly.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

from experiments.errors import RunConfigError

WARMUP_STEPS = 2

StepFn = Callable[[torch.Tensor, torch.Tensor], None]


class CaptureFailed(RuntimeError):
    """The step could not be captured; the caller continues eagerly."""


class GraphedEpoch:
    """Run the batches of one epoch through `step(x, y)`: warm-up and the last partial batch eagerly, the rest as
    replays of one captured step.  `zero_grad()` sets the gradients to None (called before each eager step and
    before capture; a replay overwrites the gradients it allocated during capture)."""

    def __init__(self, step: StepFn, zero_grad: Callable[[], None], x: torch.Tensor, y: torch.Tensor, batch_size: int):
        self.step, self.zero_grad, self.x, self.y, self.batch_size = step, zero_grad, x, y, batch_size
        self.graph: torch.cuda.CUDAGraph | None = None
        self.static_idx = torch.empty(batch_size, dtype=torch.long, device=x.device)

    def eager(self, idx: torch.Tensor) -> None:
        self.zero_grad()
        self.step(self.x[idx], self.y[idx])

    def capture(self) -> None:
        self.zero_grad()  # gradients are allocated in the graph's pool during capture
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self.step(self.x[self.static_idx], self.y[self.static_idx])
        except Exception as err:  # noqa: BLE001 - any capture failure means: run eagerly
            self.zero_grad()
            raise CaptureFailed(f"{type(err).__name__}: {err}".splitlines()[0]) from err
        self.graph = graph

    def run(self, order: torch.Tensor, on_batch: Callable[[], None]) -> str | None:
        """All batches of `order` (indices on the data's device); `on_batch()` after each (progress).  Returns None,
        or why the capture failed (every batch then ran eagerly)."""
        n, bs = len(order), self.batch_size
        starts = list(range(0, n, bs))
        device = self.x.device
        side = torch.cuda.Stream(device=device)
        side.wait_stream(torch.cuda.current_stream(device))
        warmup = starts[:WARMUP_STEPS]
        with torch.cuda.stream(side):  # warm-up on a side stream, as capture requires
            for start in warmup:
                self.eager(order[start:start + bs])
                on_batch()
        torch.cuda.current_stream(device).wait_stream(side)
        rest = starts[len(warmup):]
        full = [s for s in rest if s + bs <= n]
        failure = None
        if full:
            try:
                self.capture()
            except CaptureFailed as err:
                failure = str(err)
        for start in rest:
            if self.graph is not None and start + bs <= n:
                self.static_idx.copy_(order[start:start + bs])
                self.graph.replay()
            else:  # the last partial batch, or every batch after a failed capture
                self.eager(order[start:start + bs])
            on_batch()
        self.release()
        return failure

    def release(self) -> None:
        """Free the graph and its pool (gradients from the pool are dropped first)."""
        self.zero_grad()
        if self.graph is not None:
            self.graph.reset()
            self.graph = None


def cuda_graph_setting(value: object) -> str | bool:
    """`train.cuda_graph` checked: `auto`, true or false (else one RunConfigError line)."""
    if value in ("auto", True, False):
        return value
    raise RunConfigError(f"train.cuda_graph must be auto, true or false; got {value!r}")


def graphs_usable(device: torch.device, in_memory: bool, setting: str | bool) -> bool:
    """`auto` = on for CUDA with in-memory data; true asks for it (refused elsewhere); false = off."""
    if setting is False:
        return False
    usable = device.type == "cuda" and in_memory
    if setting is True and not usable:
        raise RunConfigError(f"train.cuda_graph=true needs a CUDA device and an in-memory dataset (device {device}, "
                             f"in-memory data: {in_memory}); use train.cuda_graph=auto")
    return usable


def warn_fallback(reason: str) -> None:
    warnings.warn(f"CUDA-graph capture of the training step failed ({reason}); training on eagerly (same numbers, slower)",
                  RuntimeWarning, stacklevel=2)
