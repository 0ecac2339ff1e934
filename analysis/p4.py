"""P4 figure and table: accuracy vs global magnitude pruning ratio with the actual, predicted and MP-implied
limits marked, and the fixed point p = gw(R(p)) that gives the prediction.

Reads the records of `experiments.p4_limit` runs (`summary.json`, `curve.csv`: ratio, test_acc, pruned_norm,
width_ratio), one figure column per run.
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from analysis.plotting import plt, save_figure, save_table
from rmt.runfolder import CURVE_CSV, SUMMARY_JSON

TICKS = [0.01, 0.1, 0.5, 0.9, 0.99, 0.999]
ORDER = {"fc5": 0, "fc12": 1, "mnist": 0, "fashion_mnist": 1}
TABLE_COLUMNS = {
    "net": "net", "dataset": "dataset", "dense_test_acc": "dense acc", "actual_limit_ge": "actual (acc >= dense)",
    "actual_limit_gt": "actual (acc > dense)", "predicted_limit": "predicted p*", "predicted_minus_actual": "predicted - actual",
    "acc_at_predicted": "acc at p*",
    "mp_bulk_fraction": "MP bulk fraction", "mp_ratio": "MP-implied ratio", "mp_pruned_test_acc": "MP-pruned acc",
    "magnitude_acc_at_mp_ratio": "magnitude acc at MP ratio", "eps": "eps", "lambda_max": "lambda_max",
}


def p4_runs(runs: str | Path) -> list[tuple[dict, pd.DataFrame]]:
    """(summary, curve) of every finished p4_limit run below `runs`, ordered net then dataset."""
    runs = Path(runs)
    found = sorted(p.parent for p in runs.rglob(SUMMARY_JSON) if (p.parent / CURVE_CSV).exists())
    if not found:
        raise FileNotFoundError(f"no experiments.p4_limit records (summary.json + curve.csv) below {runs}")
    loaded = [(json.loads((d / SUMMARY_JSON).read_text()), pd.read_csv(d / CURVE_CSV)) for d in found]
    return sorted(loaded, key=lambda sc: (ORDER.get(sc[0]["net"], 9), sc[0]["net"], ORDER.get(sc[0]["dataset"], 9), sc[0]["dataset"]))


def p4_table(runs: str | Path) -> pd.DataFrame:
    """One row per net and dataset: dense accuracy, the actual and predicted limits, and the MP view."""
    rows = [{k: s.get(k) for k in TABLE_COLUMNS} for s, _ in p4_runs(runs)]
    return pd.DataFrame(rows).round(4).rename(columns=TABLE_COLUMNS)


def plot_p4(runs: str | Path, out: str | Path) -> list[Path]:
    loaded = p4_runs(runs)
    fig, axes = plt.subplots(2, len(loaded), figsize=(4.2 * len(loaded), 6.6), squeeze=False)
    values = []
    for col, (s, curve) in enumerate(loaded):
        top, bottom = axes[0, col], axes[1, col]
        top.plot(curve["ratio"], curve["test_acc"], color="black", lw=1.2, label="global magnitude, no fine-tuning")
        top.axhline(s["dense_test_acc"], color="grey", ls=":", lw=1, label=f"dense {s['dense_test_acc']:.4f}")
        marks = [("actual_limit_ge", "tab:green", "-", "actual"), ("predicted_limit", "tab:red", "--", "predicted p*"),
                 ("mp_ratio", "tab:purple", "-.", "MP-implied")]
        for key, color, style, label in marks:
            if s.get(key) is not None:
                for ax in (top, bottom):
                    ax.axvline(s[key], color=color, ls=style, lw=1.2, label=f"{label} {s[key]:.3f}" if ax is top else None)
        top.set_title(f"{s['net']} on {s['dataset']}", fontsize=10)
        top.set_ylim(max(0.0, min(curve["test_acc"].min(), s["dense_test_acc"]) - 0.02), 1.0)
        top.legend(fontsize=7, loc="lower left")
        bottom.plot(curve["ratio"], curve["width_ratio"], color="tab:red", lw=1.2, label="gw(R(p))")
        bottom.plot(curve["ratio"], curve["ratio"], color="grey", lw=0.8, ls=":", label="p")
        for ax in (top, bottom):  # logit axis: the limits of L1-trained nets sit near p = 1, where a linear axis has no room
            ax.set_xscale("logit")
            ax.set_xlim(1.0 / len(curve), 1.0 - 1.0 / len(curve))  # the curve's grid: p = i / len(curve)
            ax.set_xticks(TICKS, [f"{t:g}" for t in TICKS])
            ax.minorticks_off()
        bottom.set_xlabel("pruning ratio p (share of weights set to 0; logit scale)")
        bottom.legend(fontsize=7, loc="upper right")
        values.append(curve.assign(net=s["net"], dataset=s["dataset"]))
    axes[0, 0].set_ylabel("test accuracy")
    axes[1, 0].set_ylabel("statistical-dimension ratio")
    out = Path(out)
    return save_figure(fig, pd.concat(values, ignore_index=True), out / "p4_limit") + save_table(p4_table(runs), out / "p4_limit_table")
