"""P3 loss vs randomness removed (W = S_hat + theta R_hat) and vs noise added, train and test."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from analysis.plotting import plt, save_figure
from rmt.runfolder import SUMMARY_JSON


def plot_p3_loss(run_dir: str | Path, out_dir: str | Path) -> list[Path]:
    run_dir = Path(run_dir)
    if not (run_dir / "theta_sweep.csv").exists():
        raise FileNotFoundError(f"no theta_sweep.csv in {run_dir}: run `python -m experiments.randomness_removal` first")
    theta = pd.read_csv(run_dir / "theta_sweep.csv")
    noise = pd.read_csv(run_dir / "noise_sweep.csv").groupby(["split", "eps"], as_index=False)[["ce", "reg_loss", "acc"]].mean()
    summary = json.loads((run_dir / SUMMARY_JSON).read_text())
    fig, axes = plt.subplots(2, 3, figsize=(13, 7))
    for row, (df, x, xlabel) in enumerate([(theta, "removed", "randomness removed, 1 − ϑ"), (noise, "eps", "noise ε added to hidden layers")]):
        for ax, (col, label) in zip(axes[row], [("ce", "cross-entropy"), ("reg_loss", f"CE + λ‖W‖² (λ = {summary['lambda_l2']:g})"), ("acc", "accuracy")]):
            for split, style in (("train", "-"), ("test", "--")):
                d = df[df["split"] == split].sort_values(x)
                ax.plot(d[x], d[col], ls=style, marker="o", ms=3, label=split)
            if x == "eps":
                ax.axvline(summary["one_over_n"], color="gray", lw=0.8, ls=":", label="1/N")
            ax.set_xlabel(xlabel)
            ax.set_title(label, fontsize=9)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=7)
    verdict = "; ".join(f"{s}: vs removed {summary[s]['reg_loss_vs_removed']}, vs ε {summary[s]['reg_loss_vs_eps']}"
                        for s in ("train", "test"))
    fig.suptitle(f"P3 — loss vs randomness removed and noise added\nregularised loss, {verdict}", fontsize=10)
    return save_figure(fig, pd.concat([theta.assign(sweep="theta"), noise.assign(sweep="noise")]), Path(out_dir) / "p3_loss")
