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

import json
import netrc
import os
import platform
import secrets
import socket
import subprocess
import sys
import threading
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import yaml

from rmt.runfolder import (
    CONFIG_YAML,
    ENV_JSON,
    LAYERS_CSV,
    METRICS_CSV,
    METRICS_JSONL,
    SPECTRA_CSV,
    SUMMARY_JSON,
    append_line,
    atomic_write_text,
    csv_text,
    read_csv_header,
    read_csv_rows,
    read_config,
    read_jsonl,
    run_kind,
)


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
        "device": torch.cuda.get_device_name(0) if cuda else "cpu",  # present; a run records what it used
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
    }


def wandb_server() -> str:
    """The W&B server's URL: `$WANDB_BASE_URL`, else wandb's default."""
    if os.environ.get("WANDB_BASE_URL"):
        return os.environ["WANDB_BASE_URL"]
    import wandb

    return str(wandb.Settings().base_url)


def wandb_logged_in() -> bool:
    """True when W&B credentials are configured (API key in the environment or ~/.netrc)."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return netrc.netrc().authenticators(urlsplit(wandb_server()).hostname or "") is not None
    except (OSError, netrc.NetrcParseError):
        return False


def resolve_wandb_mode(mode: str) -> str:
    """`auto` -> `online` when logged in, else `offline`; other modes pass through after a check."""
    if mode not in ("auto", "online", "offline", "disabled"):
        raise ValueError(f"logger.mode must be auto, online, offline or disabled; got {mode!r}")
    if mode == "auto":
        return "online" if wandb_logged_in() else "offline"
    return mode


PROBE_TIMEOUT_S = 3.0  # a reachable server answers a TCP connect in well under a second


def server_unreachable(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """None when a TCP connection to `url`'s host opens within `timeout` seconds (name lookup included), else why
    not.  The lookup runs in a daemon thread, so a resolver that never answers cannot hold the run."""
    parts = urlsplit(url)
    host, port = parts.hostname, parts.port or (443 if parts.scheme == "https" else 80)
    if not host:
        return f"no host in {url!r}"
    outcome: list[str | None] = []

    def connect() -> None:
        try:
            socket.create_connection((host, port), timeout=timeout).close()
            outcome.append(None)
        except OSError as exc:
            outcome.append(f"{type(exc).__name__}: {exc}")

    probe = threading.Thread(target=connect, daemon=True)
    probe.start()
    probe.join(timeout)
    return outcome[0] if outcome else f"no answer from {host}:{port} within {timeout:g} s"


class WandbMirror:
    """Best-effort W&B mirror of one run; W&B's own console output is silenced, one line says where the run went.

    `online` first checks that the server answers (<= `PROBE_TIMEOUT_S`); when it does not, or `wandb.init` fails,
    the run is logged offline with the `wandb sync` command to upload it later.  Any later failure disables the
    mirror with one warning; the local record is never affected."""

    def __init__(self, run_dir: Path, mode: str, project: str, entity: str | None, group: str | None,
                 name: str, config: dict, tags: list[str] | None = None):
        self.run = None
        if mode == "disabled":
            return
        id_file = run_dir / "wandb_id.txt"
        sync_hint = f"sync later with `wandb sync {run_dir / 'wandb'}`"
        os.environ.setdefault("WANDB_SILENT", "true")  # W&B's own console lines (login, sync hints), unless asked for
        try:
            import wandb

            run_id = id_file.read_text().strip() if id_file.exists() else secrets.token_hex(4)
            atomic_write_text(id_file, run_id)

            def init(mode: str):
                return wandb.init(project=project, entity=entity, group=group, name=name, config=config, tags=tags,
                                  dir=str(run_dir), mode=mode, id=run_id, resume="allow", reinit="finish_previous",
                                  settings=wandb.Settings(silent=True, init_timeout=30))

            if mode == "online":
                server = wandb_server()
                why = server_unreachable(server)
                if why is None:
                    try:
                        self.run = init("online")
                        print(f"W&B: {self.run.url}", file=sys.stderr)
                        return
                    except Exception as exc:  # the server answered but the run could not start there
                        why = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                        wandb.teardown()  # release the half-started run, so its id can be logged offline
                    print(f"W&B: could not start the run at {server} ({why}); logging offline, {sync_hint}", file=sys.stderr)
                else:
                    print(f"W&B: cannot reach {server} ({why}); logging offline, {sync_hint}", file=sys.stderr)
            else:
                print(f"W&B offline: {sync_hint}", file=sys.stderr)
            self.run = init("offline")
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

    def claim(self, kind: str) -> dict | None:
        """Check, before anything is written, that this folder is free or holds a run of the same `kind` (the runner's
        name); returns the config found there.  A folder of another kind is refused (RunConfigError)."""
        from experiments.errors import RunConfigError

        found = read_config(self.dir)
        found_kind = run_kind(found)
        if found_kind is not None and found_kind != kind:
            raise RunConfigError(f"{self.dir} holds a {found_kind} run; a {kind} run does not write into it. "
                                 f"Give this run another run_name or hydra.run.dir")
        return found

    def begin(self, config: dict, kind: str, numerics: dict | None = None, resumed_after: int = 0) -> None:
        """Write the resolved config (with its `kind`) and the environment: the first two files of every record.

        `numerics` (device, threads, dtype) go into `env.json`; on a resume (`resumed_after` > 0) the
        earlier sessions' environments are kept in its `earlier` list, each with the epoch it started after."""
        self.write_config({"kind": kind, **config})
        self.write_env(numerics, resumed_after)

    def write_config(self, config: dict) -> None:
        atomic_write_text(self.dir / CONFIG_YAML, yaml.safe_dump(config, sort_keys=False))

    def write_env(self, numerics: dict | None = None, resumed_after: int = 0) -> None:
        env = {**environment_info(), "started_after_epoch": resumed_after}
        if numerics:
            env.update(numerics=numerics, device=numerics["device"])  # the device this run used
        path = self.dir / ENV_JSON
        if resumed_after and path.exists():
            previous = json.loads(path.read_text())
            env["earlier"] = previous.pop("earlier", []) + [previous]
        atomic_write_text(path, json.dumps(env, indent=2))

    def read_rows(self) -> list[dict]:
        """The per-epoch rows of metrics.jsonl (a row cut off by a kill is dropped, said once)."""
        return read_jsonl(self.dir / METRICS_JSONL)

    def truncate(self, last_epoch: int) -> None:
        """Keep only whole rows of epochs `<= last_epoch` in every per-epoch file (each rewritten atomically)."""
        rows = [r for r in self.read_rows() if r["epoch"] <= last_epoch]
        if rows or (self.dir / METRICS_JSONL).exists():
            atomic_write_text(self.dir / METRICS_JSONL, "".join(json.dumps(r) + "\n" for r in rows))
        self._rewrite_csv(METRICS_CSV, rows)
        header, layer_rows = read_csv_rows(self.dir / LAYERS_CSV)
        if header:
            kept = [r for r in layer_rows if r.get("epoch") and int(r["epoch"]) <= last_epoch]
            self._rewrite_csv(LAYERS_CSV, kept, header)

    def _rewrite_csv(self, name: str, rows: list[dict], columns: list[str] | None = None) -> None:
        path = self.dir / name
        if not rows:
            path.unlink(missing_ok=True)
            return
        atomic_write_text(path, csv_text(rows, columns))

    def _append_csv(self, name: str, rows: list[dict]) -> None:
        """Append rows; when they bring new columns, the file is rewritten (atomically) with the union of columns."""
        if not rows:
            return
        path = self.dir / name
        columns = list(dict.fromkeys(k for row in rows for k in row))
        header = read_csv_header(path)
        if not header or not set(columns) <= set(header):
            header, old = read_csv_rows(path)
            self._rewrite_csv(name, old + rows, list(dict.fromkeys([*header, *columns])))
            return
        for line in csv_text(rows, header).splitlines()[1:]:
            append_line(path, line)

    def log_epoch(self, row: dict, layers: list[dict]) -> None:
        append_line(self.dir / METRICS_JSONL, json.dumps(row))
        self._append_csv(METRICS_CSV, [row])
        self._append_csv(LAYERS_CSV, [{"epoch": row["epoch"], **layer} for layer in layers])

    def discard_results(self) -> None:
        """Remove what a finished run writes at its end (summary, final spectra) before the run goes on."""
        for name in (SUMMARY_JSON, SPECTRA_CSV):
            (self.dir / name).unlink(missing_ok=True)

    def write_spectra(self, rows: list[dict]) -> None:
        self._rewrite_csv(SPECTRA_CSV, rows)

    def write_summary(self, summary: dict) -> None:
        atomic_write_text(self.dir / SUMMARY_JSON, json.dumps(summary, indent=2))

    def write_frame(self, name: str, frame) -> None:
        """A table of the record (a pandas DataFrame) as `name`, written atomically."""
        atomic_write_text(self.dir / name, frame.to_csv(index=False))

    def write_json(self, name: str, data: dict) -> None:
        atomic_write_text(self.dir / name, json.dumps(data, indent=2))
