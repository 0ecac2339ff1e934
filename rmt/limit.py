"""P4's pruning-ratio limit (docs/METHOD.md §8): global one-shot magnitude pruning, and the limit predicted from the
Hessian spectrum by the statistical dimension of the loss sublevel set.

Conventions: a pruning ratio `p` is the share of the prunable weights set to 0 (the `floor(p D)` smallest |w| of
all `D` Linear / Conv2d weights, one global threshold, `rmt.pruners.magnitude_ranks` order).  `R(p)` is the
Euclidean norm of what pruning removes, `||w - prune_p(w)||_2`.  With Hessian eigenvalue density `rho` (nodes
`lambda_i`, weights `rho_i`, e.g. `rmt.hessian.lanczos_spectrum`) and loss tolerance `eps` (the std of per-batch
training losses), each eigen-direction has radius `r_i^2 = 2 eps / |lambda_i|` and

    gw(R) = sum_i rho_i r_i^2 / (R^2 + r_i^2) / sum_i rho_i = sum_i rho_i 2 eps / (2 eps + R^2 |lambda_i|) / sum_i rho_i

(a zero eigenvalue counts 1).  The predicted limit is the fixed point `p* = gw(R(p*))`; since `p - gw(R(p))` only
grows with `p` (from -1 at p = 0), it is the smallest `p = k / D` with `p >= gw(R(p))`, found by bisection over k.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping, Sequence

import torch

from rmt.pruners import magnitude_ranks, prune_count


@torch.no_grad()
def sorted_magnitudes(weights: Sequence[torch.Tensor]) -> torch.Tensor:
    """|w| of all entries, ascending, float64 on the CPU (what `pruned_norm` and `predicted_limit` read)."""
    return torch.sort(torch.cat([w.detach().reshape(-1).double().abs().cpu() for w in weights])).values


def norms_by_count(magnitudes: torch.Tensor) -> torch.Tensor:
    """R_k for k = 0..D: the norm of the k smallest of the ascending `magnitudes` (float64, length D + 1)."""
    return torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(magnitudes.double() ** 2, 0)]).sqrt()


def pruned_norm(magnitudes: torch.Tensor, ratios: torch.Tensor | Sequence[float]) -> torch.Tensor:
    """R(p) for each ratio (floats or a float64 tensor): the norm of the `floor(p D)` smallest of the ascending `magnitudes`."""
    counts = torch.tensor([prune_count(float(p), len(magnitudes)) for p in torch.as_tensor(ratios).tolist()])
    return norms_by_count(magnitudes)[counts]


def width_ratio(radius: torch.Tensor | float, nodes: torch.Tensor, weights: torch.Tensor, eps: float) -> torch.Tensor:
    """gw(R) for each radius R (any shape), from a spectral density given as nodes and (non-negative) weights."""
    if not (math.isfinite(eps) and eps > 0):
        raise ValueError(f"the loss tolerance eps must be finite and > 0, got {eps}")
    if len(nodes) != len(weights) or len(nodes) == 0 or not bool(torch.isfinite(nodes).all()):
        raise ValueError("the density needs finite nodes, as many as its weights")
    if not bool(torch.isfinite(weights).all()) or bool((weights < 0).any()) or float(weights.sum()) <= 0:
        raise ValueError("the density needs finite non-negative weights with a positive sum")
    r2 = torch.as_tensor(radius, dtype=torch.float64)[..., None] ** 2
    lam = nodes.double().abs()
    share = (2 * eps) / (2 * eps + r2 * lam)  # r_i^2 / (R^2 + r_i^2), finite at lambda_i = 0
    return (share * weights.double()).sum(-1) / weights.double().sum()


def predicted_limit(magnitudes: torch.Tensor, nodes: torch.Tensor, weights: torch.Tensor, eps: float) -> float:
    """The fixed point p* = gw(R(p*)) over p = k / D, k = 0..D (smallest k with k / D >= gw(R_k))."""
    d = len(magnitudes)
    if d == 0:
        raise ValueError("no weights to prune")
    radius = norms_by_count(magnitudes)

    def above(k: int) -> bool:
        return k / d >= float(width_ratio(radius[k], nodes, weights, eps))

    lo, hi = 0, d  # above(0) is False (gw(0) = 1 > 0); above(d) holds (gw <= 1): the answer is in (lo, hi]
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if above(mid) else (mid, hi)
    return hi / d


def actual_limit(ratios: Sequence[float], accuracy: Sequence[float], dense_accuracy: float,
                 strict: bool = False) -> float | None:
    """The largest ratio whose accuracy is >= the dense accuracy (`strict`: >, as the authors' code compares);
    None when no ratio qualifies."""
    ok = [p for p, a in zip(ratios, accuracy) if (a > dense_accuracy if strict else a >= dense_accuracy)]
    return max(ok) if ok else None


@torch.no_grad()
def magnitude_pruned(weights: Mapping[str, torch.Tensor], ratios: Sequence[float]) -> Iterator[float]:
    """Global one-shot magnitude pruning at each ratio in turn, in place: yields the ratio while `weights` hold
    the pruned values, and restores the originals at the end (also on an exception or an early `break`).

    One sort of |w| and one saved copy of the weights for the whole sweep, not a model copy per ratio."""
    ranks = magnitude_ranks(weights)
    originals = {n: w.detach().clone() for n, w in weights.items()}
    total = sum(w.numel() for w in weights.values())
    try:
        for p in ratios:
            k = prune_count(float(p), total)
            for n, w in weights.items():
                torch.where(ranks[n] >= k, originals[n], torch.zeros((), dtype=w.dtype, device=w.device), out=w.data)
            yield p
    finally:
        for n, w in weights.items():
            w.data.copy_(originals[n])
