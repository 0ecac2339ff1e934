"""P3 randomness vs epoch: per-layer sigma_plus, bulk fraction, ||R||_F and ||R||_F / ||W||_F, with and
without L2, and whether each one decreased on the measured data (not assumed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.plotting import plt, save_figure, save_table
from analysis.runs import run_dirs
from rmt.runfolder import LAYERS_CSV, read_config

METRICS = {"sigma_plus": "σ₊", "bulk_fraction": "bulk fraction", "r_norm": "‖R̂‖_F", "r_ratio": "‖R̂‖_F / ‖W‖_F"}


def load_layers(root: str | Path) -> pd.DataFrame:
    """Every run's `layers.csv` below `root`, with its series, seed and profile."""
    frames = []
    for run_dir in run_dirs(root, marker=LAYERS_CSV):
        config = read_config(run_dir) or {}
        df = pd.read_csv(run_dir / LAYERS_CSV, dtype={"layer": str}).assign(series=config.get("series") or config["arm"], seed=config["seed"],
                                                        profile=config["profile"]["name"])
        frames.append(df)
    if not frames:
        raise FileNotFoundError(f"no layers.csv below {root}: run `make reproduce-p3-rand` first")
    df = pd.concat(frames, ignore_index=True)
    df["r_ratio"] = df["r_norm"] / df["w_norm"]
    return df


def _spearman(x: np.ndarray, y: np.ndarray) -> float:
    rx, ry = pd.Series(x).rank().to_numpy(), pd.Series(y).rank().to_numpy()
    return float(np.corrcoef(rx, ry)[0, 1]) if np.std(ry) > 0 else 0.0


def monotonicity_table(df: pd.DataFrame) -> pd.DataFrame:
    """Per series, layer and metric: first / last value, share of epoch-to-epoch decreases, Spearman rho with
    the epoch, and the verdict `decreased` (last < first and rho < -0.5)."""
    rows = []
    for (series, layer), g in df.groupby(["series", "layer"]):
        g = g.groupby("epoch").mean(numeric_only=True).sort_index()
        for metric in METRICS:
            v = g[metric].to_numpy()
            rho = _spearman(g.index.to_numpy(), v)
            rows.append({"series": series, "layer": layer, "metric": metric, "first": v[0], "last": v[-1],
                         "share_of_steps_decreasing": float(np.mean(np.diff(v) < 0)) if len(v) > 1 else float("nan"),
                         "spearman_rho_vs_epoch": rho, "decreased": bool(v[-1] < v[0] and rho < -0.5)})
    return pd.DataFrame(rows)


def plot_randomness(root: str | Path, out_dir: str | Path) -> list[Path]:
    df = load_layers(root)
    layers = sorted(df["layer"].unique(), key=lambda n: [int(p) for p in n.split(".")])
    fig, axes = plt.subplots(1, len(METRICS), figsize=(4.2 * len(METRICS), 3.8))
    styles = dict(zip(sorted(df["series"].unique()), ["-", "--", ":", "-."]))
    colors = dict(zip(layers, plt.rcParams["axes.prop_cycle"].by_key()["color"]))
    for ax, (metric, label) in zip(axes, METRICS.items()):
        for (series, layer), g in df.groupby(["series", "layer"]):
            g = g.groupby("epoch")[metric].mean()
            ax.plot(g.index, g.to_numpy(), ls=styles[series], color=colors[layer], label=f"layer {layer}, {series}")
        ax.set_xlabel("epoch")
        ax.set_title(label, fontsize=10)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=6)
    fig.suptitle(f"P3 — randomness of each layer vs epoch (profile: {', '.join(df['profile'].unique())})", fontsize=11)
    paths = save_figure(fig, df, Path(out_dir) / "p3_rand")
    return paths + save_table(monotonicity_table(df), Path(out_dir) / "p3_rand_monotonicity")
