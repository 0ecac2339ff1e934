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

import pandas as pd
import torch
from omegaconf import DictConfig
from torch import nn

from experiments.common import begin_record, hydra_entry, load_source_run, setup_numerics
from experiments.validation import CONFIDENCE_BOUND_RULES, check_config
from rmt.mp import split_signal_noise


def lemma_tau(w1: torch.Tensor, w3: torch.Tensor, inputs: torch.Tensor) -> torch.Tensor:
    """The lemma's bound per input: tau_N(s) = 2 sqrt(2) ||W3||_inf ||W1 s||_2 sqrt(log(2N) / N), N = W1's rows
    (||.||_inf the largest absolute row sum)."""
    n = w1.shape[0]
    return 2 * math.sqrt(2) * w3.abs().sum(dim=1).max() * (inputs @ w1.T).norm(dim=1) * math.sqrt(math.log(2 * n) / n)


def bound_check(full: torch.Tensor, reduced: torch.Tensor, tau: torch.Tensor, labels: torch.Tensor) -> dict:
    """What the lemma claims, measured on logits before (`full`) and after (`reduced`) the random part is removed:
    the share of inputs whose largest logit change is within tau, label flips, and flips among inputs whose
    logit margin exceeds 2 tau (the lemma says none)."""
    change = (full - reduced).abs().max(dim=1).values
    top2 = full.topk(2, dim=1).values
    flips = full.argmax(1) != reduced.argmax(1)
    confident = top2[:, 0] - top2[:, 1] > 2 * tau
    return {"bound_held": float((change <= tau).double().mean()), "median_change": float(change.median()),
            "median_tau": float(tau.median()), "median_change_over_tau": float((change / tau).median()),
            "label_flips": int(flips.sum()), "confident_inputs": int(confident.sum()),
            "flips_among_confident": int((flips & confident).sum()),
            "acc_before": float((full.argmax(1) == labels).double().mean()),
            "acc_after": float((reduced.argmax(1) == labels).double().mean()), "n_inputs": len(labels)}


@torch.no_grad()
def measure(run_dir: Path, alpha: float, beta: float, device: torch.device) -> dict:
    source = load_source_run(run_dir, device)
    linears = [m for m in source.model.modules() if isinstance(m, nn.Linear)]
    if len(linears) != 3 or linears[1].weight.shape[0] != linears[1].weight.shape[1]:
        raise ValueError(f"{run_dir}: the lemma needs an unpruned [in, N, N, out] net, got {[tuple(m.weight.shape) for m in linears]}")
    w1, w2, w3 = (m.weight.double() for m in linears)
    b1, b2, b3 = (m.bias.double() for m in linears)
    test = source.data(device).test
    s, y = test.x.flatten(1).double(), test.y
    parts = split_signal_noise(w2, alpha=alpha, beta=beta)
    hidden = torch.relu(s @ w1.T + b1)

    def logits(w: torch.Tensor) -> torch.Tensor:
        return torch.relu(hidden @ w.T + b2) @ w3.T + b3

    n = w2.shape[0]
    return {"run": run_dir.name, "N": n, "spikes": parts.fit.n_spikes, "sigma2_times_N": parts.fit.sigma2 * n,
            **bound_check(logits(w2), logits(parts.signal), lemma_tau(w1, w3, s), y)}


def run(cfg: DictConfig) -> pd.DataFrame:
    check_config(cfg, CONFIDENCE_BOUND_RULES)
    device, _, _ = setup_numerics(cfg)
    sources = sorted(p.parent for p in Path(cfg.runs).glob("*/checkpoint.pt"))
    if not sources:
        raise FileNotFoundError(f"no trained runs in {cfg.runs}: run `make reproduce-p1-confidence` (the p1_confidence sweep) first")
    table = pd.DataFrame([measure(d, cfg.alpha, cfg.beta, device) for d in sources]).sort_values("N")
    record = begin_record(cfg, "confidence_bound")
    record.write_frame("confidence_bound.csv", table)
    record.write_summary({"widths": table["N"].tolist(), "bound_held_everywhere": bool((table["bound_held"] == 1.0).all()),
                          "flips_among_confident": int(table["flips_among_confident"].sum())})
    return table


def report(table: pd.DataFrame) -> None:
    print(table[["N", "bound_held", "median_change_over_tau", "label_flips", "flips_among_confident", "acc_before", "acc_after"]].to_string(index=False))


main = hydra_entry("confidence_bound", run, report, extra_errors=(ValueError,))

if __name__ == "__main__":
    main()
