"""P3's pruning cycle for pretrained models (docs/METHOD.md §6, as the released code runs it), step by step.

Cycle `i = 1, 2, ...` with target fraction `r_i = 0.06 * 1.02**i`, on every Linear / Conv2d (conv unfolded):
1. even cycles: sparsify the singular vectors, `T_k = theta * max(1/750, (1 - s_k / sigma_plus)_+ ** 30)`,
   `theta = 1.125e-5 * r_i * numel(W)`; recompose with every singular value kept (`sparsify_singular_vectors`);
2. MP-budgeted magnitude pruning: remove `q * r_i * nnz(W)` entries, `q = ((1 - err) * bulk_fraction) ** (1.5 / i)`
   (`mp_budget`, `prune_smallest`) — random-looking layers lose more, poorly fitted ones are protected;
3. data-free regularisation steps on `sum_l c_l g ||W_l||_F + l1 sum |w| + l2 sum w^2`, `c_l = 1 / (1 + 1e4 err_l / i)`,
   AdamW with a tiny lr and a cosine schedule, pruned entries frozen (`regularise`).
Differences from the code, on purpose: the magnitude step removes exactly the budgeted count (the code raises a
threshold in 2e-5 steps until it has removed at least that many) and counts weights only (the code adds the bias);
entries pruned earlier stay exactly 0 through the recomposition of step 1 (the code lets them become tiny non-zeros
that the next magnitude step removes again).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rmt.mp import MPFit
from rmt.spectra import gram_svd


def cycle_target(i: int) -> float:
    """P3's per-cycle target fraction `r_i = 0.06 * 1.02**i`."""
    return 0.06 * 1.02**i


def mp_budget(fit: MPFit, i: int) -> float:
    """`q = ((1 - err) * bulk_fraction) ** (1.5 / i)`, the share of `r_i` a layer loses in cycle `i`."""
    return max(0.0, (1.0 - fit.gof) * fit.bulk_fraction) ** (1.5 / i)


@torch.no_grad()
def sparsify_singular_vectors(matrix: torch.Tensor, sigma_plus: float, theta: float) -> torch.Tensor:
    """`U' diag(s) V'^T`: entries of `u_k`, `v_k` below `T_k = theta * max(1/750, (1 - s_k/sigma_plus)_+^30)` set to 0."""
    f = gram_svd([matrix])
    u, s, vh = f.u[0], f.s[0].to(f.u.device), f.vh[0]
    ratio = (1.0 - s / sigma_plus).clamp(min=0.0) if sigma_plus > 0 else torch.zeros_like(s)
    thresholds = theta * torch.maximum(ratio**30, torch.full_like(s, 1.0 / 750))
    u = torch.where(u.abs() < thresholds[None, :], 0.0, u)
    vh = torch.where(vh.abs() < thresholds[:, None], 0.0, vh)
    return ((u * s[None, :]) @ vh).to(matrix.dtype)


@torch.no_grad()
def prune_smallest(weight: torch.Tensor, count: int) -> torch.Tensor:
    """Zero the `count` non-zero entries of smallest |w| (in place); returns the mask of what remains (True = kept)."""
    flat = weight.view(-1)
    nonzero = flat != 0
    count = min(int(count), int(nonzero.sum()))
    if count > 0:
        scores = torch.where(nonzero, flat.abs(), torch.full_like(flat, float("inf")))
        flat[torch.topk(scores, count, largest=False).indices] = 0.0
    return weight != 0


def regularise(model: nn.Module, layers: list[tuple[str, nn.Module]], errors: dict[str, float], i: int, steps: int,
               masks: dict[str, torch.Tensor], lr: float = 5e-8, weight_decay: float = 2e-7, group: float = 1e-6,
               l1: float = 5e-7, l2: float = 2e-7) -> dict[str, float]:
    """P3's data-free regularisation: `steps` AdamW steps (cosine lr) on group lasso over the pruned layers plus L1
    and L2 over all parameters; the pruned layers' gradients are scaled by `c_l` once more (as the code does) and
    pruned entries stay 0.  Returns the objective before and after."""
    if steps <= 0:
        return {}
    params = list(model.parameters())
    coef = {name: 1.0 / (1.0 + 1e4 * errors.get(name, 0.0) / i) for name, _ in layers}
    opt = torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    mask_pairs = [(mod.weight, masks[f"{name}.weight"]) for name, mod in layers if f"{name}.weight" in masks]

    def objective() -> torch.Tensor:
        total = sum(coef[name] * group * mod.weight.norm() for name, mod in layers)
        return total + l1 * sum(p.abs().sum() for p in params) + l2 * sum(p.pow(2).sum() for p in params)

    flushed = torch.set_flush_denormal(True)  # squared gradients of near-zero weights underflow: denormals are ~100x slower on CPUs
    try:
        return _regularise_steps(objective, opt, sched, layers, coef, mask_pairs, steps)
    finally:
        if flushed:
            torch.set_flush_denormal(False)


def _regularise_steps(objective, opt, sched, layers, coef, mask_pairs, steps) -> dict[str, float]:
    with torch.enable_grad():
        first = float(objective().detach())
        for _ in range(steps):
            opt.zero_grad(set_to_none=True)
            objective().backward()
            with torch.no_grad():
                for name, mod in layers:
                    mod.weight.grad.mul_(coef[name])
                for w, m in mask_pairs:
                    w.grad.mul_(m)
            opt.step()
            sched.step()
            with torch.no_grad():
                for w, m in mask_pairs:
                    w.mul_(m)
        last = float(objective().detach())
    return {"reg_objective_before": first, "reg_objective_after": last}


def theta_for(i: int, numel: int) -> float:
    """The sparsification scale `theta = 1.125e-5 * r_i * numel(W)` (the code's 750 * 1.5e-8)."""
    return 1.125e-5 * cycle_target(i) * numel


def budget_count(fit: MPFit, i: int, nonzero: int) -> int:
    """Entries a layer loses in cycle `i`: `floor(q * r_i * nnz)`."""
    return math.floor(mp_budget(fit, i) * cycle_target(i) * nonzero)
