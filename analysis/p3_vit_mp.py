"""P3's MP-fit diagnostics on the demo ViT's layers and P3's alpha sweep, from an `experiments.mp_fits` record.

    python -m analysis p3-vit-mp --run results/p3_vit_mp/quick/vit-s0 --out docs/figures/quick

`plot_p3_vit_mp` draws, top row per layer at the record's (alpha, beta) (P3: 0.25, 0.8): the MP-fit error with the
noise floor of iid Gaussian matrices of the same shape, the bulk fraction and spikes, P3's cycle-1 budget q; bottom
row against alpha (layers fitted at every alpha): the mean MP-fit error (P3's "MP Fit Metric vs Alpha"), the mean bulk
fraction (P3's "Low Rank Metric vs Alpha") with the total spikes, and the budget as a share of the weights.  It also
writes the per-layer table `p3_vit_mp_layers.{csv,md}` and the sweep table `p3_vit_mp_alpha.{csv,md}`.
`measure_p3_vit_mp(results)` is the rule on the committed record.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.esd import read_fits
from analysis.plotting import plt, save_figure, save_table
from analysis.verdicts import NOT_REPRODUCED, REPRODUCED, Outcome, Part, combine, not_run
from rmt.runfolder import SUMMARY_JSON

# P3's ViT-B alpha sweep (docs: ../shared/spec/notes/P3_VIT_NOTES.md F3, `vit_basic_MP_lowrank_metric.png`): alpha
# 0.01 -> 0.49 (20 points), beta 0.8; the bulk fraction ("low rank metric") and the MP-fit error at the two ends.
P3_SWEEP = {"alpha": (0.01, 0.49), "bulk_fraction": (0.938, 0.837), "gof": (0.91, 0.005)}
P3_FIT_CUTOFF = 0.135  # the GoF cutoff the authors' notebook grid search tried (prune.py itself accepts every layer: 1)
TREND_SLACK = 0.1      # a step against the claimed direction may undo at most this share of the whole change
P3_MP_RULE = (
    "on the demo ViT's Linear / Conv2d layers (conv unfolded), (1) at P3's α = 0.25, β = 0.8 the median layer MP-fit "
    f"error is below {P3_FIT_CUTOFF} (the cutoff the authors' grid search tried; P3's well-fitted ViT-B layer: 0.01, its "
    "poor one 0.74); over the α grid, on the layers fitted at every α, (2) the mean bulk fraction falls and (3) the mean "
    "MP-fit error falls with α (P3's ViT-B sweep, α 0.01 → 0.49: 93.8 → 83.7 % and 0.91 → 0.005), and (4) P3's cycle-1 "
    "budget Σ⌊q·r₁·nnz⌋ / Σ nnz with q = ((1 − err)·bulk)^1.5 rises with α (P3's two ends imply (1 − err)·bulk "
    "0.08 → 0.83); a curve falls (rises) when its last value is below (above) its first and no step goes the other way "
    f"by more than {TREND_SLACK:.0%} of that change; all four: **reproduced**; some: **partly**; none: **not reproduced**")


def trend(values, direction: int, slack: float = TREND_SLACK) -> bool:
    """`direction` -1: the values fall, +1: they rise — the last beyond the first in that direction, and no step
    against it larger than `slack` times the whole change."""
    v = np.asarray(values, dtype=np.float64) * direction
    change = v[-1] - v[0]
    return bool(change > 0 and (np.diff(v).min(initial=0.0) >= -slack * change))


def sweep_table(summary: dict) -> pd.DataFrame:
    """One row per alpha: the means over the layers fitted at every alpha (`summary.json` of the record)."""
    return pd.DataFrame(summary["alpha_sweep"])


def plot_p3_vit_mp(run: str | Path, out_dir: str | Path) -> list[Path]:
    config, summary, layers, sweep = read_fits(run)
    out_dir = Path(out_dir)
    table = sweep_table(summary)
    fig, axes = plt.subplots(2, 3, figsize=(15, 7.5))
    x = np.arange(len(layers))
    names = [n.replace("blocks.", "b").replace(".attn", "").replace(".mlp", "") for n in layers["layer"]]
    ax = axes[0, 0]
    ax.bar(x, layers["gof"], color="tab:blue", label="MP-fit error")
    ax.plot(x, layers["gof_null_q95"], "k_", ms=9, mew=2, label="iid Gaussian, 95 % quantile")
    ax.axhline(config["gof_threshold"], color="tab:red", ls="--", lw=1, label=f"cutoff {config['gof_threshold']}")
    ax.set_ylabel("MP-fit error (sup |F_emp − F_MP|)")
    ax.set_title(f"per layer, α = {config['alpha']}, β = {config['beta']}", fontsize=10)
    ax = axes[0, 1]
    ax.bar(x, layers["bulk_fraction"], color="tab:green", label="bulk fraction")
    ax.set_ylim(0, 1.3)
    ax.set_ylabel("bulk fraction")
    twin = ax.twinx()
    twin.plot(x, layers["n_spikes"], "o", color="tab:purple", ms=4, label="spikes")
    twin.set_ylim(0, 1.3 * max(1, layers["n_spikes"].max()))
    twin.set_ylabel("spikes")
    twin.legend(fontsize=7, loc="upper right")
    ax.set_title("bulk fraction and spikes", fontsize=10)
    ax = axes[0, 2]
    ax.bar(x, layers["budget_q"], color="tab:orange", label="q = ((1 − err)·bulk)^(1.5/i)")
    ax.set_ylim(0, 1.3)
    ax.set_ylabel(f"q (share of r_{config['budget_cycle']} = {summary['cycle_target']:.4f})")
    ax.set_title(f"P3 budget, cycle {config['budget_cycle']}: {summary['budget_fraction']:.2%} of the weights", fontsize=10)
    for ax in axes[0]:
        ax.set_xticks(x, names, rotation=90, fontsize=6)
        ax.legend(fontsize=7, loc="upper left")
    a = table["alpha"]
    ax = axes[1, 0]
    ax.plot(a, table["mean_gof"], "o-", color="tab:blue", label="demo ViT, mean MP-fit error")
    ax.plot(a, table["mean_gof_null_median"], "s--", color="k", ms=3, label="iid Gaussian of the same shapes (median)")
    ax.plot(P3_SWEEP["alpha"], P3_SWEEP["gof"], "x", color="tab:red", ms=9, mew=2, label="P3 ViT-B, sweep ends")
    ax.set_ylabel("MP-fit error")
    ax = axes[1, 1]
    ax.plot(a, table["mean_bulk_fraction"], "o-", color="tab:green", label="demo ViT, mean bulk fraction")
    ax.plot(P3_SWEEP["alpha"], P3_SWEEP["bulk_fraction"], "x", color="tab:red", ms=9, mew=2, label="P3 ViT-B, sweep ends")
    ax.set_ylabel("bulk fraction")
    twin = ax.twinx()
    twin.plot(a, table["total_spikes"], "^:", color="tab:purple", ms=4, label="spikes (those layers)")
    twin.set_ylabel("spikes")
    handles = ax.get_legend_handles_labels()
    twin_handles = twin.get_legend_handles_labels()
    twin.legend(handles[0] + twin_handles[0], handles[1] + twin_handles[1], fontsize=7, loc="center right")
    ax = axes[1, 2]
    ax.plot(a, 100 * table["budget_fraction"], "o-", color="tab:orange", label=f"cycle-{config['budget_cycle']} budget")
    ax.set_ylabel("weights removed (%)")
    for ax in axes[1]:
        ax.set_xlabel("BEMA α")
        ax.grid(alpha=0.3)
        if ax is not axes[1, 1]:
            ax.legend(fontsize=7, loc="upper left" if ax is axes[1, 2] else "upper right")
    axes[1, 0].set_title(f"vs α (β = {config['beta']}; {len(summary['alpha_sweep_layers'])} layers fitted at every α)",
                         fontsize=10)
    fig.suptitle(f"P3 MP diagnostics — {config.get('source_run')} ({len(layers)} layers)", fontsize=11)
    values = sweep.copy()
    paths = save_figure(fig, values, out_dir / "p3_vit_mp")
    cols = ["layer", "out", "fan_in", "sigma2", "lambda_plus", "n_spikes", "bulk_fraction", "gof", "gof_null_q95", "fits_mp",
            "budget_q", "budget_count"]
    shown = layers[cols].copy()
    for col, fmt in (("sigma2", ".4g"), ("lambda_plus", ".4g"), ("bulk_fraction", ".3f"), ("gof", ".4f"),
                     ("gof_null_q95", ".4f"), ("budget_q", ".3f")):
        shown[col] = shown[col].map(lambda v, f=fmt: format(v, f))
    paths += save_table(shown, out_dir / "p3_vit_mp_layers")
    alpha = table[["alpha", "layers", "mean_gof", "mean_gof_null_median", "mean_bulk_fraction", "total_spikes", "budget_fraction"]]
    paths += save_table(alpha.round(4), out_dir / "p3_vit_mp_alpha")
    return paths


def _ends(values, fmt: str) -> str:
    return " / ".join(format(v, fmt) for v in values)


def measure_p3_vit_mp(results: Path, profile: str = "quick") -> Outcome:
    """P3's MP-fit diagnostics and alpha sweep on the demo ViT, from the `experiments.mp_fits` record
    `results/p3_vit_mp/<profile>/vit-s0` (`make reproduce-p3-vit-mp`); `results` is the results/ root."""
    run = Path(results) / "p3_vit_mp" / profile / "vit-s0"
    if not (run / SUMMARY_JSON).exists():
        return not_run(P3_MP_RULE, f"not run: no record {run}")
    config, summary, layers, _ = read_fits(run)
    if (config.get("alpha"), config.get("beta")) != (0.25, 0.8):
        raise ValueError(f"{run} was fitted at alpha {config.get('alpha')}, beta {config.get('beta')}; the rule needs 0.25, 0.8")
    table = sweep_table(summary)
    fitted = layers[layers["fitted"]]
    median = float(fitted["gof"].median())
    below = fitted[fitted["gof"] < P3_FIT_CUTOFF]
    worst = fitted[fitted["gof"] >= P3_FIT_CUTOFF]
    worst_text = ", ".join(f"{r.layer} ({r.out}×{r.fan_in}) {r.gof:.3f}" for r in worst.itertuples()) or "none"
    first, last = layers.iloc[0], layers.iloc[-1]
    net = (f"{len(layers)} layers: {first['layer']} {first['out']}×{first['fan_in']}, "
           f"{int(layers['layer'].str.endswith('attn.qkv').sum())} blocks, {last['layer']} {last['out']}×{last['fan_in']}")
    numbers = (
        f"{net}; at α = 0.25, β = 0.8 the MP-fit error has median {median:.4f} "
        f"(range {fitted['gof'].min():.4f}–{fitted['gof'].max():.4f}; iid Gaussian matrices of the same shapes: "
        f"{fitted['gof_null_q95'].min():.4f}–{fitted['gof_null_q95'].max():.4f} at their 95 % quantile), "
        f"{len(below)} of {len(fitted)} layers below {P3_FIT_CUTOFF} (above: {worst_text}); bulk fraction mean "
        f"{fitted['bulk_fraction'].mean():.3f} (range {fitted['bulk_fraction'].min():.3f}–{fitted['bulk_fraction'].max():.3f}), "
        f"spikes {int(fitted['n_spikes'].sum())} ({int(fitted['n_spikes'].min())}–{int(fitted['n_spikes'].max())} per layer); "
        f"cycle-{config['budget_cycle']} budget q mean {fitted['budget_q'].mean():.3f} "
        f"({fitted['budget_q'].min():.3f}–{fitted['budget_q'].max():.3f}), {100 * summary['budget_fraction']:.2f} % of the "
        f"weights. α = {_ends(table['alpha'], 'g')} ({len(summary['alpha_sweep_layers'])} layers fitted at every α): "
        f"mean MP-fit error {_ends(table['mean_gof'], '.3f')} (iid Gaussian: {_ends(table['mean_gof_null_median'], '.3f')}); "
        f"mean bulk fraction {_ends(table['mean_bulk_fraction'], '.3f')}; spikes {_ends(table['total_spikes'], 'd')}; "
        f"budget {_ends(100 * table['budget_fraction'], '.2f')} %")
    bulk, gof, budget = table["mean_bulk_fraction"], table["mean_gof"], table["budget_fraction"]
    a0, a1 = table["alpha"].iloc[0], table["alpha"].iloc[-1]
    parts = (
        Part("MP fit at α = 0.25", REPRODUCED if median < P3_FIT_CUTOFF else NOT_REPRODUCED,
             f"median error {median:.4f} vs {P3_FIT_CUTOFF}"),
        Part("bulk fraction falls with α", REPRODUCED if trend(bulk, -1) else NOT_REPRODUCED,
             f"{bulk.iloc[0]:.3f} → {bulk.iloc[-1]:.3f} (α {a0:g} → {a1:g})"),
        Part("MP-fit error falls with α", REPRODUCED if trend(gof, -1) else NOT_REPRODUCED,
             f"{gof.iloc[0]:.3f} → {gof.iloc[-1]:.3f}"),
        Part("budget rises with α", REPRODUCED if trend(budget, +1) else NOT_REPRODUCED,
             f"{100 * budget.iloc[0]:.2f} → {100 * budget.iloc[-1]:.2f} % of the weights"),
    )
    facts = {"median_gof": f"{median:.4f}", "layers_below_cutoff": f"{len(below)} of {len(fitted)}",
             "budget_percent": f"{100 * summary['budget_fraction']:.2f}",
             "gof_alpha_ends": f"{gof.iloc[0]:.3f} → {gof.iloc[-1]:.3f}", "bulk_alpha_ends": f"{bulk.iloc[0]:.3f} → {bulk.iloc[-1]:.3f}",
             "budget_alpha_ends": f"{100 * budget.iloc[0]:.2f} → {100 * budget.iloc[-1]:.2f}"}
    return Outcome(combine(parts), P3_MP_RULE, numbers, parts, facts)
