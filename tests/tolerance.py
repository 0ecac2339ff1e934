"""Tolerances for comparing two numerical routes to one answer, from the error bounds the math guarantees on
any x86-64 processor, BLAS (MKL or OpenBLAS, any instruction set) and thread count: summation order and
blocking change the rounding, never these bounds.  No bare relative tolerance is put on a value near zero.

Notation: `eps` is the unit roundoff of the working precision (float64: 2**-52 ~ 2.2e-16; float32: 2**-23 ~ 1.2e-7),
`n` the length of the longest sum, `s_max` the largest singular value.

- Sums and products (Higham, *Accuracy and Stability of Numerical Algorithms*, §3.1, §3.5): any order of
  summation gives `|fl(a.b) - a.b| <= gamma_n |a|.|b|`, `gamma_n = n eps / (1 - n eps)`, so two orders differ by
  at most twice that (`product_atol`).
- A backward-stable SVD (LAPACK's gesdd / gesvd, which every torch CPU backend and cuSOLVER implement) returns
  the exact singular values of `A + E`, `||E||_2 <= p eps ||A||_2`; by Weyl's inequality *every* singular value
  is then off by at most `p eps s_max`: an absolute bound, relative to the largest value.  A small value has no
  relative accuracy guarantee (a 1e-12 singular value of a float64 matrix is known to ~1e-4 at best).
- The Gram route (`rmt.spectra`): the float64 Gram matrix and a backward-stable `eigvalsh` move every
  eigenvalue `lambda_i = s_i**2` by at most `p eps s_max**2` (Weyl again), so `s_i` moves by at most
  `p eps s_max**2 / s_i`.
- LAPACK states `p` as "a modestly growing function of the size"; we take `p = n`, the longest sum (the measured
  constants are 2-32 for sizes up to 768, docs of `rmt.spectra.GRAM_TOL`), and double it when two routes, each
  with its own error, are compared.
- Where a bound in float32 would be too loose to catch a wrong answer (sums of 784 products), the test runs both
  sides in float64 on the same float32 weights, so what remains is the weights' own difference.

Tolerances of estimators against planted truths (sigma2 within 2 %, a BBP limit within 0.05, probe averages) are
statistical, not rounding bounds, and are stated where they are used; so is the one budget without a closed form
(a float32 ViT's logits, tests/test_rmt_cli.py).
"""

from __future__ import annotations

import torch


def eps(dtype: torch.dtype = torch.float64) -> float:
    """Unit roundoff of a floating dtype."""
    return torch.finfo(dtype).eps


def singular_value_atol(reference: torch.Tensor, n: int, *, gram: bool | torch.Tensor = False,
                        dtype: torch.dtype = torch.float64, routes: int = 2) -> torch.Tensor:
    """Per-value absolute tolerance for singular values `reference` (..., M), descending, of matrices whose
    longest side is `n`, computed in `dtype` by `routes` independent routes: `routes * n * eps * s_max` for a
    backward-stable SVD, `routes * n * eps * s_max**2 / s_i` where `gram` is True (per matrix: a (...,) mask)."""
    ref = reference.double()
    s_max = ref[..., :1]
    svd = routes * n * eps(dtype) * s_max
    gram_mask = torch.as_tensor(gram, dtype=torch.bool)
    if not gram_mask.any():
        return svd.expand_as(ref)
    tiny = torch.finfo(torch.float64).tiny
    via_gram = routes * n * eps(dtype) * s_max**2 / ref.clamp_min(tiny)
    return torch.where(gram_mask[..., None], torch.maximum(via_gram, svd), svd)


def assert_singular_values_close(actual: torch.Tensor, reference: torch.Tensor, n: int, *,
                                 gram: bool | torch.Tensor = False, dtype: torch.dtype = torch.float64,
                                 routes: int = 2) -> None:
    """`|actual - reference| <= singular_value_atol(...)` value by value, with the worst offender in the message."""
    ref = reference.double()
    tol = singular_value_atol(ref, n, gram=gram, dtype=dtype, routes=routes)
    err = (actual.double().cpu() - ref.cpu()).abs()
    ratio = err / tol.cpu()
    worst = int(ratio.argmax())
    assert ratio.max() <= 1, (f"singular value {tuple(int(i) for i in torch.unravel_index(torch.tensor(worst), ratio.shape))}: "
                              f"off by {err.flatten()[worst]:.3g}, bound {tol.flatten()[worst]:.3g} "
                              f"(value {ref.flatten()[worst]:.3g}, gram={gram if isinstance(gram, bool) else gram.tolist()})")


def product_atol(abs_product: torch.Tensor | float, n: int, dtype: torch.dtype = torch.float64,
                 routes: int = 2) -> torch.Tensor | float:
    """Absolute tolerance for a sum of `n` products computed in two summation orders: `routes * gamma_n * |a|.|b|`,
    where `abs_product` is the same sum taken over absolute values (an upper bound on it is fine)."""
    u = n * eps(dtype)
    return routes * u / (1 - u) * abs_product


def rounding_norm(w: torch.Tensor, dtype: torch.dtype) -> float:
    """Bound on `||fl(W) - W||_2` when `W` is rounded to `dtype`: entrywise `<= eps |W|`, so `<= eps ||W||_F`."""
    return eps(dtype) * torch.linalg.matrix_norm(torch.as_tensor(w).double()).item()


def mp_fit_rtol(values: torch.Tensor, n: int, alpha: float = 0.25, routes: int = 2, input_error: float = 0.0) -> float:
    """Relative tolerance for MP-fit statistics (sigma2, lambda_plus, sigma_plus, r_norm, w_norm) computed from two
    routes' singular values `values` (M,) of one matrix with longest side `n`: every squared value moves by at most
    `routes * n * eps * s_max**2` (the Gram bound) plus `2 s_max d + d**2` where the two inputs differ by
    `||dW||_2 <= d = input_error` (Weyl), i.e. by at most the relative `r` returned here for each value of BEMA's
    window (from the `floor(alpha M)`-th smallest up).  sigma2 = sum q_k lambda_k / sum q_k**2 with q_k >= 0 is then
    within `r` relative, and so are the sums over the bulk and the whole spectrum (their means lie above the
    window's smallest value); see `mp_gof_atol` for the GoF distance."""
    lam = (values.double() ** 2).sort().values
    s_max = lam[-1].sqrt().item()
    shift = routes * n * eps() * lam[-1].item() + 2 * s_max * input_error + input_error**2
    return shift / lam[int(alpha * len(lam))].item()


def mp_gof_atol(values: torch.Tensor, n: int, alpha: float = 0.25, routes: int = 2, input_error: float = 0.0) -> float:
    """Absolute tolerance for the GoF (KS) distance: each `F_MP(lambda_i; sigma2)` moves by at most
    `x pdf(x) * (|d lambda_i| / lambda_i + |d sigma2| / sigma2) <= 2 r / (pi sqrt(c))` (`x pdf(x) <= 1 / (pi sqrt(c))`
    for the MP law), `r` from `mp_fit_rtol`, `c = M / n`."""
    r = mp_fit_rtol(values, n, alpha, routes, input_error)
    return 2 * r / (torch.pi * (len(values) / n) ** 0.5)


def truncation_error(values: torch.Tensor, k: int, n: int, dtype: torch.dtype = torch.float64, routes: int = 2) -> float:
    """Spectral-norm bound on the difference of two rank-`k` truncations of one matrix (singular values `values`,
    descending; longest side `n`) computed by `routes` routes in `dtype`: each route's subspace is off by
    `sin(angle) <= b s_max / (s_k - s_{k+1})` (Wedin, SVD route) or `<= b s_max**2 / (lambda_k - lambda_{k+1})`
    (Davis-Kahan on the Gram matrix), `b = routes n eps`; the truncation then moves by at most
    `b s_max (1 + 2 s_max / gap_s + 2 s_max**2 / gap_lambda)`.  `k >= M` (nothing cut): `b s_max`."""
    s = values.double()
    b = routes * n * eps(dtype) * s[0].item()
    if k >= len(s):
        return b
    gap_s = (s[k - 1] - s[k]).item()
    gap_lambda = (s[k - 1] ** 2 - s[k] ** 2).item()
    s_max = s[0].item()
    return b * (1 + 2 * s_max / gap_s + 2 * s_max**2 / gap_lambda)


def stored_truncation_error(weight: torch.Tensor, rank: int) -> float:
    """Spectral-norm bound on how far two rank-`rank` truncations of `weight` (float64 SVD or Gram route, each stored
    in float32 as factors or as a matrix) can differ: `truncation_error` plus the float32 storage and product
    rounding, `2 (rank + 2) eps32 || |U_k| S_k |V_k| ||_F`."""
    u, s, vh = torch.linalg.svd(weight.detach().reshape(weight.shape[0], -1).double(), full_matrices=False)
    formed = torch.linalg.matrix_norm((u[:, :rank].abs() * s[:rank]) @ vh[:rank].abs()).item()
    return truncation_error(s, rank, max(u.shape[0], vh.shape[1])) + 2 * (rank + 2) * eps(torch.float32) * formed


def relu_mlp_error(layers: list[tuple[torch.Tensor, torch.Tensor | None]], weight_errors: list[float], x: torch.Tensor,
                   dtype: torch.dtype = torch.float32, routes: int = 2) -> torch.Tensor:
    """Per-example bound on `||f(x) - g(x)||_2` for two ReLU MLPs with layers `(W_l, b_l)` (those of `f`) whose
    weights differ by at most `weight_errors[l]` in spectral norm, both run in `dtype`.  ReLU is 1-Lipschitz, so an
    error entering a layer grows by at most `||W_l||_2`; layer `l` adds `d_l ||h||` from its weights and
    `routes * gamma_{2 n_l} || |h| |W_l|^T + |b_l| ||` from rounding (`2 n_l` covers a split pair's two sums)."""
    h = x.double().flatten(1)
    err = torch.zeros(len(h), dtype=torch.float64)
    for (w, bias), d in zip(layers, weight_errors):
        w = w.double()
        absb = bias.double().abs() if bias is not None else 0.0
        u = 2 * w.shape[1] * eps(dtype)
        rounding = routes * u / (1 - u) * torch.linalg.vector_norm(h.abs() @ w.abs().T + absb, dim=1)
        err = err * torch.linalg.matrix_norm(w, ord=2) + d * torch.linalg.vector_norm(h, dim=1) + rounding
        h = torch.relu(h @ w.T + (bias.double() if bias is not None else 0.0))
    return err


def lanczos_atol(norm: float, n: int, steps: int) -> float:
    """Absolute tolerance for a converged Ritz value of Lanczos with full re-orthogonalisation on an `n x n` matrix of
    spectral norm `norm`: the run is backward stable (Paige; the re-orthogonalisation keeps the basis orthonormal to
    working precision), each of the `steps` products adding at most `n eps norm`, so `steps n eps norm`.  Not for
    values the Krylov space has not resolved yet: their error is the method's, not rounding."""
    return steps * n * eps() * norm


def moment_atol(norm: float, n: int, steps: int, k: int) -> float:
    """Absolute tolerance for the k-th quadrature moment `sum_i w_i theta_i**k` against `v^T A^k v` (unit `v`): the
    tridiagonal is that of `A + E`, `||E|| <= lanczos_atol / steps` per step, and `k` products of the perturbed matrix
    move the moment by at most `k ||E|| norm**(k - 1)`; both sides are also rounded.  `2 (k + 1) steps n eps norm**k`."""
    return 2 * (k + 1) * steps * n * eps() * norm**k
