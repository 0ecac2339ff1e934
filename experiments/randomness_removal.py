"""P3 theorem check: loss vs randomness removed and vs noise added, on a trained FC net.

    python -m experiments.randomness_removal [source_run=<run folder>]

For each hidden layer W = S_hat + R_hat (R_hat = the part below the MP edge sigma_plus), evaluate the
net with W(theta) = S_hat + theta R_hat for theta in [0, 1] (randomness removed: 1 - theta), and with
N(0, eps^2) noise added to the hidden layers for eps in [0, 0.01].  Reports cross-entropy, the
L2-regularised loss CE + lambda * sum ||W||^2 and accuracy on the training and test data, and the
trend of the regularised loss on the measured grid (the theorem: decreasing as randomness is removed;
P3's noise check: increasing in eps).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from torch import nn

from experiments.common import begin_record, evaluate, hydra_entry, load_source_run, setup_numerics
from experiments.data import Split
from experiments.validation import RANDOMNESS_REMOVAL_RULES, check_config
from rmt.models import output_layer_name
from rmt.mp import split_signal_noise


@torch.no_grad()
def losses(model: nn.Module, split: Split, lam: float) -> dict:
    """Mean CE, CE + lam * sum of squared parameters, and accuracy."""
    ce, acc, _ = evaluate(model, split, 2000)
    sq = float(sum(p.double().pow(2).sum() for p in model.parameters()))
    return {"ce": ce, "reg_loss": ce + lam * sq, "acc": acc}


def trend(values: np.ndarray) -> str:
    """`increasing`, `decreasing`, or `not monotone (k of n steps up)` on the measured grid."""
    steps = np.diff(values)
    if np.all(steps >= 0):
        return "increasing"
    if np.all(steps <= 0):
        return "decreasing"
    return f"not monotone ({int((steps > 0).sum())} of {len(steps)} steps up)"


@torch.no_grad()
def run(cfg: DictConfig) -> dict:
    check_config(cfg, RANDOMNESS_REMOVAL_RULES)
    device, _, _ = setup_numerics(cfg)
    source = load_source_run(cfg.source_run, device)
    model = source.model
    record = begin_record(cfg, "randomness_removal", source_config=source.config)
    lam = cfg.lambda_l2 if cfg.lambda_l2 is not None else source.config["reg"]["l2"]
    run_data = source.data(device)
    data = {"train": run_data.train, "test": run_data.test}
    out_name = output_layer_name(model)
    hidden = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and not n.startswith(out_name)]
    originals = {n: m.weight.detach().clone() for n, m in hidden}
    parts = {name: split_signal_noise(w, alpha=cfg.alpha, beta=cfg.beta) for name, w in originals.items()}

    def evaluate_all(tag: dict) -> list[dict]:
        return [{**tag, "split": name, **losses(model, split, lam)} for name, split in data.items()]

    theta_rows = []
    for theta in cfg.thetas:
        for name, m in hidden:
            m.weight.copy_(parts[name].signal + theta * parts[name].noise)
        theta_rows += evaluate_all({"theta": theta, "removed": 1 - theta})
    noise_rows = []
    gen = torch.Generator().manual_seed(cfg.seed)  # noise drawn on the CPU: the same draws on every device
    for eps in cfg.epsilons:
        for draw in range(cfg.noise_draws):
            for name, m in hidden:
                m.weight.copy_(originals[name] + eps * torch.randn(originals[name].shape, generator=gen).to(device))
            noise_rows += evaluate_all({"eps": eps, "draw": draw})
    for name, m in hidden:
        m.weight.copy_(originals[name])
    theta_df, noise_df = pd.DataFrame(theta_rows), pd.DataFrame(noise_rows)
    record.write_frame("theta_sweep.csv", theta_df)
    record.write_frame("noise_sweep.csv", noise_df)
    widths = [min(w.shape) for w in originals.values()]
    summary = {"source_run": str(cfg.source_run), "lambda_l2": lam, "hidden_layers": list(originals), "one_over_n": 1 / max(widths)}
    for split in data:
        t = theta_df[theta_df["split"] == split].sort_values("removed")
        nz = noise_df[noise_df["split"] == split].groupby("eps")[["ce", "reg_loss", "acc"]].mean()
        summary[split] = {  # the theorem: reg. loss decreasing in the removed fraction; P3's check: increasing in eps
            "reg_loss_vs_removed": trend(t["reg_loss"].to_numpy()),
            "ce_vs_removed": trend(t["ce"].to_numpy()),
            "reg_loss_removed0_vs_removed1": [float(t["reg_loss"].iloc[0]), float(t["reg_loss"].iloc[-1])],
            "acc_removed0_vs_removed1": [float(t["acc"].iloc[0]), float(t["acc"].iloc[-1])],
            "reg_loss_vs_eps": trend(nz["reg_loss"].to_numpy()),
            "noise_reg_loss_eps0_vs_max": [float(nz["reg_loss"].iloc[0]), float(nz["reg_loss"].iloc[-1])],
            "noise_ce_eps0_vs_max": [float(nz["ce"].iloc[0]), float(nz["ce"].iloc[-1])],
            "noise_acc_eps0_vs_max": [float(nz["acc"].iloc[0]), float(nz["acc"].iloc[-1])],
        }
    record.write_summary(summary)
    return summary


def report(summary: dict) -> None:
    for split in ("train", "test"):
        s = summary[split]
        print(f"{split}: reg. loss vs randomness removed: {s['reg_loss_vs_removed']} {s['reg_loss_removed0_vs_removed1']}; "
              f"vs noise: {s['reg_loss_vs_eps']} {s['noise_reg_loss_eps0_vs_max']}")


main = hydra_entry("randomness_removal", run, report)

if __name__ == "__main__":
    main()
