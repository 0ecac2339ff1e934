"""The runners under Hydra: the run folder is Hydra's output directory (moved by `hydra.run.dir`, `hydra.sweep.dir`
or `paths.runs_dir`), sweeps report every failed job and leave no empty run folders, Hydra's errors are one line."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from hydra.errors import HydraException

from experiments.sweeps import FAILED_JOBS, FAILED_TRACEBACKS, discard_failed_run, holds_only_hydra_files, one_line, record_failure
from tests.conftest import compose_named

ROOT = Path(__file__).resolve().parent.parent
SMOKE = ["profile=smoke", "logger=local", "progress=false"]


def train(*args: str, data_dir: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "experiments.train", *args, *SMOKE, f"paths.data_dir={data_dir}"],
                          cwd=ROOT, capture_output=True, text=True, timeout=300)


def error_lines(done: subprocess.CompletedProcess) -> list[str]:
    return [line for line in done.stderr.splitlines() if line.startswith("error:")]


def assert_run_folder(folder: Path) -> None:
    """A complete record and Hydra's own files, in one place."""
    assert (folder / "summary.json").is_file() and (folder / "config.yaml").is_file() and (folder / ".hydra" / "config.yaml").is_file()


def test_hydra_run_dir_moves_the_whole_run(tmp_path, data_root):
    done = train(f"hydra.run.dir={tmp_path / 'here'}", f"paths.runs_dir={tmp_path / 'not-here'}", data_dir=data_root)
    assert done.returncode == 0, done.stderr
    assert_run_folder(tmp_path / "here")
    assert not (tmp_path / "not-here").exists()


def test_paths_runs_dir_sets_the_run_folder(tmp_path, data_root):
    done = train(f"paths.runs_dir={tmp_path / 'runs'}", data_dir=data_root)
    assert done.returncode == 0, done.stderr
    assert_run_folder(tmp_path / "runs" / "default" / "smoke" / "fc-normal-s0")


def test_sweep_reports_every_failed_job_and_leaves_no_empty_run_folder(tmp_path, data_root):
    sweep = tmp_path / "sweep"
    done = train("-m", "seed=abc,0,-2", f"hydra.sweep.dir={sweep}", data_dir=data_root)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert_run_folder(sweep / "fc-normal-s0")  # the one good job ran although job #0 failed before it
    assert sorted(p.name for p in sweep.iterdir() if p.is_dir()) == ["fc-normal-s0"]  # no folders of failed jobs
    failed = [json.loads(line) for line in (sweep / FAILED_JOBS).read_text().splitlines()]
    assert sorted(f["job"] for f in failed) == [0, 2]
    summary = done.stderr[done.stderr.index("error: 2 job(s) of the sweep failed"):].splitlines()
    assert len(summary) == 3 and "#0 seed=abc" in summary[1] and "#2 seed=-2" in summary[2]
    assert "seed='abc' (expected an integer >= 0)" in summary[1]
    # A second sweep reports only its own failures.
    again = train("-m", "seed=0", f"hydra.sweep.dir={sweep}", data_dir=data_root)
    assert again.returncode == 0, again.stderr
    assert not (sweep / FAILED_JOBS).exists()


@pytest.mark.parametrize("override, expected", [
    ("arm=rmtt", "arm=rmtt is not an option of arm; choose one of magnitude, normal, rmt"),
    ("model=mlp", "model=mlp is not an option of model; choose one of cnn, fc, fc12, fc5, timm"),
    ("train.epocs=5", "Could not override 'train.epocs'; To append to your config use +train.epocs=5 (Key 'epocs' is not in struct)"),
])
def test_hydra_errors_read_as_one_line(override, expected):
    with pytest.raises(HydraException) as err:
        compose_named("train", override)
    assert one_line(err.value) == expected


def test_unknown_option_on_the_command_line_is_one_line(tmp_path, data_root):
    done = train("arm=rmtt", f"paths.runs_dir={tmp_path}", data_dir=data_root)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    assert [line for line in done.stderr.splitlines() if line.strip()] == [
        "error: arm=rmtt is not an option of arm; choose one of magnitude, normal, rmt"]


def test_a_failed_run_is_discarded_unless_it_can_resume(tmp_path):
    runs = tmp_path / "runs"
    half_made, resumable = runs / "exp" / "quick" / "a", runs / "other" / "quick" / "b"
    for folder in (half_made, resumable):
        (folder / ".hydra").mkdir(parents=True)
        (folder / "config.yaml").write_text("seed: 0\n")
    (resumable / "checkpoint.pt").write_bytes(b"")
    discard_failed_run(half_made, runs)
    discard_failed_run(resumable, runs)
    assert not (runs / "exp").exists() and runs.is_dir()  # the folder and the parents it left empty, not the root
    assert (resumable / "config.yaml").exists()
    assert holds_only_hydra_files(tmp_path / "absent", "train") and not holds_only_hydra_files(resumable, "train")
    fresh = tmp_path / "fresh"
    (fresh / ".hydra").mkdir(parents=True)
    (fresh / "common.log").write_text("")  # Hydra's log of the job (the runners' task is experiments.common's)
    assert holds_only_hydra_files(fresh, "common")
    (fresh / "notes.log").write_text("mine")  # a user's file: the folder is not one the suite just made
    assert not holds_only_hydra_files(fresh, "common")
    old = tmp_path / "old"
    (old / ".hydra").mkdir(parents=True)
    os.utime(old / ".hydra", (0, 0))  # an earlier invocation's
    assert not holds_only_hydra_files(old, "common")


def test_a_bad_setting_in_a_folder_of_the_users_logs_deletes_nothing(tmp_path):
    logs = tmp_path / "mylogs"
    logs.mkdir()
    for name in ("a.log", "b.log"):
        (logs / name).write_text("keep me")
    done = subprocess.run([sys.executable, "-m", "experiments.train", "profile=smoke", "optim.lr=-1", f"hydra.run.dir={logs}",
                           "logger=local"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 1 and "optim.lr" in done.stderr
    assert all((logs / name).read_text() == "keep me" for name in ("a.log", "b.log"))


def test_a_failed_rerun_keeps_the_earlier_record_but_not_its_summary(tmp_path):
    done = subprocess.run([sys.executable, "-m", "experiments.synthetic", "n=60", f"paths.runs_dir={tmp_path}"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    run_dir = tmp_path / "p2_synthetic" / "paper" / "seed0"
    assert done.returncode == 0 and (run_dir / "summary.json").exists()
    again = subprocess.run([sys.executable, "-m", "experiments.synthetic", "n=60", "alpha=2", f"paths.runs_dir={tmp_path}"],
                           cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert error_lines(again) == ["error: bad setting: alpha=2 (expected a number > 0 and < 0.5)"]
    assert (run_dir / "summary.json").exists() and "alpha: 0.25" in (run_dir / "config.yaml").read_text()  # untouched


def test_unexpected_errors_keep_their_traceback(tmp_path):
    try:
        {}["missing"]
    except KeyError as exc:
        line = record_failure(tmp_path, 3, ["seed=1"], exc, user_error=False)
    assert line.startswith("error: job #3 (seed=1): KeyError: 'missing' (traceback in")
    assert 'Traceback' in (tmp_path / FAILED_TRACEBACKS).read_text() and "{}[\"missing\"]" in (tmp_path / FAILED_TRACEBACKS).read_text()


def test_a_rerun_reads_as_unfinished_until_it_writes_its_summary(tmp_path):
    from experiments.common import begin_record

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "summary.json").write_text("{}")
    begin_record(compose_named("synthetic", f"run_dir={run_dir}"), "synthetic")
    assert not (run_dir / "summary.json").exists() and (run_dir / "config.yaml").exists()
