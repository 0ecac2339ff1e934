"""P2 Ex. 3.3: the synthetic spiked matrix W = R + S, its ESD and BEMA's lambda_plus vs alpha and beta.

    python -m experiments.synthetic            # P2 Figs. 2 and 3 (seconds)

Writes to the run folder: `eigenvalues.csv` (spectrum of X = W^T W / N), `fit.json` (BEMA fit),
`lambda_vs_alpha.csv`, `lambda_vs_beta.csv` (correct formula and the authors' compat formula).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
from omegaconf import DictConfig

from experiments.common import begin_record, hydra_entry
from experiments.validation import SYNTHETIC_RULES, check_config
from rmt.mp import fit_spectra


def p2_signal(n: int) -> np.ndarray:
    """S[i, j] = tan(pi/2 + 1/(j+1)) + cos(i) log(i+j+1) + sin(j) cos(i/j), 1-based i, j (P2 Ex. 3.3)."""
    i = np.arange(1, n + 1, dtype=np.float64)[:, None]
    j = np.arange(1, n + 1, dtype=np.float64)[None, :]
    return np.tan(np.pi / 2 + 1 / (j + 1)) + np.cos(i) * np.log(i + j + 1) + np.sin(j) * np.cos(i / j)


def run(cfg: DictConfig) -> dict:
    check_config(cfg, SYNTHETIC_RULES)
    record = begin_record(cfg, "synthetic")
    rng = np.random.default_rng(cfg.seed)
    w = rng.standard_normal((cfg.n, cfg.n)) + p2_signal(cfg.n)
    s = np.linalg.svd(w, compute_uv=False)
    n = cfg.n
    record.write_frame("eigenvalues.csv", pd.DataFrame({"eigenvalue": np.sort(s**2 / n)}))

    def lam(alpha: float, beta: float, compat: bool = False) -> float:
        return fit_spectra(s[None], n, alpha=alpha, beta=beta, compat=compat)[0].lambda_plus

    fit = fit_spectra(s[None], n, alpha=cfg.alpha, beta=cfg.beta)[0]
    record.write_frame("lambda_vs_alpha.csv", pd.DataFrame([{"alpha": a, "beta": cfg.beta_for_alpha_sweep,
                                                            "lambda_plus": lam(a, cfg.beta_for_alpha_sweep),
                                                            "lambda_plus_compat": lam(a, cfg.beta_for_alpha_sweep, True)}
                                                           for a in cfg.alpha_grid]))
    record.write_frame("lambda_vs_beta.csv", pd.DataFrame([{"alpha": cfg.alpha, "beta": b, "lambda_plus": lam(cfg.alpha, b),
                                                           "lambda_plus_compat": lam(cfg.alpha, b, True)} for b in cfg.beta_grid]))
    eig = s**2 / n
    summary = {**fit.as_dict(), "n_eigenvalues_above_lambda_plus": int((eig > fit.lambda_plus).sum()),
               "largest_eigenvalues": sorted(eig.tolist())[-12:][::-1]}
    record.write_json("fit.json", summary)
    record.write_summary(summary)
    return summary


main = hydra_entry("synthetic", run, lambda summary: print(
    f"sigma2 {summary['sigma2']:.4f}  lambda_plus {summary['lambda_plus']:.4f}  "
    f"eigenvalues above it {summary['n_eigenvalues_above_lambda_plus']}"))

if __name__ == "__main__":
    main()
