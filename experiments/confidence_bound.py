"""P1 classification-confidence lemma, measured on [784, N, N, 10] nets of several widths N.

    python -m experiments.confidence_bound [runs=<folder with the p1_confidence runs>]

For f(s) = W3 relu(W2 relu(W1 s + b1) + b2) + b3, remove the random part R_hat of the N x N layer W2
(its singular values below the MP edge sigma_plus) and compare the logits on every test input with
the lemma's bound tau_N(s) = 2 sqrt(2) ||W3||_inf ||W1 s||_2 sqrt(log(2N) / N) (||.||_inf: max row
sum).  Reports per width: the share of inputs where max |f - f_hat| <= tau_N(s) held, label flips,
flips among inputs whose logit margin exceeds 2 tau_N(s) (the lemma says none), accuracy before and
after, and the fitted entry variance of W2 times N (the lemma's normalisation assumes about 1).
"""

from __future__ import annotations

import math
from pathlib import Path

import hydra
import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn

from analysis.runs import run_dirs
from experiments.checkpoints import load_run_model
from experiments.data import run_data
from experiments.errors import run_or_exit
from experiments.records import RunRecord
from rmt.mp import fit_spectra


@torch.no_grad()
def measure(run_dir: Path, alpha: float, beta: float) -> dict:
    model, config, _ = load_run_model(run_dir)
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if len(linears) != 3 or linears[1].weight.shape[0] != linears[1].weight.shape[1]:
        raise ValueError(f"{run_dir}: the lemma needs an unpruned [in, N, N, out] net, got {[tuple(m.weight.shape) for m in linears]}")
    w1, w2, w3 = linears
    x, y = run_data(config, train=False)
    s = x.flatten(1).double()
    n = w2.weight.shape[0]
    u, sv, vh = torch.linalg.svd(w2.weight.double(), full_matrices=False)
    fit = fit_spectra(sv[None], n, alpha=alpha, beta=beta)[0]
    keep = sv > fit.sigma_plus
    s_hat = (u[:, keep] * sv[keep]) @ vh[keep]

    hidden = torch.relu(s @ w1.weight.double().T + w1.bias.double())
    def logits(w: torch.Tensor) -> torch.Tensor:
        return torch.relu(hidden @ w.T + w2.bias.double()) @ w3.weight.double().T + w3.bias.double()
    full, reduced = logits(w2.weight.double()), logits(s_hat)
    change = (full - reduced).abs().max(dim=1).values
    tau = 2 * math.sqrt(2) * w3.weight.double().abs().sum(dim=1).max() * (s @ w1.weight.double().T).norm(dim=1) * math.sqrt(math.log(2 * n) / n)
    top2 = full.topk(2, dim=1).values
    margin = top2[:, 0] - top2[:, 1]
    flips = full.argmax(1) != reduced.argmax(1)
    confident = margin > 2 * tau
    return {"run": run_dir.name, "N": n, "spikes": fit.n_spikes, "sigma2_times_N": fit.sigma2 * n,
            "bound_held": float((change <= tau).double().mean()), "median_change": float(change.median()),
            "median_tau": float(tau.median()), "median_change_over_tau": float((change / tau).median()),
            "label_flips": int(flips.sum()), "confident_inputs": int(confident.sum()),
            "flips_among_confident": int((flips & confident).sum()),
            "acc_before": float((full.argmax(1) == y).double().mean()), "acc_after": float((reduced.argmax(1) == y).double().mean()),
            "n_inputs": len(y)}


def run(cfg: DictConfig) -> pd.DataFrame:
    sources = run_dirs(cfg.runs)
    if not sources:
        raise FileNotFoundError(f"no runs below {cfg.runs}: run `make reproduce-p1-confidence` (the p1_confidence sweep) first")
    record = RunRecord(cfg.run_dir)
    record.begin(OmegaConf.to_container(cfg, resolve=True))
    table = pd.DataFrame([measure(d, cfg.alpha, cfg.beta) for d in sources]).sort_values("N")
    table.to_csv(record.dir / "confidence_bound.csv", index=False)
    record.write_summary({"widths": table["N"].tolist(), "bound_held_everywhere": bool((table["bound_held"] == 1.0).all()),
                          "flips_among_confident": int(table["flips_among_confident"].sum())})
    return table


@hydra.main(version_base="1.3", config_path="../conf", config_name="confidence_bound")
def main(cfg: DictConfig) -> None:
    table = run_or_exit(run, cfg, extra=(ValueError,))
    print(table[["N", "bound_held", "median_change_over_tau", "label_flips", "flips_among_confident", "acc_before", "acc_after"]].to_string(index=False))


if __name__ == "__main__":
    main()
