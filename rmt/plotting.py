"""ESD grids: one panel per layer with the histogram of eigenvalues s^2/N, the fitted MP density and lambda_plus.

matplotlib is imported on use, so the rest of the library does not need it.
"""

from __future__ import annotations

import math

import numpy as np

from rmt.mp import fit_spectra, mp_pdf


def esd_grid(spectra: list[tuple[str, tuple[int, int], np.ndarray]], alpha: float = 0.25, beta: float = 0.1,
             gof_threshold: float = 0.1, x_edges: float = 2.5, title: str = "", max_cols: int = 4):
    """(figure, per-layer fit table) for `(name, (out, fan_in), singular values)` entries.

    The x axis of a panel ends at `x_edges * lambda_plus`; eigenvalues beyond are counted in the legend
    and the table.  `fits_mp` in the table is `gof < gof_threshold` (layers that do / do not fit MP).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    cols = min(max_cols, len(spectra))
    rows = math.ceil(len(spectra) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    table = []
    for ax, (name, shape, s) in zip(axes.flat, spectra):
        s = np.asarray(s, dtype=np.float64)
        n = max(shape)
        fit = fit_spectra(s[None], n, alpha=alpha, beta=beta)[0]
        eig = s**2 / n
        shown = eig[eig <= x_edges * fit.lambda_plus]
        heights, _, _ = ax.hist(shown, bins=80, density=True, color="tab:gray", alpha=0.6, label=f"ESD ({len(eig) - len(shown)} beyond)")
        x = np.linspace(1e-6 * fit.lambda_plus, fit.lambda_plus, 600)
        ax.plot(x, mp_pdf(x, fit.sigma2, fit.c) * len(eig) / max(len(shown), 1), color="tab:red", label=f"MP σ²={fit.sigma2:.3g}")
        ax.axvline(fit.lambda_plus, color="k", ls="--", lw=1, label=f"λ₊ ({fit.n_spikes} spikes)")
        ax.set_ylim(0, 1.15 * heights.max())  # a square layer's MP density diverges at 0
        ax.set_title(f"{name} {tuple(shape)}  GoF {fit.gof:.3f}", fontsize=8)
        ax.legend(fontsize=6)
        table.append({"layer": name, "out": shape[0], "fan_in": shape[1], **fit.as_dict(),
                      "fits_mp": fit.gof < gof_threshold, "eigenvalues_beyond_plot": len(eig) - len(shown)})
    for ax in list(axes.flat)[len(spectra):]:
        ax.axis("off")
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    return fig, pd.DataFrame(table)
