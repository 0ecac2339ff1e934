"""Figures from logged runs.

    python -m analysis fig1 --runs runs            # local run store
    python -m analysis fig1 --wandb me/rmt-pruning # the W&B mirror
    python -m analysis export --runs runs/fig1 --to results/fig1-quick
"""

from __future__ import annotations

import argparse
import sys

from analysis.fig1 import plot_fig1
from analysis.runs import export_records, load_runs, load_wandb_runs


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    fig = sub.add_parser("fig1", help="P1 Fig. 1: test accuracy vs epoch, normal vs RMT-pruned")
    source = fig.add_mutually_exclusive_group()
    source.add_argument("--runs", default="runs", help="local runs folder (default: runs)")
    source.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read the runs from W&B instead")
    fig.add_argument("--out", default="figures", help="output folder (default: figures)")
    fig.add_argument("--metric", default="test_acc", choices=["test_acc", "train_acc"])
    fig.add_argument("--profile", help="which profile's runs to draw (needed when several are present)")
    exp = sub.add_parser("export", help="copy run records (no checkpoints) to another folder, e.g. results/")
    exp.add_argument("--runs", required=True)
    exp.add_argument("--to", required=True)
    args = parser.parse_args(argv)

    try:
        if args.command == "export":
            print(f"exported {export_records(args.runs, args.to)} run records to {args.to}")
            return 0
        df = load_wandb_runs(args.wandb) if args.wandb else load_runs(args.runs)
        for path in plot_fig1(df, args.out, metric=args.metric, profile=args.profile):
            print(f"wrote {path}")
    except (FileNotFoundError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
