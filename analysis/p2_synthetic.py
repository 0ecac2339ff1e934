"""P2 Figs. 2-3: ESD of the synthetic W = R + S with the BEMA-fitted MP density; lambda_plus vs alpha, beta."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.plotting import plt, save_figure
from rmt.mp import mp_pdf


def synthetic_runs(root: str | Path) -> list[Path]:
    dirs = sorted(p.parent for p in Path(root).rglob("fit.json") if (p.parent / "eigenvalues.csv").exists())
    if not dirs:
        raise FileNotFoundError(f"no P2 synthetic runs below {root}: run `python -m experiments.synthetic` first")
    return dirs


def plot_p2_fig2(root: str | Path, out_dir: str | Path, x_max: float = 8.0) -> list[Path]:
    """ESD of the first run (seed 0 if present) with the fitted MP density; eigenvalues beyond `x_max` are counted in the legend."""
    run = synthetic_runs(root)[0]
    eig = pd.read_csv(run / "eigenvalues.csv")["eigenvalue"].to_numpy()
    fit = json.loads((run / "fit.json").read_text())
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    shown = eig[eig <= x_max]
    heights, _, _ = ax.hist(shown, bins=120, density=True, alpha=0.6, color="tab:gray", label=f"ESD of WᵀW/N ({len(eig) - len(shown)} eigenvalues > {x_max:g} not shown)")
    # the histogram's density is relative to the shown eigenvalues; scale MP to the same mass
    x = np.linspace(1e-4, fit["lambda_plus"] * 1.05, 800)
    ax.plot(x, mp_pdf(x, fit["sigma2"], fit["c"]) * len(eig) / len(shown), color="tab:red", label=f"MP fit, σ² = {fit['sigma2']:.3f}")
    ax.axvline(fit["lambda_plus"], color="k", ls="--", label=f"λ₊ = {fit['lambda_plus']:.3f} ({fit['n_eigenvalues_above_lambda_plus']} above)")
    ax.set_ylim(0, 1.3 * np.quantile(heights, 0.95))  # the c = 1 MP density diverges at 0
    ax.set_xlabel("eigenvalue")
    ax.set_ylabel("density")
    ax.set_title(f"P2 Fig. 2 — W = R + S, N = {fit['n']} ({run.name})", fontsize=10)
    ax.legend(fontsize=8)
    table = pd.DataFrame({"eigenvalue": eig})
    return save_figure(fig, table, Path(out_dir) / "p2_fig2")


def plot_p2_fig3(root: str | Path, out_dir: str | Path) -> list[Path]:
    """lambda_plus vs alpha (beta = 0.5) and vs beta (alpha = 0.25): mean and range over seeds, correct and compat formulas."""
    runs = synthetic_runs(root)
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
    tables = []
    for ax, (csv, key) in zip(axes, [("lambda_vs_alpha.csv", "alpha"), ("lambda_vs_beta.csv", "beta")]):
        df = pd.concat([pd.read_csv(r / csv).assign(run=r.name) for r in runs])
        tables.append(df.assign(sweep=key))
        for col, color, label in [("lambda_plus", "tab:blue", "correct (1+√c)^(4/3)"), ("lambda_plus_compat", "tab:orange", "authors' code (1+√c)⁴/3")]:
            g = df.groupby(key)[col]
            ax.plot(g.mean().index, g.mean(), color=color, marker="o", ms=3, label=f"{label}, mean of {len(runs)} seeds")
            ax.fill_between(g.mean().index, g.min(), g.max(), color=color, alpha=0.2)
        ax.axhline(4.0, color="k", lw=0.8, ls=":")
        ax.set_xlabel(key)
        ax.set_ylabel("λ₊")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_title("P2 Fig. 3a — λ₊ vs α (β = 0.5)", fontsize=10)
    axes[1].set_title("P2 Fig. 3b — λ₊ vs β (α = 0.25)", fontsize=10)
    return save_figure(fig, pd.concat(tables), Path(out_dir) / "p2_fig3")
