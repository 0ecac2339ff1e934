"""Hessian spectra by stochastic Lanczos quadrature (SLQ), as P4 estimates the loss-landscape density.

    from rmt.hessian import lanczos_spectrum, loss_hessian_operator
    matvec, dim = loss_hessian_operator(model, batches, params=["0.weight", "2.weight"])
    nodes, weights = lanczos_spectrum(matvec, dim, steps=128, probes=1, seed=0)
    # sum(weights * f(nodes)) ~ tr f(H) / dim;  weights sum to 1

Conventions: Lanczos runs in float64 with full re-orthogonalisation (each new vector is orthogonalised twice
against all earlier ones), so the Ritz values do not develop the ghost copies of plain Lanczos.  A probe is a
Rademacher vector scaled to unit norm (E[v v^T] = I / dim, so the quadrature is an unbiased estimate of
tr f(A) / dim); with one probe and m steps, `sum(weights * nodes**k) = v^T A^k v` exactly for k <= 2m - 1.
On an invariant subspace (breakdown, e.g. steps >= dim) the recursion stops early and the Ritz values are exact
eigenvalues.  `matvec` receives and returns 1-D float64 tensors on the device of its choice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

Matvec = Callable[[torch.Tensor], torch.Tensor]


@torch.no_grad()
def lanczos_tridiagonal(matvec: Matvec, start: torch.Tensor, steps: int) -> tuple[torch.Tensor, torch.Tensor]:
    """(alpha, beta) of the Lanczos tridiagonal matrix from a unit `start` vector: `len(alpha) <= steps`
    diagonal entries and `len(alpha) - 1` off-diagonal ones.  Stops early on breakdown (beta ~ 0)."""
    dim = start.numel()
    basis = torch.empty((min(steps, dim), dim), dtype=torch.float64, device=start.device)
    basis[0] = start
    alphas, betas = [], []
    scale = 0.0
    for j in range(basis.shape[0]):
        w = matvec(basis[j].clone()).to(torch.float64, copy=True)  # a matvec may return or change its input
        if w.shape != (dim,):
            raise ValueError(f"matvec must return a 1-D tensor of length {dim}, got shape {tuple(w.shape)}")
        alpha = torch.dot(basis[j], w)
        alphas.append(alpha)
        known = basis[: j + 1]
        for _ in range(2):  # full re-orthogonalisation, twice ("twice is enough")
            w -= known.T @ (known @ w)
        beta = torch.linalg.vector_norm(w)
        scale = max(scale, abs(float(alpha)), float(beta))
        if j + 1 == basis.shape[0] or float(beta) <= 1e-12 * max(scale, 1e-300):
            break
        betas.append(beta)
        basis[j + 1] = w / beta
    alpha = torch.stack(alphas)
    beta = torch.stack(betas) if betas else alpha.new_zeros(0)
    return alpha, beta


def lanczos_spectrum(matvec: Matvec, dim: int, steps: int = 128, probes: int = 1, seed: int = 0,
                     device: str | torch.device | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Ritz values (`nodes`) and quadrature weights (averaged over `probes`, summing to 1) of the symmetric operator
    `matvec` on R^dim: `sum(weights * f(nodes)) ~ tr f(A) / dim`.  Float64 tensors on the CPU, nodes ascending."""
    if dim < 1 or steps < 1 or probes < 1:
        raise ValueError(f"dim, steps and probes must be >= 1; got dim={dim}, steps={steps}, probes={probes}")
    gen = torch.Generator().manual_seed(seed)
    nodes, weights = [], []
    for _ in range(probes):
        signs = torch.randint(0, 2, (dim,), generator=gen, dtype=torch.float64) * 2 - 1
        start = (signs / dim**0.5).to(device or "cpu")
        alpha, beta = lanczos_tridiagonal(matvec, start, steps)
        tri = torch.diag(alpha) + torch.diag(beta, 1) + torch.diag(beta, -1)
        theta, vecs = torch.linalg.eigh(tri.cpu())
        nodes.append(theta)
        weights.append(vecs[0] ** 2 / probes)
    nodes_t, weights_t = torch.cat(nodes), torch.cat(weights)
    order = torch.argsort(nodes_t)
    return nodes_t[order], weights_t[order]


def loss_hessian_operator(model: nn.Module, batches: Callable[[], Iterable[tuple[torch.Tensor, torch.Tensor]]],
                          params: Sequence[str] | None = None,
                          loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
                          ) -> tuple[Matvec, int]:
    """The Hessian of the mean loss over a dataset, w.r.t. the named parameters (all by default), as a matvec on
    flat float64 vectors, and its dimension.

    `batches()` yields (inputs, targets) covering the dataset once (called for every product); `loss_fn` is a
    batch mean.  Each product is a double backward per batch (the gradient with its graph, then the gradient of
    its product with the vector; on 2 CPU cores 1.2x faster than forward-over-reverse `torch.func`), weighted by
    batch size and summed in float64, so it equals the Hessian of the loss over all examples.  The model is used
    as it is (put it in eval mode for a deterministic operator); its parameters and their `.grad` are unchanged."""
    named = dict(model.named_parameters())
    names = list(params) if params is not None else list(named)
    missing = [n for n in names if n not in named]
    if missing:
        raise KeyError(f"the model has no parameters {missing[:5]}")
    frozen = [n for n in names if not named[n].requires_grad]
    if frozen:
        raise ValueError(f"parameters {frozen[:5]} do not require grad; the Hessian needs them to")
    chosen = [named[n] for n in names]
    sizes = [p.numel() for p in chosen]
    dtype = chosen[0].dtype
    if next(iter(batches()), None) is None:
        raise ValueError("the Hessian needs at least one batch of data")

    def matvec(v: torch.Tensor) -> torch.Tensor:
        tangent = [t.reshape(p.shape).to(dtype) for t, p in zip(v.split(sizes), chosen)]
        total = torch.zeros(sum(sizes), dtype=torch.float64, device=v.device)
        count = 0
        with torch.enable_grad():  # also when called under no_grad (as Lanczos calls it)
            for x, y in batches():
                grads = torch.autograd.grad(loss_fn(model(x.to(dtype)), y), chosen, create_graph=True)
                hv = torch.autograd.grad(grads, chosen, grad_outputs=tangent)
                total += torch.cat([h.reshape(-1) for h in hv]).to(torch.float64) * len(y)
                count += len(y)
        return total / count

    return matvec, sum(sizes)
