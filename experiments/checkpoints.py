"""Checkpoints of a run folder: atomic save with a fallback copy, safe load on the CPU.

A checkpoint is a plain dict (tensors, numbers, lists) loadable with `weights_only=True` on any
device: `epoch`, `model` (state dict), `model_spec` (`rmt.models.build_model(**spec)` rebuilds the
architecture), `splits` (the `(name, rank)` list that rebuilds a split architecture), `masks`
(weight name -> bool mask of unstructured pruning), `optimizer`, `fingerprint`, `numerics`
(device, threads, dtype), `elapsed_s`.  `rmt.models.model_from_checkpoint(ckpt)` rebuilds the model.
"""

from __future__ import annotations

import io
import os
import sys
from pathlib import Path

import torch

from rmt.io import CheckpointFileError, read_checkpoint
from rmt.runfolder import CHECKPOINT, CHECKPOINT_PREV, atomic_write_bytes


class CheckpointUnreadableError(RuntimeError):
    """Every checkpoint of a run folder is truncated or corrupt."""


def atomic_torch_save(obj: object, path: Path) -> None:
    """`torch.save` that leaves the old file or the new one, never part of one (`rmt.runfolder.atomic_write_bytes`)."""
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    atomic_write_bytes(path, buffer.getvalue())


def save_checkpoint(run_dir: Path, state: dict) -> None:
    """Atomic write; the previous checkpoint is kept as a fallback."""
    path, prev, tmp = run_dir / CHECKPOINT, run_dir / CHECKPOINT_PREV, run_dir / (CHECKPOINT + ".tmp")
    with tmp.open("wb") as fh:
        torch.save(state, fh)
        fh.flush()
        os.fsync(fh.fileno())
    if path.exists():
        os.replace(path, prev)
    os.replace(tmp, path)


def load_checkpoint(run_dir: Path) -> dict | None:
    """Newest readable checkpoint (falls back to the previous one if the newest is corrupt); None if there is none."""
    errors = []
    for path in (run_dir / CHECKPOINT, run_dir / CHECKPOINT_PREV):
        if not path.exists():
            continue
        try:
            ckpt = read_checkpoint(path)
        except CheckpointFileError as exc:
            errors.append(str(exc).replace(f"{path}", path.name))
            continue
        if errors:  # the newest was unreadable and this older one was not
            print(f"warning: {errors[0]}; using {path.name} (one epoch older)", file=sys.stderr)
        return ckpt
    if errors:
        raise CheckpointUnreadableError(
            f"no readable checkpoint in {run_dir} ({'; '.join(errors)}). Delete checkpoint.pt and checkpoint.prev.pt there "
            f"to restart this run from scratch, or point to another run folder.")
    return None
