"""The runners under Hydra: the run folder is Hydra's output directory; a job that fails in a folder it created
leaves no folder behind (unless it saved state to resume from); a sweep runs every job and then lists each failed one; Hydra's own errors
(an unknown option, a malformed override) end the command with one line."""

from __future__ import annotations

import json
import shutil
import sys
import traceback
from pathlib import Path

from hydra.errors import HydraException, MissingConfigException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig

FAILED_JOBS = "failed_jobs.jsonl"  # in the sweep folder: one JSON line per failed job
FAILED_TRACEBACKS = "failed_jobs.log"  # in the sweep folder: tracebacks of failures that are not user errors
HYDRA_ONLY = {".hydra"}  # what Hydra writes into a job's folder before the job runs (plus the job's *.log)
RESUMABLE = ("checkpoint.pt", "checkpoint.prev.pt", "stages.json")  # a failed run that wrote these can go on later


def run_folder(output_dir: str | Path) -> Path:
    """Hydra's output directory as the run folder: relative to the working directory when inside it (so records
    name no machine's paths), else absolute."""
    path, cwd = Path(output_dir).resolve(), Path.cwd().resolve()
    return path.relative_to(cwd) if path.is_relative_to(cwd) else path


def holds_only_hydra_files(folder: Path) -> bool:
    """True when `folder` is absent or holds only what Hydra writes before a job (`.hydra/`, the job's log)."""
    return not folder.is_dir() or all(p.name in HYDRA_ONLY or (p.is_file() and p.suffix == ".log") for p in folder.iterdir())


def discard_failed_run(folder: Path, runs_root: str | Path | None = None) -> None:
    """After a job failed in a run folder it created: delete the folder unless it holds state to resume from
    (`RESUMABLE`), then the parents it leaves empty, up to `runs_root` (exclusive).  Nothing that looks like a run
    remains of a job that produced nothing."""
    if not folder.is_dir() or any((folder / name).exists() for name in RESUMABLE):
        return
    shutil.rmtree(folder)
    root = Path(runs_root).resolve() if runs_root else None
    parent = folder.resolve().parent
    while root is not None and parent != root and parent.is_relative_to(root) and not any(parent.iterdir()):
        parent.rmdir()
        parent = parent.parent


def record_failure(sweep_dir: str | Path, job: int, overrides: list[str], exc: BaseException, user_error: bool) -> str:
    """Append the failed job to the sweep's failure list (tracebacks of unexpected errors to their log); returns
    the line that reports it."""
    sweep_dir = Path(sweep_dir)
    sweep_dir.mkdir(parents=True, exist_ok=True)
    message = str(exc) if user_error else f"{type(exc).__name__}: {exc} (traceback in {sweep_dir / FAILED_TRACEBACKS})"
    if not user_error:
        with (sweep_dir / FAILED_TRACEBACKS).open("a") as log:
            log.write(f"job #{job} {' '.join(overrides)}\n{''.join(traceback.format_exception(exc))}\n")
    with (sweep_dir / FAILED_JOBS).open("a") as f:  # one short append per job: safe from parallel workers
        f.write(json.dumps({"job": job, "overrides": overrides, "error": message}) + "\n")
    return f"error: job #{job} ({' '.join(overrides)}): {message}"


class SweepReport(Callback):
    """After a sweep (every job has run), list each failed job with the overrides that reproduce it and exit 1."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        (Path(config.hydra.sweep.dir) / FAILED_JOBS).unlink(missing_ok=True)

    def on_multirun_end(self, config: DictConfig, **kwargs) -> None:
        path = Path(config.hydra.sweep.dir) / FAILED_JOBS
        if not path.exists():
            return
        failed = sorted((json.loads(line) for line in path.read_text().splitlines()), key=lambda f: f["job"])
        lines = [f"  #{f['job']} {' '.join(f['overrides'])}: {f['error']}" for f in failed]
        sys.exit(f"error: {len(failed)} job(s) of the sweep failed (the others finished; listed in {path}):\n" + "\n".join(lines))


def one_line(exc: HydraException) -> str:
    """A Hydra composition or override error as one line: the options of an unknown config group option, else
    the message's lines (and its cause's first line) joined, without the config search path."""
    if isinstance(exc, MissingConfigException) and exc.options and exc.missing_cfg_file:
        group, _, option = exc.missing_cfg_file.rpartition("/")
        return f"{group}={option} is not an option of {group}; choose one of {', '.join(sorted(exc.options))}"
    lines = []
    for line in str(exc).splitlines():
        if line.startswith(("Config search path", "\t", "full_key:", "object_type=")):
            break
        if line.strip():
            lines.append(line.strip().rstrip("."))
    cause = str(exc.__cause__ or "").strip()
    return "; ".join(lines) + (f" ({cause.splitlines()[0]})" if cause else "")
