"""P3: pruning cycles of a trained model (docs/METHOD.md §6), with magnitude and structured baselines in the same run.

    python -m experiments.p3_prune experiment=p3_vit_demo_prune            # the ViT trained here on Fashion-MNIST
    python -m experiments.p3_prune experiment=p3_vitb                      # timm ViT-B/16 augreg2 on $IMAGENET_ROOT

Top to bottom: model (a run folder's, or a timm model from the config) and its test data -> dense evaluation ->
cycles 1..K of `rmt.pruners` `p3_cycles` (evaluate top-1 / top-5, non-zeros, per-layer MP statistics,
checkpoint with the masks after each) -> baselines from the dense model at the sparsities of the cycles nearest
`baselines.sparsities` (global and layer-wise magnitude, same number of non-zeros) and the structured route
(`mp_svd` factorisation at `baselines.structured_keep`, with measured latency) -> records.  Every checkpoint
under `checkpoints/` is a starting point for fine-tuning with the mask frozen (`experiments.train init_from=...`).
"""

from __future__ import annotations

import copy
import statistics
import time
from pathlib import Path

import pandas as pd
import torch
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from experiments.checkpoints import atomic_torch_save
from experiments.common import begin_record, evaluate, hydra_entry, load_source_run, model_spec, setup_numerics
from experiments.data import DataRequest, build_data
from experiments.errors import RunConfigError
from experiments.validation import P3_PRUNE_RULES, check_config
from rmt.io import read_checkpoint
from rmt.models import build_model, output_layer_name
from rmt.prune import count_parameters
from rmt.pruners import PruneState, count_nonzero, make_pruner
from rmt.spectra import spectral_layers


@torch.no_grad()
def latency_ms(model: torch.nn.Module, example: torch.Tensor, repeats: int = 5) -> float:
    """Median wall time of one forward pass (ms), after one warm-up; synchronised on CUDA."""
    model.eval()
    times = []
    for _ in range(repeats + 1):
        if example.is_cuda:
            torch.cuda.synchronize(example.device)
        t0 = time.perf_counter()
        model(example)
        if example.is_cuda:
            torch.cuda.synchronize(example.device)
        times.append(1e3 * (time.perf_counter() - t0))
    return statistics.median(times[1:])


def save_start(path: Path, model: torch.nn.Module, spec: dict, state: PruneState) -> None:
    """A checkpoint `experiments.train init_from=` can start from: model spec, weights, splits, masks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_torch_save({"model": model.state_dict(), "model_spec": spec, **state.as_checkpoint()}, path)


def run(cfg: DictConfig) -> dict:
    check_config(cfg, P3_PRUNE_RULES)
    device, dtype, _ = setup_numerics(cfg)
    if cfg.source_run:  # a model trained by this suite: its architecture, weights and data
        source = load_source_run(cfg.source_run, device)
        model, config, spec = source.model, source.config, source.checkpoint["model_spec"]
        request = DataRequest.of_run(config, test_subset=cfg.profile.test_subset)
    else:  # a model named by the config, e.g. a pretrained timm ViT on an ImageNet folder
        spec = model_spec(cfg)
        weights = {k: cfg.model[k] for k in ("pretrained", "checkpoint") if cfg.model.get(k)}
        model = build_model(**spec, **weights).to(device=device, dtype=dtype)
        config = None
        request = DataRequest(OmegaConf.to_container(cfg.data, resolve=True), cfg.paths.data_dir, 0, cfg.profile.test_subset)
    test = build_data(request, device, model=model).test
    record = begin_record(cfg, "p3_prune", source_config=config, model_spec=spec)
    total = count_parameters(model)
    example = next(test.batches(max(cfg.baselines.latency_batch)))[0].to(dtype)

    def measure(m: torch.nn.Module, **tags) -> dict:
        _, top1, top5 = evaluate(m, test, cfg.eval_batch_size, progress=cfg.progress)
        nonzero = count_nonzero(m)
        return {**tags, "params": count_parameters(m), "nonzero": nonzero, "reduction": 1.0 - nonzero / total,
                "top1": top1, "top5": top5}

    dense = copy.deepcopy(model)
    dense_row = measure(model, cycle=0)
    save_start(record.dir / "checkpoints" / "dense.pt", dense, spec, PruneState())  # fine-tuned too: the reference
    record.log_epoch({"epoch": 0, **dense_row}, [])
    reg_steps = max(0, round(cfg.pruning.reg_steps * cfg.profile.epoch_scale))
    pruner = make_pruner("p3_cycles", alpha=cfg.pruning.alpha, beta=cfg.pruning.beta, compat=cfg.pruning.compat,
                         reg_steps=reg_steps, reg_steps_growth=round(cfg.pruning.reg_steps_growth * cfg.profile.epoch_scale),
                         reg_lr=cfg.pruning.reg_lr)
    state, ckpts = PruneState(), record.dir / "checkpoints"
    rows = [dense_row]
    for i in tqdm(range(1, cfg.cycles + 1), desc="P3 cycles", unit="cycle", disable=not cfg.progress):
        result = pruner(model, state, 1.0)
        rows.append(measure(model, cycle=i))
        record.log_epoch({"epoch": i, **rows[-1]}, result.layers)
        save_start(ckpts / f"p3-cycle{i:02d}.pt", model, spec, state)

    # Baselines at the sparsities of the cycles nearest the targets: the same number of non-zeros, from the dense model.
    prunable = sum(m.weight.numel() for _, m in spectral_layers(dense))
    baselines = [{"method": "dense", **dense_row, "latency_b1_ms": latency_ms(dense, example[:1]),
                  f"latency_b{len(example)}_ms": latency_ms(dense, example)}]
    skipped = []
    for target in cfg.baselines.sparsities:
        nearest = min(rows[1:], key=lambda r: abs(r["reduction"] - target))
        if abs(nearest["reduction"] - target) > 0.05:  # no cycle near it: no like-for-like comparison
            skipped.append(target)
            continue
        tag = f"{round(100 * target)}"
        start = read_checkpoint(ckpts / f"p3-cycle{nearest['cycle']:02d}.pt")
        atomic_torch_save(start, ckpts / f"p3-{tag}.pt")
        baselines.append({"method": "p3_cycles", "target": target, **nearest})
        for method in ("global_magnitude", "layer_magnitude"):
            pruned, pstate = copy.deepcopy(dense), PruneState()
            ratio = (dense_row["nonzero"] - nearest["nonzero"]) / prunable
            if not 0.0 <= ratio <= 1.0:
                raise RunConfigError(f"cannot match {nearest['nonzero']} non-zeros by pruning weights alone")
            make_pruner(method, ratio=ratio)(pruned, pstate, 0.0)
            baselines.append({"method": method, "target": target, **measure(pruned, cycle=nearest["cycle"])})
            save_start(ckpts / f"{method.split('_')[0]}-{tag}.pt", pruned, spec, pstate)
    for keep in cfg.baselines.structured_keep:
        pruned, pstate = copy.deepcopy(dense), PruneState()
        make_pruner("mp_svd", alpha=cfg.pruning.alpha, beta=cfg.pruning.beta, compat=cfg.pruning.compat, gof_threshold=1.0,
                    resplit="product", min_rank={output_layer_name(pruned): int(request.data["num_classes"])})(pruned, pstate, keep)
        row = measure(pruned, keep_fraction=keep)
        row["reduction"] = 1.0 - row["params"] / total  # structured: parameters removed, not zeroed
        baselines.append({"method": "structured_mp", **row, "latency_b1_ms": latency_ms(pruned, example[:1]),
                          f"latency_b{len(example)}_ms": latency_ms(pruned, example)})
        save_start(ckpts / f"structured-k{round(100 * keep)}.pt", pruned, spec, pstate)
    record.write_frame("baselines.csv", pd.DataFrame(baselines))
    summary = {"params": total, "dense_top1": dense_row["top1"], "dense_top5": dense_row["top5"], "cycles": cfg.cycles,
               "reg_steps_cycle1": reg_steps, "test_examples": len(test),
               "sparsities_without_a_cycle_within_0.05": skipped,
               "cycle_reduction_top1": [[round(r["reduction"], 4), r["top1"]] for r in rows]}
    record.write_summary(summary)
    return summary


main = hydra_entry("p3_prune", run, lambda s: print(
    f"dense top-1 {s['dense_top1']:.4f}; reduction -> top-1 per cycle: "
    + ", ".join(f"{100 * r:.1f}% {100 * a:.2f}" for r, a in s["cycle_reduction_top1"])))

if __name__ == "__main__":
    main()
