"""P1 magnitude sweep: accuracy vs number of non-zero parameters after post-training magnitude pruning.

    python -m experiments.magnitude_sweep [normal_run=<run folder>] [rmt_run=<run folder>]
    python -m experiments.magnitude_sweep run_name=cnn threshold_scale=20 \
        normal_run=runs/p1_cnn/quick/normal-s0 rmt_run=runs/p1_cnn/quick/rmt-s0        # the P1 CNN's sweep

For thresholds t_k = 1 / (threshold_scale * (1 + k)), k = 0 .. k_max - 1 (P1 FC code: scale 1, so 1 .. 0.02;
P1 CNN code: scale 20, so 0.05 .. 0.001), every Linear / Conv2d weight entry (conv kernels and the factors of
split layers included) with |w| < t_k is set to zero in a copy of each trained net (the unpruned and the MP-pruned
one), and the test accuracy and the number of non-zero parameters (over all parameters, biases included)
are recorded.  Writes `magnitude_sweep.csv`.
"""

from __future__ import annotations

import pandas as pd
import torch
from omegaconf import DictConfig

from experiments.common import begin_record, evaluate, hydra_entry, load_source_run, setup_numerics
from experiments.validation import MAGNITUDE_SWEEP_RULES, check_config
from rmt.pruners import count_nonzero
from rmt.spectra import spectral_layers


@torch.no_grad()
def run(cfg: DictConfig) -> dict:
    check_config(cfg, MAGNITUDE_SWEEP_RULES)
    device, _, _ = setup_numerics(cfg)
    sources = {arm: load_source_run(run_dir, device) for arm, run_dir in (("normal", cfg.normal_run), ("rmt", cfg.rmt_run))}
    record = begin_record(cfg, "magnitude_sweep")
    rows, summary = [], {}
    for arm, source in sources.items():
        model, test = source.model, source.data(device).test
        weights = [m.weight for _, m in spectral_layers(model)]
        originals = [w.clone() for w in weights]
        for k in range(cfg.k_max):
            threshold = 1.0 / (cfg.threshold_scale * (1 + k))
            for w, orig in zip(weights, originals):
                w.copy_(torch.where(orig.abs() < threshold, torch.zeros_like(orig), orig))
            rows.append({"arm": arm, "k": k, "threshold": threshold, "nonzero_params": count_nonzero(model),
                         "test_acc": evaluate(model, test, 2000)[1]})
        for w, orig in zip(weights, originals):
            w.copy_(orig)
        summary[arm] = {"source_run": str(source.dir), "params": sum(p.numel() for p in model.parameters()),
                        "test_acc": evaluate(model, test, 2000)[1]}
    df = pd.DataFrame(rows)
    record.write_frame("magnitude_sweep.csv", df)
    record.write_summary(summary)
    return summary


main = hydra_entry("magnitude_sweep", run,
                   lambda summary: print({arm: (s["params"], round(s["test_acc"], 4)) for arm, s in summary.items()}))

if __name__ == "__main__":
    main()
