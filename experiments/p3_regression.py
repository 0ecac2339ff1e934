"""P3 regression remark: noisy Fourier targets, fixed features; test MSE of one learned matrix trained with no
regularisation, L1, L2 or MP pruning, and the singular values of each learned matrix next to the ideal one.

    python -m experiments.p3_regression threads=1                       # one seed of the paper-like setting (seconds)
    python -m experiments.p3_regression -m 'seed=range(0,5)' threads=1  # what `make reproduce-p3-regression` runs

The paper gives only "noisy Fourier targets, fixed features. MSE: MP pruning 0.149, L1 0.416, L2 2.563, none 2.574";
every other choice is a value in `conf/p3_regression.yaml`, with its reason.  The problem, per seed:
- inputs x uniform on the torus [0, 2 pi)^d; psi(x) = the P real Fourier modes sqrt(2) cos(k.x), sqrt(2) sin(k.x) of
  P/2 distinct random integer frequency vectors k (orthonormal under the law of x);
- fixed features phi(x) = Q psi(x), Q a random orthogonal P x P matrix (`problem.mix=orthogonal`; `none`: phi = psi),
  never trained: E[phi phi^T] = I, and no single feature is a Fourier mode;
- targets y = A psi_K(x) + sigma eps in R^m: K of the modes (their cos and sin), A with N(0, 1/(2K)) entries (each
  target component has unit variance), eps ~ N(0, I);
- the ideal (noise-free) matrix W* = A S^T Q^T maps phi(x) to the noise-free target exactly (rank 2K); since
  E[phi phi^T] = I the excess risk of a learned W is exactly ||W - W*||_F^2 / m.
The learned map is one `nn.Linear(P, m, bias=False)` (the m x P matrix that gets MP-pruned), from the same initial
weights, on the same batches, with the same SGD schedule in every arm.  Arms: `none`; `l1` / `l2` (loss + lambda sum
|w| / + lambda sum w^2, lambda chosen from `reg.grid` by the MSE on a validation part of the training set); `mp`
(trained as `none`, then its MP bulk R_hat removed once: `rmt.pruners` `mp_svd` at keep fraction 0 keeps the spikes
above the BEMA edge sigma_plus, W -> S_hat); `mp_p1` (P1's schedule during training: after every `pruning.every`
epochs keep the spikes plus a share max(0, 1 - e / keep_horizon) of the bulk).

Writes `selection.csv` (validation MSE per penalty and lambda), `curves.csv` (per arm and epoch: loss, excess risk,
rank, MP fit of the matrix), `spectra.csv` (singular values of each arm's final matrix and of W*), `summary.json`.
"""

from __future__ import annotations

import copy
import itertools
import math
import time

import numpy as np
import pandas as pd
import torch
from omegaconf import DictConfig
from torch import nn

from experiments.common import begin_record, hydra_entry, setup_numerics
from experiments.errors import RunConfigError
from experiments.train import keep_fraction, learning_rate
from experiments.validation import P3_REGRESSION_RULES, check_config
from rmt.mp import MPFit, fit_spectra
from rmt.prune import unit_matrix
from rmt.pruners import PruneState, make_pruner

ARMS = ("none", "l1", "l2", "mp", "mp_p1")


def half_space_frequencies(dim: int, max_frequency: int) -> np.ndarray:
    """Every non-zero integer vector of [-max_frequency, max_frequency]^dim whose first non-zero entry is positive
    (one of each pair +-k: cos and sin of k and -k span the same functions), in lexicographic order."""
    grid = np.array(list(itertools.product(range(-max_frequency, max_frequency + 1), repeat=dim)), dtype=np.int64)
    first = np.array([row[np.flatnonzero(row)[0]] if row.any() else 0 for row in grid])
    return grid[first > 0]


def fourier_modes(x: np.ndarray, freqs: np.ndarray) -> np.ndarray:
    """psi(x): [sqrt(2) cos(k.x) for k] then [sqrt(2) sin(k.x) for k]; orthonormal for x uniform on the torus."""
    phase = x @ freqs.T.astype(np.float64)
    return np.sqrt(2.0) * np.concatenate([np.cos(phase), np.sin(phase)], axis=1)


class Problem:
    """One seed's regression problem: fixed feature map, ideal matrix, and the train / test samples as tensors."""

    def __init__(self, cfg: DictConfig, device: torch.device, dtype: torch.dtype):
        p = cfg.problem
        rng = np.random.default_rng(cfg.seed)
        candidates = half_space_frequencies(p.dim, p.max_frequency)
        if p.features % 2 or p.features // 2 > len(candidates):
            raise RunConfigError(f"problem.features={p.features} must be even and at most {2 * len(candidates)} (twice the "
                                 f"{len(candidates)} frequency vectors of [-{p.max_frequency}, {p.max_frequency}]^{p.dim})")
        if p.modes > p.features // 2:
            raise RunConfigError(f"problem.modes={p.modes} exceeds the {p.features // 2} Fourier frequencies of the features")
        self.freqs = candidates[rng.choice(len(candidates), p.features // 2, replace=False)]
        half = p.features // 2
        target = rng.choice(half, p.modes, replace=False)
        self.target_columns = np.concatenate([target, target + half])  # cos and sin of each target frequency
        mixing = np.linalg.qr(rng.standard_normal((p.features, p.features)))[0] if p.mix == "orthogonal" else np.eye(p.features)
        self.mixing = mixing
        amplitudes = rng.standard_normal((p.outputs, 2 * p.modes)) / np.sqrt(2 * p.modes)
        ideal_psi = np.zeros((p.outputs, p.features))
        ideal_psi[:, self.target_columns] = amplitudes
        self.ideal = ideal_psi @ mixing.T  # W*: phi = Q psi, so psi = Q^T phi and y = W*_psi Q^T phi

        def sample(n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
            x = rng.uniform(0.0, 2 * np.pi, size=(n, p.dim))
            psi = fourier_modes(x, self.freqs)
            clean = psi @ ideal_psi.T
            noisy = clean + p.noise * rng.standard_normal(clean.shape)
            return tuple(torch.as_tensor(a, dtype=dtype, device=device) for a in (psi @ mixing.T, clean, noisy))

        self.train_x, self.train_clean, self.train_y = sample(p.n_train)
        self.test_x, self.test_clean, self.test_y = sample(p.n_test)
        self.ideal_t = torch.as_tensor(self.ideal, dtype=dtype, device=device)
        self.n_fit = int(round(p.n_train * (1 - cfg.reg.val_fraction)))


def matrix_spectrum(cfg: DictConfig, w: torch.Tensor) -> tuple[torch.Tensor, MPFit]:
    """Singular values (float64, descending) of a learned matrix and their BEMA fit with the pruning settings."""
    s = torch.linalg.svdvals(w.double())
    return s, fit_spectra(s[None], max(w.shape), alpha=cfg.pruning.alpha, beta=cfg.pruning.beta, compat=cfg.pruning.compat)[0]


def numerical_rank(s: torch.Tensor, shape: tuple[int, ...]) -> int:
    """numpy's matrix_rank rule: singular values above max(shape) * eps * s_max (eps of float64)."""
    return int((s > max(shape) * torch.finfo(torch.float64).eps * s.max()).sum())


def learned_matrix(model: nn.Module) -> torch.Tensor:
    """The m x P matrix the model applies (a split pair's product when the MP arm split it)."""
    return unit_matrix(model[0]).detach()


@torch.no_grad()
def mse(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Mean squared error over samples and outputs."""
    return float(((model(x) - y) ** 2).mean())


def train_arm(cfg: DictConfig, initial: nn.Module, prob: Problem, penalty: str, lam: float, n_samples: int,
              curves: list[dict] | None = None, arm: str = "") -> nn.Module:
    """Train a copy of `initial` on the first `n_samples` training samples: SGD with P1's momentum and lr decay,
    loss = mean over the batch of ||W phi - y||^2 (+ lam sum |w| for `l1`, + lam sum w^2 for `l2`); `mp_p1` prunes
    after every `pruning.every` epochs on the P1 schedule, `mp` once after the last epoch at keep fraction 0.  Batches: a permutation per epoch from `seed` and the epoch, the same for every arm.
    With `curves`, appends one row per epoch (loss, excess risk, rank and the MP fit of the matrix)."""
    model = copy.deepcopy(initial)
    x, y = prob.train_x[:n_samples], prob.train_y[:n_samples]
    opt_cfg, bs = cfg.optim, cfg.train.batch_size

    def optimizer() -> torch.optim.Optimizer:
        return torch.optim.SGD(model.parameters(), lr=opt_cfg.lr, momentum=opt_cfg.momentum)

    opt = optimizer()
    pruner = make_pruner(cfg.pruning.method, alpha=cfg.pruning.alpha, beta=cfg.pruning.beta, gof_threshold=cfg.pruning.gof_threshold,
                         split=cfg.pruning.split, resplit=cfg.pruning.resplit, compat=cfg.pruning.compat) if penalty.startswith("mp") else None
    state = PruneState()
    m = prob.ideal.shape[0]
    for epoch in range(1, cfg.train.epochs + 1):
        lr = learning_rate(epoch, opt_cfg)
        for group in opt.param_groups:
            group["lr"] = lr
        order = torch.randperm(n_samples, generator=torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)).to(x.device)
        loss_sum = 0.0
        for start in range(0, n_samples, bs):
            idx = order[start:start + bs]
            loss = ((model(x[idx]) - y[idx]) ** 2).sum(1).mean()
            loss_sum += float(loss.detach()) * len(idx)
            if penalty == "l1":
                loss = loss + lam * sum(p.abs().sum() for p in model.parameters())
            elif penalty == "l2":
                loss = loss + lam * sum(p.pow(2).sum() for p in model.parameters())
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        if not math.isfinite(loss_sum):
            raise RunConfigError(f"training diverged ({penalty}, lambda {lam:g}, epoch {epoch}, lr {lr:g}): lower optim.lr")
        f, report = 1.0, []
        scheduled = epoch % cfg.pruning.every == 0 if penalty == "mp_p1" else epoch == cfg.train.epochs
        if pruner is not None and scheduled:
            f = keep_fraction(epoch, cfg.pruning, cfg.pruning.keep_horizon) if penalty == "mp_p1" else 0.0
            result = pruner(model, state, f)
            report = result.layers
            if cfg.optim.reset_after_prune or result.rebuilt:
                opt = optimizer()
        if curves is not None:
            w = learned_matrix(model)
            s, fit = matrix_spectrum(cfg, w)
            curves.append({"arm": arm, "epoch": epoch, "lr": lr, "train_loss": loss_sum / n_samples / m,
                           "excess_risk": float((w - prob.ideal_t).pow(2).sum()) / m, "rank": numerical_rank(s, w.shape),
                           "keep_fraction": f, "kept_rank": report[0]["rank"] if report else None, "sigma_plus": fit.sigma_plus,
                           "n_spikes": fit.n_spikes, "bulk_fraction": fit.bulk_fraction, "gof": fit.gof})
    return model


def select_lambda(cfg: DictConfig, initial: nn.Module, prob: Problem, penalty: str) -> tuple[float, list[dict]]:
    """The grid value with the lowest MSE on the validation part (the training samples after the first `n_fit`),
    trained on the first `n_fit`; ties go to the smaller lambda."""
    val_x, val_y = prob.train_x[prob.n_fit:], prob.train_y[prob.n_fit:]
    rows = [{"penalty": penalty, "lambda": float(lam), "val_mse": mse(train_arm(cfg, initial, prob, penalty, lam, prob.n_fit), val_x, val_y)}
            for lam in sorted(cfg.reg.grid)]
    best = min(rows, key=lambda r: (r["val_mse"], r["lambda"]))
    for row in rows:
        row["chosen"] = row is best
    return best["lambda"], rows


def arm_summary(cfg: DictConfig, model: nn.Module, prob: Problem, lam: float | None, spectrum: tuple[torch.Tensor, MPFit]) -> dict:
    """One arm's test errors, excess risk, rank and MP fit; `spectrum` = `matrix_spectrum` of its learned matrix."""
    w = learned_matrix(model)
    m = w.shape[0]
    s, fit = spectrum
    return {"lambda": lam, "test_mse": mse(model, prob.test_x, prob.test_y), "test_mse_clean": mse(model, prob.test_x, prob.test_clean),
            "excess_risk": float((w - prob.ideal_t).pow(2).sum()) / m, "train_mse": mse(model, prob.train_x, prob.train_y),
            "relative_error": float((w - prob.ideal_t).norm() / prob.ideal_t.norm()), "rank": numerical_rank(s, w.shape),
            "parameters": sum(p.numel() for p in model.parameters()), "sigma_plus": fit.sigma_plus, "n_spikes": fit.n_spikes,
            "bulk_fraction": fit.bulk_fraction, "gof": fit.gof}


def run(cfg: DictConfig) -> dict:
    check_config(cfg, P3_REGRESSION_RULES)
    device, dtype, _ = setup_numerics(cfg)
    start = time.perf_counter()
    prob = Problem(cfg, device, dtype)  # checks the problem's sizes before the record is written
    record = begin_record(cfg, "p3_regression")
    p = cfg.problem
    torch.manual_seed(cfg.seed)
    initial = nn.Sequential(nn.Linear(p.features, p.outputs, bias=False)).to(device, dtype)  # the same start for every arm

    selection, lambdas = [], {"none": None, "mp": None, "mp_p1": None}
    for penalty in ("l1", "l2"):
        lambdas[penalty], rows = select_lambda(cfg, initial, prob, penalty)
        selection += rows
    curves: list[dict] = []
    models = {arm: train_arm(cfg, initial, prob, arm, lambdas[arm] or 0.0, p.n_train, curves, arm) for arm in ARMS}

    spectra = [{"arm": "ideal", "index": i, "singular_value": float(s)}
               for i, s in enumerate(torch.linalg.svdvals(prob.ideal_t.double()).tolist())]
    fitted = {arm: matrix_spectrum(cfg, learned_matrix(model)) for arm, model in models.items()}  # one SVD per arm
    for arm, (values, _) in fitted.items():
        spectra += [{"arm": arm, "index": i, "singular_value": float(v)} for i, v in enumerate(values.tolist())]
    ols = torch.linalg.lstsq(prob.train_x.double(), prob.train_y.double()).solution.T  # the none arm's limit
    ols_excess = float((ols - prob.ideal_t.double()).pow(2).sum()) / p.outputs

    record.write_frame("selection.csv", pd.DataFrame(selection))
    record.write_frame("curves.csv", pd.DataFrame(curves))
    record.write_spectra(spectra)
    ideal_fit = np.linalg.svd(prob.ideal, compute_uv=False)
    summary = {
        "seed": cfg.seed, "profile": cfg.profile_name,
        "settings": {"features": p.features, "outputs": p.outputs, "n_train": p.n_train, "n_test": p.n_test,
                     "modes": p.modes, "ideal_rank": int((ideal_fit > 1e-9 * ideal_fit[0]).sum()), "noise": p.noise,
                     "mix": p.mix, "epochs": cfg.train.epochs},
        "arms": {arm: arm_summary(cfg, model, prob, lambdas[arm], fitted[arm]) for arm, model in models.items()},
        "ols_excess_risk": ols_excess, "noise_variance": p.noise**2,
        "wall_time_s": round(time.perf_counter() - start, 2),
    }
    record.write_summary(summary)
    return summary


def report(summary: dict) -> None:
    arms = summary["arms"]
    print("test MSE vs noise-free targets: " + ", ".join(f"{arm} {arms[arm]['test_mse_clean']:.3f}" for arm in ARMS)
          + f"  (MP rank {arms['mp']['rank']}, P1 schedule {arms['mp_p1']['rank']}, ideal {summary['settings']['ideal_rank']}; "
          f"lambda L1 {arms['l1']['lambda']:g}, L2 {arms['l2']['lambda']:g}; {summary['wall_time_s']:.1f} s)")


main = hydra_entry("p3_regression", run, report)

if __name__ == "__main__":
    main()
