"""Layer spectra of Linear and Conv2d modules, batched by shape.

A Linear weight is used as is (`out x in`).  A Conv2d weight `(out, in/groups, k1, k2)` is
unfolded to the `out x (in/groups * k1 * k2)` matrix that acts on image patches (the P1/P3
choice; WeightWatcher instead pools the k1*k2 slices).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable

import torch
from torch import nn

from rmt.mp import MPFit, fit_spectra, fits_bema

SPECTRAL_LAYERS = (nn.Linear, nn.Conv2d)


def layer_matrix(module: nn.Module) -> torch.Tensor:
    """The 2-D `out x fan_in` weight matrix of a Linear or Conv2d (a view, no copy)."""
    if not isinstance(module, SPECTRAL_LAYERS):
        raise TypeError(f"expected nn.Linear or nn.Conv2d, got {type(module).__name__}")
    return module.weight.reshape(module.weight.shape[0], -1)


def spectral_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """All Linear / Conv2d modules of `model`, in module order, with their qualified names."""
    return [(name, mod) for name, mod in model.named_modules() if isinstance(mod, SPECTRAL_LAYERS)]


@torch.no_grad()
def batched_svdvals(matrices: Iterable[torch.Tensor], device: str | torch.device | None = None,
                    progress: bool = False) -> list[torch.Tensor]:
    """Singular values (descending) of each matrix; same-shape matrices share one batched call.

    With `device`, each stack is moved there (e.g. a GPU) in float32 and the results come back to the CPU.
    `progress` shows a bar over the shape groups.
    """
    from tqdm.auto import tqdm

    mats = list(matrices)
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, m in enumerate(mats):
        groups[(tuple(m.shape), m.dtype, m.device)].append(i)
    out: list[torch.Tensor | None] = [None] * len(mats)
    for idx in tqdm(list(groups.values()), desc="SVD", unit="shape", disable=not progress):
        stack = torch.stack([mats[i].detach() for i in idx])
        if device is not None:
            stack = stack.to(device=device, dtype=torch.float32)
        svals = torch.linalg.svdvals(stack)
        if device is not None:
            svals = svals.cpu()
        for j, i in enumerate(idx):
            out[i] = svals[j]
    return out  # type: ignore[return-value]


def fit_matrices(
    matrices: list[tuple[str, torch.Tensor]],
    alpha: float = 0.25,
    beta: float = 0.1,
    compat: bool = False,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> dict[str, tuple[MPFit, torch.Tensor]]:
    """MP fit and singular values of named `out x fan_in` matrices (batched SVD and vectorised fit per shape)."""
    svals = batched_svdvals([m for _, m in matrices], device=device, progress=progress)
    by_shape: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, (_, m) in enumerate(matrices):
        by_shape[tuple(m.shape)].append(i)
    fits: dict[str, tuple[MPFit, torch.Tensor]] = {}
    for shape, idx in by_shape.items():
        batch = torch.stack([svals[i] for i in idx])
        for i, fit in zip(idx, fit_spectra(batch, max(shape), alpha=alpha, beta=beta, compat=compat)):
            fits[matrices[i][0]] = (fit, svals[i])
    return fits


def fit_layers(
    layers: list[tuple[str, nn.Module]],
    alpha: float = 0.25,
    beta: float = 0.1,
    compat: bool = False,
) -> dict[str, MPFit]:
    """MP fit of every layer's spectrum (batched SVD per shape, vectorised fit per shape); layers too
    small for BEMA's window are left out."""
    mats = [(name, mat) for name, mat in ((n, layer_matrix(m)) for n, m in layers) if fits_bema(min(mat.shape), alpha)]
    fits = fit_matrices(mats, alpha=alpha, beta=beta, compat=compat)
    return {name: fit for name, (fit, _) in fits.items()}
