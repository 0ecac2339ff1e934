"""Layer ESDs of a logged checkpoint with the fitted MP density and the spike threshold.

`plot_esd_grid(run_dir, out)` draws one panel per Linear / Conv2d layer (conv unfolded) of the run's
final model (from the record's `spectra.csv`, or from the checkpoint) and writes
the per-layer fit table; P2 Fig. 4 is the grid restricted to the first layer of the P2 Fig. 4 run.
The table's `fits_mp` column (GoF error < `gof_threshold`) sorts layers into the P2 "Tables 1/2"
of layers that do / do not fit MP.
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd
import torch
import yaml

from analysis.plotting import plt, save_figure
from experiments.checkpoints import load_run_model
from rmt.mp import fit_spectra, mp_pdf
from rmt.spectra import batched_svdvals, layer_matrix, spectral_layers


def run_spectra(run_dir: str | Path) -> tuple[list[tuple[str, tuple[int, int], np.ndarray]], str]:
    """(layer name, (out, fan_in), singular values) of a run's final model, and a title.

    Read from the record's `spectra.csv` when present (so committed records suffice), else computed
    from the checkpoint."""
    run_dir = Path(run_dir)
    config = yaml.safe_load((run_dir / "config.yaml").read_text()) if (run_dir / "config.yaml").exists() else {}
    title = f"{config.get('name')}/{config.get('run_name')}"
    if (run_dir / "spectra.csv").exists():
        df = pd.read_csv(run_dir / "spectra.csv", dtype={"layer": str})
        out = [(str(name), (int(g["out"].iloc[0]), int(g["fan_in"].iloc[0])), g["singular_value"].to_numpy())
               for name, g in df.groupby("layer", sort=False)]
        return out, f"{title} (final)"
    model, _, ckpt = load_run_model(run_dir)
    layers = spectral_layers(model)
    with torch.no_grad():
        mats = [layer_matrix(m).double() for _, m in layers]
        svals = batched_svdvals(mats)
    return [(n, tuple(mat.shape), s.numpy()) for (n, _), mat, s in zip(layers, mats, svals)], f"{title} after epoch {ckpt['epoch']}"


def plot_esd_grid(run_dir: str | Path, out_stem: str | Path, layers: list[str] | None = None, alpha: float = 0.25,
                  beta: float = 0.1, gof_threshold: float = 0.1, x_edges: float = 2.5) -> list[Path]:
    """ESD grid of a run's final model.  `layers` picks module names (default: all); the x axis
    ends at `x_edges` times lambda_plus (eigenvalues beyond are counted in the table and legend)."""
    spectra, title = run_spectra(run_dir)
    chosen = [sp for sp in spectra if layers is None or sp[0] in layers]
    if not chosen:
        raise ValueError(f"no such layers in {run_dir}: {layers}; known: {[sp[0] for sp in spectra]}")
    cols = min(4, len(chosen))
    rows = math.ceil(len(chosen) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    table = []
    for ax, (name, shape, s) in zip(axes.flat, chosen):
        n = max(shape)
        fit = fit_spectra(s[None], n, alpha=alpha, beta=beta)[0]
        eig = s**2 / n
        shown = eig[eig <= x_edges * fit.lambda_plus]
        heights, _, _ = ax.hist(shown, bins=80, density=True, color="tab:gray", alpha=0.6,
                                label=f"ESD ({len(eig) - len(shown)} beyond)")
        x = np.linspace(1e-6, fit.lambda_plus, 600)
        ax.plot(x, mp_pdf(x, fit.sigma2, fit.c) * len(eig) / len(shown), color="tab:red", label=f"MP σ²={fit.sigma2:.3g}")
        ax.axvline(fit.lambda_plus, color="k", ls="--", lw=1, label=f"λ₊ ({fit.n_spikes} spikes)")
        ax.set_ylim(0, 1.15 * heights.max())  # a square layer's MP density diverges at 0
        ax.set_title(f"{name} {shape}  GoF {fit.gof:.3f}", fontsize=8)
        ax.legend(fontsize=6)
        table.append({"layer": name, "out": shape[0], "fan_in": shape[1], **fit.as_dict(),
                      "fits_mp": fit.gof < gof_threshold, "eigenvalues_beyond_plot": len(eig) - len(shown)})
    for ax in list(axes.flat)[len(chosen):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, pd.DataFrame(table), out_stem)
