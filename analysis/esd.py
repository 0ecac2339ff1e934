"""Layer ESDs of a logged checkpoint with the fitted MP density and the spike threshold.

`plot_esd_grid(run_dir, out)` draws one panel per Linear / Conv2d layer (conv unfolded) of the run's
final model (from the record's `spectra.csv`) and writes
the per-layer fit table; P2 Fig. 4 is the grid restricted to the first layer of the P2 Fig. 4 run.
The table's `fits_mp` column (GoF error < `gof_threshold`) sorts layers into the P2 "Tables 1/2"
of layers that do / do not fit MP.

`read_fits` reads an `experiments.mp_fits` record (per-layer fit table, alpha sweep); `measure_p2_ex4_4_esd` is the
rule of P2 Ex. 4.4's Tables 1/2 on those records.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.plotting import save_figure
from analysis.verdicts import Outcome, Part, combine, not_run, share
from rmt.plotting import esd_grid
from rmt.runfolder import SPECTRA_CSV, SUMMARY_JSON, RunFolder, read_config


def run_spectra(run_dir: str | Path) -> tuple[list[tuple[str, tuple[int, int], np.ndarray]], str]:
    """(layer name, (out, fan_in), singular values) of a run's final model, and a title, from the record's
    `spectra.csv` (the record alone suffices; no checkpoint, no model)."""
    run_dir = Path(run_dir)
    config = read_config(run_dir) or {}
    title = f"{config.get('name')}/{config.get('run_name')}"
    if not (run_dir / SPECTRA_CSV).exists():
        raise FileNotFoundError(f"{run_dir} has no spectra.csv (written when a run finishes); for a checkpoint use "
                                f"`python -m rmt analyze {run_dir} --plot esd.png`")
    out = [(name, (rows, cols), np.asarray(values)) for name, rows, cols, values in RunFolder(run_dir).read_spectra()]
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


# ------------------------------------------------------------------------------ records of `experiments.mp_fits`
def read_fits(run_dir: str | Path) -> tuple[dict, dict, pd.DataFrame, pd.DataFrame]:
    """(config, summary, per-layer fit table, alpha sweep) of an `experiments.mp_fits` record."""
    run_dir = Path(run_dir)
    if not (run_dir / SUMMARY_JSON).exists():
        raise FileNotFoundError(f"{run_dir} holds no finished mp_fits record (no {SUMMARY_JSON}): run "
                                f"`python -m experiments.mp_fits` first")
    config = read_config(run_dir) or {}
    layers = pd.read_csv(run_dir / "layers.csv", dtype={"layer": str})
    sweep = pd.read_csv(run_dir / "alpha_sweep.csv", dtype={"layer": str})
    return config, json.loads((run_dir / SUMMARY_JSON).read_text()), layers, sweep


# P2 Ex. 4.4, "Tables 1/2": the ESD grids of the split net's layers that do not / do fit MP (P2's GoF test, gamma = 0.012).
P2_ESD_SETTINGS = {"alpha": 0.2, "beta": 0.1, "gof_threshold": 0.012}  # the Ex. 4.4 runs' own fit and GoF test (P2 code)
P2_ESD_ARMS = (("non-split", "p2_ex4_4-normal-s0"), ("split", "p2_ex4_4-rmt-s0"))
P2_ESD_LOOSE = 0.1  # the threshold of the Ex. 4.3 ESD grids, quoted for comparison
P2_ESD_RULE = ("per arm of Ex. 4.4 (the trained nets), a hidden layer fits MP when its MP-fit error (BEMA α = 0.2, β = 0.1, "
               "the runs' own GoF test) is below P2's γ = 0.012 or, where even an iid Gaussian matrix of the layer's shape "
               "exceeds γ (95 % quantile of 20 draws), below that noise quantile; P2's claim (Tables 1/2: the layers of the "
               "trained nets fit MP) holds for an arm when all its hidden layers fit: all: **reproduced**; some: **partly**; "
               "none: **not reproduced**; the two arms combined (both reproduced: reproduced; neither fits anywhere: not "
               "reproduced; else partly)")


def p2_esd_fits(layers: pd.DataFrame, gamma: float) -> pd.DataFrame:
    """The hidden layers (all but the last, the output layer) with `fits` = GoF below gamma or below the noise quantile
    where that quantile exceeds gamma."""
    hidden = layers.iloc[:-1].copy()
    hidden["tolerance"] = np.maximum(gamma, hidden["gof_null_q95"])
    hidden["fits"] = hidden["fitted"] & (hidden["gof"] < hidden["tolerance"])
    return hidden


def measure_p2_ex4_4_esd(results: Path, profile: str = "quick") -> Outcome:
    """P2 Ex. 4.4's "Tables 1/2" (which layers of the trained nets fit MP) from the `experiments.mp_fits` records
    `results/p2_esd/<profile>/p2_ex4_4-{normal,rmt}-s0` (`make reproduce-p2-esd`); `results` is the results/ root."""
    root = Path(results) / "p2_esd" / profile
    missing = [run for _, run in P2_ESD_ARMS if not (root / run / SUMMARY_JSON).exists()]
    if missing:
        return not_run(P2_ESD_RULE, f"not run: no records {', '.join(str(root / m) for m in missing)}")
    gamma = P2_ESD_SETTINGS["gof_threshold"]
    parts, cells, strict, loose = [], [], [], []
    for arm, run in P2_ESD_ARMS:
        config, _, layers, _ = read_fits(root / run)
        used = {k: config.get(k) for k in P2_ESD_SETTINGS}
        if used != P2_ESD_SETTINGS:
            raise ValueError(f"{root / run} was fitted with {used}; the rule needs {P2_ESD_SETTINGS}")
        hidden = p2_esd_fits(layers, gamma)
        out = layers.iloc[-1]
        source = config.get("source_summary") or {}
        start, final = source.get("topology_start"), source.get("topology_final")
        topology = (f"{start}{', no split' if start == final else f' → {final}'}, "
                    f"test {100 * source.get('final_test_acc', float('nan')):.2f} %")
        per_layer = ", ".join(f"{r.layer} ({r.out}×{r.fan_in}) {r.gof:.4f} [{r.gof_null_q95:.4f}]" for r in hidden.itertuples())
        cells.append(f"{arm} ({topology}): {per_layer}; output layer {out['layer']} ({out['out']}×{out['fan_in']}) "
                     f"{out['gof']:.3f}")
        strict.append(f"{int((hidden['gof'] < gamma).sum())}/{len(hidden)}")
        loose.append(f"{int((hidden['gof'] < P2_ESD_LOOSE).sum())}/{len(hidden)}")
        fits = [bool(f) for f in hidden["fits"]]
        names = ", ".join(hidden.loc[hidden["fits"], "layer"]) or "none"
        parts.append(Part(arm, share(fits), f"{sum(fits)} of {len(fits)} hidden layers fit ({names})"))
    numbers = ("final nets; MP-fit error of each hidden layer (out×in) [95 % quantile of iid Gaussian matrices of its "
               "shape], BEMA α = 0.2, β = 0.1: " + "; ".join(cells) + f"; hidden layers below γ = {gamma}: "
               f"{' and '.join(strict)}, below the Ex. 4.3 grids' {P2_ESD_LOOSE}: {' and '.join(loose)} (non-split and split)")
    facts = {"below_gamma": " and ".join(strict), "below_loose": " and ".join(loose)}
    return Outcome(combine(parts), P2_ESD_RULE, numbers, tuple(parts), facts)
