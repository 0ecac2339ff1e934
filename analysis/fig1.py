"""P1 Fig. 1: test accuracy vs epoch, normal vs RMT-pruned, one panel per topology."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from analysis.plotting import plt, save_figure

PANELS = ["fig1a", "fig1b", "fig1c", "fig1d", "fig1e"]
ARM_STYLE = {"normal": ("tab:blue", "normal"), "rmt": ("tab:red", "RMT-pruned")}


def select_profile(runs: pd.DataFrame, profile: str | None) -> tuple[pd.DataFrame, str]:
    """The runs of one profile: `profile`, or the only one present (runs of different profiles never mix)."""
    found = sorted(runs["profile"].dropna().unique())
    if profile is None:
        if len(found) != 1:
            raise ValueError(f"runs of several profiles found ({', '.join(found)}): choose one with --profile")
        profile = found[0]
    chosen = runs[runs["profile"] == profile]
    if chosen.empty:
        raise ValueError(f"no runs of profile {profile!r}; found: {', '.join(found) or 'none'}")
    return chosen, profile


def fig1_values(df: pd.DataFrame, metric: str = "test_acc", profile: str | None = None) -> pd.DataFrame:
    """Per panel, arm and epoch: mean and std of `metric` over seeds, with parameter counts."""
    runs = df[(df["name"] == "fig1") & df["panel"].isin(PANELS)]
    if runs.empty:
        raise ValueError("no fig1 runs found: run `make reproduce-fig1` (or the sweep in README) first")
    runs, profile = select_profile(runs, profile)
    grouped = runs.groupby(["panel", "arm", "epoch"])
    out = grouped[metric].agg(["mean", "std", "count"]).rename(columns={"mean": f"{metric}_mean", "std": f"{metric}_std", "count": "n_runs"})
    out = out.join(grouped[["params_start", "params"]].mean()).join(grouped["topology_start"].first())
    out = out.reset_index()
    out.insert(0, "profile", profile)
    return out


def plot_fig1(df: pd.DataFrame, out_dir: str | Path, metric: str = "test_acc", profile: str | None = None) -> list[Path]:
    """Draw the five panels; write `fig1[_train].png/.pdf/.csv` (the CSV holds the plotted values)."""
    values = fig1_values(df, metric, profile)
    profile = values["profile"].iloc[0]
    fig, axes = plt.subplots(1, len(PANELS), figsize=(4.2 * len(PANELS), 3.8), sharey=False)
    for ax, panel in zip(axes, PANELS):
        sub = values[values["panel"] == panel]
        if sub.empty:
            ax.set_title(f"({panel[-1]}) no runs")
            ax.axis("off")
            continue
        for arm, (color, label) in ARM_STYLE.items():
            arm_rows = sub[sub["arm"] == arm].sort_values("epoch")
            if arm_rows.empty:
                continue
            start, final = int(arm_rows["params_start"].iloc[0]), int(arm_rows["params"].iloc[-1])
            params = f"{start:,} params" if start == final else f"{start:,} → {final:,} params"
            mean = 100 * arm_rows[f"{metric}_mean"]
            ax.plot(arm_rows["epoch"], mean, color=color, label=f"{label} ({params})")
            if arm_rows["n_runs"].max() > 1:
                std = 100 * arm_rows[f"{metric}_std"].fillna(0)
                ax.fill_between(arm_rows["epoch"], mean - std, mean + std, color=color, alpha=0.2)
        topo = json.loads(sub["topology_start"].iloc[0])
        ax.set_title(f"({panel[-1]}) [{','.join(map(str, topo))}]", fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{metric.replace('_acc', '')} accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    fig.suptitle(f"P1 Fig. 1 — MNIST, normal vs RMT-pruned ({metric}; profile: {profile})", fontsize=11)
    return save_figure(fig, values, Path(out_dir) / ("fig1" if metric == "test_acc" else "fig1_train"))
