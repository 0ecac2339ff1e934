"""P1 magnitude sweep: accuracy vs number of non-zero parameters after post-training magnitude pruning.

    python -m experiments.magnitude_sweep [normal_run=<run folder>] [rmt_run=<run folder>]

For thresholds t_k = 1 / (1 + k), k = 0 .. k_max - 1 (P1), every Linear / Conv2d weight entry with
|w| < t_k is set to zero in a copy of each trained net (the unpruned and the MP-pruned one), and the
test accuracy and the number of non-zero parameters are recorded.  Writes `magnitude_sweep.csv`.
"""

from __future__ import annotations

import hydra
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf

from experiments.checkpoints import load_run_model
from experiments.data import run_data
from experiments.errors import run_or_exit
from experiments.records import RunRecord
from experiments.train import evaluate
from rmt.spectra import spectral_layers


def nonzero_parameters(model: torch.nn.Module) -> int:
    return sum(int((p != 0).sum()) for p in model.parameters())


@torch.no_grad()
def run(cfg: DictConfig) -> dict:
    record = RunRecord(cfg.run_dir)
    record.begin(OmegaConf.to_container(cfg, resolve=True))
    rows, summary = [], {}
    for arm, source_run in (("normal", cfg.normal_run), ("rmt", cfg.rmt_run)):
        model, source, _ = load_run_model(source_run)
        x, y = run_data(source, train=False)
        weights = [m.weight for _, m in spectral_layers(model)]
        originals = [w.clone() for w in weights]
        for k in range(cfg.k_max):
            threshold = 1.0 / (1 + k)
            for w, orig in zip(weights, originals):
                w.copy_(torch.where(orig.abs() < threshold, torch.zeros_like(orig), orig))
            rows.append({"arm": arm, "k": k, "threshold": threshold, "nonzero_params": nonzero_parameters(model),
                         "test_acc": evaluate(model, x, y, 2000)[1]})
        for w, orig in zip(weights, originals):
            w.copy_(orig)
        summary[arm] = {"source_run": str(source_run), "params": sum(p.numel() for p in model.parameters()),
                        "test_acc": evaluate(model, x, y, 2000)[1]}
    df = pd.DataFrame(rows)
    df.to_csv(record.dir / "magnitude_sweep.csv", index=False)
    record.write_summary(summary)
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="magnitude_sweep")
def main(cfg: DictConfig) -> None:
    summary = run_or_exit(run, cfg)
    print({arm: (s["params"], round(s["test_acc"], 4)) for arm, s in summary.items()})


if __name__ == "__main__":
    main()
