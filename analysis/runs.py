"""Load run records into one pandas DataFrame: one row per (run, epoch).

Two sources, one shape:
- `load_runs(dir)`: the local run store (every folder below `dir` with `config.yaml` and `metrics.csv`);
- `load_wandb_runs("entity/project")`: the W&B mirror of the same runs, through `wandb.Api()`.
Columns: `RUN_COLUMNS` (from each run's config and summary) + `METRIC_COLUMNS` (per epoch).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pandas as pd
import yaml

RUN_COLUMNS = ["run_id", "name", "panel", "arm", "series", "seed", "profile", "topology_start", "params_start", "params_final"]
METRIC_COLUMNS = ["epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc", "params", "nonzero", "keep_fraction", "n_splits",
                  "time_s"]
NOT_EXPORTED = (".pt", ".tmp", ".log")  # checkpoints, partial writes, Hydra's job logs


def run_meta(run_id: str, config: dict[str, Any], summary: dict[str, Any]) -> dict[str, Any]:
    """The per-run columns, from a run's config and summary (local or W&B alike)."""
    sizes = config.get("effective", {}).get("sizes")
    return {
        "run_id": run_id, "name": config.get("name"), "panel": config.get("panel"), "arm": config.get("arm"),
        "series": config.get("series") or config.get("arm"),
        "seed": config.get("seed"), "profile": (config.get("profile") or {}).get("name"),
        "topology_start": json.dumps(sizes) if sizes is not None else None,
        "params_start": summary.get("params_start"), "params_final": summary.get("params_final"),
    }


def _frame(rows: list[pd.DataFrame]) -> pd.DataFrame:
    if not rows:
        return pd.DataFrame(columns=RUN_COLUMNS + METRIC_COLUMNS)
    df = pd.concat(rows, ignore_index=True)
    df["epoch"] = df["epoch"].astype(int)
    return df.sort_values(["run_id", "epoch"], ignore_index=True)


def _with_meta(metrics: pd.DataFrame, meta: dict[str, Any]) -> pd.DataFrame:
    metrics = metrics.reindex(columns=METRIC_COLUMNS)
    for key in reversed(RUN_COLUMNS):
        metrics.insert(0, key, meta[key])
    return metrics


def run_dirs(root: str | Path, marker: str = "metrics.csv") -> list[Path]:
    """Folders below `root` (itself included) that hold a run record (`config.yaml` and `marker`)."""
    root = Path(root)
    found = (p.parent for p in root.rglob(marker) if (p.parent / "config.yaml").exists())
    return sorted(d for d in found if not any(part.startswith(".") for part in d.relative_to(root).parts))  # skip .hydra/


def load_runs(root: str | Path) -> pd.DataFrame:
    """All local run records below `root`."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"runs folder {root} does not exist")
    frames = []
    for run_dir in run_dirs(root):
        config = yaml.safe_load((run_dir / "config.yaml").read_text())
        summary_path = run_dir / "summary.json"
        summary = json.loads(summary_path.read_text()) if summary_path.exists() else {}
        meta = run_meta(run_dir.relative_to(root).as_posix(), config, summary)
        frames.append(_with_meta(pd.read_csv(run_dir / "metrics.csv"), meta))
    return _frame(frames)


def load_wandb_runs(path: str, api: Any = None, filters: dict | None = None) -> pd.DataFrame:
    """All runs of a W&B project `entity/project` (optionally filtered), in `load_runs`'s shape.

    `api` defaults to `wandb.Api()`; tests pass a recorded fake with the same methods.
    """
    if api is None:
        import wandb

        api = wandb.Api()
    frames = []
    for run in api.runs(path, filters=filters or {}):
        config = dict(run.config)
        meta = run_meta(f"{config.get('name')}/{config.get('run_name', run.name)}", config, dict(run.summary))
        history = pd.DataFrame(list(run.scan_history()))
        frames.append(_with_meta(history, meta))
    return _frame(frames)


def export_records(src: str | Path, dst: str | Path) -> int:
    """Copy the record files of every run below `src` (all its files but checkpoints and logs; no
    sub-folders such as wandb/) to the same place below `dst`."""
    src, dst = Path(src), Path(dst)
    found = run_dirs(src, marker="config.yaml") if src.is_dir() else []
    if not found:
        raise FileNotFoundError(f"no run records below {src}" + ("" if src.is_dir() else " (no such folder)"))
    count = 0
    for run_dir in found:
        target = dst / run_dir.relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for path in run_dir.iterdir():
            if path.is_file() and path.suffix not in NOT_EXPORTED and path.name != "wandb_id.txt":
                shutil.copyfile(path, target / path.name)
        count += 1
    return count
