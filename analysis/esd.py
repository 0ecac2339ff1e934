"""Layer ESDs of a logged checkpoint with the fitted MP density and the spike threshold.

`plot_esd_grid(run_dir, out)` draws one panel per Linear / Conv2d layer (conv unfolded) of the run's
final model (from the record's `spectra.csv`) and writes
the per-layer fit table; P2 Fig. 4 is the grid restricted to the first layer of the P2 Fig. 4 run.
The table's `fits_mp` column (GoF error < `gof_threshold`) sorts layers into the P2 "Tables 1/2"
of layers that do / do not fit MP.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from analysis.plotting import save_figure
from rmt.plotting import esd_grid
from rmt.runfolder import SPECTRA_CSV, read_config


def run_spectra(run_dir: str | Path) -> tuple[list[tuple[str, tuple[int, int], np.ndarray]], str]:
    """(layer name, (out, fan_in), singular values) of a run's final model, and a title, from the record's
    `spectra.csv` (the record alone suffices; no checkpoint, no model)."""
    run_dir = Path(run_dir)
    config = read_config(run_dir) or {}
    title = f"{config.get('name')}/{config.get('run_name')}"
    if not (run_dir / SPECTRA_CSV).exists():
        raise FileNotFoundError(f"{run_dir} has no spectra.csv (written when a run finishes); for a checkpoint use "
                                f"`python -m rmt analyze {run_dir} --plot esd.png`")
    df = pd.read_csv(run_dir / SPECTRA_CSV, dtype={"layer": str})
    out = [(str(name), (int(g["out"].iloc[0]), int(g["fan_in"].iloc[0])), g["singular_value"].to_numpy())
           for name, g in df.groupby("layer", sort=False)]
    return out, f"{title} (final)"


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
