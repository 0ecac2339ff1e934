"""Pruning methods behind one signature, chosen by name (the runner's `pruning.method`).

    pruner = make_pruner("mp_svd", alpha=0.25, beta=0.1, gof_threshold=1.0, resplit="product")
    state = PruneState()
    result = pruner(model, state, keep_fraction=0.8)     # in place; result.layers = per-layer report

`keep_fraction` is the step's scheduled value in [0, 1]: `mp_svd` keeps that share of each layer's MP
bulk (P1/P2, docs/METHOD.md §5); `global_magnitude` zeroes the `ratio * (1 - keep_fraction)` smallest-|w|
share of all Linear / Conv2d weights at once (one global threshold, P4 §8 and the P1-mag baseline);
`layer_magnitude` zeroes that share of every layer; `p3_cycles` runs P3's next cycle (its own schedule
`r_i`, `rmt.p3`; `keep_fraction` is not used); `none` does nothing.  A pruner changes the model in place and records in `PruneState` what a
checkpoint needs to rebuild it: the `splits` of structured pruning and the `masks` of unstructured
pruning.  Masks stay frozen: `state.apply_masks()` after every optimizer step keeps pruned entries at 0.
Register a new method with `@register_pruner("name")` on a factory that takes its parameters.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import torch
from torch import nn

from rmt import p3
from rmt.prune import mp_prune_step
from rmt.spectra import fit_layers, layer_matrix, spectral_layers


@dataclass
class PruneState:
    """What pruning changed so far: `splits` ((name, rank), in order) and `masks` (weight name -> bool, True = kept)."""

    splits: list[tuple[str, int]] = field(default_factory=list)
    masks: dict[str, torch.Tensor] = field(default_factory=dict)
    cycle: int = 0  # pruning steps taken (P3's cycle index)
    _bound: tuple[list[torch.Tensor], list[torch.Tensor]] | None = field(default=None, repr=False)

    def as_checkpoint(self) -> dict:
        return {"splits": [list(s) for s in self.splits], "masks": {k: m.cpu() for k, m in self.masks.items()},
                "cycle": self.cycle}

    @classmethod
    def from_checkpoint(cls, ckpt: Mapping) -> PruneState:
        return cls([tuple(s) for s in ckpt.get("splits", [])], dict(ckpt.get("masks", {})), int(ckpt.get("cycle", 0)))

    def bind(self, model: nn.Module) -> None:
        """Pair each mask with its parameter on the parameter's device (call after moving or rebuilding the model)."""
        params = dict(model.named_parameters())
        missing = sorted(set(self.masks) - set(params))
        if missing:
            raise ValueError(f"masks for parameters the model does not have: {missing[:5]}")
        names = sorted(self.masks)
        self._bound = ([params[n] for n in names], [self.masks[n].to(params[n].device, params[n].dtype) for n in names])

    @torch.no_grad()
    def apply_masks(self) -> None:
        """Zero the pruned entries (no-op without masks); no host sync."""
        if self._bound and self._bound[0]:
            torch._foreach_mul_(*self._bound)


@dataclass
class PruneResult:
    """One step's per-layer report, and whether modules were replaced (so an optimizer must be re-created)."""

    layers: list[dict]
    rebuilt: bool = False


Pruner = Callable[[nn.Module, PruneState, float], PruneResult]
PRUNERS: dict[str, Callable[..., Pruner]] = {}


def register_pruner(name: str) -> Callable[[Callable[..., Pruner]], Callable[..., Pruner]]:
    def decorate(factory: Callable[..., Pruner]) -> Callable[..., Pruner]:
        PRUNERS[name] = factory
        return factory

    return decorate


def make_pruner(method: str, **params) -> Pruner:
    """The pruner `method` configured with `params`; parameters the method does not take are ignored
    (a runner's pruning config also holds the MP statistics settings every method logs)."""
    if method not in PRUNERS:
        raise KeyError(f"unknown pruning method {method!r}; known: {sorted(PRUNERS)}")
    factory = PRUNERS[method]
    accepted = inspect.signature(factory).parameters
    return factory(**{k: v for k, v in params.items() if k in accepted})


def count_nonzero(model: nn.Module) -> int:
    """Non-zero entries over all parameters (P3's "parameters" of an unstructured-pruned model)."""
    return int(sum(torch.count_nonzero(p.detach()) for p in model.parameters()))


@register_pruner("none")
def no_pruning() -> Pruner:
    """Leaves the model alone."""

    def step(model: nn.Module, state: PruneState, keep_fraction: float) -> PruneResult:
        return PruneResult([])

    return step


@register_pruner("mp_svd")
def mp_svd(alpha: float = 0.25, beta: float = 0.1, gof_threshold: float = 1.0, conv_gof_threshold: float | None = None,
           compat: bool = False, split: bool = True, resplit: str = "product",
           min_rank: Mapping[str, int] | None = None) -> Pruner:
    """P1/P2 RMT-SVD pruning with splitting (`rmt.prune.mp_prune_step`); `resplit`: `product` (P1 code) or `factors` (P2 code)."""

    def step(model: nn.Module, state: PruneState, keep_fraction: float) -> PruneResult:
        reports, splits = mp_prune_step(model, keep_fraction, alpha=alpha, beta=beta, gof_threshold=gof_threshold,
                                        compat=compat, min_rank=min_rank, split=split, resplit=resplit,
                                        conv_gof_threshold=conv_gof_threshold)
        state.splits += [(name, int(rank)) for name, rank in splits]
        return PruneResult([r.as_dict() for r in reports], rebuilt=bool(splits))

    return step


def prune_count(ratio: float, n: int) -> int:
    """How many of `n` entries a pruning ratio removes: floor(ratio * n), robust to the float error of e.g. 0.3 * 10."""
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"pruning ratio must be in [0, 1], got {ratio}")
    return min(n, math.floor(ratio * n + 1e-6))


@torch.no_grad()
def magnitude_ranks(weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Each entry's position (0 = smallest) in the ascending order of |w| over all `weights` together; ties are
    broken by position (a stable sort), so `rank >= k` keeps all but exactly k entries."""
    names = list(weights)
    flat = torch.cat([weights[n].detach().abs().flatten().double() for n in names])  # float64: as rmt.limit sorts
    ranks = torch.empty(flat.numel(), dtype=torch.long, device=flat.device)
    ranks[torch.argsort(flat, stable=True)] = torch.arange(flat.numel(), device=flat.device)
    sizes = [weights[n].numel() for n in names]
    return {n: r.reshape(weights[n].shape) for n, r in zip(names, ranks.split(sizes))}


def global_magnitude_masks(weights: Mapping[str, torch.Tensor], ratio: float) -> dict[str, torch.Tensor]:
    """Masks (True = kept) zeroing exactly `floor(ratio * n)` entries of smallest |w| over all `weights` together
    (ties broken by position, so the count is exact; entries already 0 go first)."""
    k = prune_count(ratio, sum(w.numel() for w in weights.values()))
    return {n: r >= k for n, r in magnitude_ranks(weights).items()}


def _masked_rows(layers: list[tuple[str, nn.Module]]) -> list[dict]:
    """Per-layer report of unstructured pruning: weights, non-zeros, sparsity."""
    rows = []
    for name, mod in layers:
        nonzero = int(torch.count_nonzero(mod.weight))
        rows.append({"layer": name, "out": mod.weight.shape[0], "fan_in": mod.weight[0].numel(),
                     "weights": mod.weight.numel(), "nonzero": nonzero, "sparsity": 1.0 - nonzero / mod.weight.numel()})
    return rows


def _magnitude_pruner(ratio: float, per_layer: bool) -> Pruner:
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"pruning.ratio must be in [0, 1], got {ratio}")

    def step(model: nn.Module, state: PruneState, keep_fraction: float) -> PruneResult:
        layers = spectral_layers(model)
        weights = {f"{name}.weight": mod.weight for name, mod in layers}
        share = ratio * (1.0 - keep_fraction)
        if per_layer:
            state.masks = {k: global_magnitude_masks({k: w}, share)[k] for k, w in weights.items()}
        else:
            state.masks = global_magnitude_masks(weights, share)
        state.bind(model)
        state.apply_masks()
        return PruneResult(_masked_rows(layers))

    return step


@register_pruner("global_magnitude")
def global_magnitude(ratio: float = 0.5) -> Pruner:
    """Unstructured pruning of the `ratio * (1 - keep_fraction)` smallest |w| of all Linear / Conv2d weights (one global threshold)."""
    return _magnitude_pruner(ratio, per_layer=False)


@register_pruner("layer_magnitude")
def layer_magnitude(ratio: float = 0.5) -> Pruner:
    """Unstructured pruning of the `ratio * (1 - keep_fraction)` smallest |w| of every Linear / Conv2d layer separately."""
    return _magnitude_pruner(ratio, per_layer=True)


@register_pruner("p3_cycles")
def p3_cycles(alpha: float = 0.25, beta: float = 0.8, compat: bool = False, reg_steps: int = 5000,
              reg_steps_growth: int = 1000, reg_lr: float = 5e-8) -> Pruner:
    """P3's pruning cycle (docs/METHOD.md §6, `rmt.p3`): even cycles sparsify singular vectors, every cycle removes the
    MP-budgeted `q r_i nnz` smallest weights of each layer, then `reg_steps + (i - 1) reg_steps_growth` data-free
    regularisation steps.  Unstructured: masks (True = kept) in `state.masks`, frozen afterwards."""

    def step(model: nn.Module, state: PruneState, keep_fraction: float) -> PruneResult:
        i = state.cycle + 1
        layers = [(n, m) for n, m in spectral_layers(model) if not isinstance(m, nn.Conv2d) or m.groups == 1]
        fits = fit_layers(layers, alpha=alpha, beta=beta, compat=compat)
        rows = []
        with torch.no_grad():
            for name, mod in layers:
                key, fit = f"{name}.weight", fits.get(name)
                if fit is None:  # too small for BEMA's window: left alone
                    continue
                if i % 2 == 0:
                    dense = p3.sparsify_singular_vectors(layer_matrix(mod), fit.sigma_plus, p3.theta_for(i, mod.weight.numel()))
                    mod.weight.copy_(dense.reshape(mod.weight.shape))
                    if key in state.masks:
                        mod.weight.mul_(state.masks[key].to(mod.weight.device))
                before = int(torch.count_nonzero(mod.weight))
                removed = p3.budget_count(fit, i, before)
                state.masks[key] = p3.prune_smallest(mod.weight, removed)
                rows.append({"layer": name, "out": mod.weight.shape[0], "fan_in": mod.weight[0].numel(),
                             **{k: v for k, v in fit.as_dict().items() if k not in ("n", "m", "c")},
                             "q": p3.mp_budget(fit, i), "target": p3.cycle_target(i), "removed": removed,
                             "weights": mod.weight.numel(), "nonzero": before - removed,
                             "sparsity": 1.0 - (before - removed) / mod.weight.numel()})
        steps = reg_steps + (i - 1) * reg_steps_growth
        reg = p3.regularise(model, layers, {n: f.gof for n, f in fits.items()}, i, steps, state.masks, lr=reg_lr)
        state.cycle = i
        state.bind(model)
        state.apply_masks()
        return PruneResult([{**row, "cycle": i, "reg_steps": steps, **reg} for row in rows])

    return step
