"""Train a model on a registered dataset, normally or with a registered pruning method.

    python -m experiments.train experiment=fig1 panel=fig1b arm=rmt profile=quick
    python -m experiments.train -m experiment=fig1 profile=quick hydra/launcher=joblib
    python -m experiments.train data=imagenet_folder model=timm arm=magnitude device=cuda
    python -m experiments.train experiment=p3_vit_demo_ft init_from=runs/.../checkpoints/p3-30.pt   # fine-tune

One file, top to bottom: settings -> model (+ resume) -> data -> epochs of (train, prune, evaluate,
record, checkpoint) -> summary.  Device and dtype are explicit (`device: auto` = the GPU when present).
Re-running an interrupted run resumes from its last checkpoint and ends with the same numbers; a
resume under other numerics (device, CPU threads, dtype) is refused unless `allow_numerics_change=true`.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from experiments.checkpoints import load_checkpoint, save_checkpoint
from experiments.common import evaluate, hydra_entry, model_spec, setup_numerics, weights_digest
from experiments.cuda_graph import GraphedEpoch, cuda_graph_setting, graphs_usable, warn_fallback
from experiments.data import DataRequest, TensorSplit, build_data, shuffled_order
from experiments.errors import RunConfigError
from experiments.records import RunRecord, WandbMirror, resolve_wandb_mode
from experiments.validation import TRAIN_RULES, check_config
from rmt.io import read_checkpoint
from rmt.models import build_model, linear_topology, model_from_checkpoint, output_layer_name
from rmt.prune import count_parameters
from rmt.pruners import PruneState, count_nonzero, make_pruner
from rmt.spectra import batched_svdvals, fit_layers, layer_matrix, spectral_layers

# Config parts that do not change results (numerics are checked on their own): not in the resume fingerprint.
NON_RESULT_KEYS = ("logger", "paths", "progress", "threads", "run_dir", "device", "dtype", "allow_numerics_change",
                   "train.cuda_graph")
def effective_settings(cfg: DictConfig) -> dict:
    """The numbers the profile produces from the experiment's paper settings, and the model spec."""
    p = cfg.profile
    epochs = max(int(p.min_epochs), round(cfg.train.epochs * p.epoch_scale))
    return {
        "epochs": epochs,
        "model": model_spec(cfg),
        "keep_horizon": cfg.pruning.keep_horizon * epochs / cfg.train.epochs,
        "prune_epochs": sorted({max(1, round(e * epochs / cfg.train.epochs)) for e in cfg.pruning.at_epochs})
        if cfg.pruning.at_epochs else None,
        "train_subset": p.train_subset,
        "test_subset": p.test_subset,
    }


def fingerprint(config: dict) -> str:
    """Digest of the settings that change results (`NON_RESULT_KEYS`, dotted, are left out)."""
    kept = json.loads(json.dumps(config, default=str))
    for key in NON_RESULT_KEYS:
        *parents, leaf = key.split(".")
        node = kept
        for part in parents:
            node = node.get(part) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:16]


def keep_fraction(epochs_done: int, pruning: DictConfig, horizon: float) -> float:
    """The pruning step's scheduled keep fraction after `epochs_done` epochs (what it means: `rmt.pruners`).

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


def final_spectra(model: torch.nn.Module) -> list[dict]:
    """Singular values of every layer (Gram route, batched), one row each: the record's `spectra.csv`."""
    layers = spectral_layers(model)
    svals = batched_svdvals([layer_matrix(m).detach() for _, m in layers])
    return [{"layer": name, "out": mod.weight.shape[0], "fan_in": mod.weight[0].numel(), "index": i, "singular_value": v}
            for (name, mod), s in zip(layers, svals) for i, v in enumerate(s.tolist())]


def layer_stats(model: torch.nn.Module, cfg: DictConfig) -> list[dict]:
    """Per-layer MP statistics (no pruning), in the MP pruning report's columns."""
    layers = spectral_layers(model)
    fits = fit_layers(layers, alpha=cfg.pruning.alpha, beta=cfg.pruning.beta, compat=cfg.pruning.compat)
    return [{"layer": name, "out": mod.weight.shape[0], "fan_in": mod.weight[0].numel(), "accepted": None,
             "rank": fits[name].m, "split": False,
             **{k: v for k, v in fits[name].as_dict().items() if k not in ("n", "m", "c")}}
            for name, mod in layers if name in fits]


def merge_layer_rows(stats: list[dict], report: list[dict]) -> list[dict]:
    """The pruning report's rows over the statistics rows of the same layers (report columns win)."""
    by_layer = {row["layer"]: dict(row) for row in stats}
    for row in report:
        by_layer.setdefault(row["layer"], {}).update(row)
    return list(by_layer.values())


def make_optimizer(model: torch.nn.Module, cfg: DictConfig, capturable: bool = False) -> torch.optim.Optimizer:
    """`optim.name`: sgd (the papers'; L2 as weight decay, d/dw (l2 w^2) = 2 l2 w) or adamw (decoupled
    `optim.weight_decay`; `capturable` keeps its step count on the GPU, as a CUDA-graph step needs).  L1 is added to the
    gradients in train_epoch."""
    if cfg.optim.name == "sgd":
        return torch.optim.SGD(model.parameters(), lr=cfg.optim.lr, momentum=cfg.optim.momentum, weight_decay=2 * cfg.reg.l2)
    if cfg.optim.name == "adamw":
        if cfg.reg.l2:
            raise RunConfigError("reg.l2 is an SGD weight decay; with optim=adamw set optim.weight_decay instead (reg=none or reg=l1...)")
        return torch.optim.AdamW(model.parameters(), lr=cfg.optim.lr, weight_decay=cfg.optim.weight_decay, capturable=capturable)
    raise RunConfigError(f"optim.name must be sgd or adamw, got {cfg.optim.name!r}")


def set_capturable(opt: torch.optim.Optimizer, capturable: bool) -> None:
    """Switch an optimizer that has the flag (AdamW) to `capturable` after a checkpoint restored another value, moving
    its step counts where that mode keeps them (the parameters' device, or the CPU)."""
    for group in opt.param_groups:
        if "capturable" not in group or group["capturable"] == capturable:
            continue
        group["capturable"] = capturable
        for p in group["params"]:
            state = opt.state.get(p, {})
            if torch.is_tensor(state.get("step")):
                state["step"] = state["step"].to(p.device if capturable else "cpu", torch.float32)


def train_epoch(model, opt, split, cfg: DictConfig, state: PruneState, dtype: torch.dtype, shuffle_seed: int,
                bar, graphed: bool = False) -> tuple[float, float, str | None]:
    """One pass over the training split; returns (mean CE loss, accuracy, why a CUDA-graph capture failed or None).
    No host sync inside the loop.  `graphed`: full batches replay one captured step (`experiments.cuda_graph`)."""
    model.train()
    params = list(model.parameters())
    device = params[0].device
    loss_sum = torch.zeros((), dtype=torch.float64, device=device)
    correct = torch.zeros((), dtype=torch.long, device=device)
    l1, clip = cfg.reg.l1, cfg.optim.grad_clip  # plain floats: no config lookups per batch

    def step(xb: torch.Tensor, yb: torch.Tensor) -> None:  # gradients are None on entry
        logits = model(xb.to(dtype))
        loss = F.cross_entropy(logits, yb)
        loss.backward()
        if l1:
            torch._foreach_add_([p.grad for p in params], torch._foreach_sign(params), alpha=l1)
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        state.apply_masks()  # pruned entries stay 0 (no-op without masks)
        loss_sum.add_(loss.detach() * len(yb))
        correct.add_((logits.detach().argmax(1) == yb).sum())

    def zero_grad() -> None:
        opt.zero_grad(set_to_none=True)

    failure = None
    if graphed:
        order = shuffled_order(len(split), shuffle_seed).to(device)
        failure = GraphedEpoch(step, zero_grad, split.x, split.y, cfg.train.batch_size).run(order, lambda: bar.update(1))
    else:
        for xb, yb in split.batches(cfg.train.batch_size, shuffle_seed=shuffle_seed):
            zero_grad()
            step(xb, yb)
            bar.update(1)
    return loss_sum.item() / len(split), correct.item() / len(split), failure


def run(cfg: DictConfig) -> dict:
    """Train one run as configured; returns its summary."""
    check_config(cfg, TRAIN_RULES)
    graph_setting = cuda_graph_setting(cfg.train.get("cuda_graph", "auto"))
    device, dtype, run_numerics = setup_numerics(cfg)
    settings = effective_settings(cfg)
    init_ckpt = None
    if cfg.init_from:  # fine-tuning: architecture, weights and masks from another run's checkpoint
        if not Path(cfg.init_from).is_file():
            raise FileNotFoundError(f"init_from={cfg.init_from} does not exist")
        init_ckpt = read_checkpoint(cfg.init_from)
        if not isinstance(init_ckpt, dict) or "model_spec" not in init_ckpt:
            raise RunConfigError(f"init_from={cfg.init_from} is not a checkpoint of this suite's runners (it holds no model_spec)")
        settings["model"] = init_ckpt["model_spec"]
    config = {**OmegaConf.to_container(cfg, resolve=True), "effective": settings}
    digest = fingerprint(config)
    run_dir = Path(cfg.run_dir)
    record = RunRecord(run_dir)
    found_config = record.claim("train")  # a folder of another runner is refused before anything is written

    # Model: built on the CPU so the seed alone fixes the initial weights on every device (both arms of a seed
    # start identical); then moved to the run's device and dtype.
    torch.manual_seed(cfg.seed)
    if init_ckpt is not None:
        model, state = model_from_checkpoint(init_ckpt), PruneState.from_checkpoint(init_ckpt)
    else:
        init = {k: cfg.model[k] for k in ("pretrained", "checkpoint") if cfg.model.get(k)}
        model, state = build_model(**settings["model"], **init), PruneState()
    settings["sizes"] = linear_topology(model)
    init_digest = weights_digest(model)  # in the summary: both arms of a seed must show the same one
    pruning = {k: v for k, v in OmegaConf.to_container(cfg.pruning, resolve=True).items() if k != "method"}
    pruner = make_pruner(cfg.pruning.method, **pruning,
                         min_rank={output_layer_name(model): int(cfg.data.num_classes)})  # P1: output never below #classes
    params_start = count_parameters(model)
    start_epoch, elapsed = 0, 0.0

    ckpt = load_checkpoint(run_dir)
    if ckpt is None and found_config and found_config.get("fingerprint") not in (None, digest) and record.read_rows():
        raise RunConfigError(f"{run_dir} holds epochs of a run made with different settings (fingerprint in its config.yaml "
                             f"{found_config['fingerprint']} != {digest}; its checkpoints are gone, so it cannot resume). "
                             f"Use another name/seed, or delete that folder to start over.")
    if ckpt is None and record.finished():
        raise RunConfigError(f"{run_dir} holds a finished run without checkpoints (an exported or ingested record): there is "
                             f"nothing to resume and retraining would replace it. Use another name/seed or runs folder.")
    if ckpt is not None:
        if ckpt["fingerprint"] != digest:
            raise RunConfigError(f"{run_dir} holds a run made with different settings (fingerprint {ckpt['fingerprint']} != {digest}). "
                                 f"Use another name/seed, or delete that folder to start over.")
        if ckpt.get("numerics") != run_numerics and not cfg.allow_numerics_change:
            raise RunConfigError(f"{run_dir} was run with {ckpt.get('numerics')}; this command asks for {run_numerics}, which changes "
                                 f"the numbers. Resume with the same device/threads/dtype, or pass allow_numerics_change=true "
                                 f"(env.json then records both), or delete that folder to start over.")
        model, state = model_from_checkpoint(ckpt), PruneState.from_checkpoint(ckpt)
        start_epoch, elapsed, init_digest = ckpt["epoch"], ckpt["elapsed_s"], ckpt.get("init_digest", init_digest)
    model.to(device=device, dtype=dtype)
    state.bind(model)
    opt = make_optimizer(model, cfg)
    if ckpt is not None:
        opt.load_state_dict(ckpt["optimizer"])
        print(f"resuming {run_dir} after epoch {start_epoch}", file=sys.stderr)
    record.truncate(start_epoch)
    if start_epoch < settings["epochs"]:  # until this run ends, the folder must not read as finished
        record.discard_results()
    config["effective"] = settings
    record.begin({**config, "fingerprint": digest}, "train", numerics=run_numerics, resumed_after=start_epoch)

    # Data: in-memory tensors on the device, or a loader over image folders (timm transforms for the model).
    data = build_data(DataRequest.of_run(config), device, model=model)

    mode = resolve_wandb_mode(cfg.logger.mode)
    mirror = WandbMirror(run_dir, mode, cfg.logger.project, cfg.logger.entity, cfg.logger.group, f"{cfg.name}/{cfg.run_name}",
                         config, list(cfg.logger.tags) or None)
    graphed = graphs_usable(device, isinstance(data.train, TensorSplit), graph_setting)
    set_capturable(opt, graphed)  # whatever the checkpoint's optimizer was made for
    epochs = settings["epochs"]
    steps = math.ceil(len(data.train) / cfg.train.batch_size)
    bar = tqdm(total=(epochs - start_epoch) * steps, desc=f"{cfg.name}/{cfg.run_name}", disable=not cfg.progress,
               unit="batch", dynamic_ncols=True, mininterval=1.0)
    for epoch in range(start_epoch + 1, epochs + 1):
        t0 = time.perf_counter()
        lr = learning_rate(epoch, cfg.optim)
        for group in opt.param_groups:
            group["lr"] = lr
        train_loss, train_acc, capture_failure = train_epoch(model, opt, data.train, cfg, state, dtype,
                                                             shuffle_seed=cfg.seed * 100_003 + epoch, bar=bar, graphed=graphed)
        if capture_failure:
            warn_fallback(capture_failure)
            graphed = False
            set_capturable(opt, False)
        if not math.isfinite(train_loss):  # nothing after this epoch would mean anything; its checkpoint is not saved
            raise RunConfigError(f"training diverged in epoch {epoch} (mean training loss {train_loss} at lr {lr:g}): "
                                 f"lower optim.lr or set optim.grad_clip")

        scheduled = epoch in settings["prune_epochs"] if settings["prune_epochs"] else epoch % cfg.pruning.every == 0
        f, report = 1.0, []
        if cfg.pruning.method != "none" and scheduled:
            f = keep_fraction(epoch, cfg.pruning, settings["keep_horizon"])
            result = pruner(model, state, f)
            report = result.layers
            if cfg.optim.reset_after_prune or result.rebuilt:  # new parameters need a new optimizer
                opt = make_optimizer(model, cfg, capturable=graphed)
                state.bind(model)
        has_mp_columns = any("gof" in row for row in report)
        stats = layer_stats(model, cfg) if cfg.log_spectra and not has_mp_columns else []
        layers = merge_layer_rows(stats, report)

        test_loss, test_acc, test_top5 = evaluate(model, data.test, cfg.train.eval_batch_size)
        elapsed += time.perf_counter() - t0
        row = {"epoch": epoch, "lr": lr, "train_loss": train_loss, "train_acc": train_acc,
               "test_loss": test_loss, "test_acc": test_acc, "test_top5": test_top5, "params": count_parameters(model), "nonzero": count_nonzero(model),
               "keep_fraction": f, "n_splits": len(state.splits), "topology": json.dumps(linear_topology(model)),
               "time_s": round(elapsed, 3)}
        record.log_epoch(row, layers)
        mirror.log({**{k: v for k, v in row.items() if k != "topology"},
                    **{f"layers/{l['layer']}/{k}": l[k] for l in layers for k in ("rank", "sigma_plus", "bulk_fraction", "gof", "nonzero")
                       if k in l}}, step=epoch)
        save_checkpoint(run_dir, {"epoch": epoch, "model": model.state_dict(), "model_spec": settings["model"],
                                  **state.as_checkpoint(), "optimizer": opt.state_dict(), "fingerprint": digest,
                                  "numerics": run_numerics, "elapsed_s": elapsed, "init_digest": init_digest})
        bar.set_postfix(test_acc=f"{test_acc:.4f}", params=row["params"])
    bar.close()

    record.write_spectra(final_spectra(model))
    rows = record.read_rows()
    last = rows[-1]
    summary = {"name": cfg.name, "run_name": cfg.run_name, "arm": cfg.arm, "pruning_method": cfg.pruning.method,
               "seed": cfg.seed, "epochs": epochs, "device": run_numerics["device"],
               "final_test_acc": last["test_acc"], "best_test_acc": max(r["test_acc"] for r in rows),
               "final_train_acc": last["train_acc"], "params_start": params_start, "params_final": last["params"],
               "nonzero_final": last["nonzero"], "topology_start": settings["sizes"], "topology_final": json.loads(last["topology"]),
               "splits": [list(s) for s in state.splits], "wall_time_s": last["time_s"], "fingerprint": digest,
               "init_digest": init_digest}
    record.write_summary(summary)
    mirror.finish(summary)
    return summary


main = hydra_entry("train", run, report=lambda summary: summary["final_test_acc"])

if __name__ == "__main__":
    main()
