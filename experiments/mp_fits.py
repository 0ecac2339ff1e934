"""The MP fit of every layer of a trained run: the fit table at one BEMA (alpha, beta), the alpha sweep, the noise floor.

    python -m experiments.mp_fits                                         # the P3 demo ViT (conf/mp_fits.yaml)
    python -m experiments.mp_fits source_run=results/p3_vit_demo/quick/vit-s0
    python -m experiments.mp_fits name=p2_esd source_run=runs/p2_examples/quick/p2_ex4_4-rmt-s0 run_name=p2_ex4_4-rmt-s0 \\
        alpha=0.2 beta=0.1 gof_threshold=0.012                          # P2 Ex. 4.4 "Tables 1/2": which layers fit MP

Reads the singular values of the source run's final model from its record (`spectra.csv`, written when a training
run finishes: no checkpoint is needed, so committed records under results/ serve as sources) and writes
- `spectra.csv`: a copy of those singular values, so that the record alone redraws the layer ESDs
  (`python -m analysis esd --run <this record>`);
- `layers.csv`: per Linear / Conv2d layer (conv unfolded) its shape, sigma2, lambda_plus, sigma_plus, spikes, bulk
  fraction, GoF error, `fits_mp` (GoF < gof_threshold), the GoF of iid Gaussian matrices of the same shape fitted
  alike (the noise floor of the test at that size: median and 95 % quantile of `null_draws` draws), and P3's budget
  of cycle `budget_cycle`, q = ((1 - err) bulk)^(1.5 / i), with the weights it removes, floor(q r_i nnz)
  (`rmt.p3.mp_budget`, `budget_count`; nnz = out x fan_in: the source is a dense trained net);
- `alpha_sweep.csv`: the same per layer at every alpha of `alpha_grid`, beta fixed (a layer whose BEMA window
  keeps fewer than 2 eigenvalues at some alpha is `fitted = False` there, its values empty);
- `summary.json`: the counts and means the figures and rules quote, and the run's wall time.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from experiments.common import begin_record, hydra_entry
from experiments.errors import RunConfigError
from experiments.validation import MP_FITS_RULES, check_config
from rmt.mp import fit_spectra, fits_bema
from rmt.p3 import budget_count, cycle_target, mp_budget
from rmt.runfolder import CONFIG_YAML, SPECTRA_CSV, SUMMARY_JSON, RunFolder, atomic_write_bytes, read_config, run_kind

FIT_COLUMNS = ["sigma2", "lambda_plus", "sigma_plus", "n_spikes", "bulk_fraction", "gof"]


def read_spectra(run_dir: Path) -> list[tuple[str, int, int, np.ndarray]]:
    """(layer, out, fan_in, singular values) of a training run's final model, from its record's `spectra.csv`."""
    if not (run_dir / CONFIG_YAML).exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no {CONFIG_YAML})")
    kind = run_kind(read_config(run_dir))
    if kind != "train":
        raise RunConfigError(f"{run_dir} holds a {kind or 'non-training'} run, not a training run: point to the run "
                             f"folder of `experiments.train`")
    return [(name, out, fan_in, np.asarray(values, dtype=np.float64))
            for name, out, fan_in, values in RunFolder(run_dir).read_spectra()]


def null_spectra(out: int, fan_in: int, draws: int, seed: int) -> np.ndarray:
    """Singular values of `draws` iid N(0, 1) matrices of shape out x fan_in (seeded by the shape: the same draws
    whichever layers a run has)."""
    rng = np.random.default_rng([seed, out, fan_in])
    return np.stack([np.linalg.svd(rng.standard_normal((out, fan_in)), compute_uv=False) for _ in range(draws)])


def fit_row(s: np.ndarray, n: int, alpha: float, beta: float, compat: bool, null: np.ndarray, cycle: int,
            numel: int) -> dict:
    """The fit of one spectrum at (alpha, beta), the null GoF at the same settings and P3's budget; empty (NaN) values
    and `fitted = False` when BEMA's window at this alpha keeps fewer than 2 eigenvalues."""
    if not fits_bema(len(s), alpha):
        return {"fitted": False, **dict.fromkeys(FIT_COLUMNS + ["gof_null_median", "gof_null_q95", "budget_q"], math.nan),
                "budget_count": 0}
    fit = fit_spectra(s[None], n, alpha=alpha, beta=beta, compat=compat)[0]
    null_gof = np.array([f.gof for f in fit_spectra(null, n, alpha=alpha, beta=beta, compat=compat)])
    return {"fitted": True, **{k: getattr(fit, k) for k in FIT_COLUMNS},
            "gof_null_median": float(np.median(null_gof)), "gof_null_q95": float(np.quantile(null_gof, 0.95)),
            "budget_q": mp_budget(fit, cycle), "budget_count": budget_count(fit, cycle, numel)}


def sweep_means(frame: pd.DataFrame, layers: list[str]) -> dict:
    """Means over `layers` (fitted) of one alpha's rows, and the budget as a share of all their weights."""
    rows = frame[frame["layer"].isin(layers)]
    return {"layers": len(rows), "mean_gof": float(rows["gof"].mean()), "median_gof": float(rows["gof"].median()),
            "mean_gof_null_median": float(rows["gof_null_median"].mean()),
            "mean_bulk_fraction": float(rows["bulk_fraction"].mean()), "total_spikes": int(rows["n_spikes"].sum()),
            "layers_fit_mp": int(rows["fits_mp"].sum()),
            "budget_fraction": float(rows["budget_count"].sum() / rows["numel"].sum())}


def run(cfg: DictConfig) -> dict:
    start = time.perf_counter()
    check_config(cfg, MP_FITS_RULES)
    source = Path(cfg.source_run)
    spectra = read_spectra(source)
    source_summary = json.loads((source / SUMMARY_JSON).read_text()) if (source / SUMMARY_JSON).exists() else None
    record = begin_record(cfg, "mp_fits", source_config=read_config(source), source_summary=source_summary)
    atomic_write_bytes(record.dir / SPECTRA_CSV, (source / SPECTRA_CSV).read_bytes())
    grid = [float(a) for a in cfg.alpha_grid]
    alphas = sorted(set(grid) | {float(cfg.alpha)})
    rows, sweep = [], []
    for name, out, fan_in, s in spectra:
        n, numel = max(out, fan_in), out * fan_in
        null = null_spectra(out, fan_in, cfg.null_draws, cfg.seed)
        shape = {"layer": name, "out": out, "fan_in": fan_in, "n": n, "m": len(s), "numel": numel}
        for alpha in alphas:
            fit = fit_row(s, n, alpha, cfg.beta, cfg.compat, null, cfg.budget_cycle, numel)
            fit["fits_mp"] = bool(fit["fitted"] and fit["gof"] < cfg.gof_threshold)
            if alpha == float(cfg.alpha):
                rows.append({**shape, **fit})
            if alpha in grid:
                sweep.append({"alpha": alpha, "beta": float(cfg.beta), **shape, **fit})
    layers, swept = pd.DataFrame(rows), pd.DataFrame(sweep)
    record.write_frame("layers.csv", layers)
    record.write_frame("alpha_sweep.csv", swept)
    fitted = layers[layers["fitted"]]
    common = sorted(set.intersection(*(set(g.loc[g["fitted"], "layer"]) for _, g in swept.groupby("alpha"))))
    summary = {
        "source_run": str(cfg.source_run), "alpha": cfg.alpha, "beta": cfg.beta, "gof_threshold": cfg.gof_threshold,
        "budget_cycle": cfg.budget_cycle, "cycle_target": cycle_target(cfg.budget_cycle), "n_layers": len(layers),
        "n_fitted": len(fitted), "n_fit_mp": int(layers["fits_mp"].sum()),
        "layers_fit_mp": [str(x) for x in layers.loc[layers["fits_mp"], "layer"]],
        "layers_not_fit_mp": [str(x) for x in layers.loc[~layers["fits_mp"], "layer"]],
        **sweep_means(layers, list(fitted["layer"])),
        "alpha_sweep_layers": common,
        "alpha_sweep": [{"alpha": a, **sweep_means(g, common)} for a, g in swept.groupby("alpha")],
        "wall_time_s": round(time.perf_counter() - start, 2),
    }
    record.write_summary(summary)
    return summary


def report(summary: dict) -> None:
    print(f"{summary['n_fit_mp']} of {summary['n_layers']} layers fit MP (GoF < {summary['gof_threshold']}) at "
          f"alpha {summary['alpha']}, beta {summary['beta']}; median GoF {summary['median_gof']:.4f}, mean bulk fraction "
          f"{summary['mean_bulk_fraction']:.4f}, cycle-{summary['budget_cycle']} budget {summary['budget_fraction']:.4f}")


main = hydra_entry("mp_fits", run, report)


if __name__ == "__main__":
    main()
