"""Accuracy-vs-epoch figures: one panel per topology, one curve (mean ± std over seeds) per series.

A series is an arm (`normal`, `rmt`) or a named combination (e.g. `rmt+l1l2`), taken from the run's
`series` config value.  `CURVE_FIGURES` lists the paper figures drawn this way.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis.plotting import plt, save_figure

SERIES_STYLE = {
    "normal": ("tab:blue", "normal"), "rmt": ("tab:red", "RMT-pruned"),
    "normal+none": ("tab:gray", "none"), "rmt+none": ("tab:orange", "MP only"), "normal+l1l2": ("tab:blue", "L1+L2 only"),
    "rmt+l1l2": ("tab:red", "MP + L1+L2"), "rmt+l2": ("tab:purple", "MP + L2"), "normal+l2": ("tab:cyan", "L2 only"),
}


@dataclass(frozen=True)
class CurveFigure:
    name: str            # experiment name of the runs (config `name`)
    title: str
    panels: tuple[str, ...]
    stem: str            # output file stem
    metric: str = "test_acc"
    panel_titles: dict[str, str] = field(default_factory=dict)
    std_ratio: bool = False  # annotate std(rmt) / std(normal) over seeds at the last epoch


CURVE_FIGURES = {
    "fig1": CurveFigure("fig1", "P1 Fig. 1 — MNIST test accuracy, normal vs RMT-pruned", ("fig1a", "fig1b", "fig1c", "fig1d", "fig1e"), "fig1"),
    "fig1-train": CurveFigure("fig1", "P1 Fig. 1 runs — MNIST train accuracy", ("fig1a", "fig1b", "fig1c", "fig1d", "fig1e"), "fig1_train", "train_acc"),
    "p1-fig2": CurveFigure("fig1", "P1 Fig. 2 — MNIST train accuracy", ("fig1c", "fig1d"), "p1_fig2", "train_acc"),
    "p1-fig3": CurveFigure("p1_fig3", "P1 Fig. 3 — MNIST test accuracy", ("fig3a", "fig3b", "fig3c"), "p1_fig3"),
    "p1-fig4": CurveFigure("p1_fig3", "P1 Fig. 4 — MNIST train accuracy", ("fig3c", "fig3b"), "p1_fig4", "train_acc"),
    "p1-var": CurveFigure("p1_var", "P1 random-initialisation variance — MNIST test accuracy, mean ± std over seeds", ("var",),
                          "p1_var", panel_titles={"var": "[784,1000,1000,1000,500,10] (scaled by the profile)"}, std_ratio=True),
    "p1-var-train": CurveFigure("p1_var", "P1 random-initialisation variance — MNIST train accuracy", ("var",), "p1_var_train",
                                "train_acc", std_ratio=True),
    "p1-ablation": CurveFigure("p1_fmnist_ablation", "Fashion-MNIST ablation — test accuracy", ("ablation",), "p1_ablation",
                               panel_titles={"ablation": "[784,3000,3000,3000,3000,500,10] (scaled by the profile)"}),
    "p1-ablation-train": CurveFigure("p1_fmnist_ablation", "Fashion-MNIST ablation — train accuracy", ("ablation",),
                                     "p1_ablation_train", "train_acc"),
    "p1-cnn": CurveFigure("p1_cnn", "P1 CNN — Fashion-MNIST test accuracy, normal vs RMT-pruned (conv + FC)", ("cnn",), "p1_cnn",
                          panel_titles={"cnn": "convs [32,64,128,256,512] → FC [4608,1000,10] (scaled by the profile)"}),
    "p2-examples": CurveFigure("p2_examples", "P2 Examples 4.3-4.7 (Figs. 6-10) — MNIST test accuracy, non-split vs split",
                               ("p2_ex4_3", "p2_ex4_4", "p2_ex4_5", "p2_ex4_6", "p2_ex4_7"), "p2_examples",
                               panel_titles={f"p2_ex4_{i}": f"Ex. 4.{i}" for i in range(3, 8)}),
}


def last_epoch_std_ratio(values: pd.DataFrame, panel: str, metric: str) -> float:
    """std over seeds of the pruned arm divided by that of the normal arm, at the last epoch."""
    last = values[(values["panel"] == panel) & (values["epoch"] == values["epoch"].max())].set_index("series")
    return float(last.loc["rmt", f"{metric}_std"] / last.loc["normal", f"{metric}_std"])


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


def curve_values(df: pd.DataFrame, name: str, panels: tuple[str, ...], metric: str = "test_acc", profile: str | None = None) -> pd.DataFrame:
    """Per panel, series and epoch: mean, std (population, over seeds) and count of `metric`, with parameter counts."""
    runs = df[(df["name"] == name) & df["panel"].isin(panels)]
    if runs.empty:
        raise ValueError(f"no {name} runs with panels {list(panels)} found: run the experiment first (see README)")
    runs, profile = select_profile(runs, profile)
    grouped = runs.groupby(["panel", "series", "epoch"])
    out = grouped[metric].agg(["mean", lambda v: v.std(ddof=0), "count"])
    out.columns = [f"{metric}_mean", f"{metric}_std", "n_runs"]
    out = out.join(grouped[["params_start", "params"]].mean()).join(grouped["topology_start"].first()).reset_index()
    out.insert(0, "profile", profile)
    return out


def plot_curves(df: pd.DataFrame, figure: CurveFigure, out_dir: str | Path, profile: str | None = None) -> list[Path]:
    """Draw one panel per topology; write `<stem>.png/.pdf/.csv` (the CSV holds the plotted values)."""
    metric = figure.metric
    values = curve_values(df, figure.name, figure.panels, metric, profile)
    profile = values["profile"].iloc[0]
    fig, axes = plt.subplots(1, len(figure.panels), figsize=(max(4.2 * len(figure.panels), 8.0), 4.0), squeeze=False)
    for ax, panel in zip(axes[0], figure.panels):
        sub = values[values["panel"] == panel]
        if sub.empty:
            ax.set_title(f"{panel}: no runs")
            ax.axis("off")
            continue
        for series in sorted(sub["series"].unique(), key=lambda s: list(SERIES_STYLE).index(s) if s in SERIES_STYLE else 99):
            rows = sub[sub["series"] == series].sort_values("epoch")
            color, label = SERIES_STYLE.get(series, (None, series))
            start, final = int(rows["params_start"].iloc[0]), int(rows["params"].iloc[-1])
            params = f"{start:,} params" if start == final else f"{start:,} → {final:,} params"
            seeds = f", {int(rows['n_runs'].max())} seeds" if rows["n_runs"].max() > 1 else ""
            mean = 100 * rows[f"{metric}_mean"]
            line, = ax.plot(rows["epoch"], mean, color=color, label=f"{label} ({params}{seeds})")
            if rows["n_runs"].max() > 1:
                std = 100 * rows[f"{metric}_std"].fillna(0)
                ax.fill_between(rows["epoch"], mean - std, mean + std, color=line.get_color(), alpha=0.2)
        topo = json.loads(sub["topology_start"].iloc[0])
        title = figure.panel_titles.get(panel, f"({panel[-1]}) [{','.join(map(str, topo))}]")
        if figure.std_ratio:
            title += f"\nstd pruned / normal at last epoch: {last_epoch_std_ratio(values, panel, metric):.2f}"
        ax.set_title(title, fontsize=9)
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"{metric.replace('_acc', '')} accuracy (%)")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7, loc="lower right")
    missing = [panel for panel in figure.panels if values[values["panel"] == panel].empty]
    fig.suptitle(f"{figure.title} (profile: {profile})" + (f"; panels without runs: {', '.join(missing)}" if missing else ""), fontsize=11)
    return save_figure(fig, values, Path(out_dir) / figure.stem)
