"""`python -m rmt analyze MODEL` and `python -m rmt prune MODEL` (see rmt/io.py for what MODEL can be).

    python -m rmt analyze vit_base_patch16_224 --out vitb.csv --plot vitb_esd.png
    python -m rmt prune vit_small_patch16_224 --keep-fraction 0.5 --out pruned/vits
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from rmt.analyze import analyze
from rmt.io import load_model, save_pruned
from rmt.models import output_layer_name
from rmt.prune import count_macs, count_parameters, mp_prune_step
from rmt.runfolder import CHECKPOINT, CONFIG_YAML


def _example_input(model: torch.nn.Module, input_size: list[int] | None) -> torch.Tensor:
    if input_size:
        return torch.zeros(1, *input_size)
    cfg = getattr(model, "pretrained_cfg", None) or getattr(model, "default_cfg", None) or {}
    if "input_size" in cfg:
        return torch.zeros(1, *cfg["input_size"])
    first = next(m for m in model.modules() if isinstance(m, (torch.nn.Linear, torch.nn.Conv2d)))
    if isinstance(first, torch.nn.Linear):
        return torch.zeros(1, first.in_features)
    raise ValueError("cannot guess the input size of this model: pass --input-size C H W")


def cmd_analyze(args) -> int:
    source, _ = load_model(args.model, pretrained=args.pretrained)
    t0 = time.perf_counter()
    df = analyze(source, alpha=args.alpha, beta=args.beta, keep_fraction=args.keep_fraction, device=args.device, progress=True)
    seconds = time.perf_counter() - t0
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        df.to_parquet(out, index=False) if out.suffix == ".parquet" else df.to_csv(out, index=False)
    shown = ["layer", "out", "fan_in", "sigma2", "sigma_plus", "spikes", "bulk_fraction", "gof", "stable_rank", "r_ratio",
             "params", "params_after", "split_pays_off"]
    print(df[shown].to_string(index=False, float_format=lambda v: f"{v:.4g}"))
    for name, why in df.attrs["skipped"].items():
        print(f"skipped {name}: {why}")
    print(f"\n{len(df)} layers, {df['params'].sum():,} weights -> {df['params_after'].sum():,} after the MP truncation "
          f"(keep fraction {args.keep_fraction}); {df['spikes'].sum()} spikes; analysed in {seconds:.2f} s")
    if args.plot:
        from rmt.plotting import esd_grid

        if df.empty:
            raise ValueError(f"--plot: no layer of {args.model} was analysed (every one was skipped), so there is no ESD to draw")

        svals = df.attrs["singular_values"]
        spectra = [(row.layer, (row.out, row.fan_in), svals[row.layer]) for row in df.itertuples()]
        fig, _ = esd_grid(spectra, alpha=args.alpha, beta=args.beta, title=args.model)
        Path(args.plot).parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(args.plot, dpi=110)
        print(f"wrote {args.plot}")
    return 0


def cmd_prune(args) -> int:
    model, source = load_model(args.model, pretrained=args.pretrained)
    if not isinstance(model, torch.nn.Module):
        raise ValueError("`rmt prune` needs an architecture: pass a timm name, a run folder or an `rmt prune` output, not a bare checkpoint")
    example = _example_input(model, args.input_size)
    before = {"params": count_parameters(model), "macs": count_macs(model, example)}
    head = output_layer_name(model)
    classes = getattr(model.get_submodule(head), "out_features", None) or getattr(model.get_submodule(head), "out_channels", 1)
    floor = classes if args.min_output_rank is None else args.min_output_rank  # a classifier keeps a rank per class
    min_rank = {head: floor} if floor else None
    reports, splits = mp_prune_step(model, args.keep_fraction, alpha=args.alpha, beta=args.beta, gof_threshold=args.gof_threshold,
                                    min_rank=min_rank, resplit="product")
    after = {"params": count_parameters(model), "macs": count_macs(model, example)}
    meta = {"keep_fraction": args.keep_fraction, "alpha": args.alpha, "beta": args.beta, "gof_threshold": args.gof_threshold,
            "input_size": list(example.shape[1:]), "params_before": before["params"], "params_after": after["params"],
            "macs_before": before["macs"], "macs_after": after["macs"],
            "layers": [r.as_dict() for r in reports]}
    out = save_pruned(model, args.out, source, splits, meta)
    print(f"{len(splits)} of {len(reports)} layers split, {sum(r.accepted and not r.split and r.rank < r.fit.m for r in reports)} truncated in place")
    print(f"parameters {before['params']:,} -> {after['params']:,} ({after['params'] / before['params']:.1%}); "
          f"MACs {before['macs']:,} -> {after['macs']:,} ({after['macs'] / before['macs']:.1%}) at input {list(example.shape[1:])}")
    print(f"wrote {out} (load with rmt.io.load_pruned)")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rmt", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("analyze", "prune"):
        p = sub.add_parser(name)
        p.add_argument("model", help="timm model name, run folder, checkpoint file, or `rmt prune` output")
        p.add_argument("--pretrained", action="store_true", help="timm: load pretrained weights (needs network or a cache)")
        p.add_argument("--alpha", type=float, default=0.25, help="BEMA trim (default 0.25)")
        p.add_argument("--beta", type=float, default=0.1, help="BEMA edge confidence (default 0.1)")
    a, pr = sub.choices["analyze"], sub.choices["prune"]
    a.add_argument("--keep-fraction", type=float, default=0.0, help="bulk share kept when pricing the truncation (default 0)")
    a.add_argument("--out", help="write the table (.csv or .parquet)")
    a.add_argument("--plot", help="write a grid of layer ESDs with fitted MP densities (PNG)")
    a.add_argument("--device", help="cpu or cuda (default: cuda when present)")
    pr.add_argument("--keep-fraction", type=float, required=True, help="share of each layer's MP bulk to keep")
    pr.add_argument("--out", required=True, help="output folder (model.pt + rmt_model.json)")
    pr.add_argument("--gof-threshold", type=float, default=1.0, help="prune a layer only when its MP GoF error is below this")
    pr.add_argument("--min-output-rank", type=int, default=None,
                    help="never cut the output layer below this rank (default: its width, the number of classes; 0: no floor)")
    pr.add_argument("--input-size", type=int, nargs="+", help="input shape without batch, for MACs (default: the model's)")
    args = parser.parse_args(argv)
    try:
        check_args(args)
        return cmd_analyze(args) if args.command == "analyze" else cmd_prune(args)
    except (OSError, ValueError, RuntimeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ImportError as exc:  # an optional package, e.g. pyarrow for a .parquet table
        print("error: " + (str(exc).splitlines() or [type(exc).__name__])[0], file=sys.stderr)
        return 1


def check_args(args: argparse.Namespace) -> None:
    """One `ValueError` naming every option outside its range (docs/METHOD.md §2 for alpha and beta)."""
    ranges = {"alpha": (0.0, 0.5, "> 0 and < 0.5"), "beta": (0.0, 1.0, "> 0 and < 1")}
    bad = [f"--{name}={getattr(args, name)} (expected a number {text})" for name, (lo, hi, text) in ranges.items()
           if not lo < getattr(args, name) < hi]  # NaN fails both comparisons
    if args.command == "analyze" and args.device and args.device not in ("cpu", "cuda") and not args.device.startswith("cuda:"):
        bad.append(f"--device={args.device} (expected cpu, cuda or cuda:<index>)")
    elif args.command == "analyze" and args.device and args.device.startswith("cuda") and not torch.cuda.is_available():
        bad.append(f"--device={args.device} (no CUDA GPU is visible to torch; use cpu)")
    if not 0.0 <= args.keep_fraction <= 1.0:
        bad.append(f"--keep-fraction={args.keep_fraction} (expected a number >= 0 and <= 1)")
    if args.command == "prune":
        if not args.gof_threshold > 0:
            bad.append(f"--gof-threshold={args.gof_threshold} (expected a number > 0; 1 accepts every fit)")
        if Path(args.out, CONFIG_YAML).exists() or Path(args.out, CHECKPOINT).exists():
            bad.append(f"--out {args.out} (a run folder: a pruned model written there would be read as the run's; choose "
                       f"another folder)")
        if args.min_output_rank is not None and args.min_output_rank < 0:
            bad.append(f"--min-output-rank={args.min_output_rank} (expected an integer >= 0)")
        if args.input_size is not None and len(args.input_size) not in (1, 3):
            bad.append(f"--input-size {' '.join(map(str, args.input_size))} (expected C H W for images, or one size for a flat input)")
    if bad:
        raise ValueError("bad option" + ("s" if len(bad) > 1 else "") + ": " + "; ".join(bad))


if __name__ == "__main__":
    sys.exit(main())
