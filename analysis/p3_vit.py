"""P3 ViT figure and table: parameter reduction -> top-1 for P3's cycles, magnitude and structured baselines,
before and after fine-tuning, with the structured route's latency.

Reads the records of one `experiments.p3_prune` run (`metrics.csv`: one row per cycle; `baselines.csv`) and of
the fine-tuning runs started from its checkpoints (`experiments.train init_from=...`: `config.yaml` `start`,
`summary.json`).
"""

from __future__ import annotations

import json
from pathlib import Path

import pandas as pd

from analysis.plotting import plt, save_figure, save_table
from rmt.runfolder import METRICS_CSV, read_config

METHODS = {"p3_cycles": ("P3 MP cycles", "tab:red", "p3"), "global_magnitude": ("global magnitude", "tab:blue", "global"),
           "layer_magnitude": ("layer-wise magnitude", "tab:green", "layer"), "structured_mp": ("structured MP (factorised)", "tab:purple", "structured")}


def fine_tuned(ft_runs: Path | None, total: int) -> pd.DataFrame:
    """One row per fine-tuning run: its start checkpoint's name, reduction (non-zeros) and final top-1 / top-5."""
    rows = []
    for summary_path in sorted(ft_runs.glob("*/summary.json")) if ft_runs and ft_runs.exists() else []:
        config = read_config(summary_path.parent) or {}
        s = json.loads(summary_path.read_text())
        metrics = pd.read_csv(summary_path.parent / METRICS_CSV)
        rows.append({"start": config["start"], "reduction_ft": 1.0 - s["nonzero_final"] / total, "top1_ft": s["final_test_acc"],
                     "top5_ft": float(metrics["test_top5"].iloc[-1]), "ft_epochs": s["epochs"]})
    return pd.DataFrame(rows, columns=["start", "reduction_ft", "top1_ft", "top5_ft", "ft_epochs"])


def start_name(row: pd.Series) -> str:
    """The checkpoint name `experiments.p3_prune` saved for a baselines row (e.g. p3-30, global-50, structured-k25)."""
    if row["method"] == "dense":
        return "dense"
    prefix = METHODS[row["method"]][2]
    if row["method"] == "structured_mp":
        return f"{prefix}-k{round(100 * row['keep_fraction'])}"
    return f"{prefix}-{round(100 * row['target'])}"


def p3_table(run: Path, ft_runs: Path | None) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    """(per-cycle rows, one row per compared model with fine-tuned accuracy where run, the dense row)."""
    cycles = pd.read_csv(run / METRICS_CSV).rename(columns={"epoch": "cycle_index"})
    base = pd.read_csv(run / "baselines.csv")
    table = base.copy()
    table["start"] = table.apply(start_name, axis=1)
    table = table.merge(fine_tuned(ft_runs, int(base.loc[base["method"] == "dense", "params"].iloc[0])), on="start", how="left")
    dense = table[table["method"] == "dense"].iloc[0].to_dict()  # with its fine-tuned accuracy, when run: the fair reference
    latency = [c for c in table.columns if c.startswith("latency_b") and c != "latency_b1_ms"]
    if latency:
        table["speedup_large_batch"] = dense[latency[0]] / table[latency[0]]
    return cycles, table, dense


def verdict(table: pd.DataFrame, dense: dict, budget_pp: float = 1.0) -> pd.DataFrame:
    """Per method: the largest reduction whose top-1 is within `budget_pp` of the dense model's — before fine-tuning
    against the dense model, after it against the dense model fine-tuned alike (when that run exists)."""
    reference = {"top1": dense["top1"], "top1_ft": dense["top1_ft"] if pd.notna(dense.get("top1_ft")) else dense["top1"]}
    out = []
    for method, g in table[table["method"] != "dense"].groupby("method"):
        row = {"method": method}
        for col, tag in (("top1", "no_ft"), ("top1_ft", "ft")):
            ok = g[g[col] >= reference[col] - budget_pp / 100] if col in g else g.iloc[0:0]
            row[f"max_reduction_within_{budget_pp:g}pp_{tag}"] = float(ok["reduction"].max()) if len(ok) else 0.0
        out.append(row)
    return pd.DataFrame(out)


def plot_p3_vit(run: str | Path, out_dir: str | Path, ft_runs: str | Path | None = None) -> list[Path]:
    run = Path(run)
    cycles, table, dense = p3_table(run, Path(ft_runs) if ft_runs else None)
    fig, ax = plt.subplots(1, 2, figsize=(13, 4.8))
    ax[0].plot(100 * cycles["reduction"], 100 * cycles["top1"], "-o", color="tab:red", ms=3, label="P3 MP cycles (no fine-tuning)")
    for method, (label, color, _) in METHODS.items():
        g = table[table["method"] == method]
        if method != "p3_cycles" and len(g):
            ax[0].plot(100 * g["reduction"], 100 * g["top1"], "s", mfc="none", color=color, label=f"{label} (no fine-tuning)")
        if "top1_ft" in g and g["top1_ft"].notna().any():
            ax[0].plot(100 * g["reduction"], 100 * g["top1_ft"], "*", ms=11, color=color, label=f"{label}, fine-tuned")
    ax[0].axhline(100 * dense["top1"], ls="--", color="gray", lw=1, label=f"dense {100 * dense['top1']:.2f} %")
    ax[0].axhline(100 * dense["top1"] - 1, ls=":", color="gray", lw=1, label="dense − 1 pp")
    if pd.notna(dense.get("top1_ft")):
        ax[0].axhline(100 * dense["top1_ft"], ls="--", color="black", lw=1, label=f"dense fine-tuned alike {100 * dense['top1_ft']:.2f} %")
    ax[0].set(xlabel="parameter reduction (%): zeroed (unstructured) or removed (structured)", ylabel="top-1 accuracy (%)",
              title=f"{run.parent.parent.name}: reduction vs accuracy")
    ax[0].legend(fontsize=7)
    lat = [c for c in table.columns if c.startswith("latency_b") and c != "latency_b1_ms"]
    s = table[table["method"] == "structured_mp"]
    if lat and len(s):
        batch = lat[0].removeprefix("latency_b").removesuffix("_ms")
        ax[1].bar([f"keep {k:g}" for k in s["keep_fraction"]], s["speedup_large_batch"], color="tab:purple")
        ax[1].axhline(1.0, color="gray", lw=1)
        ax[1].axhline(1.3, color="gray", ls=":", lw=1, label="goal 1.3x")
        for x, (sp, red) in enumerate(zip(s["speedup_large_batch"], s["reduction"])):
            ax[1].annotate(f"{sp:.2f}x\n−{100 * red:.0f} % params", (x, sp), ha="center", va="bottom", fontsize=8)
        ax[1].set(ylabel=f"speed-up at batch {batch} vs dense", title="structured MP factorisation: inference speed-up")
        ax[1].legend(fontsize=8)
    fig.tight_layout()
    values = pd.concat([cycles.assign(method="p3_cycles_per_cycle"), table], ignore_index=True)
    paths = save_figure(fig, values, Path(out_dir) / "p3_vit")
    paths += save_table(verdict(table, dense), Path(out_dir) / "p3_vit_verdict")
    return paths
