"""RMT pruning library: Marchenko–Pastur fits of layer spectra and SVD pruning for any nn.Module.

No Hydra, no W&B: plain functions on tensors and modules.
"""

from rmt.mp import MPFit, fit_mp, fit_spectra, mp_cdf, mp_edges, mp_pdf, mp_quantile
from rmt.prune import (
    FactorPair,
    apply_splits,
    count_parameters,
    mp_prune_step,
    pruning_units,
    split_layer,
)
from rmt.spectra import batched_svdvals, fit_layers, gram_svd, gram_svdvals, layer_matrix, spectral_layers
from rmt.tracy_widom import tw1_cdf, tw1_quantile

__all__ = [
    "FactorPair", "MPFit", "apply_splits", "batched_svdvals", "count_parameters", "fit_layers", "fit_mp", "fit_spectra",
    "gram_svd", "gram_svdvals", "layer_matrix", "mp_cdf", "mp_edges", "mp_pdf", "mp_prune_step", "mp_quantile", "pruning_units", "spectral_layers",
    "split_layer", "tw1_cdf", "tw1_quantile",
]
