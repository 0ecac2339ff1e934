"""Up-front checks of the numbers a runner reads from its config: one `RunConfigError` naming every bad value and
what is accepted, before any data, model or run folder is touched."""

from __future__ import annotations

import math
from dataclasses import dataclass

from omegaconf import DictConfig, OmegaConf

from experiments.errors import RunConfigError


@dataclass(frozen=True)
class Rule:
    """`key` (dotted) must be an `int` or a `float` (ints accepted) within [minimum, maximum] (`above` makes the
    minimum exclusive), or a `str` among `choices`; `optional` also accepts null.  An absent key is not checked."""

    key: str
    kind: type
    minimum: float | None = None
    maximum: float | None = None
    above: bool = False
    optional: bool = False
    choices: tuple[str, ...] = ()

    def accepts(self, value: object) -> bool:
        if value is None:
            return self.optional
        if self.kind is str:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float) if self.kind is float else int):
            return False
        if not math.isfinite(value):
            return False
        if self.minimum is not None and (value <= self.minimum if self.above else value < self.minimum):
            return False
        return self.maximum is None or value <= self.maximum

    def expected(self) -> str:
        if self.kind is str:
            return "one of " + ", ".join(self.choices)
        noun = "an integer" if self.kind is int else "a number"
        bounds = []
        if self.minimum is not None:
            bounds.append(f"{'>' if self.above else '>='} {self.minimum:g}")
        if self.maximum is not None:
            bounds.append(f"<= {self.maximum:g}")
        return f"{noun}{' ' + ' and '.join(bounds) if bounds else ''}{' or null' if self.optional else ''}"


def check_config(cfg: DictConfig, rules: tuple[Rule, ...]) -> None:
    """Raise one `RunConfigError` listing every rule the config breaks (`key=value: expected ...`)."""
    bad = []
    for rule in rules:
        value = OmegaConf.select(cfg, rule.key, default="<absent>")
        if value == "<absent>":
            continue
        if not rule.accepts(value):
            bad.append(f"{rule.key}={value!r} (expected {rule.expected()})")
    if bad:
        raise RunConfigError("bad setting" + ("s" if len(bad) > 1 else "") + ": " + "; ".join(bad))


TRAIN_RULES = (
    Rule("seed", int, 0), Rule("threads", int, 1, optional=True), Rule("dtype", str, choices=("float32", "float64")),
    Rule("optim.name", str, choices=("sgd", "adamw")), Rule("pruning.schedule", str, choices=("linear", "constant")),
    Rule("train.epochs", int, 1), Rule("train.batch_size", int, 1), Rule("train.eval_batch_size", int, 1),
    Rule("optim.lr", float, 0, above=True), Rule("optim.momentum", float, 0, 1), Rule("optim.lr_decay", float, 0, above=True),
    Rule("optim.decay_every", int, 1), Rule("optim.weight_decay", float, 0), Rule("optim.grad_clip", float, 0, above=True, optional=True),
    Rule("reg.l1", float, 0), Rule("reg.l2", float, 0),
    Rule("pruning.every", int, 1), Rule("pruning.keep_horizon", float, 0, above=True),
    Rule("pruning.keep_fraction", float, 0, 1), Rule("pruning.ratio", float, 0, 1),
    Rule("pruning.alpha", float, 0, 1, above=True), Rule("pruning.beta", float, 0, 1, above=True),
    Rule("profile.width_scale", float, 0, above=True), Rule("profile.min_width", int, 1),
    Rule("profile.epoch_scale", float, 0, above=True), Rule("profile.min_epochs", int, 1),
    Rule("profile.train_subset", int, 1, optional=True), Rule("profile.test_subset", int, 1, optional=True),
)

P4_LIMIT_RULES = (
    Rule("seed", int, 0), Rule("threads", int, 1, optional=True), Rule("ratio_steps", int, 2),
    Rule("eval_batch_size", int, 1), Rule("loss_batch_size", int, 1, optional=True),
    Rule("lanczos.steps", int, 1), Rule("lanczos.probes", int, 1), Rule("lanczos.seed", int, 0),
    Rule("lanczos.batch_size", int, 1), Rule("mp.alpha", float, 0, 1, above=True), Rule("mp.beta", float, 0, 1, above=True),
    Rule("mp.gof_threshold", float, 0, above=True), Rule("hessian_params", str, choices=("weights", "all")),
)
