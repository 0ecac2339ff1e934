"""P1 random-initialisation variance: the std ratio pruned / normal of test accuracy over paired seeds, per epoch,
with its bootstrap confidence interval (the evidence behind the P1-var verdict)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.plotting import plt, save_figure
from analysis.runs import load_runs
from analysis.verdicts import std_ratio_interval


def variance_by_epoch(root: str | Path) -> pd.DataFrame:
    """Per epoch: seeds, std ratio pruned / normal (sample stds), its 95 % bootstrap interval, the F-test p and the
    arms' mean accuracies. Epochs where the normal arm's accuracies are all equal are left out."""
    df = load_runs(root)
    wide = df.pivot_table(index=["epoch", "seed"], columns="arm", values="test_acc").dropna()
    rows = []
    for epoch, g in wide.groupby(level="epoch"):
        if len(g) < 3 or g["normal"].std() == 0:
            continue
        ci = std_ratio_interval(g["normal"].to_numpy(), g["rmt"].to_numpy())
        rows.append({"epoch": int(epoch), "seeds": ci.n, "std_ratio": ci.ratio, "ci_low": ci.low, "ci_high": ci.high,
                     "f_test_p": ci.p_value, "normal_mean": g["normal"].mean(), "rmt_mean": g["rmt"].mean()})
    return pd.DataFrame(rows)


def plot_p1_var_ratio(runs: str | Path, out_dir: str | Path) -> list[Path]:
    values = variance_by_epoch(runs)
    if values.empty:
        raise ValueError(f"no paired seeds below {runs}: run `make reproduce-p1-var` first")
    fig, ax = plt.subplots(figsize=(7.0, 3.8))
    ax.fill_between(values["epoch"], values["ci_low"], values["ci_high"], color="tab:red", alpha=0.2, label="95 % bootstrap interval")
    ax.plot(values["epoch"], values["std_ratio"], color="tab:red", label="std pruned / std normal")
    ax.axhline(1.0, color="grey", lw=0.8, ls=":")
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("std ratio of test accuracy (log scale)")
    ax.set_title(f"P1 variance — {int(values['seeds'].max())} paired seeds per arm; below 1: pruning lowers the variance", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, values, Path(out_dir) / "p1_var_ratio")
