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

import hydra
import numpy as np
import pandas as pd
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch import nn

from experiments.checkpoints import load_run_model
from experiments.data import batches, run_data
from experiments.errors import run_or_exit
from experiments.records import RunRecord
from rmt.models import output_layer_name
from rmt.mp import fit_spectra


@torch.no_grad()
def losses(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lam: float) -> dict:
    """Mean CE, CE + lam * sum of squared parameters, and accuracy."""
    ce, correct = 0.0, 0
    for xb, yb in batches(x, y, 2000):
        logits = model(xb)
        ce += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    ce /= len(x)
    sq = sum(p.pow(2).sum().item() for p in model.parameters())
    return {"ce": ce, "reg_loss": ce + lam * sq, "acc": correct / len(x)}


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
    model, source, _ = load_run_model(cfg.source_run)
    record = RunRecord(cfg.run_dir)
    record.begin({**OmegaConf.to_container(cfg, resolve=True), "source_config": source})
    lam = cfg.lambda_l2 if cfg.lambda_l2 is not None else source["reg"]["l2"]
    data = {"train": run_data(source, train=True), "test": run_data(source, train=False)}
    out_name = output_layer_name(model)
    hidden = [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear) and not n.startswith(out_name)]
    originals = {n: m.weight.detach().clone() for n, m in hidden}
    parts = {}
    for name, w in originals.items():
        u, s, vh = torch.linalg.svd(w.double(), full_matrices=False)
        fit = fit_spectra(s[None], max(w.shape), alpha=cfg.alpha, beta=cfg.beta)[0]
        bulk = s <= fit.sigma_plus
        r_hat = ((u[:, bulk] * s[bulk]) @ vh[bulk]).to(w.dtype)
        parts[name] = (w - r_hat, r_hat)

    def evaluate_all(tag: dict) -> list[dict]:
        return [{**tag, "split": split, **losses(model, x, y, lam)} for split, (x, y) in data.items()]

    theta_rows = []
    for theta in cfg.thetas:
        for name, m in hidden:
            s_hat, r_hat = parts[name]
            m.weight.copy_(s_hat + theta * r_hat)
        theta_rows += evaluate_all({"theta": theta, "removed": 1 - theta})
    noise_rows = []
    gen = torch.Generator().manual_seed(cfg.seed)
    for eps in cfg.epsilons:
        for draw in range(cfg.noise_draws):
            for name, m in hidden:
                m.weight.copy_(originals[name] + eps * torch.randn(originals[name].shape, generator=gen))
            noise_rows += evaluate_all({"eps": eps, "draw": draw})
    for name, m in hidden:
        m.weight.copy_(originals[name])

    theta_df, noise_df = pd.DataFrame(theta_rows), pd.DataFrame(noise_rows)
    theta_df.to_csv(record.dir / "theta_sweep.csv", index=False)
    noise_df.to_csv(record.dir / "noise_sweep.csv", index=False)
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


@hydra.main(version_base="1.3", config_path="../conf", config_name="randomness_removal")
def main(cfg: DictConfig) -> None:
    summary = run_or_exit(run, cfg)
    for split in ("train", "test"):
        s = summary[split]
        print(f"{split}: reg. loss vs randomness removed: {s['reg_loss_vs_removed']} {s['reg_loss_removed0_vs_removed1']}; "
              f"vs noise: {s['reg_loss_vs_eps']} {s['noise_reg_loss_eps0_vs_max']}")


if __name__ == "__main__":
    main()
