"""Model registry: builders by name, so runners and the CLI share one way to make a model.

`build_model("fc", sizes=[784, 1000, 10])` makes the papers' fully connected net;
`build_model("timm", name="vit_small_patch16_224")` makes a timm model (timm imported lazily).
Register more with `@register_model("name")`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

MODEL_BUILDERS: dict[str, Callable[..., nn.Module]] = {}


def register_model(name: str) -> Callable[[Callable[..., nn.Module]], Callable[..., nn.Module]]:
    def decorate(builder: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
        MODEL_BUILDERS[name] = builder
        return builder

    return decorate


def build_model(kind: str, **kwargs) -> nn.Module:
    """Build a registered model; unknown kinds list the known ones."""
    if kind not in MODEL_BUILDERS:
        raise KeyError(f"unknown model kind {kind!r}; known: {sorted(MODEL_BUILDERS)}")
    return MODEL_BUILDERS[kind](**kwargs)


@register_model("fc")
def fc_net(sizes: Sequence[int], init: str = "normal_fan_in", activation: str = "relu", output_relu: bool = False) -> nn.Sequential:
    """Fully connected net `sizes[0] -> ... -> sizes[-1]`: Flatten, then Linear/activation pairs, no
    activation after the last Linear (logits) unless `output_relu` (the P2 code's bug, METHOD.md §4.4).

    init: `normal_fan_in` = weights N(0, 1/in), biases 0 (P1 code);  `torch_default` =
    PyTorch's U[-1/sqrt(in), 1/sqrt(in)] (P2).
    """
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2 or min(sizes) < 1:
        raise ValueError(f"an FC net needs at least an input and an output size >= 1, got {sizes}")
    acts = {"relu": nn.ReLU, "tanh": nn.Tanh, "gelu": nn.GELU}
    if activation not in acts:
        raise ValueError(f"unknown activation {activation!r}; known: {sorted(acts)}")
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (d_in, d_out) in enumerate(zip(sizes[:-1], sizes[1:])):
        linear = nn.Linear(d_in, d_out)
        if init == "normal_fan_in":
            with torch.no_grad():
                linear.weight.normal_(0.0, d_in**-0.5)
                linear.bias.zero_()
        elif init != "torch_default":
            raise ValueError(f"unknown init {init!r}; known: normal_fan_in, torch_default")
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
def conv_net(channels: Sequence[int], hidden: Sequence[int], num_classes: int = 10, image_size: int = 28,
             pool_after: Sequence[int] = (1, 2, 3), init: str = "normal_fan_in", activation: str = "relu") -> nn.Sequential:
    """3x3 conv layers `channels[0] -> ... -> channels[-1]` (padding 1, ReLU, a 2x2 max-pool after the
    conv layers listed in `pool_after`, 0-based), then the FC net `flat -> hidden -> num_classes`.

    The P1 CNN: channels [1, 32, 64, 128, 256, 512], pools after convs 1, 2, 3 -> 512 x 3 x 3 = 4608
    features, hidden [1000].  Conv layers keep PyTorch's default init; `init` applies to the FC part.
    """
    channels = [int(c) for c in channels]
    layers: list[nn.Module] = []
    for i, (c_in, c_out) in enumerate(zip(channels[:-1], channels[1:])):
        layers += [nn.Conv2d(c_in, c_out, 3, padding=1), nn.ReLU()]
        if i in pool_after:
            layers.append(nn.MaxPool2d(2))
    flat = conv_flat_dim(channels[-1], image_size, len(pool_after))
    return nn.Sequential(*layers, *fc_net([flat, *hidden, num_classes], init=init, activation=activation))


@register_model("timm")
def timm_model(name: str, pretrained: bool = False, **kwargs) -> nn.Module:
    """A timm model by name (random init unless `pretrained`; weights need network or a local cache)."""
    import timm

    return timm.create_model(name, pretrained=pretrained, **kwargs)


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


def model_from_record(config: dict, checkpoint: dict) -> nn.Module:
    """The trained model of a run record: its architecture, the checkpoint's splits, then its weights."""
    from rmt.prune import apply_splits

    model = apply_splits(build_from_record(config), [tuple(s) for s in checkpoint["splits"]])
    model.load_state_dict(checkpoint["model"])
    return model


def build_from_record(config: dict) -> nn.Module:
    """A fresh (unsplit) model as a run record's resolved config (`model` + `effective`) describes it."""
    m, eff = config["model"], config["effective"]
    if m["kind"] == "cnn":
        return build_model("cnn", channels=eff["channels"], hidden=eff["sizes"][1:-1], num_classes=eff["sizes"][-1],
                           image_size=config["data"]["image_size"], pool_after=m["pool_after"], init=m["init"],
                           activation=m["activation"])
    if m["kind"] == "timm":
        return build_model("timm", name=m["name"], pretrained=False)
    return build_model(m["kind"], sizes=eff["sizes"], init=m["init"], activation=m["activation"],
                       output_relu=m.get("output_relu", False))
