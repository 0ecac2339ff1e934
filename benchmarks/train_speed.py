"""Training-runner speed: one epoch of `experiments.train.train_epoch` vs a bare PyTorch loop over the same
net and data on the same device, and the per-epoch MP statistics and pruning steps against that epoch.

    .venv/bin/python benchmarks/train_speed.py --device cpu --json benchmarks/results/train_speed_cpu.json
    python benchmarks/train_speed.py --device cuda --panel fig1b --profile paper

Both loops: the same SGD (momentum, weight decay, L1 added to the gradients), the same seeded batch order,
data held as tensors on the device.  The bare loop is the plainest code that does that math; the runner's
epoch adds its batching generator, mask hook and progress bar.  Each figure is the median of `--repeats`
timed epochs after one warm-up epoch (CUDA: synchronised).  Goals (issue 7): runner / bare <= 1.2;
statistics or pruning step <= 10 % of an epoch at paper scale on a GPU.  On CUDA the runner's epoch is also timed
with its CUDA-graph step (`graph_s`; issue 17's goal: Fig. 1 (a) paper epoch <= 0.1 s on one H200).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import statistics
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from hydra import compose, initialize_config_dir

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from experiments.common import resolve_device  # noqa: E402
from experiments.data import DataRequest, build_data  # noqa: E402
from experiments.train import effective_settings, layer_stats, make_optimizer, train_epoch  # noqa: E402
from rmt.models import build_model, output_layer_name  # noqa: E402
from rmt.pruners import PruneState, make_pruner  # noqa: E402
from timing import timed  # noqa: E402

CONF = str(Path(__file__).resolve().parent.parent / "conf")


class NoBar:
    def update(self, n: int) -> None:
        pass


def bare_epoch(model, opt, x, y, batch_size: int, l1: float, seed: int) -> None:
    """The plain loop: shuffled index slices of device tensors, forward, backward, L1 on the gradients, step."""
    model.train()
    params = list(model.parameters())
    order = torch.randperm(len(y), generator=torch.Generator().manual_seed(seed)).to(x.device)
    for start in range(0, len(y), batch_size):
        idx = order[start:start + batch_size]
        loss = F.cross_entropy(model(x[idx]), y[idx])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if l1:
            torch._foreach_add_([p.grad for p in params], torch._foreach_sign(params), alpha=l1)
        opt.step()


def timed_runs(fn, device: torch.device, repeats: int) -> list[float]:
    return [timed(fn, device)[0] for _ in range(repeats)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--experiment", default="fig1")
    parser.add_argument("--panel", default="fig1b")
    parser.add_argument("--profile", default="paper")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None)
    parser.add_argument("--data-dir", default=os.environ.get("RMT_DATA_ROOT", "data"))
    parser.add_argument("--json")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = resolve_device(args.device)
    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="train", overrides=[f"experiment={args.experiment}", f"panel={args.panel}", "arm=rmt",
                                                      f"profile={args.profile}", f"paths.data_dir={args.data_dir}", "logger=local"])
    settings = effective_settings(cfg)
    from omegaconf import OmegaConf

    config = {**OmegaConf.to_container(cfg, resolve=True), "effective": settings}
    data = build_data(DataRequest.of_run(config), device)
    x, y = data.train.x, data.train.y
    torch.manual_seed(0)
    base = build_model(**settings["model"]).to(device)
    label = "cuda:" + torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({torch.get_num_threads()} threads)"
    print(f"{args.experiment}/{args.panel} {args.profile}: {len(y)} training examples, batch {cfg.train.batch_size}, "
          f"{sum(p.numel() for p in base.parameters()):,} parameters, on {label}", flush=True)

    runner_model, bare_model, graph_model = copy.deepcopy(base), copy.deepcopy(base), copy.deepcopy(base)
    runner_opt, bare_opt = make_optimizer(runner_model, cfg), make_optimizer(bare_model, cfg)
    graph_opt = make_optimizer(graph_model, cfg, capturable=device.type == "cuda")
    state, graph_state = PruneState(), PruneState()
    state.bind(runner_model)
    graph_state.bind(graph_model)

    def runner() -> None:
        train_epoch(runner_model, runner_opt, data.train, cfg, state, torch.float32, shuffle_seed=1, bar=NoBar())

    def graphed() -> None:
        failure = train_epoch(graph_model, graph_opt, data.train, cfg, graph_state, torch.float32, shuffle_seed=1,
                              bar=NoBar(), graphed=True)[2]
        if failure:
            raise RuntimeError(f"CUDA-graph capture failed: {failure}")

    def bare() -> None:
        bare_epoch(bare_model, bare_opt, x, y, cfg.train.batch_size, cfg.reg.l1, seed=1)

    loops = {"runner_s": runner, "bare_s": bare} | ({"graph_s": graphed} if device.type == "cuda" else {})
    for fn in loops.values():  # warm-up
        fn()
    results = {name: [] for name in loops}
    for _ in range(args.repeats):  # interleaved, so drifts of the machine hit every loop alike
        for name, fn in loops.items():
            results[name] += timed_runs(fn, device, 1)
    trained = copy.deepcopy(runner_model)
    pruner = make_pruner("mp_svd", **{k: v for k, v in OmegaConf.to_container(cfg.pruning).items() if k != "method"},
                         min_rank={output_layer_name(trained): int(cfg.data.num_classes)})
    layer_stats(trained, cfg)  # warm-up: MP quantile caches
    results["stats_s"] = timed_runs(lambda: layer_stats(trained, cfg), device, args.repeats)
    results["prune_s"] = timed_runs(lambda: pruner(copy.deepcopy(trained), PruneState(), 0.9), device, args.repeats)
    med = {k: statistics.median(v) for k, v in results.items()}
    summary = {"device": label, "experiment": args.experiment, "panel": args.panel, "profile": args.profile,
               "examples": len(y), "torch": torch.__version__, **{f"{k}_median": v for k, v in med.items()}, "raw": results,
               "runner_over_bare": med["runner_s"] / med["bare_s"], "stats_over_epoch": med["stats_s"] / med["runner_s"],
               "prune_over_epoch": med["prune_s"] / med["runner_s"]}
    if "graph_s" in med:
        summary["graph_over_bare"] = med["graph_s"] / med["bare_s"]
        print(f"epoch with the CUDA-graph step: {med['graph_s']:.3f} s -> {summary['graph_over_bare']:.3f}x the bare loop")
    print(f"epoch: runner {med['runner_s']:.3f} s, bare loop {med['bare_s']:.3f} s -> {summary['runner_over_bare']:.3f}x; "
          f"MP statistics step {med['stats_s']:.3f} s ({summary['stats_over_epoch']:.1%} of an epoch); "
          f"MP pruning step {med['prune_s']:.3f} s ({summary['prune_over_epoch']:.1%})")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
