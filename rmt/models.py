"""Model registry: builders by name, so runners and the CLI share one way to make a model.

`build_model("fc", hidden=[1000], input_shape=(1, 28, 28), num_classes=10)` makes the papers' fully
connected net; `build_model("timm", model_name="vit_small_patch16_224")` a timm model (timm imported lazily).
Register more with `@register_model("name")`: a builder takes its own arguments and, where it needs them,
the data facts `input_shape` (one example, e.g. `(1, 28, 28)`) and `num_classes`.  A model spec is the dict `{"kind": ..., **arguments}`:
`build_model(**spec)` rebuilds the architecture, so a checkpoint that stores its spec rebuilds itself
(`model_from_checkpoint`); nothing here knows a run's config layout.
"""

from __future__ import annotations

import difflib
import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
from torch import nn

MODEL_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODEL_BUILDERS[name] = builder
        return builder

    return decorate


def build_model(kind: str, **kwargs) -> nn.Module:
    """Build a registered model (on the CPU); unknown kinds list the known ones."""
    if kind not in MODEL_BUILDERS:
        raise KeyError(f"unknown model kind {kind!r}; known: {sorted(MODEL_BUILDERS)}")
    return MODEL_BUILDERS[kind](**kwargs)


@register_model("fc")
def fc_net(hidden: Sequence[int], input_shape: Sequence[int], num_classes: int, init: str = "normal_fan_in",
           activation: str = "relu", output_relu: bool = False) -> nn.Sequential:
    """Fully connected net `prod(input_shape) -> hidden... -> num_classes`: Flatten, then Linear/activation
    pairs, no activation after the last Linear (logits) unless `output_relu` (the P2 code's bug, docs/METHOD.md §4.4).

    init: `normal_fan_in` = weights N(0, 1/in), biases 0 (P1 code);  `kaiming_normal` = weights N(0, 2/in),
    biases 0 (P4 code);  `torch_default` = PyTorch's U[-1/sqrt(in), 1/sqrt(in)] (P2).
    """
    sizes = [math.prod(int(d) for d in input_shape), *(int(h) for h in hidden), int(num_classes)]
    if min(sizes) < 1:
        raise ValueError(f"an FC net needs sizes >= 1, got {sizes}")
    acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}
    if activation not in acts:
        raise ValueError(f"unknown activation {activation!r}; known: {sorted(acts)}")
    stds = {"normal_fan_in": 1.0, "kaiming_normal": 2.0**0.5}  # times 1/sqrt(in)
    if init not in (*stds, "torch_default"):
        raise ValueError(f"unknown init {init!r}; known: {', '.join([*stds, 'torch_default'])}")
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = nn.Linear(d_in, d_out)
        if init in stds:
            with torch.no_grad():
                linear.weight.normal_(0.0, stds[init] * d_in**-0.5)
                linear.bias.zero_()
        layers.append(linear)
        if i < len(sizes) - 2:
            layers.append(acts[activation]())
    if output_relu:
        layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def conv_flat_dim(channels_last: int, image_size: int, n_pools: int) -> int:
    """Features after the conv stack: 3x3 convs with padding 1 keep the size, each 2x2 max-pool halves it."""
    return channels_last * (image_size // 2**n_pools) ** 2


@register_model("cnn")
def conv_net(channels: Sequence[int], hidden: Sequence[int], input_shape: Sequence[int], num_classes: int,
             pool_after: Sequence[int] = (1, 2, 3), init: str = "normal_fan_in", activation: str = "relu") -> nn.Sequential:
    """3x3 conv layers `input_shape[0] -> channels...` (padding 1, ReLU, a 2x2 max-pool after the conv layers
    listed in `pool_after`, 0-based), then the FC net `flat -> hidden -> num_classes`.

    The P1 CNN: channels [32, 64, 128, 256, 512] on 1 x 28 x 28, pools after convs 1, 2, 3 -> 512 x 3 x 3 = 4608
    features, hidden [1000].  Conv layers keep PyTorch's default init; `init` applies to the FC part.
    """
    in_channels, image_size = int(input_shape[0]), int(input_shape[-1])
    widths = [in_channels, *(int(c) for c in channels)]
    layers: list[nn.Module] = []
    for i, (c_in, c_out) in enumerate(zip(widths[:-1], widths[1:])):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
        if i in pool_after:
            layers.append(nn.MaxPool2d(2))
    flat = conv_flat_dim(widths[-1], image_size, len(pool_after))
    return nn.Sequential(*layers, *fc_net(hidden, (flat,), num_classes, init=init, activation=activation))


@register_model("timm")
def timm_model(model_name: str, input_shape: Sequence[int] | None = None, num_classes: int | None = None,
               kwargs: dict | None = None, pretrained: bool = False, checkpoint: str | None = None) -> nn.Module:
    """A timm model by name; `kwargs` are timm's (`img_size`, `patch_size`, `depth`, ...), `input_shape[0]` sets
    `in_chans` and `num_classes` the head (both default to the model's own).

    Initial weights: random (default), `pretrained=True` (timm's hub or cache), or `checkpoint`, a
    local weights file (timm's `checkpoint_path`).  Without reachable weights this raises a
    `WeightsUnavailableError` that names the local-file alternative.
    """
    import timm

    args = dict(kwargs or {})
    if input_shape is not None:
        args["in_chans"] = int(input_shape[0])
    if num_classes is not None:
        args["num_classes"] = int(num_classes)
    if checkpoint is not None and not Path(checkpoint).is_file():
        raise WeightsUnavailableError(f"model checkpoint {checkpoint} does not exist")
    if not timm.list_models(model_name) and not timm.list_models(model_name.split(".")[0]):
        close = difflib.get_close_matches(model_name, timm.list_models(), n=5)
        raise UnknownModelError(f"timm has no model {model_name!r}" + (f"; close names: {', '.join(close)}" if close else ""))
    if pretrained and not _pretrained_reachable(model_name):
        raise WeightsUnavailableError(_weights_advice(model_name, ConnectionError("not in the local cache and the hub is unreachable")))
    try:
        return timm.create_model(model_name, pretrained=pretrained, checkpoint_path=checkpoint or "", **args)
    except Exception as exc:  # download failures come in many types
        if not pretrained:
            raise
        raise WeightsUnavailableError(_weights_advice(model_name, exc)) from None


def _pretrained_reachable(model_name: str, timeout_s: float = 3.0) -> bool:
    """False only when timm's weights for `model_name` are on the Hugging Face hub, absent from the local cache,
    and the hub does not answer within `timeout_s` (so an offline machine fails at once, not after a minute of retries)."""
    import socket

    import timm
    from huggingface_hub import try_to_load_from_cache

    cfg = timm.models.get_pretrained_cfg(model_name)
    hub_id = getattr(cfg, "hf_hub_id", None) if cfg is not None else None
    if not hub_id:
        return True  # other sources (URLs, files): let timm try and report
    repo = hub_id.split("@")[0]
    if any(isinstance(try_to_load_from_cache(repo, name), str) for name in ("model.safetensors", "pytorch_model.bin")):
        return True
    host = os.environ.get("HF_ENDPOINT", "https://huggingface.co").split("://")[-1].split("/")[0]
    try:
        socket.create_connection((host, 443), timeout=timeout_s).close()
        return True
    except OSError:
        return False


def _weights_advice(name: str, exc: Exception) -> str:
    return (f"could not load pretrained weights for timm model {name!r} ({type(exc).__name__}: {str(exc)[:200]}). "
            f"Without network: download the weights file elsewhere and pass it as a local file "
            f"(model.checkpoint=/path/to/{name}.safetensors with model.pretrained=false), or point HF_HOME at a "
            f"Hugging Face cache that holds them.")


class UnknownModelError(KeyError):
    """No model of that name (a `KeyError`, so registry lookups read the same); prints as its plain message."""

    def __str__(self) -> str:
        return str(self.args[0]) if self.args else ""


class WeightsUnavailableError(RuntimeError):
    """Pretrained weights were asked for but cannot be had (no network, no cache, missing file)."""


def linear_topology(model: nn.Module) -> list[int]:
    """Widths of a chain of Linear layers, e.g. `[784, 367, 3000, 10]` after a split (P2 notation)."""
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    return [linears[0].in_features] + [m.out_features for m in linears] if linears else []


def output_layer_name(model: nn.Module) -> str:
    """Name of the last top-level child that is, or holds (after a split), a Linear: the logits layer."""
    names = [name for name, child in model.named_children() if any(isinstance(m, nn.Linear) for m in child.modules())]
    if not names:
        raise ValueError("model has no Linear layer")
    return names[-1]


def model_from_checkpoint(checkpoint: dict) -> nn.Module:
    """The model a checkpoint describes: `build_model(**checkpoint["model_spec"])`, its `splits`
    re-applied, then its weights (CPU; move it where you need it)."""
    from rmt.prune import apply_splits

    if "model_spec" not in checkpoint:
        raise ValueError("the checkpoint has no `model_spec` (it was written by an older version of the suite): "
                         "re-run the training to rebuild it")
    model = apply_splits(build_model(**checkpoint["model_spec"]), [tuple(s) for s in checkpoint.get("splits", [])])
    model.load_state_dict(checkpoint["model"])
    return model
