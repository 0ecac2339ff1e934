"""The P1/P2 RMT-SVD pruning step with splitting into factor layers (docs/METHOD.md §5).

For each Linear / Conv2d (unfolded to `out x fan_in`), with `W = U diag(s) V^T`:
1. fit MP (BEMA); if the GoF error is not below `gof_threshold`, leave the layer alone;
2. keep all spikes and the largest `floor(keep_fraction * (M - spikes))` bulk values:
   `rank = spikes + floor(f (M - spikes))`, never below the layer's minimum rank;
3. if `rank * (fan_in + out) < fan_in * out`, split the layer into `first` (fan_in -> rank,
   `sqrt(S) V^T`, no bias) and `second` (rank -> out, `U sqrt(S)`, keeps the bias); a Conv2d
   becomes a k x k conv to `rank` channels followed by a 1 x 1 conv;  otherwise overwrite `W`
   with its rank-`rank` truncation.
A split replaces module `name` by a `FactorPair(first, second)` (children `name.0`, `name.1`),
so a list of `(name, rank)` splits rebuilds the architecture (`apply_splits`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from rmt.mp import MPFit, fit_spectra, fits_bema
from rmt.spectra import SPECTRAL_LAYERS, gram_svd, layer_matrix


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (weights and biases) of `model`."""
    return sum(p.numel() for p in model.parameters())


class FactorPair(nn.Sequential):
    """`first` (fan_in -> rank, no bias) then `second` (rank -> out, bias): a split layer.

    Its matrix is `second @ first` (`out x fan_in`, conv kernels unfolded), so a pair can be
    fitted and re-split as the one layer it replaces (`resplit="product"`).
    """

    @property
    def rank(self) -> int:
        """The narrowest inner width of the chain (nested pairs included): an upper bound of its matrix rank."""
        first, second = self
        width = first.rank if isinstance(first, FactorPair) else first.weight.shape[0]
        return min(width, second.rank) if isinstance(second, FactorPair) else width


@torch.no_grad()
def count_macs(model: nn.Module, example: torch.Tensor) -> int:
    """Multiply-accumulates of the Linear and Conv2d layers for one forward pass of `example`
    (attention matmuls, norms and activations are not counted)."""
    total = 0

    def hook(mod, inputs, output):
        nonlocal total
        if isinstance(mod, nn.Linear):
            total += output.numel() * mod.in_features
        else:
            total += output.numel() * (mod.in_channels // mod.groups) * mod.kernel_size[0] * mod.kernel_size[1]

    handles = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    try:
        model.eval()(example)
    finally:
        for h in handles:
            h.remove()
    return total


def _end_layer(module: nn.Module, end: int) -> nn.Module:
    """The first (`end = 0`) or last (`end = 1`) plain layer of a layer or a (nested) factor pair."""
    while isinstance(module, FactorPair):
        module = module[end]
    return module


def _factor_layers(module: nn.Module, rank: int) -> FactorPair:
    """Empty factor pair of rank `rank` with the input side and output side of `module` (a layer or a pair)."""
    first_like, last_like = _end_layer(module, 0), _end_layer(module, 1)
    kw = {"device": first_like.weight.device, "dtype": first_like.weight.dtype}
    has_bias = last_like.bias is not None
    if isinstance(first_like, nn.Linear):
        return FactorPair(nn.Linear(first_like.in_features, rank, bias=False, **kw),
                          nn.Linear(rank, last_like.out_features, bias=has_bias, **kw))
    if isinstance(first_like, nn.Conv2d):
        first = nn.Conv2d(first_like.in_channels, rank, first_like.kernel_size, stride=first_like.stride, padding=first_like.padding,
                          dilation=first_like.dilation, bias=False, padding_mode=first_like.padding_mode, **kw)
        return FactorPair(first, nn.Conv2d(rank, last_like.out_channels, 1, bias=has_bias, **kw))
    raise TypeError(f"cannot split {type(module).__name__}")


def unit_matrix(module: nn.Module) -> torch.Tensor:
    """The `out x fan_in` matrix of a layer, or the product `second @ first` of a (nested) factor pair."""
    if isinstance(module, FactorPair):
        return unit_matrix(module[1]) @ unit_matrix(module[0])
    return layer_matrix(module)


def split_pays_off(module: nn.Module, rank: int) -> bool:
    """True when two factor layers of this rank hold fewer weights than the dense layer."""
    out, fan_in = unit_matrix(module).shape
    return rank * (fan_in + out) < fan_in * out


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put `new` in place of the submodule called `name`."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


@torch.no_grad()
def split_layer(module: nn.Module, u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, rank: int) -> FactorPair:
    """Factor pair computing the rank-`rank` truncation of `module` (SVD `u, s, vh` of its `unit_matrix`;
    `s` may live on another device or dtype than `u, vh`)."""
    pair = _factor_layers(module, rank)
    root = s[:rank].to(vh).sqrt()
    pair[0].weight.copy_((root[:, None] * vh[:rank]).reshape(pair[0].weight.shape))
    pair[1].weight.copy_((u[:, :rank] * root[None, :]).reshape(pair[1].weight.shape))
    bias = _end_layer(module, 1).bias
    if bias is not None:
        pair[1].bias.copy_(bias)
    return pair


def apply_splits(model: nn.Module, splits: list[tuple[str, int]]) -> nn.Module:
    """Rebuild a split architecture: replace each named layer (or pair) by empty factors, in order."""
    for name, rank in splits:
        replace_module(model, name, _factor_layers(model.get_submodule(name), int(rank)))
    return model


def pruning_units(model: nn.Module, resplit: str = "factors") -> list[tuple[str, nn.Module]]:
    """What a pruning step fits: every Linear / Conv2d (groups = 1), except that with
    `resplit="product"` a factor pair is one unit instead of two layers."""
    if resplit not in ("factors", "product"):
        raise ValueError(f"resplit must be 'factors' or 'product', got {resplit!r}")
    units: list[tuple[str, nn.Module]] = []
    pairs: list[str] = []
    for name, mod in model.named_modules():
        if any(name.startswith(p + ".") for p in pairs):
            continue
        if resplit == "product" and isinstance(mod, FactorPair):
            units.append((name, mod))
            pairs.append(name)
        elif isinstance(mod, SPECTRAL_LAYERS) and (not isinstance(mod, nn.Conv2d) or mod.groups == 1):
            units.append((name, mod))
    return units


@dataclass
class LayerPrune:
    """What one pruning step did to one layer (fit statistics are those before pruning)."""

    name: str
    out: int
    fan_in: int
    fit: MPFit
    accepted: bool | None  # None: no pruning was attempted (statistics only)
    rank: int
    split: bool

    def as_dict(self) -> dict:
        return {"layer": self.name, "out": self.out, "fan_in": self.fan_in, "accepted": self.accepted,
                "rank": self.rank, "split": self.split, **{k: v for k, v in self.fit.as_dict().items() if k not in ("n", "m", "c")}}


def kept_rank(fit: MPFit, keep_fraction: float, min_rank: int = 1) -> int:
    """`spikes + floor(f (M - spikes))`, clipped to `[min_rank, M]`."""
    rank = fit.n_spikes + math.floor(keep_fraction * (fit.m - fit.n_spikes))
    return int(min(fit.m, max(rank, min_rank, 1)))


def _min_rank_for(name: str, min_rank: Mapping[str, int]) -> int:
    return max([r for prefix, r in min_rank.items() if name == prefix or name.startswith(prefix + ".")], default=1)


@torch.no_grad()
def mp_prune_step(
    model: nn.Module,
    keep_fraction: float,
    alpha: float = 0.25,
    beta: float = 0.1,
    gof_threshold: float = 1.0,
    compat: bool = False,
    min_rank: Mapping[str, int] | None = None,
    split: bool = True,
    resplit: str = "factors",
    conv_gof_threshold: float | None = None,
) -> tuple[list[LayerPrune], list[tuple[str, int]]]:
    """One RMT-SVD pruning pass over `model`, in place.

    `min_rank` maps a module-name prefix to the smallest rank its layers may be cut to (e.g. the
    output layer -> number of classes).  `resplit` says how layers split earlier are treated:
    `"factors"` (the authors' code) fits each factor as a layer of its own, so factors get split
    again; `"product"` fits the pair's product `second @ first` and re-splits it at a lower rank.
    `conv_gof_threshold` (default: `gof_threshold`) applies to Conv2d layers (P1's CNN: 0.6 conv, 0.05 FC).
    Returns the per-unit report and the splits made.  Same-shape units share one float64 Gram
    eigendecomposition (`rmt.spectra.gram_svd`, SVD fallback for ill-conditioned ones, on the weights'
    device) and one vectorised fit.  Layers too small for BEMA's window are left alone and not reported.
    """
    if not 0.0 <= keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in [0, 1], got {keep_fraction}")
    min_rank = min_rank or {}
    units = [(n, m) for n, m in pruning_units(model, resplit) if fits_bema(min(unit_matrix(m).shape), alpha)]  # tiny layers: left alone
    by_shape: dict[tuple[int, int], list[int]] = defaultdict(list)
    mats = [unit_matrix(mod) for _, mod in units]
    for i, mat in enumerate(mats):
        by_shape[tuple(mat.shape)].append(i)
    reports: list[LayerPrune | None] = [None] * len(units)
    splits: list[tuple[str, int]] = []
    for shape, idx in by_shape.items():
        u, s, vh, _ = gram_svd([mats[i] for i in idx])
        fits = fit_spectra(s, max(shape), alpha=alpha, beta=beta, compat=compat)
        for j, i in enumerate(idx):
            name, mod = units[i]
            fit = fits[j]
            is_conv = isinstance(_end_layer(mod, 0), nn.Conv2d)
            accepted = fit.gof < (conv_gof_threshold if is_conv and conv_gof_threshold is not None else gof_threshold)
            current = mod.rank if isinstance(mod, FactorPair) else fit.m
            rank = min(current, kept_rank(fit, keep_fraction, _min_rank_for(name, min_rank))) if accepted else current
            did_split = False
            if rank < current:
                if isinstance(mod, FactorPair) or (split and split_pays_off(mod, rank)):
                    replace_module(model, name, split_layer(mod, u[j], s[j], vh[j], rank))
                    splits.append((name, rank))
                    did_split = True
                else:
                    trunc = (u[j, :, :rank] * s[j, :rank].to(u)) @ vh[j, :rank]
                    mod.weight.copy_(trunc.reshape(mod.weight.shape))
            reports[i] = LayerPrune(name, shape[0], shape[1], fit, accepted, rank, did_split)
    return reports, splits  # type: ignore[return-value]
