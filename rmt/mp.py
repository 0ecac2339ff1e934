"""Marchenko–Pastur law and the BEMA fit of a weight matrix's spectrum.

Conventions (docs/METHOD.md §1):
- A weight `W` is `out x in`; `N = max(out, in)`, `M = min(out, in)`, `c = M / N <= 1`.
- Eigenvalues are `lambda_i = s_i**2 / N` (`s_i` the singular values), so an iid matrix
  with entry variance `sigma2` has an ESD close to MP(sigma2, c).
- The singular-value threshold is `sigma_plus = sqrt(N * lambda_plus)`; singular values
  above it are spikes, the rest is the bulk.

All functions are vectorised with numpy; `fit_spectra` fits a batch of same-shape
spectra at once.  `compat=True` reproduces the authors' two formula bugs (docs/METHOD.md §4.1
and §4.2) next to the correct default.
"""

from __future__ import annotations

import functools
from dataclasses import asdict, dataclass

import numpy as np
import torch

from rmt.tracy_widom import tw1_quantile


def mp_edges(sigma2: float | np.ndarray, c: float | np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Support `(lambda_minus, lambda_plus) = sigma2 (1 -/+ sqrt(c))**2` of MP(sigma2, c)."""
    root = np.sqrt(c)
    return sigma2 * (1.0 - root) ** 2, sigma2 * (1.0 + root) ** 2


def mp_pdf(x: np.ndarray, sigma2: float, c: float) -> np.ndarray:
    """MP density `sqrt((l+ - x)(x - l-)) / (2 pi sigma2 c x)` on its support, 0 elsewhere."""
    x = np.asarray(x, dtype=np.float64)
    lo, hi = mp_edges(sigma2, c)
    inside = (x > lo) & (x < hi)
    xs = np.where(inside, x, 0.5 * (lo + hi))
    dens = np.sqrt((hi - xs) * (xs - lo)) / (2.0 * np.pi * sigma2 * c * xs)
    return np.where(inside, dens, 0.0)


def mp_cdf(x: np.ndarray, sigma2: float | np.ndarray, c: float | np.ndarray, compat: bool = False) -> np.ndarray:
    """Closed-form MP CDF (broadcasts over x, sigma2, c).

    With `a, b` the edges and `r(x) = sqrt((b - x)(x - a))`, an antiderivative of `r(x)/x` is
    `G(x) = r + (a+b)/2 asin((2x-a-b)/(b-a)) - sqrt(ab) asin(((a+b)x - 2ab)/(x(b-a)))`,
    and `F(x) = (G(x) - G(a)) / (2 pi sigma2 c)`.
    `compat=True` returns 0 instead of 1 above the upper edge (the authors' bug, §4.2).
    """
    x = np.asarray(x, dtype=np.float64)
    a, b = mp_edges(sigma2, c)
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    xs = np.clip(x, a, b)
    xs = np.maximum(xs, np.finfo(np.float64).tiny)
    width = b - a
    r = np.sqrt(np.maximum((b - xs) * (xs - a), 0.0))
    g = r + 0.5 * (a + b) * np.arcsin(np.clip((2.0 * xs - a - b) / width, -1.0, 1.0))
    g_a = -0.25 * np.pi * (a + b)
    sab = np.sqrt(a * b)
    third = np.arcsin(np.clip(((a + b) * xs - 2.0 * a * b) / (xs * width), -1.0, 1.0))
    g = g - sab * third
    g_a = g_a + sab * 0.5 * np.pi
    cdf = np.clip((g - g_a) / (2.0 * np.pi * sigma2 * c), 0.0, 1.0)
    cdf = np.where(x <= a, 0.0, cdf)
    return np.where(x >= b, 0.0 if compat else 1.0, cdf)


def mp_quantile(p: np.ndarray, sigma2: float, c: float) -> np.ndarray:
    """Quantile of MP(sigma2, c): vectorised bisection of the closed-form CDF."""
    p = np.asarray(p, dtype=np.float64)
    lo_edge, hi_edge = mp_edges(sigma2, c)
    lo = np.full(p.shape, float(lo_edge))
    hi = np.full(p.shape, float(hi_edge))
    for _ in range(60):
        mid = 0.5 * (lo + hi)
        below = mp_cdf(mid, sigma2, c) < p
        lo = np.where(below, mid, lo)
        hi = np.where(below, hi, mid)
    return 0.5 * (lo + hi)


def fits_bema(m: int, alpha: float) -> bool:
    """True when a spectrum of `m` values leaves at least 2 in BEMA's middle window.  An `alpha` outside (0, 1/2)
    fits no spectrum: a ValueError, so callers that skip small layers never skip every layer silently."""
    if not 0.0 < alpha < 0.5:
        raise ValueError(f"alpha must be in (0, 1/2), got {alpha}")
    return int(np.floor((1.0 - alpha) * m)) - int(np.floor(alpha * m)) >= 2


def bema_window(m: int, alpha: float) -> tuple[int, int]:
    """0-based index range `[start, stop)` of the middle eigenvalues BEMA fits on."""
    if not fits_bema(m, alpha):
        raise ValueError(f"a spectrum of {m} values leaves fewer than 2 values in the BEMA window (alpha={alpha})")
    return int(np.floor(alpha * m)), int(np.floor((1.0 - alpha) * m))


@functools.lru_cache(maxsize=1024)
def _unit_mp_quantiles(m: int, c: float, alpha: float) -> np.ndarray:
    start, stop = bema_window(m, alpha)
    return mp_quantile(np.arange(start, stop) / m, 1.0, c)


def tw_edge_factor(c: float, n: int, beta: float, compat: bool = False) -> float:
    """`lambda_plus / sigma2 = (1+sqrt c)^2 + t N^(-2/3) c^(-1/6) (1+sqrt c)^(4/3)`, t the TW1 (1-beta) quantile.

    `compat=True` uses the authors' `(1+sqrt c)**4/3` (= (1+sqrt c)^4 / 3, docs/METHOD.md §4.1).
    """
    if not 0.0 < beta < 1.0:
        raise ValueError(f"beta must be in (0, 1), got {beta}")
    t = tw1_quantile(1.0 - beta)
    root = 1.0 + np.sqrt(c)
    power = root**4 / 3.0 if compat else root ** (4.0 / 3.0)
    return float(root**2 + t * n ** (-2.0 / 3.0) * c ** (-1.0 / 6.0) * power)


@dataclass(frozen=True)
class MPFit:
    """BEMA fit of one spectrum.  `sigma_plus` is the singular-value threshold."""

    n: int
    m: int
    c: float
    sigma2: float
    lambda_plus: float
    sigma_plus: float
    n_spikes: int
    bulk_fraction: float
    gof: float
    r_norm: float  # ||R_hat||_F = sqrt(sum of bulk s_i^2): the random part's size
    w_norm: float  # ||W||_F

    def as_dict(self) -> dict:
        return asdict(self)


def fit_spectra(
    singular_values: np.ndarray | torch.Tensor,
    n: int,
    alpha: float = 0.25,
    beta: float = 0.1,
    compat: bool = False,
) -> list[MPFit]:
    """Fit MP by BEMA to a batch `(B, M)` of singular-value spectra of `N x M`-shaped matrices.

    Returns one `MPFit` per row.  Singular values may come in any order.
    """
    s = singular_values.detach().double().cpu().numpy() if isinstance(singular_values, torch.Tensor) else np.asarray(singular_values, dtype=np.float64)
    s = np.sort(np.atleast_2d(s), axis=1)  # ascending
    batch, m = s.shape
    if m > n:
        raise ValueError(f"spectrum has {m} values but N = {n}: expected M = min(out, in) <= N")
    c = m / n
    eig = s**2 / n
    start, stop = bema_window(m, alpha)
    q = _unit_mp_quantiles(m, c, alpha)
    window = eig[:, start:stop]
    sigma2 = window @ q / (q @ q)
    lam_plus = sigma2 * tw_edge_factor(c, n, beta, compat)
    sigma_plus = np.sqrt(n * lam_plus)
    # A spike must also be numerically non-zero: values below the float32 rank tolerance (numpy's matrix_rank rule,
    # `max(N, M) eps32 s_max`) are round-off of a rank-deficient matrix (a split pair's product, a rank-1 matrix), not
    # signal, however low the edge fitted to them.
    rank_tol = n * np.finfo(np.float32).eps * s[:, -1]
    spike = s > np.maximum(sigma_plus, rank_tol)[:, None]
    n_spikes = spike.sum(axis=1)
    r_norm = np.sqrt(np.where(spike, 0.0, s**2).sum(axis=1))
    w_norm = np.sqrt((s**2).sum(axis=1))
    f_emp = np.arange(start + 1, stop + 1) / m
    f_mp = mp_cdf(window, sigma2[:, None], c, compat=compat)
    gof = np.abs(f_emp[None, :] - f_mp).max(axis=1)
    return [
        MPFit(n=n, m=m, c=c, sigma2=float(sigma2[i]), lambda_plus=float(lam_plus[i]), sigma_plus=float(sigma_plus[i]),
              n_spikes=int(n_spikes[i]), bulk_fraction=float(1.0 - n_spikes[i] / m), gof=float(gof[i]),
              r_norm=float(r_norm[i]), w_norm=float(w_norm[i]))
        for i in range(batch)
    ]


def fit_mp(W: np.ndarray | torch.Tensor, alpha: float = 0.25, beta: float = 0.1, compat: bool = False) -> MPFit:
    """BEMA fit of MP to one 2-D matrix of either orientation (numpy array or torch tensor)."""
    w = torch.as_tensor(W)
    if w.ndim != 2:
        raise ValueError(f"fit_mp needs a 2-D matrix, got shape {tuple(w.shape)}; unfold conv kernels first (rmt.spectra.layer_matrix)")
    s = torch.linalg.svdvals(w.double())
    return fit_spectra(s[None], max(w.shape), alpha=alpha, beta=beta, compat=compat)[0]


@dataclass(frozen=True)
class SignalNoise:
    """`W = signal + noise`: `noise` = R_hat, the part of the SVD with singular values <= sigma_plus (the MP bulk);
    `signal` = S_hat = W - R_hat (the spikes).  Both in W's dtype and on W's device."""

    signal: torch.Tensor
    noise: torch.Tensor
    fit: MPFit


@torch.no_grad()
def split_signal_noise(W: torch.Tensor, alpha: float = 0.25, beta: float = 0.1, compat: bool = False) -> SignalNoise:
    """The spiked-model split of a 2-D weight (docs/METHOD.md §1): float64 SVD where W lives, BEMA fit of its spectrum."""
    if W.ndim != 2:
        raise ValueError(f"split_signal_noise needs a 2-D matrix, got shape {tuple(W.shape)}")
    u, s, vh = torch.linalg.svd(W.double(), full_matrices=False)
    fit = fit_spectra(s[None], max(W.shape), alpha=alpha, beta=beta, compat=compat)[0]
    bulk = s <= fit.sigma_plus
    noise = ((u[:, bulk] * s[bulk]) @ vh[bulk]).to(W.dtype)
    return SignalNoise(W - noise, noise, fit)
