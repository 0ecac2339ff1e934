"""The runner's side of the run folder (`rmt.runfolder` owns the files and how they are read and written): what a
folder already holds is checked before a run writes (`RunRecord.claim`), each session's environment goes to
`env.json`, and W&B mirrors the per-epoch scalars as a best-effort copy: any W&B failure is reported once and
mirroring stops, the local record is never affected.
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
import time
import warnings
from importlib import metadata
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from rmt.runfolder import ENV_JSON, RunFolder, atomic_write_text, run_kind


SLURM_FIELDS = ("job_id", "array_job_id", "array_task_id", "restart_count", "job_partition", "job_nodelist")  # env.json


def environment_info() -> dict[str, Any]:
    """Versions, git commit and device of the machine running the code; under SLURM also the job (array job and
    task ids, restart count after a requeue, partition, node)."""
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
        **({"slurm": {k: os.environ[f"SLURM_{k.upper()}"] for k in SLURM_FIELDS if f"SLURM_{k.upper()}" in os.environ}}
           if "SLURM_JOB_ID" in os.environ else {}),
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


class RunRecord(RunFolder):
    """The run folder a runner writes: `RunFolder`'s files, plus the check of what the folder holds (`claim`) and the
    environment of each session (`env.json`)."""

    def __init__(self, run_dir: str | Path):
        super().__init__(run_dir)
        self.dir.mkdir(parents=True, exist_ok=True)

    def claim(self, kind: str) -> dict | None:
        """Check, before anything is written, that this folder is free or holds a run of the same `kind` (the runner's
        name); returns the config found there.  A folder of another kind is refused (RunConfigError)."""
        from experiments.errors import RunConfigError

        found = self.config()
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
        self.began = time.monotonic()

    def write_summary(self, summary: dict) -> None:
        """The summary, with `wall_time_s` (seconds since `begin`) where the runner does not time itself: the run time
        that docs/REPRODUCTION.md reports for the record."""
        if "wall_time_s" not in summary and getattr(self, "began", None) is not None:
            summary = {**summary, "wall_time_s": round(time.monotonic() - self.began, 2)}
        super().write_summary(summary)

    def write_env(self, numerics: dict | None = None, resumed_after: int = 0) -> None:
        env = {**environment_info(), "started_after_epoch": resumed_after}
        if numerics:
            env.update(numerics=numerics, device=numerics["device"])  # the device this run used
        path = self.dir / ENV_JSON
        if resumed_after and path.exists():
            previous = json.loads(path.read_text())
            env["earlier"] = previous.pop("earlier", []) + [previous]
        atomic_write_text(path, json.dumps(env, indent=2))
