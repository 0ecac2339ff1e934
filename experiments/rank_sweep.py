"""P2 Fig. 5: test accuracy of a trained net when one layer keeps only its k largest singular values.

    python -m experiments.rank_sweep                       # the P2 Fig. 4 run, layer "1", k = 0, 5, ..., 95
    python -m experiments.rank_sweep source_run=runs/... layer=3

Reads the source run's checkpoint, truncates the layer to rank k for each k, evaluates on the
source run's test data, and marks the MP-predicted rank (number of spikes above sigma_plus) with
the correct formula and with the authors' (`compat`).  Writes `rank_sweep.csv` and `summary.json`.
"""

from __future__ import annotations

import pandas as pd
import torch
from omegaconf import DictConfig

from experiments.common import begin_record, evaluate, hydra_entry, load_source_run, setup_numerics
from experiments.errors import RunConfigError
from experiments.validation import RANK_SWEEP_RULES, check_config
from rmt.mp import fit_spectra
from rmt.spectra import layer_matrix, spectral_layers


@torch.no_grad()
def run(cfg: DictConfig) -> dict:
    check_config(cfg, RANK_SWEEP_RULES)
    device, _, _ = setup_numerics(cfg)
    source = load_source_run(cfg.source_run, device)
    model = source.model
    layers = dict(spectral_layers(model))
    if str(cfg.layer) not in layers:
        raise RunConfigError(f"layer={cfg.layer!r} is not a Linear / Conv2d layer of {cfg.source_run}; its layers: {', '.join(layers)}")
    if cfg.ranks.stop <= cfg.ranks.start:
        raise RunConfigError(f"ranks.stop={cfg.ranks.stop} must exceed ranks.start={cfg.ranks.start}")
    layer = layers[str(cfg.layer)]
    record = begin_record(cfg, "rank_sweep", source_config=source.config)
    test = source.data(device).test
    weight = layer.weight.detach().clone()
    mat = layer_matrix(layer).detach()
    u, s, vh = torch.linalg.svd(mat.double(), full_matrices=False)
    n, m = max(mat.shape), min(mat.shape)
    fits = {mode: fit_spectra(s[None], n, alpha=cfg.alpha, beta=cfg.beta, compat=mode == "compat")[0] for mode in ("correct", "compat")}

    def accuracy_at(rank: int) -> float:
        trunc = ((u[:, :rank] * s[:rank]) @ vh[:rank]).to(weight.dtype)
        layer.weight.copy_(trunc.reshape(weight.shape))
        acc = evaluate(model, test, 2000)[1]
        layer.weight.copy_(weight)
        return acc

    full_acc = evaluate(model, test, 2000)[1]
    ranks = list(range(cfg.ranks.start, min(cfg.ranks.stop, m + 1), cfg.ranks.step))
    rows = [{"rank": k, "test_acc": accuracy_at(k), "layer_params_split": k * (mat.shape[0] + mat.shape[1])} for k in ranks]
    record.write_frame("rank_sweep.csv", pd.DataFrame(rows))
    summary = {"source_run": str(cfg.source_run), "layer": cfg.layer, "shape": list(mat.shape), "layer_params": mat.numel(),
               "full_test_acc": full_acc}
    for mode, fit in fits.items():
        summary[f"predicted_rank_{mode}"] = fit.n_spikes
        summary[f"test_acc_at_predicted_{mode}"] = accuracy_at(fit.n_spikes)
        summary[f"fit_{mode}"] = fit.as_dict()
    record.write_summary(summary)
    return summary


def report(summary: dict) -> None:
    print(f"full {summary['full_test_acc']:.4f}; predicted rank {summary['predicted_rank_correct']} "
          f"(compat {summary['predicted_rank_compat']}) -> {summary['test_acc_at_predicted_correct']:.4f}")


main = hydra_entry("rank_sweep", run, report)


if __name__ == "__main__":
    main()
