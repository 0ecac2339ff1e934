"""Run store: the durable record of one run, with W&B as a best-effort mirror.

A run directory holds
- `config.yaml`   the resolved config plus the `effective` settings the profile produced;
- `env.json`      package versions, git commit, device and numerics (earlier sessions of a resumed run in `earlier`);
- `metrics.jsonl` / `metrics.csv`  one row per epoch (scalars);
- `layers.csv`    one row per layer and epoch (rank, sigma_plus, bulk fraction, GoF, split, ...);
- `summary.json`  final numbers, written when the run ends;
- `spectra.csv`   singular values of every layer of the final model (for ESD figures);
- `checkpoint.pt` (+ `checkpoint.prev.pt`) the last two epochs' state.
W&B gets the same scalars; any W&B failure is reported once and mirroring stops, the
local record is never affected.
"""

from __future__ import annotations

import csv
import json
import netrc
import os
import platform
import secrets
import socket
import subprocess
import sys
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any

import yaml

METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
LAYERS_CSV = "layers.csv"
SUMMARY_JSON = "summary.json"
SPECTRA_CSV = "spectra.csv"
CONFIG_YAML = "config.yaml"
ENV_JSON = "env.json"


def environment_info() -> dict[str, Any]:
    """Versions, git commit and device of the machine running the code."""
    import torch

    versions = {}
    for pkg in ("torch", "torchvision", "numpy", "scipy", "hydra-core", "omegaconf", "wandb", "pandas", "timm"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    repo = Path(__file__).resolve().parent.parent

    def git(*args: str) -> str | None:
        try:
            return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    cuda = torch.cuda.is_available()
    return {
        "python": sys.version.split()[0], "packages": versions, "git_commit": git("rev-parse", "HEAD"),
        "git_dirty": bool(git("status", "--porcelain", "--untracked-files=no")), "hostname": socket.gethostname(),
        "platform": platform.platform(), "processor": platform.processor() or platform.machine(),
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",  # present; a run records what it used "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def wandb_logged_in() -> bool:
    """True when W&B credentials are configured (API key in the environment or ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    host = os.environ.get("WANDB_BASE_URL", "https://api.wandb.ai").split("://")[-1].split("/")[0]
    try:
        return netrc.netrc().authenticators(host) is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_wandb_mode(mode: str) -> str:
    """`auto` -> `online` when logged in, else `offline`; other modes pass through after a check."""
    if mode not in ("auto", "online", "offline", "disabled"):
        raise ValueError(f"logger.mode must be auto, online, offline or disabled; got {mode!r}")
    if mode == "auto":
        return "online" if wandb_logged_in() else "offline"
    return mode


class WandbMirror:
    """Best-effort W&B mirror: every call is guarded; the first failure disables it with one warning."""

    def __init__(self, run_dir: Path, mode: str, project: str, entity: str | None, group: str | None,
                 name: str, config: dict, tags: list[str] | None = None):
        self.run = None
        if mode == "disabled":
            return
        id_file = run_dir / "wandb_id.txt"
        try:
            import wandb

            run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
            id_file.write_text(run_id)
            self.run = wandb.init(project=project, entity=entity, group=group, name=name, config=config, tags=tags,
                                  dir=str(run_dir), mode=mode, id=run_id, resume="allow", reinit="finish_previous")
            if mode == "offline":
                print(f"W&B offline: sync later with `wandb sync {run_dir / 'wandb'}`", file=sys.stderr)
        except Exception as exc:  # W&B must never take the run down
            self._fail(exc)

    def _fail(self, exc: Exception) -> None:
        warnings.warn(f"W&B mirroring disabled ({type(exc).__name__}: {exc}); the local run record is unaffected", stacklevel=3)
        self.run = None

    def log(self, row: dict, step: int) -> None:
        if self.run is not None:
            try:
                self.run.log(row, step=step)
            except Exception as exc:
                self._fail(exc)

    def finish(self, summary: dict) -> None:
        if self.run is not None:
            try:
                self.run.summary.update(summary)
                self.run.finish()
            except Exception as exc:
                self._fail(exc)


class RunRecord:
    """Writes one run's record files; `truncate(epoch)` drops rows after a resumed checkpoint."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)

    def begin(self, config: dict, numerics: dict | None = None, resumed_after: int = 0) -> None:
        """Write the resolved config and the environment: the first two files of every record.

        `numerics` (device, threads, dtype) go into `env.json`; on a resume (`resumed_after` > 0) the
        earlier sessions' environments are kept in its `earlier` list, each with the epoch it started after."""
        self.write_config(config)
        self.write_env(numerics, resumed_after)

    def write_config(self, config: dict) -> None:
        (self.dir / CONFIG_YAML).write_text(yaml.safe_dump(config, sort_keys=False))

    def write_env(self, numerics: dict | None = None, resumed_after: int = 0) -> None:
        env = {**environment_info(), "started_after_epoch": resumed_after}
        if numerics:
            env.update(numerics=numerics, device=numerics["device"])  # the device this run used
        path = self.dir / ENV_JSON
        if resumed_after and path.exists():
            previous = json.loads(path.read_text())
            env["earlier"] = previous.pop("earlier", []) + [previous]
        path.write_text(json.dumps(env, indent=2))

    def read_rows(self) -> list[dict]:
        path = self.dir / METRICS_JSONL
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]

    def truncate(self, last_epoch: int) -> None:
        """Keep only rows of epochs `<= last_epoch` in every per-epoch file."""
        rows = [r for r in self.read_rows() if r["epoch"] <= last_epoch]
        (self.dir / METRICS_JSONL).write_text("".join(json.dumps(r) + "\n" for r in rows))
        self._rewrite_csv(METRICS_CSV, rows)
        layers_path = self.dir / LAYERS_CSV
        if layers_path.exists():
            with layers_path.open() as fh:
                layer_rows = [r for r in csv.DictReader(fh) if int(r["epoch"]) <= last_epoch]
            self._rewrite_csv(LAYERS_CSV, layer_rows)

    def _rewrite_csv(self, name: str, rows: list[dict], columns: list[str] | None = None) -> None:
        path = self.dir / name
        if not rows:
            path.unlink(missing_ok=True)
            return
        with path.open("w", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns or list(dict.fromkeys(k for row in rows for k in row)))
            writer.writeheader()
            writer.writerows(rows)

    def _append_csv(self, name: str, rows: list[dict]) -> None:
        """Append rows; when they bring new columns, the file is rewritten with the union of columns."""
        if not rows:
            return
        path = self.dir / name
        columns = list(dict.fromkeys(k for row in rows for k in row))
        if path.exists():
            with path.open(newline="") as fh:
                header = next(csv.reader(fh), [])
            if not set(columns) <= set(header):
                with path.open(newline="") as fh:
                    old = list(csv.DictReader(fh))
                self._rewrite_csv(name, old + rows, list(dict.fromkeys([*header, *columns])))
                return
            columns = header
        new = not path.exists()
        with path.open("a", newline="") as fh:
            writer = csv.DictWriter(fh, fieldnames=columns)
            if new:
                writer.writeheader()
            writer.writerows(rows)

    def log_epoch(self, row: dict, layers: list[dict]) -> None:
        with (self.dir / METRICS_JSONL).open("a") as fh:
            fh.write(json.dumps(row) + "\n")
        self._append_csv(METRICS_CSV, [row])
        self._append_csv(LAYERS_CSV, [{"epoch": row["epoch"], **layer} for layer in layers])

    def write_spectra(self, rows: list[dict]) -> None:
        self._rewrite_csv(SPECTRA_CSV, rows)

    def write_summary(self, summary: dict) -> None:
        (self.dir / SUMMARY_JSON).write_text(json.dumps(summary, indent=2))
