"""Checkpoints of a run folder: atomic save with a fallback copy, safe load on the CPU.

A checkpoint is a plain dict (tensors, numbers, lists) loadable with `weights_only=True` on any
device: `epoch`, `model` (state dict), `model_spec` (`rmt.models.build_model(**spec)` rebuilds the
architecture), `splits` (the `(name, rank)` list that rebuilds a split architecture), `masks`
(weight name -> bool mask of unstructured pruning), `optimizer`, `fingerprint`, `numerics`
(device, threads, dtype), `elapsed_s`.  `rmt.models.model_from_checkpoint(ckpt)` rebuilds the model.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch


def save_checkpoint(run_dir: Path, state: dict) -> None:
    """Atomic write; the previous checkpoint is kept as a fallback."""
    path, prev, tmp = run_dir / "checkpoint.pt", run_dir / "checkpoint.prev.pt", run_dir / "checkpoint.pt.tmp"
    torch.save(state, tmp)
    if path.exists():
        os.replace(path, prev)
    os.replace(tmp, path)


def load_checkpoint(run_dir: Path) -> dict | None:
    """Newest readable checkpoint (falls back to the previous one if the newest is corrupt); None if there is none."""
    errors = []
    for path in (run_dir / "checkpoint.pt", run_dir / "checkpoint.prev.pt"):
        if not path.exists():
            continue
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # truncated or corrupt file
            first_line = (str(exc).splitlines() or [""])[0][:100]
            errors.append(f"{path.name}: {type(exc).__name__}: {first_line}")
            print(f"warning: checkpoint {path} is unreadable ({type(exc).__name__}); trying an older one", file=sys.stderr)
    if errors:
        raise RuntimeError(f"no readable checkpoint in {run_dir} ({'; '.join(errors)}). "
                           f"Delete the checkpoint files to restart this run from scratch.")
    return None
