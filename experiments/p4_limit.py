"""P4: the pruning-ratio limit of a trained net, predicted (Hessian SLQ, statistical dimension) and actual
(global one-shot magnitude pruning), next to the MP view of the same weights (docs/METHOD.md §8).

    python -m experiments.p4_limit -m profile_name=quick                 # the four nets of `experiment=p4`
    python -m experiments.p4_limit source_run=runs/p4/quick/fc5-mnist-s0 run_name=fc5-mnist-s0

Top to bottom: the source run's model and data -> dense test accuracy and the loss tolerance eps (std of the
per-batch training losses) -> the accuracy curve at p = i / ratio_steps (one sort of |w|, weights pruned in place,
restored after) and the actual limits (>= and > the dense accuracy) -> the Hessian density of the mean training
loss w.r.t. the pruned weights by stochastic Lanczos quadrature -> the predicted limit p* = gw(R(p*)) -> the MP
fit of every layer (bulk fraction, parameters the MP truncation keeps, the MP-pruned net's accuracy) -> records.
`curve.csv` and `spectrum.csv` are reused when the run is repeated with the same settings, and the Lanczos stage
commits its progress every `lanczos_commit_s` seconds: a crash loses at most that much of it (at least the product
under way), or the accuracy curve.
"""

from __future__ import annotations

import copy
import hashlib
import json
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pandas as pd
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from experiments.common import begin_record, evaluate, hydra_entry, load_source_run, setup_numerics, weights_digest
from experiments.errors import RunConfigError
from experiments.validation import P4_LIMIT_RULES, check_config
from rmt.analyze import analyze
from rmt.hessian import lanczos_spectrum, loss_hessian_operator, saved_lanczos_progress
from rmt.limit import actual_limit, magnitude_pruned, predicted_limit, pruned_norm, sorted_magnitudes, width_ratio
from rmt.models import linear_topology, output_layer_name
from rmt.prune import count_parameters
from rmt.pruners import PruneState, make_pruner
from rmt.runfolder import CURVE_CSV, LAYERS_CSV, SPECTRUM_CSV, STAGES_JSON, atomic_write_text
from rmt.spectra import spectral_layers


def file_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


def cached_stage(run_dir: Path, name: str, settings: dict,
                 compute: Callable[[Path], tuple[pd.DataFrame, float | None]]) -> tuple[pd.DataFrame, bool, float]:
    """(frame, reused, seconds it took to compute): `run_dir/name` when an earlier run wrote it with the same
    `settings` and it still has the digest recorded for it in `stages.json` (a file cut by a kill does not), else
    the frame of `compute(scratch)`, written there atomically.  `scratch` (`run_dir/.<name>.<settings key>.partial`)
    is the stage's folder for resumable progress: a stage cut short finds it again, and it (with any such folder of
    other settings) is removed once the stage is written.  `compute` also returns the seconds the stage took over
    all its tries when it keeps them (else the wall time of this call counts)."""
    index_path = run_dir / STAGES_JSON
    index = json.loads(index_path.read_text()) if index_path.exists() else {}
    key = hashlib.sha256(json.dumps(settings, sort_keys=True, default=str).encode()).hexdigest()[:16]
    path = run_dir / name
    entry = index.get(name, {})
    if entry.get("key") == key and path.exists():
        if entry.get("digest") == file_digest(path):
            return pd.read_csv(path), True, float(entry["seconds"])
        print(f"warning: {path} is not the file its stage wrote (cut by a kill?); computing it again", file=sys.stderr)
    scratch = run_dir / f".{name}.{key}.partial"
    start = time.perf_counter()
    frame, seconds = compute(scratch)
    seconds = time.perf_counter() - start if seconds is None else seconds
    atomic_write_text(path, frame.to_csv(index=False))
    index[name] = {"key": key, "seconds": round(seconds, 2), "digest": file_digest(path)}
    atomic_write_text(index_path, json.dumps(index, indent=2))
    for stale in run_dir.glob(f".{name}.*.partial"):  # this one, and any left by a try with other settings
        shutil.rmtree(stale, ignore_errors=True)
    return frame, False, seconds


def rewrite_stage(run_dir: Path, name: str, frame: pd.DataFrame) -> None:
    """Rewrite a cached stage's file with more columns (atomically) and record its new digest."""
    path, index_path = run_dir / name, run_dir / STAGES_JSON
    atomic_write_text(path, frame.to_csv(index=False))
    index = json.loads(index_path.read_text())
    index[name]["digest"] = file_digest(path)
    atomic_write_text(index_path, json.dumps(index, indent=2))


@torch.no_grad()
def batch_losses(model: torch.nn.Module, split, batch_size: int) -> torch.Tensor:
    """Mean cross-entropy of each training batch (in order), float64 on the device."""
    model.eval()
    dtype = next(model.parameters()).dtype
    return torch.stack([F.cross_entropy(model(x.to(dtype)).double(), y) for x, y in split.batches(batch_size)])


def run(cfg: DictConfig) -> dict:
    check_config(cfg, P4_LIMIT_RULES)
    device, _, _ = setup_numerics(cfg)
    source = load_source_run(cfg.source_run, device)
    model, spec = source.model, source.checkpoint["model_spec"]
    config = source.config
    data = source.data(device, cfg.paths.data_dir)
    record = begin_record(cfg, "p4_limit", source_config=config, model_spec=spec)
    layers = spectral_layers(model)
    weights = {f"{name}.weight": mod.weight for name, mod in layers}
    n_weights = sum(w.numel() for w in weights.values())
    # What the cached stages depend on: the exact weights, the numerics they are evaluated with, the data.
    source_settings = {"weights_sha256": weights_digest(model), "device": str(device), "dtype": str(next(model.parameters()).dtype),
                       "data": config["data"], "data_dir": str(Path(cfg.paths.data_dir).resolve())}
    progress = bool(cfg.progress)

    # Dense accuracy, and the loss tolerance eps: the std of the per-batch training losses (P4 code: np.std over a
    # loader that keeps the last, smaller batch; so do we).
    dense_loss, dense_acc, _ = evaluate(model, data.test, cfg.eval_batch_size)
    loss_batch = int(cfg.loss_batch_size or config["train"]["batch_size"])
    losses = batch_losses(model, data.train, loss_batch)
    eps = float(losses.std(unbiased=False)) if len(losses) > 1 else float("nan")
    if not eps > 0:
        raise RunConfigError(f"the loss tolerance needs at least two training batches with different losses; got "
                             f"{len(losses)} batch(es) of {loss_batch} (set loss_batch_size smaller)")

    # Actual limit: accuracy at every p = i / ratio_steps, weights pruned in place (no model copies).
    ratios = [i / cfg.ratio_steps for i in range(cfg.ratio_steps)]

    def sweep(_scratch: Path) -> tuple[pd.DataFrame, None]:  # fast enough to redo whole
        rows = []
        bar = tqdm(total=len(ratios), desc="magnitude sweep", unit="ratio", disable=not progress)
        for p in magnitude_pruned(weights, ratios):
            loss, acc, _ = evaluate(model, data.test, cfg.eval_batch_size)
            rows.append({"ratio": p, "test_acc": acc, "test_loss": loss})
            bar.update(1)
        bar.close()
        return pd.DataFrame(rows), None

    curve, curve_reused, sweep_s = cached_stage(record.dir, CURVE_CSV, {**source_settings, "ratios": cfg.ratio_steps,
                                                    "test_subset": config["effective"]["test_subset"]}, sweep)

    # Hessian density of the mean training loss w.r.t. the pruned weights (or all parameters), by SLQ.
    names = list(weights) if cfg.hessian_params == "weights" else [n for n, _ in model.named_parameters()]

    def spectrum(scratch: Path) -> tuple[pd.DataFrame, float]:
        matvec, dim = loss_hessian_operator(model, lambda: data.train.batches(int(cfg.lanczos.batch_size)), params=names)
        saved, saved_s = saved_lanczos_progress(scratch)
        if saved:
            print(f"resuming the Lanczos stage after {saved} saved Hessian-vector products ({saved_s:.0f} s; {scratch})",
                  file=sys.stderr)
        bar = tqdm(total=cfg.lanczos.steps * cfg.lanczos.probes, initial=saved, desc="Lanczos (Hessian-vector products)",
                   unit="hvp", disable=not progress)

        def counted(v: torch.Tensor) -> torch.Tensor:
            bar.update(1)
            return matvec(v)

        nodes, node_weights = lanczos_spectrum(counted, dim, steps=cfg.lanczos.steps, probes=cfg.lanczos.probes,
                                               seed=cfg.lanczos.seed, device=device, checkpoint_dir=scratch,
                                               checkpoint_every_s=float(cfg.lanczos_commit_s))
        bar.close()
        return pd.DataFrame({"eigenvalue": nodes.numpy(), "weight": node_weights.numpy()}), saved_lanczos_progress(scratch)[1]

    spec_frame, spectrum_reused, slq_s = cached_stage(record.dir, SPECTRUM_CSV, {**source_settings, **OmegaConf.to_container(cfg.lanczos),
                                                           "params": cfg.hessian_params,
                                                           "train_subset": config["effective"]["train_subset"]}, spectrum)
    nodes = torch.tensor(spec_frame["eigenvalue"].to_numpy(), dtype=torch.float64)
    node_weights = torch.tensor(spec_frame["weight"].to_numpy(), dtype=torch.float64)

    # Predicted limit: p* = gw(R(p*)); the curve gets R(p) and gw(R(p)) for the figure.
    magnitudes = sorted_magnitudes(list(weights.values()))
    predicted = predicted_limit(magnitudes, nodes, node_weights, eps)
    radius = pruned_norm(magnitudes, curve["ratio"].tolist())
    curve["pruned_norm"] = radius.numpy()
    curve["width_ratio"] = width_ratio(radius, nodes, node_weights, eps).numpy()
    rewrite_stage(record.dir, CURVE_CSV, curve)
    acc_ge = actual_limit(curve["ratio"], curve["test_acc"], dense_acc)
    acc_gt = actual_limit(curve["ratio"], curve["test_acc"], dense_acc, strict=True)

    # The MP view of the same weights: per layer, the bulk fraction and what the MP truncation to the spikes keeps
    # (`rmt.analyze`); overall, the parameters of the net `mp_svd` prunes to its spikes (keep fraction 0, the
    # output layer kept at rank >= #classes, as in P1) and its accuracy.
    mp = analyze(model, alpha=cfg.mp.alpha, beta=cfg.mp.beta, keep_fraction=0.0, device=device)
    atomic_write_text(record.dir / LAYERS_CSV, mp.to_csv(index=False))
    bulk = float((mp["bulk_fraction"] * mp["M"]).sum() / mp["M"].sum())
    pruned = copy.deepcopy(model)
    make_pruner("mp_svd", alpha=cfg.mp.alpha, beta=cfg.mp.beta, gof_threshold=cfg.mp.gof_threshold, resplit="product",
                min_rank={output_layer_name(pruned): int(config["data"]["num_classes"])})(pruned, PruneState(), 0.0)
    _, mp_acc, _ = evaluate(pruned, data.test, cfg.eval_batch_size)
    mp_kept = sum(m.weight.numel() for _, m in spectral_layers(pruned)) / n_weights  # weights, as p counts them
    at_mp = curve.iloc[(curve["ratio"] - (1.0 - mp_kept)).abs().argmin()]
    at_predicted = curve.iloc[(curve["ratio"] - predicted).abs().argmin()]  # the grid ratio nearest p*

    summary = {
        "source_run": str(cfg.source_run), "net": spec.get("name") or config.get("model", {}).get("name", cfg.net), "dataset": config["data"]["name"],
        "sizes": linear_topology(model),
        "weights": n_weights, "params": count_parameters(model), "hessian_dim": sum(model.get_parameter(n).numel() for n in names),
        "train_examples": len(data.train), "test_examples": len(data.test),
        "dense_test_acc": dense_acc, "dense_test_loss": dense_loss, "eps": eps, "loss_batch_size": loss_batch,
        "ratio_steps": cfg.ratio_steps, "actual_limit_ge": acc_ge, "actual_limit_gt": acc_gt,
        "predicted_limit": predicted, "predicted_minus_actual": None if acc_ge is None else predicted - acc_ge,
        "acc_at_predicted": float(at_predicted["test_acc"]),
        "lambda_min": float(nodes.min()), "lambda_max": float(nodes.max()),
        "mp_bulk_fraction": bulk, "mp_kept_fraction": mp_kept, "mp_ratio": 1.0 - mp_kept, "mp_pruned_test_acc": mp_acc,
        "magnitude_acc_at_mp_ratio": float(at_mp["test_acc"]),
        "reused_stages": [n for n, reused in ((CURVE_CSV, curve_reused), (SPECTRUM_CSV, spectrum_reused)) if reused],
        "sweep_s": round(sweep_s, 2), "hvps": len(spec_frame), "slq_s": round(slq_s, 2),  # one HVP per Ritz value
        "hvp_per_s": round(len(spec_frame) / max(slq_s, 1e-9), 3),
    }
    record.write_summary(summary)
    return summary


main = hydra_entry("p4_limit", run, lambda s: print(
    f"{s['net']} on {s['dataset']}: dense acc {s['dense_test_acc']:.4f}; actual limit (>=) {s['actual_limit_ge']}, "
    f"(>) {s['actual_limit_gt']}; predicted {s['predicted_limit']:.4f}; MP-implied ratio {s['mp_ratio']:.4f}"))

if __name__ == "__main__":
    main()
