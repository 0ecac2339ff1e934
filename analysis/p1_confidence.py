"""P1 confidence lemma: measured logit change vs the bound tau_N, and label flips, against the width N."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from analysis.plotting import plt, save_figure


def plot_p1_confidence(run_dir: str | Path, out_dir: str | Path) -> list[Path]:
    path = Path(run_dir) / "confidence_bound.csv"
    if not path.exists():
        raise FileNotFoundError(f"no confidence_bound.csv in {run_dir}: run `python -m experiments.confidence_bound` first")
    df = pd.read_csv(path).sort_values("N")
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    axes[0].loglog(df["N"], df["median_change"], "o-", label="median max |f − f̂| (measured)")
    axes[0].loglog(df["N"], df["median_tau"], "s--", label="median τ_N(s) (lemma)")
    axes[0].set_xlabel("width N")
    axes[0].set_title(f"logit change vs bound (bound held on {100 * df['bound_held'].min():.1f}–{100 * df['bound_held'].max():.1f} % of inputs)", fontsize=9)
    axes[0].legend(fontsize=7)
    axes[1].semilogx(df["N"], 100 * df["acc_before"], "o-", label="accuracy, full W₂")
    axes[1].semilogx(df["N"], 100 * df["acc_after"], "s--", label="accuracy, random part of W₂ removed")
    ax2 = axes[1].twinx()
    ax2.semilogx(df["N"], 100 * df["label_flips"] / df["n_inputs"], "^:", color="tab:red", label="labels flipped (%)")
    ax2.set_ylabel("labels flipped (%)", color="tab:red")
    axes[1].set_xlabel("width N")
    axes[1].set_ylabel("test accuracy (%)")
    axes[1].legend(fontsize=7, loc="center right")
    axes[1].set_title(f"flips among inputs with margin > 2τ: {int(df['flips_among_confident'].sum())}", fontsize=9)
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.suptitle("P1 confidence lemma — removing the random part of the N×N layer", fontsize=10)
    return save_figure(fig, df, Path(out_dir) / "p1_confidence")
