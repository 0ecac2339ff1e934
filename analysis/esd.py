"""Layer ESDs of a logged checkpoint with the fitted MP density and the spike threshold.

`plot_esd_grid(run_dir, out)` draws one panel per Linear / Conv2d layer (conv unfolded) of the run's
final model (from the record's `spectra.csv`, or from the checkpoint) and writes
the per-layer fit table; P2 Fig. 4 is the grid restricted to the first layer of the P2 Fig. 4 run.
The table's `fits_mp` column (GoF error < `gof_threshold`) sorts layers into the P2 "Tables 1/2"
of layers that do / do not fit MP.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import yaml

from analysis.plotting import save_figure
from experiments.checkpoints import load_run_model
from rmt.analyze import weight_matrices
from rmt.plotting import esd_grid
from rmt.spectra import batched_svdvals


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
    mats = [(name, mat.double()) for name, mat in weight_matrices(model)]
    svals = batched_svdvals(m for _, m in mats)
    return [(n, tuple(m.shape), s.numpy()) for (n, m), s in zip(mats, svals)], f"{title} after epoch {ckpt['epoch']}"


def plot_esd_grid(run_dir: str | Path, out_stem: str | Path, layers: list[str] | None = None, alpha: float = 0.25,
                  beta: float = 0.1, gof_threshold: float = 0.1, x_edges: float = 2.5) -> list[Path]:
    """ESD grid of a run's final model.  `layers` picks module names (default: all); the x axis
    ends at `x_edges` times lambda_plus (eigenvalues beyond are counted in the table and legend)."""
    spectra, title = run_spectra(run_dir)
    chosen = [sp for sp in spectra if layers is None or sp[0] in layers]
    if not chosen:
        raise ValueError(f"no such layers in {run_dir}: {layers}; known: {[sp[0] for sp in spectra]}")
    fig, table = esd_grid(chosen, alpha=alpha, beta=beta, gof_threshold=gof_threshold, x_edges=x_edges, title=title)
    return save_figure(fig, table, out_stem)
