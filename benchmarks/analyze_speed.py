"""Speed of `rmt analyze` against the bare SVD floor and WeightWatcher, measured in one run.

    .venv/bin/python benchmarks/analyze_speed.py [--models vit_small_patch16_224 vit_base_patch16_224] [--repeats 3]

For each random-init timm model: the floor (one `torch.linalg.svdvals` call per Linear / Conv2d matrix,
nothing else), `rmt.analyze.analyze` cold (first call in the process: TW1 and MP quantiles not cached
yet) and warm (median of --repeats), and `weightwatcher.WeightWatcher(model).analyze(mp_fit=True)`
when weightwatcher is installed (`pip install weightwatcher`, an optional extra).  Prints a table of
seconds and ratios, the spike counts of both tools on the same layers, and writes JSON with --json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time

import torch

from rmt.analyze import analyze, weight_matrices
from rmt.models import build_model


def timed(fn) -> tuple[float, object]:
    t0 = time.perf_counter()
    out = fn()
    return time.perf_counter() - t0, out


def floor(model) -> None:
    with torch.no_grad():
        for _, mat in weight_matrices(model):
            torch.linalg.svdvals(mat)


def weightwatcher_run(model):
    try:
        import weightwatcher as ww
    except ImportError:
        return None, None
    import logging

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    seconds, details = timed(lambda: ww.WeightWatcher(model=model).analyze(mp_fit=True))
    return seconds, details


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vit_small_patch16_224", "vit_base_patch16_224"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--no-weightwatcher", action="store_true")
    parser.add_argument("--json", help="write the measurements here")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    results = {"device": torch.cuda.get_device_name(0) if device == "cuda" else f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})",
               "torch": torch.__version__, "threads": torch.get_num_threads(), "models": {}}
    for name in args.models:
        torch.manual_seed(0)
        model = build_model("timm", name=name).eval()
        n_layers = len(weight_matrices(model))
        cold, df = timed(lambda: analyze(model, device=device))
        floor(model)  # warm-up of the LAPACK paths
        floors = [timed(lambda: floor(model))[0] for _ in range(args.repeats)]
        warms = [timed(lambda: analyze(model, device=device))[0] for _ in range(args.repeats)]
        row = {"layers": n_layers, "floor_s": statistics.median(floors), "ours_cold_s": cold, "ours_warm_s": statistics.median(warms)}
        row["ours_over_floor"] = row["ours_warm_s"] / row["floor_s"]
        if not args.no_weightwatcher:
            ww_s, details = weightwatcher_run(model)
            if ww_s is not None:
                row["weightwatcher_s"] = ww_s
                row["weightwatcher_over_ours"] = ww_s / row["ours_warm_s"]
                row["weightwatcher_num_spikes_total"] = int(details["num_spikes"].sum())
                # both list the layers in module order; WeightWatcher pools conv kernels, we unfold them
                if len(details) == len(df):
                    ours, theirs = df["spikes"].to_numpy(), details["num_spikes"].to_numpy()
                    row["layers_spike_counts_differ"] = int((ours != theirs).sum())
        row["ours_spikes_total"] = int(df["spikes"].sum())
        results["models"][name] = row
        print(f"{name}: {n_layers} layers | floor {row['floor_s']:.2f} s | ours {row['ours_warm_s']:.2f} s "
              f"(cold {cold:.2f} s) = {row['ours_over_floor']:.2f}x floor"
              + (f" | weightwatcher {row['weightwatcher_s']:.1f} s = {row['weightwatcher_over_ours']:.1f}x ours, "
                 f"its num_spikes total {row['weightwatcher_num_spikes_total']} vs ours {row['ours_spikes_total']} "
                 f"(differ on {row.get('layers_spike_counts_differ', '?')} of {n_layers} layers)"
                 if "weightwatcher_s" in row else f" | spikes (ours) {row['ours_spikes_total']}"), flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
