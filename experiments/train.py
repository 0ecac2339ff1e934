"""Train a fully connected net on MNIST-like data, normally or with RMT-SVD pruning.

    python -m experiments.train experiment=fig1 panel=fig1b arm=rmt profile=quick
    python -m experiments.train -m experiment=fig1 profile=quick hydra/launcher=joblib

One file, top to bottom: settings -> data -> model (+ resume) -> epochs of
(train, prune, evaluate, record, checkpoint) -> summary.  Re-running an interrupted run
resumes from its last checkpoint and ends with the same numbers.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from pathlib import Path

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from experiments.checkpoints import load_checkpoint, save_checkpoint
from experiments.data import batches, run_data
from experiments.errors import RunConfigError, run_or_exit
from experiments.records import RunRecord, WandbMirror, resolve_wandb_mode
from rmt.models import (
    build_from_record,
    conv_flat_dim,
    linear_topology,
    output_layer_name,
)
from rmt.prune import LayerPrune, apply_splits, count_parameters, mp_prune_step
from rmt.spectra import batched_svdvals, fit_layers, layer_matrix, spectral_layers

ARMS = ("normal", "rmt")
# Config parts that do not change results: excluded from the resume fingerprint.
NON_RESULT_KEYS = ("logger", "paths", "progress", "threads", "run_dir")


def effective_settings(cfg: DictConfig) -> dict:
    """The numbers the profile produces from the experiment's paper settings."""
    p = cfg.profile
    epochs = max(int(p.min_epochs), round(cfg.train.epochs * p.epoch_scale))

    def widths(values) -> list[int]:
        return [max(int(p.min_width), round(v * p.width_scale)) for v in values]

    settings = {
        "epochs": epochs,
        "sizes": [int(cfg.data.input_dim), *widths(cfg.model.hidden), int(cfg.data.num_classes)],
        "keep_horizon": cfg.pruning.keep_horizon * epochs / cfg.train.epochs,
        "prune_epochs": sorted({max(1, round(e * epochs / cfg.train.epochs)) for e in cfg.pruning.at_epochs})
        if cfg.pruning.at_epochs else None,
        "train_subset": p.train_subset,
        "test_subset": p.test_subset,
    }
    if cfg.model.kind == "cnn":
        channels = [int(cfg.data.channels), *widths(cfg.model.channels)]
        flat = conv_flat_dim(channels[-1], int(cfg.data.image_size), len(cfg.model.pool_after))
        settings.update(channels=channels, sizes=[flat, *settings["sizes"][1:]])
    return settings


def fingerprint(config: dict) -> str:
    kept = {k: v for k, v in config.items() if k not in NON_RESULT_KEYS}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def keep_fraction(epochs_done: int, pruning: DictConfig, horizon: float) -> float:
    """Fraction of the MP bulk kept at a pruning step after `epochs_done` epochs.

    `linear` (P1): max(0, 1 - e / horizon);  `constant` (P2): `pruning.keep_fraction` every time.
    """
    if pruning.schedule == "linear":
        return max(0.0, 1.0 - epochs_done / horizon)
    if pruning.schedule == "constant":
        return float(pruning.keep_fraction)
    raise ValueError(f"pruning.schedule must be 'linear' or 'constant', got {pruning.schedule!r}")


def learning_rate(epoch: int, optim: DictConfig) -> float:
    """lr * lr_decay ** floor((epoch - 1) / decay_every), epochs counted from 1."""
    return optim.lr * optim.lr_decay ** ((epoch - 1) // optim.decay_every)


def final_spectra(model) -> list[dict]:
    """Singular values of every layer (batched SVD), one row each: the record's `spectra.csv`."""
    layers = spectral_layers(model)
    svals = batched_svdvals([layer_matrix(m).detach() for _, m in layers])
    return [{"layer": name, "out": mod.weight.shape[0], "fan_in": mod.weight[0].numel(), "index": i, "singular_value": v}
            for (name, mod), s in zip(layers, svals) for i, v in enumerate(s.tolist())]


def make_optimizer(model: torch.nn.Module, cfg: DictConfig) -> torch.optim.SGD:
    # L2 as weight decay: d/dw (l2 * w^2) = 2 * l2 * w.  L1 is added to the gradients in train_epoch.
    return torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum, weight_decay=2 * cfg.reg.l2)


def train_epoch(model, opt, x, y, cfg: DictConfig, shuffle_seed: int, bar) -> tuple[float, float]:
    """One pass over the training data; returns (mean CE loss, accuracy) accumulated on the fly."""
    model.train()
    params = [p for p in model.parameters()]
    loss_sum = torch.zeros(())
    correct = torch.zeros((), dtype=torch.long)
    for xb, yb in batches(x, y, cfg.train.batch_size, shuffle_seed=shuffle_seed):
        logits = model(xb)
        loss = F.cross_entropy(logits, yb)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if cfg.reg.l1:
            torch._foreach_add_([p.grad for p in params], torch._foreach_sign(params), alpha=cfg.reg.l1)
        opt.step()
        loss_sum += loss.detach() * len(yb)
        correct += (logits.detach().argmax(1) == yb).sum()
        bar.update(1)
    return loss_sum.item() / len(x), correct.item() / len(x)


@torch.no_grad()
def evaluate(model, x, y, batch_size: int) -> tuple[float, float]:
    model.eval()
    loss_sum, correct = 0.0, 0
    for xb, yb in batches(x, y, batch_size):
        logits = model(xb)
        loss_sum += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    return loss_sum / len(x), correct / len(x)


def layer_stats(model, cfg: DictConfig) -> list[dict]:
    """Per-layer MP statistics of an unpruned model (batched SVD), in the pruning report's columns."""
    layers = spectral_layers(model)
    fits = fit_layers(layers, alpha=cfg.pruning.alpha, beta=cfg.pruning.beta, compat=cfg.pruning.compat)
    return [LayerPrune(name, mod.weight.shape[0], mod.weight[0].numel(), fits[name], accepted=None, rank=fits[name].m,
                       split=False).as_dict() for name, mod in layers if name in fits]


def run(cfg: DictConfig) -> dict:
    """Train one run as configured; returns its summary."""
    if cfg.arm not in ARMS:
        raise ValueError(f"arm must be one of {ARMS}, got {cfg.arm!r}")
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    settings = effective_settings(cfg)
    config = {**OmegaConf.to_container(cfg, resolve=True), "effective": settings}
    digest = fingerprint(config)
    run_dir = Path(cfg.run_dir)
    record = RunRecord(run_dir)

    # Data: in-memory tensors, a fixed subset when the profile asks for one.
    x_train, y_train = run_data(config, train=True)
    x_test, y_test = run_data(config, train=False)

    # Model: the seed alone fixes the initial weights, so both arms of a seed start identical.
    torch.manual_seed(cfg.seed)
    model = build_from_record(config)
    min_rank = {output_layer_name(model): int(cfg.data.num_classes)}  # P1: output layer never below #classes
    params_start = count_parameters(model)
    splits: list[list] = []
    opt = make_optimizer(model, cfg)
    start_epoch = 0

    ckpt = load_checkpoint(run_dir)
    if ckpt is not None:
        if ckpt["fingerprint"] != digest:
            raise RunConfigError(f"{run_dir} holds a run made with different settings (fingerprint {ckpt['fingerprint']} != {digest}). "
                                 f"Use another name/seed, or delete that folder to start over.")
        splits = ckpt["splits"]
        apply_splits(model, [tuple(s) for s in splits])
        model.load_state_dict(ckpt["model"])
        opt = make_optimizer(model, cfg)
        opt.load_state_dict(ckpt["optimizer"])
        start_epoch = ckpt["epoch"]
        record.truncate(start_epoch)
        print(f"resuming {run_dir} after epoch {start_epoch}", file=sys.stderr)
    else:
        record.truncate(0)
    record.begin(config)
    mode = resolve_wandb_mode(cfg.logger.mode)
    mirror = WandbMirror(run_dir, mode, cfg.logger.project, cfg.logger.entity, cfg.logger.group, f"{cfg.name}/{cfg.run_name}",
                         config, list(cfg.logger.tags) or None)

    epochs = settings["epochs"]
    steps = math.ceil(len(x_train) / cfg.train.batch_size)
    bar = tqdm(total=(epochs - start_epoch) * steps, desc=f"{cfg.name}/{cfg.run_name}", disable=not cfg.progress,
               unit="batch", dynamic_ncols=True, mininterval=1.0)
    elapsed = ckpt["elapsed_s"] if ckpt is not None else 0.0
    for epoch in range(start_epoch + 1, epochs + 1):
        t0 = time.perf_counter()
        lr = learning_rate(epoch, cfg.optim)
        for group in opt.param_groups:
            group["lr"] = lr
        train_loss, train_acc = train_epoch(model, opt, x_train, y_train, cfg, shuffle_seed=cfg.seed * 100_003 + epoch, bar=bar)

        scheduled = epoch in settings["prune_epochs"] if settings["prune_epochs"] else epoch % cfg.pruning.every == 0
        if cfg.arm == "rmt" and scheduled:
            f = keep_fraction(epoch, cfg.pruning, settings["keep_horizon"])
            reports, new_splits = mp_prune_step(model, f, alpha=cfg.pruning.alpha, beta=cfg.pruning.beta,
                                                gof_threshold=cfg.pruning.gof_threshold, compat=cfg.pruning.compat,
                                                conv_gof_threshold=cfg.pruning.conv_gof_threshold,
                                                min_rank=min_rank, split=cfg.pruning.split,
                                                resplit=cfg.pruning.resplit)
            splits += [list(s) for s in new_splits]
            layers = [r.as_dict() for r in reports]
            if cfg.optim.reset_after_prune or new_splits:  # new parameters need a new optimizer
                opt = make_optimizer(model, cfg)
        else:
            f = 1.0
            layers = layer_stats(model, cfg) if cfg.log_spectra else []

        test_loss, test_acc = evaluate(model, x_test, y_test, cfg.train.eval_batch_size)
        elapsed += time.perf_counter() - t0
        row = {"epoch": epoch, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
               "test_loss": test_loss, "test_acc": test_acc, "params": count_parameters(model), "keep_fraction": f,
               "n_splits": len(splits), "topology": json.dumps(linear_topology(model)), "time_s": round(elapsed, 3)}
        record.log_epoch(row, layers)
        mirror.log({**{k: v for k, v in row.items() if k != "topology"},
                    **{f"layers/{l['layer']}/{k}": l[k] for l in layers for k in ("rank", "sigma_plus", "bulk_fraction", "gof")}},
                   step=epoch)
        save_checkpoint(run_dir, {"epoch": epoch, "model": model.state_dict(), "optimizer": opt.state_dict(),
                                  "splits": splits, "fingerprint": digest, "elapsed_s": elapsed})
        bar.set_postfix(test_acc=f"{test_acc:.4f}", params=row["params"])
    bar.close()

    record.write_spectra(final_spectra(model))
    rows = record.read_rows()
    last = rows[-1]
    summary = {"name": cfg.name, "run_name": cfg.run_name, "arm": cfg.arm, "seed": cfg.seed, "epochs": epochs,
               "final_test_acc": last["test_acc"], "best_test_acc": max(r["test_acc"] for r in rows),
               "final_train_acc": last["train_acc"], "params_start": params_start, "params_final": last["params"],
               "topology_start": settings["sizes"], "topology_final": json.loads(last["topology"]),
               "splits": splits, "wall_time_s": last["time_s"], "fingerprint": digest}
    record.write_summary(summary)
    mirror.finish(summary)
    return summary


@hydra.main(version_base="1.3", config_path="../conf", config_name="train")
def main(cfg: DictConfig) -> float:
    return run_or_exit(run, cfg)["final_test_acc"]


if __name__ == "__main__":
    main()
