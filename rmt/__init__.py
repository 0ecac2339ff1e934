"""RMT pruning library: Marchenko–Pastur fits of layer spectra and SVD pruning for any nn.Module.

No Hydra, no W&B: plain functions on tensors and modules.
"""

from rmt.hessian import lanczos_spectrum, loss_hessian_operator
from rmt.limit import actual_limit, magnitude_pruned, predicted_limit, pruned_norm, sorted_magnitudes, width_ratio
from rmt.mp import MPFit, SignalNoise, fit_mp, fit_spectra, mp_cdf, mp_edges, mp_pdf, mp_quantile, split_signal_noise
from rmt.prune import (
    FactorPair,
    apply_splits,
    count_parameters,
    mp_prune_step,
    pruning_units,
    split_layer,
)
from rmt.pruners import (
    PRUNERS,
    PruneResult,
    PruneState,
    count_nonzero,
    global_magnitude_masks,
    magnitude_ranks,
    make_pruner,
    prune_count,
    register_pruner,
)
from rmt.spectra import batched_svdvals, fit_layers, gram_svd, gram_svdvals, layer_matrix, spectral_layers
from rmt.tracy_widom import tw1_cdf, tw1_quantile

__all__ = [
    "PRUNERS", "FactorPair", "MPFit", "PruneResult", "PruneState", "SignalNoise", "actual_limit", "apply_splits",
    "batched_svdvals", "count_nonzero", "count_parameters", "fit_layers", "fit_mp", "fit_spectra", "global_magnitude_masks",
    "gram_svd", "gram_svdvals", "lanczos_spectrum", "layer_matrix", "loss_hessian_operator", "magnitude_pruned",
    "magnitude_ranks", "make_pruner", "mp_cdf", "mp_edges", "mp_pdf", "mp_prune_step", "mp_quantile", "predicted_limit",
    "prune_count", "pruned_norm", "pruning_units", "register_pruner", "sorted_magnitudes", "spectral_layers", "split_layer",
    "split_signal_noise", "tw1_cdf", "tw1_quantile", "width_ratio",
]
