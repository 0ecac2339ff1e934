"""The runners under Hydra: the run folder is Hydra's output directory; a job that fails in a folder it created
leaves no folder behind (unless it saved state to resume from); a sweep runs every job and then lists each failed one; Hydra's own errors
(an unknown option, a malformed override) end the command with one line."""

from __future__ import annotations

import itertools
import json
import os
import shutil
import socket
import sys
import threading
import time
import traceback
from collections import defaultdict
from pathlib import Path

from hydra.errors import HydraException, MissingConfigException
from hydra.experimental.callback import Callback
from omegaconf import DictConfig, OmegaConf

from rmt.runfolder import CHECKPOINT, CHECKPOINT_PREV, LOCK_FILE, STAGES_JSON

FAILED_JOBS = "failed_jobs.jsonl"  # in the sweep folder: one JSON line per failed job
FAILED_TRACEBACKS = "failed_jobs.log"  # in the sweep folder: tracebacks of failures that are not user errors
HYDRA_ONLY = {".hydra", LOCK_FILE}  # what Hydra (and the writer's lock) put into a job's folder before the job runs (plus *.log)
RESUMABLE = (CHECKPOINT, CHECKPOINT_PREV, STAGES_JSON)  # a failed run that wrote these can go on later


def run_folder(output_dir: str | Path) -> Path:
    """Hydra's output directory as the run folder: relative to the working directory when inside it (so records
    name no machine's paths), else absolute."""
    path, cwd = Path(output_dir).resolve(), Path.cwd().resolve()
    return path.relative_to(cwd) if path.is_relative_to(cwd) else path


PROCESS_START = time.time()  # what this process wrote is newer; what it found is older


def holds_only_hydra_files(folder: Path, job_name: str) -> bool:
    """True when `folder` is absent or holds only what this invocation's Hydra wrote before the job: `.hydra/` and the
    job's log `<job_name>.log`, written since this process started (a folder of the user's own files, or an
    earlier run's, is never taken for one the suite just made)."""
    if not folder.is_dir():
        return True
    allowed = HYDRA_ONLY | {f"{job_name}.log"}
    entries = list(folder.iterdir())
    return all(p.name in allowed for p in entries) and all(p.stat().st_mtime >= PROCESS_START - 1 for p in entries
                                                           if p.name != LOCK_FILE)


SWEEP_PID_ENV = "RMT_SWEEP_PID"  # set by a sweep's main process for its workers
_watching = False


def process_ended(pid: int) -> bool:
    """True when `pid` no longer runs (gone, or a zombie waiting to be reaped)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except (OSError, IndexError):
        return False


def sweep_to_watch() -> int | None:
    """The pid of the sweep process this job must not outlive: set (as host:pid) by the sweep for its workers on the
    same host; None for a single run, the sweep process itself, and a job a scheduler runs (SLURM: the job belongs to
    the cluster and may run after the submitting process is gone, e.g. when requeued)."""
    host, _, pid = os.environ.get(SWEEP_PID_ENV, "").rpartition(":")
    if not pid or "SLURM_JOB_ID" in os.environ or host != socket.gethostname() or int(pid) == os.getpid():
        return None
    return int(pid)


def exit_with_parent(sweep_pid: int, poll_s: float = 2.0) -> None:
    """End this process when the sweep process `sweep_pid` ends (a joblib worker whose sweep was killed would train on
    unseen otherwise).  A run killed this way resumes from its last checkpoint; its writes are atomic."""
    global _watching
    if _watching:
        return
    _watching = True

    def watch() -> None:
        while True:
            time.sleep(poll_s)
            if process_ended(sweep_pid):
                print(f"error: the sweep that started this job (pid {sweep_pid}) has ended; stopping this job too "
                      f"(re-running the sweep resumes it from its last checkpoint)", file=sys.stderr, flush=True)
                os._exit(1)

    threading.Thread(target=watch, name="exit-with-parent", daemon=True).start()


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


def sweep_jobs(config: DictConfig) -> list[list[str]]:
    """The override lists of a basic sweep's jobs: the config's `hydra.sweeper.params`, with the command line's
    overrides taking precedence key by key, expanded to their cartesian product (Hydra's basic sweeper's jobs)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    merged: dict[str, str] = {str(k): f"{k}={v}" for k, v in (OmegaConf.select(config, "hydra.sweeper.params") or {}).items()}
    for line in OmegaConf.to_container(config.hydra.overrides.task, resolve=False):  # as typed: ${...} unresolved
        merged[line.split("=", 1)[0].lstrip("+~")] = line
    choices = []
    for override in OverridesParser.create().parse_overrides(list(merged.values())):
        if override.is_sweep_override():
            key = override.get_key_element()
            choices.append([f"{key}={value}" for value in override.sweep_string_iterator()])
        else:
            choices.append([override.input_line])
    return [list(combo) for combo in itertools.product(*choices)]


def colliding_jobs(config: DictConfig) -> list[tuple[Path, list[list[str]]]]:
    """(run folder, the jobs writing it) for every folder that two or more jobs of the sweep would share."""
    from hydra import compose

    folders: dict[Path, list[list[str]]] = defaultdict(list)
    hydra_overrides = OmegaConf.to_container(config.hydra.overrides.hydra, resolve=False)
    for job in sweep_jobs(config):
        cfg = compose(config_name=config.hydra.job.config_name, overrides=[*hydra_overrides, *job], return_hydra_config=True)
        folders[Path(cfg.hydra.sweep.dir) / str(cfg.hydra.sweep.subdir)].append(job)
    return [(folder, jobs) for folder, jobs in folders.items() if len(jobs) > 1]


class SweepReport(Callback):
    """Before a sweep, refuse one whose jobs would share a run folder; after it (every job has run), list each
    failed job with the overrides that reproduce it and exit 1."""

    def on_multirun_start(self, config: DictConfig, **kwargs) -> None:
        from experiments.slurm import SlurmRequestError, before_slurm_sweep

        try:
            before_slurm_sweep(config)  # a SLURM request no node can grant fails here, before any submission
        except SlurmRequestError as exc:
            sys.exit(f"error: {exc}. No job was submitted.")
        os.environ[SWEEP_PID_ENV] = f"{socket.gethostname()}:{os.getpid()}"  # local workers watch it (`exit_with_parent`)
        (Path(config.hydra.sweep.dir) / FAILED_JOBS).unlink(missing_ok=True)
        shared = colliding_jobs(config)
        if shared:
            folder, jobs = shared[0]
            values = defaultdict(set)
            for job in jobs:
                for override in job:
                    key, _, value = override.partition("=")
                    values[key].add(value)
            differ = sorted(k for k, v in values.items() if len(v) > 1)
            sys.exit(f"error: {sum(len(j) for _, j in shared)} jobs of this sweep would write the same run folder(s), e.g. "
                     f"{len(jobs)} into {folder}: they differ in {', '.join(differ)}, which run_name does not name. Put "
                     f"{'it' if len(differ) == 1 else 'them'} into run_name (e.g. run_name=<its pattern>-x${{{differ[0]}}}), "
                     f"or sweep the values into separate hydra.sweep.dir folders. No job was started.")

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
