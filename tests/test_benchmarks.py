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
