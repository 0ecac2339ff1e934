"""P1 magnitude sweep: test accuracy vs non-zero parameters, MP-pruned vs unpruned net."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.curves import SERIES_STYLE
from analysis.plotting import plt, save_figure


def plot_p1_mag(run_dir: str | Path, out_dir: str | Path) -> list[Path]:
    run_dir = Path(run_dir)
    if not (run_dir / "magnitude_sweep.csv").exists():
        raise FileNotFoundError(f"no magnitude_sweep.csv in {run_dir}: run `python -m experiments.magnitude_sweep` first")
    df = pd.read_csv(run_dir / "magnitude_sweep.csv")
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for arm, g in df.groupby("arm"):
        color, label = SERIES_STYLE[arm]
        ax.plot(g["nonzero_params"], 100 * g["test_acc"], marker="o", ms=3, color=color, label=f"{label} + magnitude")
    ax.set_xscale("log")
    ax.set_xlabel("non-zero parameters (thresholds 1/(1+k), k < 50)")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("P1 — accuracy vs non-zero parameters", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, df, Path(out_dir) / "p1_mag")
