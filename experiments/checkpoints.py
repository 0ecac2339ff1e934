"""Checkpoints of a run folder: atomic save with a fallback copy, safe load, model rebuild.

A checkpoint is a plain dict (tensors, numbers, lists) loadable with `weights_only=True`:
`epoch`, `model` (state dict), `optimizer`, `splits` (the `(name, rank)` list that rebuilds
a split architecture), `fingerprint`, `elapsed_s`.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import torch
import yaml
from torch import nn

from rmt.models import model_from_record


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


def load_run_model(run_dir: str | Path) -> tuple[nn.Module, dict, dict]:
    """The trained model of a finished or interrupted run: (model in eval mode, config, checkpoint)."""
    run_dir = Path(run_dir)
    if not (run_dir / "config.yaml").exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no config.yaml)")
    config = yaml.safe_load((run_dir / "config.yaml").read_text())
    ckpt = load_checkpoint(run_dir)
    if ckpt is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint: the run has not finished an epoch")
    return model_from_record(config, ckpt).eval(), config, ckpt
