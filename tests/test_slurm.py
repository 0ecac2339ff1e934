"""Cluster sweeps through SLURM: the request check (everywhere, against a stub cluster), and, where a SLURM cluster
answers (`sudo scripts/slurm_local.sh up`; `.ci/run` starts one as root), the real path: a Fig. 1 sweep as an array
job, a requeued job that resumes from its checkpoint, an impossible request refused at once."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
from omegaconf import OmegaConf

from experiments.slurm import Partition, SlurmRequestError, _gpus, _minutes, check_request
from experiments.sweeps import SWEEP_PID_ENV, sweep_to_watch

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
DATA = os.environ.get("RMT_DATA_ROOT", str(ROOT / "data"))


def cluster_answers() -> bool:
    if shutil.which("sinfo") is None or shutil.which("sbatch") is None:
        return False
    try:
        return subprocess.run(["sinfo", "-h"], capture_output=True, timeout=5).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


needs_cluster = pytest.mark.skipif(not cluster_answers(), reason="no SLURM cluster answers here (`sudo scripts/slurm_local.sh "
                                                                 "up` starts one; .ci/run does so as root)")


# ------------------------------------------------------------------------------------------------ request check
def test_slurm_time_limits_and_gres_are_parsed():
    assert _minutes("UNLIMITED") is None and _minutes("INFINITE") is None
    assert (_minutes("60"), _minutes("30:00"), _minutes("1:00:00"), _minutes("2-00:00:00"), _minutes("1-12")) == (60, 30, 60, 2880, 2160)
    assert (_gpus("(null)"), _gpus("gpu:4"), _gpus("gpu:a100:8(S:0-1)"), _gpus("gpu:2,gpu:v100:2,nic:1")) == (0, 4, 8, 4)


NODE = Partition(name="cpu", up=True, cpus=2, memory_mb=8000, gpus=0, max_time_min=60, nodes=1)


@pytest.mark.parametrize("override, words", [
    ({"cpus_per_task": 8}, "hydra.launcher.cpus_per_task=8 (× 1 tasks) asks for 8 CPUs, but the largest node of partition cpu has 2"),
    ({"mem_gb": 32}, "hydra.launcher.mem_gb=32 exceeds the largest node of partition cpu (7.8 GB)"),
    ({"gpus_per_node": 1}, "hydra.launcher.gpus_per_node=1, but the nodes of partition cpu have no GPUs"),
    ({"timeout_min": 720}, "hydra.launcher.timeout_min=720 exceeds the time limit of partition cpu (60 min)"),
    ({"nodes": 2}, "hydra.launcher.nodes=2, but partition cpu has 1 node(s)"),
])
def test_a_request_no_node_can_grant_is_named_with_its_limit(override, words):
    launcher = OmegaConf.create({"cpus_per_task": 1, "tasks_per_node": 1, "mem_gb": 4, "gpus_per_node": 0, "nodes": 1,
                                 "timeout_min": 30, **override})
    with pytest.raises(SlurmRequestError) as info:
        check_request(launcher, NODE)
    assert words in str(info.value)


def test_a_request_that_fits_passes_and_a_down_partition_is_refused():
    fits = OmegaConf.create({"cpus_per_task": 2, "mem_gb": 7, "gpus_per_node": 0, "timeout_min": 60})
    check_request(fits, NODE)
    with pytest.raises(SlurmRequestError, match="not UP"):
        check_request(fits, Partition("cpu", False, 2, 8000, 0, None, 1))
    with pytest.raises(SlurmRequestError, match="every node of partition cpu is down or drained"):
        check_request(fits, Partition("cpu", True, 2, 8000, 0, None, 1, usable_nodes=0))
    from experiments.slurm import _unusable
    assert [_unusable(s) for s in ("IDLE", "MIXED", "DOWN*", "IDLE+DRAIN", "UNKNOWN")] == [False, False, True, True, False]


STUB = {
    "scontrol": """#!/bin/sh
case "$2" in
  partition) echo "PartitionName=cpu Default=YES MaxTime=UNLIMITED State=UP TotalNodes=1";;
  node) echo "NodeName=n1 CPUTot=2 RealMemory=8000 Gres=(null) Partitions=cpu";;
esac
""",
    "sinfo": "#!/bin/sh\necho 'cpu* up infinite 1 idle n1'\n",
    "sacct": "#!/bin/sh\nexit 1\n",
    "sbatch": "#!/bin/sh\ntouch \"$STUB_SUBMITTED\"\necho 'Submitted batch job 1'\n",
}


def test_an_impossible_request_fails_in_one_line_before_anything_is_submitted(tmp_path):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name, text in STUB.items():
        (bin_dir / name).write_text(text)
        (bin_dir / name).chmod(0o755)
    env = {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}", "STUB_SUBMITTED": str(tmp_path / "submitted")}
    start = time.monotonic()
    out = subprocess.run([PY, "-m", "experiments.train", "-m", "experiment=fig1", "profile=smoke", "hydra/launcher=slurm",
                          "hydra.launcher.cpus_per_task=8", f"paths.runs_dir={tmp_path / 'runs'}", "logger=local"],
                         cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 1
    lines = out.stderr.strip().splitlines()
    assert lines[-1].startswith("error: hydra.launcher.cpus_per_task=8 (× 1 tasks) asks for 8 CPUs, but the largest node "
                                "of partition cpu has 2"), out.stderr
    assert len([line for line in lines if line.startswith("error")]) == 1
    assert not (tmp_path / "submitted").exists() and not (tmp_path / "runs").exists()
    print(f"refused in {time.monotonic() - start:.1f} s")


def test_only_local_sweep_workers_watch_the_sweep_process(monkeypatch):
    import socket

    monkeypatch.setenv(SWEEP_PID_ENV, f"{socket.gethostname()}:1")
    monkeypatch.delenv("SLURM_JOB_ID", raising=False)
    assert sweep_to_watch() == 1
    monkeypatch.setenv("SLURM_JOB_ID", "7")  # a cluster job may outlive (or run far from) the process that submitted it
    assert sweep_to_watch() is None
    monkeypatch.delenv("SLURM_JOB_ID")
    monkeypatch.setenv(SWEEP_PID_ENV, "another-host:1")
    assert sweep_to_watch() is None
    monkeypatch.setenv(SWEEP_PID_ENV, f"{socket.gethostname()}:{os.getpid()}")
    assert sweep_to_watch() is None


# ------------------------------------------------------------------------------------------------ the real scheduler
@needs_cluster
def test_fig1_smoke_sweep_runs_as_one_slurm_array_and_draws_its_figure(tmp_path):
    runs, figures = tmp_path / "runs", tmp_path / "figures"
    start = time.monotonic()
    out = subprocess.run(["make", "reproduce-fig1", "PROFILE=smoke", "LAUNCHER=slurm", f"RUNS={runs}", "LOGGER=local",
                          f"DATA={DATA}", f"FIG={figures}"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    folders = sorted((runs / "fig1" / "smoke").glob("fig1*-s*"))
    assert len(folders) == 10
    jobs = [json.loads((f / "env.json").read_text()).get("slurm", {}) for f in folders]
    assert all((f / "summary.json").exists() for f in folders)
    assert {j.get("array_job_id") for j in jobs} != {None} and len({j.get("array_job_id") for j in jobs}) == 1, jobs
    assert sorted(int(j["array_task_id"]) for j in jobs) == list(range(10))
    assert (figures / "fig1.png").exists() and (figures / "fig1_train.png").exists()
    print(f"10 runs through SLURM in {time.monotonic() - start:.0f} s")


@needs_cluster
def test_a_requeued_job_resumes_from_its_checkpoint_and_ends_as_an_uninterrupted_run(tmp_path):
    """SLURM signals USR2 before a time limit or on preemption; submitit then requeues the job (our configs allow it,
    max_num_timeout); the requeued job must find its run folder, take its lock back and resume from the checkpoint."""
    args = ["experiment=fig1", "panel=fig1b", "arm=rmt", "profile=smoke", "train.epochs=3000", "threads=1",
            "progress=false", "logger=local", f"paths.data_dir={DATA}"]
    sweep = subprocess.Popen([PY, "-m", "experiments.train", "-m", *args, "hydra/launcher=slurm",
                              f"paths.runs_dir={tmp_path / 'slurm'}"], cwd=ROOT, stdout=subprocess.PIPE,
                             stderr=subprocess.STDOUT, text=True)
    run = tmp_path / "slurm" / "fig1" / "smoke" / "fig1b-rmt-s0"
    try:
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline and len((run / "metrics.jsonl").read_text().splitlines() if (run / "metrics.jsonl").exists() else []) < 3:
            time.sleep(0.2)
        job = json.loads((run / "env.json").read_text())["slurm"]["job_id"]

        def requeued_then_released(interrupt: list[str]) -> None:
            subprocess.run(interrupt, check=True)
            while subprocess.run(["squeue", "-h", "-j", job, "-o", "%r"], capture_output=True, text=True).stdout.strip() != "BeginTime":
                assert sweep.poll() is None and time.monotonic() < deadline, f"the job was not requeued by {interrupt}"
                time.sleep(0.2)
            subprocess.run(["scontrol", "update", f"JobId={job}", "StartTime=now"], check=True)  # skip SLURM's requeue hold

        requeued_then_released(["scancel", "--signal=USR2", job])  # what SLURM sends before the limit or on preemption
        assert sweep.wait(timeout=300) == 0, sweep.stdout.read()
    finally:
        if sweep.poll() is None:
            sweep.kill()
    env = json.loads((run / "env.json").read_text())
    assert env["slurm"]["restart_count"] == "1" and env["earlier"][0]["started_after_epoch"] == 0, env
    assert env["started_after_epoch"] >= 2, env  # resumed from its checkpoint, not restarted
    reference = tmp_path / "local"
    subprocess.run([PY, "-m", "experiments.train", *args, f"paths.runs_dir={reference}"], cwd=ROOT, check=True,
                   capture_output=True, timeout=300)
    requeued = pd.read_csv(run / "metrics.csv").drop(columns="time_s")
    uninterrupted = pd.read_csv(reference / "fig1" / "smoke" / "fig1b-rmt-s0" / "metrics.csv").drop(columns="time_s")
    assert len(requeued) == 30
    pd.testing.assert_frame_equal(requeued, uninterrupted)


@needs_cluster
def test_an_impossible_request_on_the_real_cluster_fails_in_one_line(tmp_path):
    start = time.monotonic()
    out = subprocess.run([PY, "-m", "experiments.train", "-m", "experiment=fig1", "profile=smoke", "hydra/launcher=slurm",
                          "hydra.launcher.gpus_per_node=1", f"paths.runs_dir={tmp_path}", "logger=local"],
                         cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert out.returncode == 1 and out.stderr.strip().splitlines()[-1].startswith("error: hydra.launcher.gpus_per_node=1"), out.stderr
    assert subprocess.run(["squeue", "-h"], capture_output=True, text=True).stdout.strip() == ""
    print(f"refused in {time.monotonic() - start:.1f} s")

