"""Load run records into one pandas DataFrame: one row per (run, epoch).

Two sources, one shape:
- `load_runs(dir)`: the local run store (every finished training record below `dir`, one per run);
- `load_wandb_runs("entity/project")`: the W&B mirror of the same runs, through `wandb.Api()`.
Columns: `RUN_COLUMNS` (from each run's config and summary) + `METRIC_COLUMNS` (per epoch).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import sys
from pathlib import Path
from typing import Any

import pandas as pd

from rmt.runfolder import CONFIG_YAML, LOCK_FILE, METRICS_CSV, SUMMARY_JSON, read_config, run_kind

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


def run_dirs(root: str | Path, marker: str = METRICS_CSV) -> list[Path]:
    """Folders below `root` (itself included) that hold a run record (`config.yaml` and `marker`)."""
    root = Path(root)
    found = (p.parent for p in root.rglob(marker) if (p.parent / CONFIG_YAML).exists())
    return sorted(d for d in found if not any(part.startswith(".") for part in d.relative_to(root).parts))  # skip .hydra/


def settings_digest(config: dict[str, Any]) -> str:
    """What makes two training runs the same run: their fingerprint, else their config without where it was written."""
    if config.get("fingerprint"):
        return str(config["fingerprint"])
    kept = {k: v for k, v in config.items() if k not in ("paths", "run_dir", "logger", "progress", "kind")}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def finished_records(root: str | Path, kind: str, needs: str | None = None) -> list[tuple[Path, dict]]:
    """(folder, config) of every finished record of runner `kind` below `root` (itself included).

    A folder without the file `needs` is left out; so is an unfinished run (no `summary.json`: a run still going, whose
    rows would count as a finished seed); both are named on stderr.  Two folders holding the same run (the same
    settings, e.g. an exported copy below the original) are refused with one ValueError naming both."""
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"runs folder {root} does not exist")
    found, seen, unfinished, incomplete = [], {}, [], []
    for run_dir in run_dirs(root, marker=CONFIG_YAML):
        config = read_config(run_dir) or {}
        if run_kind(config) != kind:
            continue
        run_id = run_dir.relative_to(root).as_posix()
        if needs is not None and not (run_dir / needs).exists():
            incomplete.append(run_id)
            continue
        digest = settings_digest(config)
        if digest in seen:
            raise ValueError(f"{root / seen[digest]} and {run_dir} hold the same run (identical settings; a copy?): "
                             f"a figure would count it twice. Remove one, or point --runs at one of them")
        seen[digest] = run_id
        if not (run_dir / SUMMARY_JSON).exists():
            unfinished.append(run_id)
            continue
        found.append((run_dir, config))
    if incomplete:
        print(f"note: left out {len(incomplete)} run folder(s) without {needs}: {', '.join(incomplete)}", file=sys.stderr)
    if unfinished:
        print(f"note: left out {len(unfinished)} unfinished run(s) (no summary.json yet): {', '.join(unfinished)}", file=sys.stderr)
    return found


def load_runs(root: str | Path) -> pd.DataFrame:
    """All finished local training records below `root`, one per run (`finished_records` of kind `train` with a
    `metrics.csv`)."""
    root = Path(root)
    frames = []
    for run_dir, config in finished_records(root, "train", needs=METRICS_CSV):
        meta = run_meta(run_dir.relative_to(root).as_posix(), config, json.loads((run_dir / SUMMARY_JSON).read_text()))
        frames.append(_with_meta(pd.read_csv(run_dir / METRICS_CSV), meta))
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
    if dst.exists() and not dst.is_dir():
        raise ValueError(f"--to {dst} is a file; export into a folder")
    if src.is_dir() and dst.resolve().is_relative_to(src.resolve()):
        raise ValueError(f"--to {dst} lies inside --runs {src}: the copies would be read as more runs; export elsewhere")
    found = run_dirs(src, marker=CONFIG_YAML) if src.is_dir() else []
    if not found:
        raise FileNotFoundError(f"no run records below {src}" + ("" if src.is_dir() else " (no such folder)"))
    count = 0
    for run_dir in found:
        target = dst / run_dir.relative_to(src)
        target.mkdir(parents=True, exist_ok=True)
        for path in run_dir.iterdir():
            if path.is_file() and path.suffix not in NOT_EXPORTED and path.name not in ("wandb_id.txt", LOCK_FILE):
                shutil.copyfile(path, target / path.name)
        count += 1
    return count
