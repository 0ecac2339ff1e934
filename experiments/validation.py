"""Up-front checks of the numbers a runner reads from its config: one `RunConfigError` naming every bad value and
what is accepted, before any data, model or run folder is touched."""

from __future__ import annotations

import math
from dataclasses import dataclass

from omegaconf import DictConfig, ListConfig, OmegaConf

from experiments.errors import RunConfigError


@dataclass(frozen=True)
class Rule:
    """`key` (dotted) must be an `int` or a `float` (ints accepted) within [minimum, maximum] (`above` / `below` make
    the bounds exclusive), a `str` among `choices`, or, with `each=True`, a non-empty list of such numbers;
    `optional` also accepts null, `allow_empty` an empty list.  An absent key is not checked."""

    key: str
    kind: type
    minimum: float | None = None
    maximum: float | None = None
    above: bool = False
    below: bool = False
    optional: bool = False
    choices: tuple[str, ...] = ()
    each: bool = False
    allow_empty: bool = False

    def accepts(self, value: object) -> bool:
        if value is None:
            return self.optional
        if self.each:
            return (isinstance(value, (list, ListConfig)) and (len(value) > 0 or self.allow_empty)
                    and all(self._accepts_one(v) for v in value))
        return self._accepts_one(value)

    def _accepts_one(self, value: object) -> bool:
        if self.kind is str:
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float) if self.kind is float else int):
            return False
        if not math.isfinite(value):
            return False
        if self.minimum is not None and (value <= self.minimum if self.above else value < self.minimum):
            return False
        return self.maximum is None or (value < self.maximum if self.below else value <= self.maximum)

    def expected(self) -> str:
        if self.kind is str:
            return "one of " + ", ".join(self.choices)
        noun = ("integers" if self.kind is int else "numbers") if self.each else ("an integer" if self.kind is int else "a number")
        bounds = []
        if self.minimum is not None:
            bounds.append(f"{'>' if self.above else '>='} {self.minimum:g}")
        if self.maximum is not None:
            bounds.append(f"{'<' if self.below else '<='} {self.maximum:g}")
        text = f"{noun}{' ' + ' and '.join(bounds) if bounds else ''}"
        listed = f"a {'' if self.allow_empty else 'non-empty '}list of {text}"
        return f"{listed if self.each else text}{' or null' if self.optional else ''}"


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


def mp_fit_rules(prefix: str = "") -> tuple[Rule, ...]:
    """BEMA's trim alpha in (0, 1/2) and edge confidence beta in (0, 1) under `prefix` (docs/METHOD.md §2)."""
    return (Rule(f"{prefix}alpha", float, 0, 0.5, above=True, below=True), Rule(f"{prefix}beta", float, 0, 1, above=True, below=True))


COMMON_RULES = (Rule("seed", int, 0), Rule("threads", int, 1, optional=True))

TRAIN_RULES = (
    *COMMON_RULES, Rule("dtype", str, choices=("float32", "float64")),
    Rule("optim.name", str, choices=("sgd", "adamw")), Rule("pruning.schedule", str, choices=("linear", "constant")),
    Rule("train.epochs", int, 1), Rule("train.batch_size", int, 1), Rule("train.eval_batch_size", int, 1),
    Rule("optim.lr", float, 0, above=True), Rule("optim.momentum", float, 0, 1), Rule("optim.lr_decay", float, 0, above=True),
    Rule("optim.decay_every", int, 1), Rule("optim.weight_decay", float, 0), Rule("optim.grad_clip", float, 0, above=True, optional=True),
    Rule("reg.l1", float, 0), Rule("reg.l2", float, 0),
    Rule("pruning.every", int, 1), Rule("pruning.keep_horizon", float, 0, above=True),
    Rule("pruning.keep_fraction", float, 0, 1), Rule("pruning.ratio", float, 0, 1), *mp_fit_rules("pruning."),
    Rule("profile.width_scale", float, 0, above=True), Rule("profile.min_width", int, 1),
    Rule("profile.epoch_scale", float, 0, above=True), Rule("profile.min_epochs", int, 1),
    Rule("profile.train_subset", int, 1, optional=True), Rule("profile.test_subset", int, 1, optional=True),
)

P4_LIMIT_RULES = (
    *COMMON_RULES, Rule("ratio_steps", int, 2),
    Rule("eval_batch_size", int, 1), Rule("loss_batch_size", int, 1, optional=True),
    Rule("lanczos.steps", int, 1), Rule("lanczos.probes", int, 1), Rule("lanczos.seed", int, 0),
    Rule("lanczos.batch_size", int, 1), Rule("lanczos_commit_s", float, 0), *mp_fit_rules("mp."),
    Rule("mp.gof_threshold", float, 0, above=True), Rule("hessian_params", str, choices=("weights", "all")),
)

SYNTHETIC_RULES = (
    *COMMON_RULES, Rule("n", int, 10), *mp_fit_rules(), Rule("beta_for_alpha_sweep", float, 0, 1, above=True, below=True),
    Rule("alpha_grid", float, 0, 0.5, above=True, below=True, each=True), Rule("beta_grid", float, 0, 1, above=True, below=True, each=True),
)

MP_FITS_RULES = (
    *COMMON_RULES, *mp_fit_rules(), Rule("gof_threshold", float, 0, above=True),
    Rule("alpha_grid", float, 0, 0.5, above=True, below=True, each=True), Rule("budget_cycle", int, 1),
    Rule("null_draws", int, 2),
)

RANK_SWEEP_RULES = (*COMMON_RULES, *mp_fit_rules(), Rule("ranks.start", int, 0), Rule("ranks.stop", int, 1), Rule("ranks.step", int, 1))

MAGNITUDE_SWEEP_RULES = (*COMMON_RULES, Rule("k_max", int, 1), Rule("threshold_scale", float, 0, above=True))

RANDOMNESS_REMOVAL_RULES = (
    *COMMON_RULES, *mp_fit_rules(), Rule("lambda_l2", float, 0, optional=True), Rule("noise_draws", int, 1),
    Rule("thetas", float, 0, 1, each=True), Rule("epsilons", float, 0, each=True),
)

CONFIDENCE_BOUND_RULES = (*COMMON_RULES, *mp_fit_rules())

P3_REGRESSION_RULES = (
    *COMMON_RULES, Rule("dtype", str, choices=("float32", "float64")), Rule("problem.dim", int, 1), Rule("problem.max_frequency", int, 1),
    Rule("problem.features", int, 2), Rule("problem.outputs", int, 2), Rule("problem.modes", int, 1),
    Rule("problem.mix", str, choices=("orthogonal", "none")), Rule("problem.noise", float, 0),
    Rule("problem.n_train", int, 2), Rule("problem.n_test", int, 1), Rule("train.epochs", int, 1), Rule("train.batch_size", int, 1),
    Rule("optim.lr", float, 0, above=True), Rule("optim.momentum", float, 0, 1), Rule("optim.lr_decay", float, 0, above=True),
    Rule("optim.decay_every", int, 1), Rule("pruning.method", str, choices=("mp_svd",)), *mp_fit_rules("pruning."),
    Rule("pruning.gof_threshold", float, 0, above=True), Rule("pruning.every", int, 1),
    Rule("pruning.schedule", str, choices=("linear", "constant")), Rule("pruning.keep_horizon", float, 0, above=True),
    Rule("pruning.keep_fraction", float, 0, 1), Rule("pruning.resplit", str, choices=("product", "factors")),
    Rule("reg.grid", float, 0, above=True, each=True), Rule("reg.val_fraction", float, 0, 1, above=True, below=True),
)

P3_PRUNE_RULES = (
    *COMMON_RULES, Rule("dtype", str, choices=("float32", "float64")), Rule("cycles", int, 1), Rule("eval_batch_size", int, 1),
    *mp_fit_rules("pruning."), Rule("pruning.reg_steps", int, 0), Rule("pruning.reg_steps_growth", int, 0),
    Rule("pruning.reg_lr", float, 0), Rule("baselines.sparsities", float, 0, 1, above=True, below=True, each=True, allow_empty=True),
    Rule("baselines.structured_keep", float, 0, 1, each=True, allow_empty=True), Rule("baselines.latency_batch", int, 1, each=True),
    Rule("profile.width_scale", float, 0, above=True), Rule("profile.epoch_scale", float, 0, above=True),
    Rule("profile.test_subset", int, 1, optional=True),
)
