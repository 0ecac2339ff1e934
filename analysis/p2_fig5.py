"""P2 Fig. 5: test accuracy vs singular values kept in one layer, MP-predicted rank marked."""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from analysis.plotting import plt, save_figure
from rmt.runfolder import SUMMARY_JSON

# The authors' logged run (RESULTS.md, P2-fig5): accuracy at k = 0, 5, ..., 95, predicted rank, full net.
AUTHORS_ACC = [8.92, 54.59, 75.75, 84.64, 90.71, 95.45, 97.29, 97.73, 98.02, 98.26, 98.21, 98.22, 98.23, 98.26,
               98.27, 98.28, 98.29, 98.32, 98.33, 98.32]
AUTHORS_PREDICTED_RANK, AUTHORS_FULL = 56, 98.29


def plot_p2_fig5(run_dir: str | Path, out_dir: str | Path) -> list[Path]:
    run_dir = Path(run_dir)
    if not (run_dir / "rank_sweep.csv").exists():
        raise FileNotFoundError(f"no rank_sweep.csv in {run_dir}: run `python -m experiments.rank_sweep` first")
    sweep = pd.read_csv(run_dir / "rank_sweep.csv")
    summary = json.loads((run_dir / SUMMARY_JSON).read_text())
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ax.plot(sweep["rank"], 100 * sweep["test_acc"], marker="o", ms=3, color="tab:blue", label="ours")
    ax.plot(range(0, 100, 5), AUTHORS_ACC, ls=":", marker=".", color="tab:gray", label="authors' logged run")
    ax.axhline(100 * summary["full_test_acc"], color="tab:blue", ls="--", lw=1, label=f"full net {100 * summary['full_test_acc']:.2f} %")
    ax.axvline(summary["predicted_rank_correct"], color="tab:red", lw=1,
               label=f"MP-predicted rank {summary['predicted_rank_correct']} (compat {summary['predicted_rank_compat']}; authors {AUTHORS_PREDICTED_RANK})")
    ax.set_xlabel(f"singular values kept in layer {summary['layer']} {tuple(summary['shape'])}")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("P2 Fig. 5 — accuracy vs rank of one layer", fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, loc="lower right")
    return save_figure(fig, sweep.assign(authors_acc=[AUTHORS_ACC[i] if i < len(AUTHORS_ACC) else None for i in range(len(sweep))]),
                       Path(out_dir) / "p2_fig5")
