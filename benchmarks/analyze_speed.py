"""Speed of `rmt analyze` against the bare SVD and Gram-eigvalsh floors (and WeightWatcher), in one run.

    .venv/bin/python benchmarks/analyze_speed.py [--models vit_small_patch16_224 vit_base_patch16_224] [--repeats 3]
        [--device cpu|cuda] [--weightwatcher] [--json out.json]

For each random-init timm model (seed 0), on `--device` (default: the GPU when present), with the
weights already there:
- SVD floor: one `torch.linalg.svdvals` call per Linear / Conv2d matrix (as stored, float32), nothing else;
- Gram floor: one float64 Gram matrix of the smaller side plus `torch.linalg.eigvalsh` per matrix, nothing
  else: the cheapest route to the spectra that `rmt` itself takes;
- ours: `rmt.analyze.analyze(model, device=...)` end to end, cold (first call in the process: TW1 and MP
  quantiles not cached yet) and warm;
- WeightWatcher (`--weightwatcher`, slow; needs `pip install weightwatcher`):
  `WeightWatcher(model).analyze(mp_fit=True)`, one call, with the spike counts of both tools.
Floors and ours are timed in interleaved rounds (medians of `--repeats`), CUDA synchronised.  Prints a
table row per model and writes JSON with --json; `gram_fallback_layers` counts the layers whose spectrum
was too ill-conditioned for the Gram route (`rmt.spectra.GRAM_TOL`) and went to the SVD.
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
from rmt.spectra import gram_svdvals
from timing import timed


@torch.no_grad()
def svd_floor(mats: list[torch.Tensor]) -> None:
    for mat in mats:
        torch.linalg.svdvals(mat)


@torch.no_grad()
def gram_floor(mats: list[torch.Tensor]) -> None:
    for mat in mats:
        w = mat.double()
        torch.linalg.eigvalsh(w.mT @ w if w.shape[1] <= w.shape[0] else w @ w.mT)


def fallback_layers(mats: list[torch.Tensor]) -> int:
    groups: dict[tuple, list[torch.Tensor]] = {}
    for mat in mats:
        groups.setdefault(tuple(mat.shape), []).append(mat)
    return int(sum(gram_svdvals(group).fallback.sum() for group in groups.values()))


def weightwatcher_run(model):
    try:
        import weightwatcher as ww
    except ImportError:
        return None, None
    import logging

    logging.getLogger("weightwatcher").setLevel(logging.ERROR)
    t0 = time.perf_counter()
    details = ww.WeightWatcher(model=model).analyze(mp_fit=True)
    return time.perf_counter() - t0, details


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", default=["vit_small_patch16_224", "vit_base_patch16_224"])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--weightwatcher", action="store_true", help="also time WeightWatcher (tens of seconds per model)")
    parser.add_argument("--no-weightwatcher", action="store_true", help=argparse.SUPPRESS)  # the default; kept for old command lines
    parser.add_argument("--json", help="write the measurements here")
    args = parser.parse_args()
    import timm

    device = torch.device(args.device)
    results = {"device": torch.cuda.get_device_name(device) if device.type == "cuda"
               else f"cpu ({os.cpu_count()} cores, {platform.processor() or platform.machine()})",
               "torch": torch.__version__, "threads": torch.get_num_threads(), "models": {}}
    for name in args.models:
        torch.manual_seed(0)
        model = timm.create_model(name, pretrained=False).eval().to(device)
        mats = [m for _, m in weight_matrices(model)]
        cold, df = timed(lambda: analyze(model, device=device), device)
        svd_floor(mats[:4])  # warm-up of the LAPACK / cuSOLVER paths
        gram_floor(mats[:4])
        rounds = [[timed(fn, device)[0] for fn in (lambda: svd_floor(mats), lambda: gram_floor(mats),
                                                    lambda: analyze(model, device=device))] for _ in range(args.repeats)]
        floor_s, gram_s, ours_s = (statistics.median(r[k] for r in rounds) for k in range(3))
        row = {"layers": len(mats), "floor_s": floor_s, "gram_floor_s": gram_s, "ours_cold_s": cold, "ours_warm_s": ours_s,
               "ours_over_floor": ours_s / floor_s, "ours_over_gram_floor": ours_s / gram_s, "floor_over_gram_floor": floor_s / gram_s,
               "gram_fallback_layers": fallback_layers(mats), "ours_spikes_total": int(df["spikes"].sum())}
        line = (f"{name}: {len(mats)} layers | svd floor {floor_s:.2f} s | gram floor {gram_s:.2f} s | ours {ours_s:.2f} s "
                f"(cold {cold:.2f} s) = {row['ours_over_gram_floor']:.2f}x gram floor, {row['ours_over_floor']:.2f}x svd floor "
                f"| {row['gram_fallback_layers']} layers fell back to the SVD | spikes (ours) {row['ours_spikes_total']}")
        if args.weightwatcher:
            ww_s, details = weightwatcher_run(model)
            if ww_s is not None:
                row["weightwatcher_s"] = ww_s
                row["weightwatcher_over_ours"] = ww_s / ours_s
                row["weightwatcher_num_spikes_total"] = int(details["num_spikes"].sum())
                # both list the layers in module order; WeightWatcher pools conv kernels, we unfold them
                if len(details) == len(df):
                    row["layers_spike_counts_differ"] = int((df["spikes"].to_numpy() != details["num_spikes"].to_numpy()).sum())
                line += (f" | weightwatcher {ww_s:.1f} s = {row['weightwatcher_over_ours']:.1f}x ours, its num_spikes total "
                         f"{row['weightwatcher_num_spikes_total']} (differ on {row.get('layers_spike_counts_differ', '?')} layers)")
        results["models"][name] = row
        print(line, flush=True)
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(results, fh, indent=2)


if __name__ == "__main__":
    main()
