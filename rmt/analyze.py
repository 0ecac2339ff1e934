"""Data-free spectral diagnostics of any model: one row per Linear / Conv2d layer.

`analyze(model_or_state_dict)` returns a pandas DataFrame.  Same-shape layers share one batched
float64 Gram `eigvalsh` call (`rmt.spectra.gram_svdvals`, with an SVD fallback for ill-conditioned
layers; on the GPU when one is given or present) and one vectorised MP fit, so the cost stays close
to the bare Gram-eigvalsh floor.  Conv2d kernels are unfolded to `out x (in*k*k)`.

Columns: layer, out, fan_in, N, M, sigma2, lambda_plus, sigma_plus, spikes, bulk_fraction, gof,
stable_rank (||W||_F^2 / ||W||_2^2), r_ratio (||R_hat||_F / ||W||_F), params (weights), kept_rank,
params_after (weights after the MP truncation to kept_rank, split into two factors when that is
smaller), split_pays_off.
"""

from __future__ import annotations

from collections.abc import Mapping

import torch
from torch import nn

from rmt.mp import fits_bema
from rmt.prune import kept_rank
from rmt.spectra import fit_matrices, layer_matrix, spectral_layers


COLUMNS = ["layer", "out", "fan_in", "N", "M", "sigma2", "lambda_plus", "sigma_plus", "spikes", "bulk_fraction", "gof",
           "stable_rank", "r_ratio", "params", "kept_rank", "params_after", "split_pays_off"]


def weight_matrices(source: nn.Module | Mapping[str, torch.Tensor]) -> list[tuple[str, torch.Tensor]]:
    """(name, out x fan_in matrix) of every Linear / Conv2d of a module, or of every 2-D / 4-D
    `*.weight` tensor of a state dict (so a bare checkpoint can be analysed without its architecture)."""
    if isinstance(source, nn.Module):
        return [(name, layer_matrix(mod).detach()) for name, mod in spectral_layers(source)
                if not isinstance(mod, nn.Conv2d) or mod.groups == 1]
    return [(key[: -len(".weight")], t.detach().reshape(t.shape[0], -1)) for key, t in source.items()
            if key.endswith("weight") and isinstance(t, torch.Tensor) and t.ndim in (2, 4)]


def _default_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


@torch.no_grad()
def analyze(
    source: nn.Module | Mapping[str, torch.Tensor],
    alpha: float = 0.25,
    beta: float = 0.1,
    keep_fraction: float = 0.0,
    compat: bool = False,
    device: str | torch.device | None = None,
    progress: bool = False,
):
    """Per-layer MP diagnostics (a pandas DataFrame, layers in module order).

    `keep_fraction` is the share of the bulk kept by the truncation that `params_after` prices
    (0 = spikes only, at least rank 1).
    `device` defaults to the GPU when there is one.  `df.attrs["singular_values"]` holds each layer's spectrum.
    Layers without a row are in `df.attrs["skipped"]` with the reason (too small for BEMA's window, all zero);
    NaN or inf weights raise a ValueError naming the layers.
    """
    import pandas as pd

    device = torch.device(device) if device is not None else _default_device()
    every = weight_matrices(source)
    bad = [f"{name} ({int((~torch.isfinite(m)).sum())} of {m.numel()})" for name, m in every if not bool(torch.isfinite(m).all())]
    if bad:
        raise ValueError(f"non-finite weights (NaN or inf) in layer{'s' if len(bad) > 1 else ''} {', '.join(bad[:5])}"
                         f"{' ...' if len(bad) > 5 else ''}: their spectra are undefined")
    skipped = {name: f"too small for the fit ({min(m.shape)} singular values, alpha={alpha})" for name, m in every
               if not fits_bema(min(m.shape), alpha)}
    skipped.update({name: "all weights are 0" for name, m in every if name not in skipped and not bool(m.any())})
    mats = [(name, m) for name, m in every if name not in skipped]
    fits = fit_matrices(mats, alpha=alpha, beta=beta, compat=compat, device=device, progress=progress)
    rows = []
    for name, mat in mats:
        fit, s = fits[name]
        out, fan_in = mat.shape
        rank = kept_rank(fit, keep_fraction)
        pays = rank * (out + fan_in) < out * fan_in
        rows.append({"layer": name, "out": out, "fan_in": fan_in, "N": fit.n, "M": fit.m, "sigma2": fit.sigma2,
                     "lambda_plus": fit.lambda_plus, "sigma_plus": fit.sigma_plus, "spikes": fit.n_spikes,
                     "bulk_fraction": fit.bulk_fraction, "gof": fit.gof,
                     "stable_rank": float((s.double() ** 2).sum() / s.double().max() ** 2),
                     "r_ratio": fit.r_norm / fit.w_norm if fit.w_norm > 0 else float("nan"), "params": out * fan_in,
                     "kept_rank": rank, "params_after": rank * (out + fan_in) if pays else out * fan_in,
                     "split_pays_off": bool(pays)})
    df = pd.DataFrame(rows, columns=COLUMNS)  # the columns also when every layer was skipped
    df.attrs["skipped"] = skipped  # layer -> why it has no row
    df.attrs["singular_values"] = {name: fits[name][1].double().numpy() for name, _ in mats}  # for ESD plots
    return df
