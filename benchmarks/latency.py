"""CPU inference latency, dense vs factorized (`rmt prune`), at batch 1 and a large batch.

    .venv/bin/python benchmarks/latency.py [--fig1-runs runs/fig1/quick] [--vit vit_small_patch16_224 --keep-fraction 0.3]

Pairs measured in one run with torch.utils.benchmark (blocked_autorange, median):
- every `fig1*-rmt-*` run below --fig1-runs (its pruned, split net) against its `-normal-` twin;
- a random-init timm ViT against itself after `mp_prune_step(keep_fraction)` with splitting.
Prints parameters, MACs and the speed-up (dense time / factorized time); --json writes them.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import torch
import torch.utils.benchmark as tb

from rmt.io import load_model
from rmt.models import build_model
from rmt.prune import count_macs, count_parameters, mp_prune_step


def median_seconds(model, x, min_run_time: float) -> float:
    with torch.inference_mode():
        return tb.Timer("model(x)", globals={"model": model.eval(), "x": x}).blocked_autorange(min_run_time=min_run_time).median


def compare(label: str, dense, pruned, example: torch.Tensor, batches: list[int], min_run_time: float) -> list[dict]:
    rows = []
    for b in batches:
        x = example.expand(b, *example.shape[1:]).contiguous()
        t_dense, t_pruned = median_seconds(dense, x, min_run_time), median_seconds(pruned, x, min_run_time)
        rows.append({"model": label, "batch": b, "params_dense": count_parameters(dense), "params_factorized": count_parameters(pruned),
                     "macs_dense": count_macs(dense, example), "macs_factorized": count_macs(pruned, example),
                     "dense_ms": 1e3 * t_dense, "factorized_ms": 1e3 * t_pruned, "speedup": t_dense / t_pruned})
        r = rows[-1]
        print(f"{label:28s} batch {b:4d}: dense {r['dense_ms']:9.2f} ms, factorized {r['factorized_ms']:9.2f} ms, "
              f"speed-up {r['speedup']:.2f}x (params {r['params_dense']:,} -> {r['params_factorized']:,}, "
              f"MACs {r['macs_dense']:,} -> {r['macs_factorized']:,})", flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--fig1-runs", default="runs/fig1/quick")
    parser.add_argument("--vit", default="vit_small_patch16_224")
    parser.add_argument("--keep-fraction", type=float, default=0.3)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--vit-batches", type=int, nargs="+", default=[1, 256])
    parser.add_argument("--min-run-time", type=float, default=1.0)
    parser.add_argument("--json")
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, {os.cpu_count()} cores")
    rows = []
    for pruned_dir in sorted(Path(args.fig1_runs).glob("fig1*-rmt-*")):
        dense_dir = pruned_dir.with_name(pruned_dir.name.replace("-rmt-", "-normal-"))
        if not dense_dir.exists():
            continue
        dense, _ = load_model(str(dense_dir))
        pruned, _ = load_model(str(pruned_dir))
        rows += compare(pruned_dir.name, dense, pruned, torch.randn(1, 1, 28, 28), args.batches, args.min_run_time)
    if args.vit:
        torch.manual_seed(0)
        dense = build_model("timm", model_name=args.vit).eval()
        pruned = build_model("timm", model_name=args.vit).eval()
        pruned.load_state_dict(dense.state_dict())
        mp_prune_step(pruned, args.keep_fraction, resplit="product")
        rows += compare(f"{args.vit} keep {args.keep_fraction}", dense, pruned, torch.randn(1, 3, 224, 224), args.vit_batches, args.min_run_time)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=2))


if __name__ == "__main__":
    main()
