"""The P1/P2 RMT-SVD pruning step with splitting into factor layers (METHOD.md §5).

For each Linear / Conv2d (unfolded to `out x fan_in`), with `W = U diag(s) V^T`:
1. fit MP (BEMA); if the GoF error is not below `gof_threshold`, leave the layer alone;
2. keep all spikes and the largest `floor(keep_fraction * (M - spikes))` bulk values:
   `rank = spikes + floor(f (M - spikes))`, never below the layer's minimum rank;
3. if `rank * (fan_in + out) < fan_in * out`, split the layer into `first` (fan_in -> rank,
   `sqrt(S) V^T`, no bias) and `second` (rank -> out, `U sqrt(S)`, keeps the bias); a Conv2d
   becomes a k x k conv to `rank` channels followed by a 1 x 1 conv;  otherwise overwrite `W`
   with its rank-`rank` truncation.
A split replaces module `name` by `nn.Sequential(first, second)` (children `name.0`, `name.1`),
so a list of `(name, rank)` splits rebuilds the architecture (`apply_splits`).
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Mapping
from dataclasses import dataclass

import torch
from torch import nn

from rmt.mp import MPFit, fit_spectra
from rmt.spectra import layer_matrix, spectral_layers


def count_parameters(model: nn.Module) -> int:
    """Number of parameters (weights and biases) of `model`."""
    return sum(p.numel() for p in model.parameters())


def _factor_layers(module: nn.Module, rank: int) -> tuple[nn.Module, nn.Module]:
    """Empty `first` (fan_in -> rank, no bias) and `second` (rank -> out) layers replacing `module`."""
    kw = {"device": module.weight.device, "dtype": module.weight.dtype}
    has_bias = module.bias is not None
    if isinstance(module, nn.Linear):
        return nn.Linear(module.in_features, rank, bias=False, **kw), nn.Linear(rank, module.out_features, bias=has_bias, **kw)
    if isinstance(module, nn.Conv2d):
        first = nn.Conv2d(module.in_channels, rank, module.kernel_size, stride=module.stride, padding=module.padding,
                          dilation=module.dilation, bias=False, padding_mode=module.padding_mode, **kw)
        return first, nn.Conv2d(rank, module.out_channels, 1, bias=has_bias, **kw)
    raise TypeError(f"cannot split {type(module).__name__}")


def split_pays_off(module: nn.Module, rank: int) -> bool:
    """True when two factor layers of this rank hold fewer weights than the dense layer."""
    out, fan_in = layer_matrix(module).shape
    return rank * (fan_in + out) < fan_in * out


def replace_module(model: nn.Module, name: str, new: nn.Module) -> None:
    """Put `new` in place of the submodule called `name`."""
    parent_name, _, child = name.rpartition(".")
    parent = model.get_submodule(parent_name) if parent_name else model
    setattr(parent, child, new)


@torch.no_grad()
def split_layer(module: nn.Module, u: torch.Tensor, s: torch.Tensor, vh: torch.Tensor, rank: int) -> nn.Sequential:
    """Two factor layers computing the rank-`rank` truncation of `module` (SVD `u, s, vh` of its matrix)."""
    first, second = _factor_layers(module, rank)
    root = s[:rank].sqrt()
    first.weight.copy_((root[:, None] * vh[:rank]).reshape(first.weight.shape))
    second.weight.copy_((u[:, :rank] * root[None, :]).reshape(second.weight.shape))
    if module.bias is not None:
        second.bias.copy_(module.bias)
    return nn.Sequential(first, second)


def apply_splits(model: nn.Module, splits: list[tuple[str, int]]) -> nn.Module:
    """Rebuild a split architecture: replace each named layer by (uninitialised) factors, in order."""
    for name, rank in splits:
        module = model.get_submodule(name)
        replace_module(model, name, nn.Sequential(*_factor_layers(module, int(rank))))
    return model


@dataclass
class LayerPrune:
    """What one pruning step did to one layer (fit statistics are those before pruning)."""

    name: str
    out: int
    fan_in: int
    fit: MPFit
    accepted: bool
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
) -> tuple[list[LayerPrune], list[tuple[str, int]]]:
    """One RMT-SVD pruning pass over every Linear / Conv2d (groups = 1) of `model`, in place.

    `min_rank` maps a module-name prefix to the smallest rank its layers may be cut to (e.g. the
    output layer -> number of classes).  Returns the per-layer report and the splits made.
    Same-shape layers share one batched SVD and one vectorised fit.
    """
    if not 0.0 <= keep_fraction <= 1.0:
        raise ValueError(f"keep_fraction must be in [0, 1], got {keep_fraction}")
    min_rank = min_rank or {}
    layers = [(n, m) for n, m in spectral_layers(model) if not isinstance(m, nn.Conv2d) or m.groups == 1]
    by_shape: dict[tuple[int, int], list[int]] = defaultdict(list)
    for i, (_, mod) in enumerate(layers):
        by_shape[tuple(layer_matrix(mod).shape)].append(i)
    reports: list[LayerPrune | None] = [None] * len(layers)
    splits: list[tuple[str, int]] = []
    for shape, idx in by_shape.items():
        mats = torch.stack([layer_matrix(layers[i][1]).float() for i in idx])
        u, s, vh = torch.linalg.svd(mats, full_matrices=False)
        fits = fit_spectra(s, max(shape), alpha=alpha, beta=beta, compat=compat)
        for j, i in enumerate(idx):
            name, mod = layers[i]
            fit = fits[j]
            accepted = fit.gof < gof_threshold
            rank = kept_rank(fit, keep_fraction, _min_rank_for(name, min_rank)) if accepted else fit.m
            did_split = False
            if accepted and rank < fit.m:
                if split and split_pays_off(mod, rank):
                    replace_module(model, name, split_layer(mod, u[j], s[j], vh[j], rank))
                    splits.append((name, rank))
                    did_split = True
                else:
                    trunc = (u[j, :, :rank] * s[j, :rank]) @ vh[j, :rank]
                    mod.weight.copy_(trunc.reshape(mod.weight.shape))
            reports[i] = LayerPrune(name, shape[0], shape[1], fit, accepted, rank, did_split)
    return reports, splits  # type: ignore[return-value]
