"""Layer spectra of Linear and Conv2d modules, batched by shape, through the float64 Gram matrix.

A Linear weight is used as is (`out x in`).  A Conv2d weight `(out, in/groups, k1, k2)` is
unfolded to the `out x (in/groups * k1 * k2)` matrix that acts on image patches (the P1/P3
choice; WeightWatcher instead pools the k1*k2 slices).

Singular values come from the eigenvalues of the float64 Gram matrix of the smaller side
(`W^T W` when `in <= out`, else `W W^T`): for ViT-B on 2 CPU cores 2.9x faster than float32
`torch.linalg.svdvals` (docs/PERFORMANCE.md; 5-10x is expected on a GPU, not measured here).
Squaring the condition number costs accuracy on the small singular values, so a matrix whose Gram
spectrum is too ill-conditioned falls back to float64 `torch.linalg.svdvals` / `svd` (`GRAM_TOL`).
The computation runs where the weights are (or on `device`); singular values come back on the CPU,
the pruning factors' singular vectors stay on the compute device.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from typing import NamedTuple

import torch
from torch import nn

from rmt.mp import MPFit, fit_spectra, fits_bema

SPECTRAL_LAYERS = (nn.Linear, nn.Conv2d)

GRAM_TOL = 1e-10
"""Fallback threshold: a matrix whose smallest Gram eigenvalue is not above `GRAM_TOL * lambda_max`
(i.e. `s_min / s_max <= 1e-5`, rank-deficient and zero matrices included) goes to the float64 SVD.

Why this value: the Gram route computes every eigenvalue with an absolute error
`d_lambda <= c * eps64 * lambda_max` (Gram rounding plus a backward-stable `eigvalsh`; `c` measured
2-6 at M = 60 and 17-32 at M = 768), so the relative error of `s_i = sqrt(lambda_i)` is about
`c * eps64 / (2 * rho_i)`, `rho_i = (s_i / s_max)**2`.  At `rho = 1e-10` that bound is <= 4e-5 and the
measured error of the smallest value is 2e-8..1.2e-7 (planted spectra, random orthogonal factors):
every singular value at float32 resolution or better.  Below it the small values degrade quickly
(3e-6 at rho = 1e-12; a rank-deficient matrix gives ~sqrt(eps64) * s_max instead of 0), where the
float64 SVD keeps an absolute error ~eps64 * s_max.  Float32 inputs need no rule of their own: they
are converted to float64 first, so the products are exact and only the float64 sums round.  Square iid
layers fall back rarely (s_min ~ 1/sqrt(N) is occasionally tiny: 3 of 400 at N = 768), products of
split factors (rank < M) always.
"""


class Spectra(NamedTuple):
    """Singular values of a batch: `values` (B, M) float64 on the CPU, descending; `fallback` (B,)
    bool on the CPU, True where `torch.linalg.svdvals` was used instead of the Gram route."""

    values: torch.Tensor
    fallback: torch.Tensor


class Factors(NamedTuple):
    """Thin SVD `W = u diag(s) vh` of a batch of `m x n` matrices, `M = min(m, n)`, descending `s`:
    `u` (B, m, M) and `vh` (B, M, n) float64 on the compute device (they feed the pruning step there),
    `s` (B, M) float64 on the CPU, `fallback` (B,) bool on the CPU (True: `torch.linalg.svd` was used).
    Signs of singular vectors are arbitrary (as with LAPACK) and differ between the two routes; only
    `u_i s_i v_i^T` is unique (and only the span for repeated `s_i`)."""

    u: torch.Tensor
    s: torch.Tensor
    vh: torch.Tensor
    fallback: torch.Tensor


def layer_matrix(module: nn.Module) -> torch.Tensor:
    """The 2-D `out x fan_in` weight matrix of a Linear or Conv2d (a view, no copy)."""
    if not isinstance(module, SPECTRAL_LAYERS):
        raise TypeError(f"expected nn.Linear or nn.Conv2d, got {type(module).__name__}")
    return module.weight.reshape(module.weight.shape[0], -1)


def spectral_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """All Linear / Conv2d modules of `model`, in module order, with their qualified names."""
    return [(name, mod) for name, mod in model.named_modules() if isinstance(mod, SPECTRAL_LAYERS)]


def _grams(matrices: Sequence[torch.Tensor], device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """Float64 Gram matrices `(B, M, M)` of the smaller side on `device` (one matrix converted at a
    time, so no float64 copy of the whole batch is held) and the (B,) CPU mask of Gram overflows
    (finite entries beyond ~1e154), which must take the SVD route.
    Raises ValueError when a matrix holds NaN or inf (every entry reaches a Gram diagonal as a square)."""
    m, n = matrices[0].shape[-2:]
    size = min(m, n)
    grams = torch.empty((len(matrices), size, size), dtype=torch.float64, device=device)
    for i, mat in enumerate(matrices):
        if mat.ndim != 2 or mat.shape != matrices[0].shape:
            raise ValueError(f"expected a batch of same-shape 2-D matrices, got shapes {tuple(matrices[0].shape)} and {tuple(mat.shape)}")
        w = mat.detach().to(device=device, dtype=torch.float64)
        if n <= m:
            torch.matmul(w.mT, w, out=grams[i])
        else:
            torch.matmul(w, w.mT, out=grams[i])
    finite = torch.isfinite(grams.diagonal(dim1=-2, dim2=-1)).all(dim=-1).cpu()
    for i in (~finite).nonzero().flatten().tolist():
        if not torch.isfinite(matrices[i]).all():
            raise ValueError(f"matrix {i} of the batch (shape {tuple(matrices[i].shape)}) contains NaN or inf")
        grams[i] = 0.0  # finite entries whose Gram overflows float64: the SVD (which rescales) takes it
    return grams, ~finite


def _ill_conditioned(lam: torch.Tensor, tol: float) -> torch.Tensor:
    """(B,) CPU mask: smallest eigenvalue not above `tol * largest` (ascending `lam`; catches zero matrices too)."""
    return ~(lam[..., 0] > tol * lam[..., -1]).cpu()


@torch.no_grad()
def gram_svdvals(matrices: torch.Tensor | Sequence[torch.Tensor], device: str | torch.device | None = None,
                 tol: float = GRAM_TOL) -> Spectra:
    """Singular values of a batch of same-shape matrices (a `(B, m, n)` tensor or a sequence of `m x n`
    tensors, any float dtype) from `eigvalsh` of their float64 Gram matrices of the smaller side,
    negative eigenvalues clamped to 0, square root, descending; computed on `device` (default: the
    matrices' own), returned on the CPU.  Matrices with `lambda_min <= tol * lambda_max` (see `GRAM_TOL`)
    or a Gram overflow use float64 `torch.linalg.svdvals` instead (`Spectra.fallback`).
    Raises ValueError for NaN / inf entries."""
    device = torch.device(device) if device is not None else matrices[0].device
    grams, fallback = _grams(matrices, device)
    lam = torch.linalg.eigvalsh(grams)  # ascending
    fallback |= _ill_conditioned(lam, tol)
    values = lam.flip(-1).clamp_min_(0.0).sqrt_()
    idx = fallback.nonzero().flatten().tolist()
    if idx:
        values[idx] = torch.linalg.svdvals(torch.stack([matrices[i].detach().to(device=device, dtype=torch.float64) for i in idx]))
    return Spectra(values.cpu(), fallback)


@torch.no_grad()
def gram_svd(matrices: torch.Tensor | Sequence[torch.Tensor], device: str | torch.device | None = None,
             tol: float = GRAM_TOL) -> Factors:
    """Thin SVD factors of a batch of same-shape matrices from `eigh` of the float64 Gram matrix of the
    smaller side (see `Factors` for shapes, devices and sign conventions).  The eigenvectors give the
    singular vectors of the smaller side (`V` when `n <= m`, else `U`), the other side is `W V / s`
    (or `U^T W / s`), accurate to ~eps64 / sqrt(tol) because ill-conditioned matrices (same rule as
    `gram_svdvals`) use float64 `torch.linalg.svd` instead.  Raises ValueError for NaN / inf entries."""
    device = torch.device(device) if device is not None else matrices[0].device
    m, n = matrices[0].shape[-2:]
    grams, fallback = _grams(matrices, device)
    lam, vecs = torch.linalg.eigh(grams)  # ascending
    fallback |= _ill_conditioned(lam, tol)
    s = lam.flip(-1).clamp_min_(0.0).sqrt_()
    vecs = vecs.flip(-1)
    u = torch.empty((len(matrices), m, min(m, n)), dtype=torch.float64, device=device)
    vh = torch.empty((len(matrices), min(m, n), n), dtype=torch.float64, device=device)
    for i, mat in enumerate(matrices):
        w = mat.detach().to(device=device, dtype=torch.float64)
        if fallback[i]:
            u[i], s[i], vh[i] = torch.linalg.svd(w, full_matrices=False)
        elif n <= m:  # eigenvectors = right singular vectors
            torch.div(w @ vecs[i], s[i], out=u[i])
            vh[i] = vecs[i].mT
        else:  # eigenvectors = left singular vectors
            u[i] = vecs[i]
            torch.div(vecs[i].mT @ w, s[i][:, None], out=vh[i])
    return Factors(u, s.cpu(), vh, fallback)


def _grouped_svdvals(mats: Sequence[torch.Tensor], device: str | torch.device | None,
                     progress: bool) -> Iterator[tuple[list[int], torch.Tensor]]:
    """(indices, their (B, M) singular values) per group of same-shape matrices on one device, one
    `gram_svdvals` call each, groups in first-seen order; `progress` shows a bar over the groups."""
    from tqdm.auto import tqdm

    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, m in enumerate(mats):
        groups[(tuple(m.shape), m.device)].append(i)
    for idx in tqdm(list(groups.values()), desc="spectra", unit="shape", disable=not progress):
        yield idx, gram_svdvals([mats[i] for i in idx], device=device).values


@torch.no_grad()
def batched_svdvals(matrices: Iterable[torch.Tensor], device: str | torch.device | None = None,
                    progress: bool = False) -> list[torch.Tensor]:
    """Singular values (descending, float64, on the CPU) of each matrix; same-shape matrices share one
    `gram_svdvals` call, on `device` (default: the matrices' own).  `progress` shows a bar over the shape groups."""
    mats = list(matrices)
    out: list[torch.Tensor | None] = [None] * len(mats)
    for idx, values in _grouped_svdvals(mats, device, progress):
        for j, i in enumerate(idx):
            out[i] = values[j]
    return out  # type: ignore[return-value]


def fit_matrices(
    matrices: list[tuple[str, torch.Tensor]],
    alpha: float = 0.25,
    beta: float = 0.1,
    compat: bool = False,
    device: str | torch.device | None = None,
    progress: bool = False,
) -> dict[str, tuple[MPFit, torch.Tensor]]:
    """MP fit and singular values (float64, CPU) of named `out x fan_in` matrices, in input order: one
    `gram_svdvals` call and one vectorised fit per shape, on `device` (default: the matrices' own)."""
    mats = [m for _, m in matrices]
    fits: dict[str, tuple[MPFit, torch.Tensor]] = {}
    for idx, values in _grouped_svdvals(mats, device, progress):
        for j, fit in enumerate(fit_spectra(values, max(mats[idx[0]].shape), alpha=alpha, beta=beta, compat=compat)):
            fits[matrices[idx[j]][0]] = (fit, values[j])
    return {name: fits[name] for name, _ in matrices}


def fit_layers(
    layers: list[tuple[str, nn.Module]],
    alpha: float = 0.25,
    beta: float = 0.1,
    compat: bool = False,
) -> dict[str, MPFit]:
    """MP fit of every layer's spectrum (Gram route per shape, vectorised fit per shape, on the weights'
    device); layers too small for BEMA's window are left out."""
    mats = [(name, mat) for name, mat in ((n, layer_matrix(m)) for n, m in layers) if fits_bema(min(mat.shape), alpha)]
    fits = fit_matrices(mats, alpha=alpha, beta=beta, compat=compat)
    return {name: fit for name, (fit, _) in fits.items()}
