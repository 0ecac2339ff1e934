"""The GPU pack on the CPU: its queue, a smoke-profile window end to end (skip of committed runs, budget stop, file
limits), the ingest round trip and its version check, and the bundle."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from experiments import pack

ROOT = Path(__file__).resolve().parent.parent


def test_queue_expands_every_run_with_its_record_and_order(tmp_path, data_root):
    units = pack.expand(pack.QUEUE, "smoke", tmp_path / "runs", data_root)
    records = [u.record for u in units]
    assert len(records) == len(set(records))
    fig1 = [u for u in units if u.group == "p1_fig1"]
    assert len(fig1) == 10 and {u.record.split("/")[-1] for u in fig1} >= {"fig1a-normal-s0", "fig1e-rmt-s1"}
    assert all(u.epochs == 4 and not u.after for u in fig1)  # smoke: 350 epochs x 0.01
    assert sum(u.group == "p1_var" for u in units) == 40 and sum(u.group == "p1_fmnist_ablation" for u in units) == 6  # 20 seeds x 2 arms
    p4 = [u for u in units if u.group == "p4_fc12"]
    trains, limits = [u for u in p4 if u.module == "train"], [u for u in p4 if u.module == "p4_limit"]
    assert [u.record for u in trains] == ["p4/smoke/fc12-mnist-s0", "p4/smoke/fc12-fashion_mnist-s0"]
    assert [u.record for u in limits] == ["p4_limit/smoke/fc12-mnist-s0", "p4_limit/smoke/fc12-fashion_mnist-s0"]
    assert all(u.after == [t.record for t in trains] for u in limits)
    assert [u.dataset for u in p4] == ["mnist", "fashion_mnist"] * 2 and all(u.dataset == "mnist" for u in fig1)
    vit = [u for u in units if u.group == "p3_vit_demo"]
    assert vit[0].record == "p3_vit_demo/smoke/vit-s0" and vit[1].after == [vit[0].record] and len(vit) == 15
    assert [g.name for g in pack.QUEUE][:4] == ["p1_fig1", "p1_fmnist_ablation", "p1_var", "p1_fig3"]  # the order


def archive_manifest(path: Path) -> dict:
    with tarfile.open(path) as tar:
        return json.load(tar.extractfile("manifest.json"))


def test_smoke_window_end_to_end_then_ingest(tmp_path, data_root, capsys, monkeypatch):
    committed = tmp_path / "results"
    (committed / "fig1/smoke/fig1a-normal-s0").mkdir(parents=True)
    (committed / "fig1/smoke/fig1a-normal-s0/summary.json").write_text("{}")
    out = tmp_path / "out"
    monkeypatch.setenv("RMT_DATA_ROOT", str(data_root))
    monkeypatch.setattr(pack, "BUNDLE_DIR", tmp_path / "no-bundle")  # the data root, not a bundle made here earlier
    assert pack.main(["run", "--out", str(out), "--budget", "90", "--profile", "smoke", "--device", "cpu",
                      "--results", str(committed), "--slots", "2", "--self-check-s", "10"]) == 0
    printed = capsys.readouterr().out
    files = sorted(p.name for p in out.iterdir())
    assert "pack.log" in files and "p1_fig1.tgz" in files and len(files) <= pack.MAX_FILES
    assert all(p.stat().st_size <= pack.MAX_FILE_BYTES for p in out.iterdir())
    events = [json.loads(line) for line in (out / "pack.log").read_text().splitlines()]
    kinds = {e["event"] for e in events}
    assert {"pack-start", "self-check", "queue", "start", "end", "pack-end"} <= kinds
    skipped = [e["record"] for e in events if e["event"] == "skip"]
    assert skipped == ["fig1/smoke/fig1a-normal-s0"]  # committed: not run again
    ended = [e for e in events if e["event"] == "end"]
    assert ended and all(e["state"] == "finished" and e["epoch_s"] > 0 for e in ended)
    end = events[-1]
    assert end["event"] == "pack-end" and end["wall_s"] <= 90 + 5  # the budget holds (5 s for the last poll and stops)
    assert end["not-started"] > 0 and "not-started" in printed  # the budget stopped the queue
    rows = pack.measured_estimates(out / "pack.log")["cpu"]
    assert rows["fig1"][1] > 0 and rows["fig1"][0] > 0  # per-epoch and start-up seconds, for the ESTIMATES table
    manifest = archive_manifest(out / "p1_fig1.tgz")
    assert manifest["code_digest"] == pack.code_digest() and manifest["profile"] == "smoke"
    with tarfile.open(out / "p1_fig1.tgz") as tar:
        names = tar.getnames()
    assert not any(n.endswith(".pt") for n in names) and "fig1/smoke/fig1a-normal-s0" not in "".join(names)

    results = tmp_path / "ingested"
    archives = sorted(out.glob("*.tgz"))
    assert pack.main(["ingest", *map(str, archives), "--results", str(results)]) == 0
    for record in manifest["records"]:
        folder = results / record
        assert (folder / "summary.json").is_file() and (folder / "metrics.csv").is_file()
        assert json.loads((folder / "pack.json").read_text())["other_version"] is False
    assert pack.main(["ingest", str(archives[0]), "--results", str(results)]) == 0  # again: kept, not overwritten
    assert "kept" in capsys.readouterr().out

    other = tmp_path / "other.tgz"  # the same records from another code version
    with tarfile.open(archives[0]) as src, tarfile.open(other, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None
            if member.name == "manifest.json":
                data = json.dumps({**json.loads(data), "code_digest": "0" * 16}).encode()
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    with pytest.raises(SystemExit, match="code version 0000000000000000"):
        pack.main(["ingest", str(other), "--results", str(tmp_path / "r2")])
    assert pack.main(["ingest", str(other), "--results", str(tmp_path / "r2"), "--allow-other-version"]) == 0
    first = manifest["records"][0]
    assert json.loads((tmp_path / "r2" / first / "pack.json").read_text())["other_version"] is True

    hostile = tmp_path / "hostile.tgz"  # a manifest naming a record outside the archive's run folders
    with tarfile.open(archives[0]) as src, tarfile.open(hostile, "w:gz") as dst:
        for member in src.getmembers():
            data = src.extractfile(member).read() if member.isfile() else None
            if member.name == "manifest.json":
                data = json.dumps({**json.loads(data), "records": ["../../outside"]}).encode()
                member.size = len(data)
            dst.addfile(member, io.BytesIO(data) if data is not None else None)
    with pytest.raises(SystemExit, match="not one of its run folders"):
        pack.main(["ingest", str(hostile), "--results", str(tmp_path / "r3")])
    assert not (tmp_path / "outside").exists()


def test_a_committed_first_step_runs_again_for_its_later_step(tmp_path, data_root, monkeypatch):
    committed = tmp_path / "results"
    for record in ("p4/smoke/fc12-mnist-s0", "p4/smoke/fc12-fashion_mnist-s0"):  # trained in an earlier window
        (committed / record).mkdir(parents=True)
        (committed / record / "summary.json").write_text("{}")
    monkeypatch.setattr(pack, "BUNDLE_DIR", tmp_path / "no-bundle")
    monkeypatch.setattr(pack, "QUEUE", tuple(g for g in pack.QUEUE if g.name == "p4_fc12"))
    monkeypatch.setenv("RMT_DATA_ROOT", str(data_root))
    out = tmp_path / "out"
    assert pack.main(["run", "--out", str(out), "--budget", "150", "--profile", "smoke", "--device", "cpu",
                      "--results", str(committed), "--slots", "2", "--self-check-s", "1"]) == 0
    events = [json.loads(line) for line in (out / "pack.log").read_text().splitlines()]
    assert sorted(e["record"] for e in events if e["event"] == "rerun") == ["p4/smoke/fc12-fashion_mnist-s0", "p4/smoke/fc12-mnist-s0"]
    limits = archive_manifest(out / "p4_fc12.tgz")["records"]
    assert limits and all(r.startswith("p4_limit/") for r in limits)  # the re-run sources are not archived again


def test_run_refuses_a_folder_with_files_and_a_tiny_budget(tmp_path):
    (tmp_path / "x").write_text("mine")
    with pytest.raises(SystemExit, match="not empty"):
        pack.main(["run", "--out", str(tmp_path), "--budget", "60", "--device", "cpu"])
    with pytest.raises(SystemExit, match="at least"):
        pack.main(["run", "--out", str(tmp_path / "new"), "--budget", "5", "--device", "cpu"])


def test_bundle_brings_hydra_and_data_and_respects_the_travel_limit(tmp_path, data_root, monkeypatch):
    target = tmp_path / ".pack"
    assert pack.bundle(["mnist"], data_root, target) == 0
    assert (target / "data/MNIST/raw/train-images-idx3-ubyte.gz").is_file()
    assert pack.dataset_present(target / "data", "mnist") and not pack.dataset_present(target / "data", "fashion_mnist")
    env = {**os.environ, "PYTHONPATH": str(target / "site")}
    found = subprocess.run([sys.executable, "-c", "import hydra, omegaconf, antlr4, pytest; print(hydra.__file__)"],
                           env=env, capture_output=True, text=True, check=True).stdout
    assert found.startswith(str(target / "site"))  # the bundle's copy, not this environment's
    assert pack.folder_bytes(target) + pack.tracked_bytes() <= pack.MAX_TRAVEL_BYTES
    monkeypatch.setattr(pack, "MAX_TRAVEL_BYTES", 2**20)
    with pytest.raises(SystemExit, match="exceed"):
        pack.bundle(["mnist"], data_root, tmp_path / "small")
    assert not (tmp_path / "small").exists() and not (tmp_path / "small.new").exists()
    with pytest.raises(SystemExit, match="unknown dataset"):
        pack.bundle(["cifar10"], data_root, tmp_path / "c")
