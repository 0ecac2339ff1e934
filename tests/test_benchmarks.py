"""The benchmark scripts run end to end on tiny inputs (their numbers are measured elsewhere)."""

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_analyze_speed_script(tmp_path):
    out = tmp_path / "speed.json"
    subprocess.run([sys.executable, "benchmarks/analyze_speed.py", "--models", "vit_tiny_patch16_224", "--repeats", "1",
                    "--no-weightwatcher", "--json", str(out)], cwd=ROOT, check=True, capture_output=True, timeout=300)
    row = json.loads(out.read_text())["models"]["vit_tiny_patch16_224"]
    assert row["layers"] == 50 and row["floor_s"] > 0 and row["ours_over_floor"] > 0


def test_latency_script(tmp_path):
    out = tmp_path / "latency.json"
    subprocess.run([sys.executable, "benchmarks/latency.py", "--fig1-runs", str(tmp_path / "none"), "--vit", "vit_tiny_patch16_224",
                    "--vit-batches", "1", "--min-run-time", "0.05", "--json", str(out)], cwd=ROOT, check=True, capture_output=True, timeout=300)
    rows = json.loads(out.read_text())
    assert rows[0]["params_factorized"] < rows[0]["params_dense"] and rows[0]["speedup"] > 0


def test_train_speed_script(tmp_path, data_root):
    out = tmp_path / "train_speed.json"
    subprocess.run([sys.executable, "benchmarks/train_speed.py", "--device", "cpu", "--profile", "smoke", "--repeats", "1",
                    "--data-dir", str(data_root), "--json", str(out)], cwd=ROOT, check=True, capture_output=True, timeout=300)
    row = json.loads(out.read_text())
    assert row["device"].startswith("cpu") and row["runner_over_bare"] > 0 and row["prune_over_epoch"] > 0


def test_hessian_speed_script(tmp_path):
    out = tmp_path / "hessian_speed.json"
    subprocess.run([sys.executable, "benchmarks/hessian_speed.py", "--width-scale", "0.02", "--examples", "256", "--chunk", "100",
                    "--steps", "3", "--repeats", "1", "--device", "cpu", "--json", str(out)], cwd=ROOT, check=True,
                   capture_output=True, timeout=300)
    row = json.loads(out.read_text())
    assert row["params"] == 784 * 20 + 20 + 20 * 16 + 16 + 16 * 16 + 16 + 16 * 16 + 16 + 16 * 10 + 10
    assert row["hvp_over_grad"] > 0 and row["slq_step_over_hvp"] > 0
