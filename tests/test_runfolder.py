"""The run folder against concurrent and killed writers: atomic rewrites, torn appends, one writer per folder, a
sweep that would share folders refused before it starts, cached stages verified before reuse."""

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
import torch

import experiments.train as train
from experiments.sweeps import process_ended
from rmt.runfolder import (
    LOCK_FILE,
    RunFolderBusyError,
    RunFolderLock,
    append_line,
    atomic_write_text,
    read_csv_rows,
    read_jsonl,
)
from test_train import SMOKE, crash_after_two_epochs, metrics

ROOT = Path(__file__).resolve().parent.parent


def test_atomic_write_leaves_old_or_new_and_no_temp(tmp_path, monkeypatch):
    path = tmp_path / "summary.json"
    atomic_write_text(path, "old")

    def killed(*args):
        raise KeyboardInterrupt  # the process dies between the write and the rename

    monkeypatch.setattr(os, "replace", killed)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_text(path, "new")
    monkeypatch.undo()
    assert path.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["summary.json"]
    atomic_write_text(path, "new")
    assert path.read_text() == "new"


def test_torn_last_lines_are_dropped_once_and_appends_start_fresh(tmp_path, capsys):
    jsonl, table = tmp_path / "metrics.jsonl", tmp_path / "layers.csv"
    jsonl.write_text('{"epoch": 1}\n{"epoch": 2}\n{"epo')
    table.write_text("epoch,rank\n1,5\n2,4\n3,")
    assert read_jsonl(jsonl) == [{"epoch": 1}, {"epoch": 2}]
    assert read_jsonl(jsonl) == [{"epoch": 1}, {"epoch": 2}]
    assert read_csv_rows(table) == (["epoch", "rank"], [{"epoch": "1", "rank": "5"}, {"epoch": "2", "rank": "4"}])
    err = capsys.readouterr().err
    assert err.count("cut-off line") == 2  # once per file
    append_line(jsonl, '{"epoch": 3}')
    assert read_jsonl(jsonl)[-1] == {"epoch": 3}
    with jsonl.open("a") as fh:
        fh.write('{"epoch": 4, "pad": "' + "x" * 200_000)  # a torn line longer than one read-back chunk
    append_line(jsonl, '{"epoch": 4}')
    assert [r["epoch"] for r in read_jsonl(jsonl)] == [1, 2, 3, 4]


def test_resume_after_a_torn_metrics_line_and_a_killed_rewrite(compose_cfg, monkeypatch, capfd):
    cfg = compose_cfg(*SMOKE, "arm=rmt")
    crash_after_two_epochs(cfg, monkeypatch)
    run_dir = Path(cfg.run_dir)
    layers_before = len(pd.read_csv(run_dir / "layers.csv"))
    with (run_dir / "metrics.jsonl").open("a") as fh:
        fh.write('{"epoch": 3, "train_lo')  # killed mid-append
    (run_dir / ".layers.csv.99999.tmp").write_text("epoch,ra")  # killed mid-rewrite: the temp file, never the target
    summary = train.run(compose_cfg(*SMOKE, "arm=rmt"))
    assert list(metrics(run_dir)["epoch"]) == [1, 2, 3, 4] and summary["epochs"] == 4
    layers = pd.read_csv(run_dir / "layers.csv")
    assert len(layers[layers["epoch"] <= 2]) == layers_before
    assert [json.loads(line)["epoch"] for line in (run_dir / "metrics.jsonl").read_text().splitlines()] == [1, 2, 3, 4]
    assert "cut-off line" in capfd.readouterr().err


def test_one_writer_per_folder(tmp_path, capsys):
    with RunFolderLock(tmp_path):
        holder = subprocess.run([sys.executable, "-c", "from rmt.runfolder import RunFolderLock; RunFolderLock(r'%s').acquire()"
                                 % tmp_path], cwd=ROOT, capture_output=True, text=True)
        assert holder.returncode != 0 and f"pid {os.getpid()}" in holder.stderr and "RunFolderBusyError" in holder.stderr
        with pytest.raises(RunFolderBusyError, match="being written by another run"):
            RunFolderLock(tmp_path).acquire()
    assert (tmp_path / LOCK_FILE).read_text() == ""  # released: emptied
    # a writer killed while holding it: the kernel drops the lock, the file still names it
    subprocess.run([sys.executable, "-c", "import os; from rmt.runfolder import RunFolderLock; "
                    "RunFolderLock(r'%s').acquire(); os._exit(9)" % tmp_path], cwd=ROOT, check=False)
    with RunFolderLock(tmp_path):
        pass
    assert "has ended; taking it over" in capsys.readouterr().err


def test_a_second_run_into_a_busy_folder_is_refused_untouched(tmp_path, data_root):
    run_dir = tmp_path / "run"
    args = [sys.executable, "-m", "experiments.train", "experiment=fig1", "panel=fig1b", "arm=rmt", "profile=smoke",
            f"hydra.run.dir={run_dir}", "logger=local", "progress=false", f"paths.data_dir={data_root}"]
    with RunFolderLock(run_dir):
        done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and done.stderr.strip().splitlines()[-1].startswith("error: ")
    assert "being written by another run" in done.stderr and not (run_dir / "metrics.jsonl").exists()


def test_a_finished_record_without_checkpoints_is_not_retrained(compose_cfg):
    cfg = compose_cfg(*SMOKE, "arm=rmt")
    train.run(cfg)
    run_dir = Path(cfg.run_dir)
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):  # as exported to results/ or ingested from a pack
        (run_dir / name).unlink()
    with pytest.raises(train.RunConfigError, match="finished run without checkpoints"):
        train.run(compose_cfg(*SMOKE, "arm=rmt"))
    assert (run_dir / "summary.json").exists() and len(metrics(run_dir)) == 4


def test_sweep_into_distinct_hydra_subdirs_is_not_refused(tmp_path, data_root):
    args = [sys.executable, "-m", "experiments.train", "-m", "seed=0,1", "run_name=fixed", "hydra.sweep.subdir=s${seed}",
            "profile=smoke", f"hydra.sweep.dir={tmp_path / 'sweep'}", "logger=local", "progress=false", f"paths.data_dir={data_root}"]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert (tmp_path / "sweep" / "s0" / "summary.json").exists() and (tmp_path / "sweep" / "s1" / "summary.json").exists()


def test_sweep_into_shared_folders_is_refused_before_any_job(tmp_path, data_root):
    args = [sys.executable, "-m", "experiments.train", "-m", "experiment=fig1", "panel=fig1b", "arm=rmt", "optim.lr=0.02,0.05",
            "profile=smoke", f"paths.runs_dir={tmp_path / 'runs'}", "logger=local", "progress=false", f"paths.data_dir={data_root}"]
    done = subprocess.run(args, cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert done.returncode == 1 and "would write the same run folder" in done.stderr and "optim.lr" in done.stderr
    assert not (tmp_path / "runs" / "fig1" / "smoke" / "fig1b-rmt-s0").exists()  # no job started


def test_folders_of_another_kind_are_refused_untouched(compose_cfg, tmp_path):
    cfg = compose_cfg(*SMOKE, f"run_dir={tmp_path / 'limit'}")
    folder = Path(cfg.run_dir)
    folder.mkdir(parents=True)
    (folder / "config.yaml").write_text("kind: p4_limit\nname: p4_limit\n")
    (folder / "curve.csv").write_text("ratio,test_acc\n0.0,0.9\n")
    with pytest.raises(train.RunConfigError, match="holds a p4_limit run; a train run does not write into it"):
        train.run(cfg)
    assert sorted(p.name for p in folder.iterdir()) == ["config.yaml", "curve.csv"]
    assert (folder / "config.yaml").read_text().startswith("kind: p4_limit")


def test_rerun_with_other_settings_is_refused_when_checkpoints_are_gone(compose_cfg):
    cfg = compose_cfg(*SMOKE, "arm=rmt")
    train.run(cfg)
    run_dir = Path(cfg.run_dir)
    for name in ("checkpoint.pt", "checkpoint.prev.pt"):
        (run_dir / name).unlink()
    before = {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()}
    with pytest.raises(train.RunConfigError, match="different settings.*checkpoints are gone"):
        train.run(compose_cfg(*SMOKE, "arm=rmt", "optim.lr=0.5"))
    assert {p.name: p.read_bytes() for p in run_dir.iterdir() if p.is_file()} == before  # nothing lost or changed


def test_rmt_prune_refuses_a_run_folder_and_keeps_the_class_count(compose_cfg, tmp_path, capsys):
    from rmt.__main__ import main as rmt_main

    cfg = compose_cfg(*SMOKE, "arm=normal")
    train.run(cfg)
    assert rmt_main(["prune", cfg.run_dir, "--keep-fraction", "0", "--out", cfg.run_dir]) == 1
    assert "a run folder" in capsys.readouterr().err and not (Path(cfg.run_dir) / "model.pt").exists()
    assert rmt_main(["prune", cfg.run_dir, "--keep-fraction", "0", "--out", str(tmp_path / "p")]) == 0
    record = json.loads((tmp_path / "p" / "rmt_model.json").read_text())
    head = record["layers"][-1]  # the output layer, reported last
    assert head["out"] == 10 and head["rank"] == 10  # 10 classes: the default floor, not rank 1
    assert any(layer["rank"] < layer["out"] for layer in record["layers"][:-1])  # the hidden layers were cut


def test_figures_count_only_finished_distinct_runs(compose_cfg, tmp_path, capsys):
    from analysis.runs import export_records, load_runs

    for seed in (0, 1):
        train.run(compose_cfg(*SMOKE, "arm=rmt", f"seed={seed}"))
    root = Path(compose_cfg(*SMOKE).paths.runs_dir)
    assert load_runs(root)["seed"].nunique() == 2
    unfinished = root / "default" / "smoke" / "fc-rmt-s1"
    (unfinished / "summary.json").unlink()  # as a run still training looks
    no_metrics = root / "default" / "smoke" / "fc-rmt-s0-copy"
    no_metrics.mkdir()
    (no_metrics / "config.yaml").write_text((root / "default/smoke/fc-rmt-s0/config.yaml").read_text().replace("seed: 0", "seed: 7"))
    df = load_runs(root)
    assert df["seed"].unique().tolist() == [0]  # the unfinished seed is not a seed of the figure
    err = capsys.readouterr().err
    assert "unfinished run(s)" in err and "fc-rmt-s1" in err and "without metrics.csv" in err and "fc-rmt-s0-copy" in err
    with pytest.raises(ValueError, match="lies inside"):
        export_records(root / "default", root / "default" / "exported")  # the copies would read as more seeds
    (tmp_path / "a-file").write_text("")
    with pytest.raises(ValueError, match="is a file"):
        export_records(root / "default", tmp_path / "a-file")
    shutil.copytree(root / "default" / "smoke" / "fc-rmt-s0", root / "default" / "copy-of-s0")  # a copy made by hand
    with pytest.raises(ValueError, match="hold the same run"):
        load_runs(root)


def test_a_sweep_worker_ends_with_its_sweep(tmp_path):
    """A joblib worker watches its parent: killed sweep, stopped worker (not a silent second writer later)."""
    ready = tmp_path / "watching"
    worker_code = (f"import os, pathlib, time; from experiments.sweeps import exit_with_parent; exit_with_parent(os.getppid(), 0.2); "
                   f"pathlib.Path({str(ready)!r}).touch(); time.sleep(60)")
    code = (f"import subprocess, sys, time; child = subprocess.Popen([sys.executable, '-c', {worker_code!r}]); "
            f"print(child.pid, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    worker = int(parent.stdout.readline())
    while not ready.exists() and not process_ended(worker):  # the worker watches from its start
        time.sleep(0.1)
    parent.kill()
    parent.wait()
    deadline = time.time() + 10
    while time.time() < deadline and not process_ended(worker):
        time.sleep(0.2)
    if not process_ended(worker):
        os.kill(worker, 9)
        pytest.fail("the worker outlived its parent by 10 s")



def test_source_runs_must_be_training_runs(compose_cfg, tmp_path):
    from experiments.common import load_source_run

    folder = tmp_path / "limit"
    folder.mkdir()
    (folder / "config.yaml").write_text("kind: p4_limit\nname: p4_limit\n")
    with pytest.raises(train.RunConfigError, match="holds a p4_limit run, not a training run"):
        load_source_run(folder, torch.device("cpu"))
    (folder / "config.yaml").write_text("")  # cut off by a kill
    with pytest.raises(train.RunConfigError, match="empty or cut off"):
        load_source_run(folder, torch.device("cpu"))


def test_a_cut_off_config_is_said_and_an_unwritable_output_is_one_line(compose_cfg, tmp_path, capfd):
    cfg = compose_cfg(*SMOKE, "arm=normal")
    run_dir = Path(cfg.run_dir)
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text("")  # cut off by a kill before its first line
    assert train.run(cfg)["epochs"] == 4
    assert "empty or not a config" in capfd.readouterr().err
    blocker = tmp_path / "a-file"  # an output path that cannot be a folder (root ignores read-only modes)
    blocker.write_text("")
    from analysis.__main__ import main as analysis_main

    assert analysis_main(["export", "--runs", str(run_dir.parent), "--to", str(blocker / "records")]) == 1  # NotADirectoryError
    err = capfd.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error: ")
