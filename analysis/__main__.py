"""Figures from logged runs (each written as PNG, PDF and the CSV of plotted values).

    python -m analysis fig1 --runs runs/fig1/quick           # P1 Fig. 1 (local run store)
    python -m analysis fig1 --wandb me/rmt-pruning           # ... from the W&B mirror
    python -m analysis p1-fig3 --runs runs/p1_fig3/quick     # any figure of CURVE_FIGURES
    python -m analysis p3-rand --runs runs/p3_rand/quick     # P3 randomness vs epoch + verdicts
    python -m analysis p3-loss --run runs/p3_loss/quick/from-l2_strong-s0
    python -m analysis p1-mag --run runs/p1_mag/quick/fig1b
    python -m analysis p1-confidence --run runs/p1_confidence_bound/quick
    python -m analysis p2-synthetic --runs runs/p2_synthetic # P2 Figs. 2-3
    python -m analysis p3-regression --runs runs/p3_regression/paper   # P3 regression remark: MSE per arm, spectra
    python -m analysis p2-fig5 --run runs/p2_fig5/paper/layer1
    python -m analysis p3-vit --run runs/p3_vit_demo_prune/quick/vit-s0 --ft-runs runs/p3_vit_demo_ft/quick
    python -m analysis p4 --runs runs/p4_limit/quick           # P4 limits: accuracy vs ratio, table
    python -m analysis esd --run runs/p2_fig4/paper/fc1000-s0 [--layers 1]   # layer ESDs (P2 Fig. 4)
    python -m analysis p3-vit-mp --run runs/p3_vit_mp/quick/vit-s0   # P3 MP fits of the demo ViT's layers, alpha sweep
    python -m analysis p1-var-ratio --runs runs/p1_var/quick  # P1 variance: std ratio per epoch with its interval
    python -m analysis export --runs runs/fig1 --to results/fig1
    python -m analysis reproduction [--check]                 # docs/REPRODUCTION.md from results/ (numbers, verdicts)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analysis.curves import CURVE_FIGURES, plot_curves
from analysis.esd import plot_esd_grid
from analysis.p1_confidence import plot_p1_confidence
from analysis.p1_mag import plot_p1_mag
from analysis.p1_var import plot_p1_var_ratio
from analysis.p2_fig5 import plot_p2_fig5
from analysis.p2_synthetic import plot_p2_fig2, plot_p2_fig3
from analysis.p3_loss import plot_p3_loss
from analysis.p3_regression import plot_p3_regression
from analysis.p3_vit import plot_p3_vit
from analysis.p3_vit_mp import plot_p3_vit_mp
from analysis.p4 import plot_p4
from analysis.randomness import plot_randomness
from analysis.reproduction import DOCUMENT, TEMPLATE, write_reproduction
from analysis.runs import export_records, load_runs, load_wandb_runs
from analysis.tables import write_p2_parameter_table

# Figures drawn from one run folder of a post-training runner: command -> (help, default run, plot(run, out)).
RUN_FIGURES = {
    "p1-mag": ("P1 accuracy vs non-zero parameters (magnitude sweep)", "runs/p1_mag/quick/fig1b", plot_p1_mag),
    "p1-confidence": ("P1 confidence lemma: logit change vs tau_N, label flips, vs width", "runs/p1_confidence_bound/quick",
                      plot_p1_confidence),
    "p2-fig5": ("P2 Fig. 5 from an experiments.rank_sweep run", "runs/p2_fig5/paper/layer1", plot_p2_fig5),
    "p3-loss": ("P3 loss vs randomness removed / noise added", "runs/p3_loss/quick/from-l2_strong-s0", plot_p3_loss),
    "p3-vit-mp": ("P3 MP fits of the demo ViT's layers and the alpha sweep (experiments.mp_fits)", "runs/p3_vit_mp/quick/vit-s0",
                  plot_p3_vit_mp),
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m analysis", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    curve_parsers = []
    for key, figure in CURVE_FIGURES.items():
        fig = sub.add_parser(key, help=figure.title)
        source = fig.add_mutually_exclusive_group()
        source.add_argument("--runs", default="runs", help="local runs folder (default: runs)")
        source.add_argument("--wandb", metavar="ENTITY/PROJECT", help="read the runs from W&B instead")
        fig.add_argument("--profile", help="which profile's runs to draw (needed when several are present)")
        curve_parsers.append(fig)
    rand = sub.add_parser("p3-rand", help="P3 randomness vs epoch, with the monotonicity verdicts")
    rand.add_argument("--runs", default="runs/p3_rand")
    var = sub.add_parser("p1-var-ratio", help="P1 variance: std ratio pruned / normal per epoch with its bootstrap interval")
    var.add_argument("--runs", default="runs/p1_var/quick")
    run_parsers = []
    for key, (help_text, default, _) in RUN_FIGURES.items():
        parser_ = sub.add_parser(key, help=help_text)
        parser_.add_argument("--run", default=default, help=f"the run folder (default: {default})")
        run_parsers.append(parser_)
    syn = sub.add_parser("p2-synthetic", help="P2 Figs. 2-3 from experiments.synthetic runs")
    syn.add_argument("--runs", default="runs/p2_synthetic")
    p3r = sub.add_parser("p3-regression", help="P3 regression remark: test MSE of none / L1 / L2 / MP pruning, learned spectra vs ideal")
    p3r.add_argument("--runs", default="runs/p3_regression/paper", help="folder of experiments.p3_regression runs (one profile)")
    p3v = sub.add_parser("p3-vit", help="P3 ViT: reduction vs top-1 (cycles, magnitude, structured), fine-tuned, latency")
    p3v.add_argument("--run", required=True, help="an experiments.p3_prune run folder")
    p3v.add_argument("--ft-runs", help="folder of the fine-tuning runs started from its checkpoints")
    p4 = sub.add_parser("p4", help="P4 limits: accuracy vs pruning ratio with actual, predicted and MP-implied limits")
    p4.add_argument("--runs", default="runs/p4_limit/quick", help="folder of experiments.p4_limit runs")
    esd = sub.add_parser("esd", help="grid of layer ESDs with fitted MP densities from a run's checkpoint")
    esd.add_argument("--run", required=True)
    esd.add_argument("--layers", nargs="*", help="module names (default: all Linear/Conv2d layers)")
    esd.add_argument("--name", default="esd", help="output file stem (default: esd)")
    esd.add_argument("--alpha", type=float, default=0.25, help="BEMA trim (default: 0.25)")
    esd.add_argument("--beta", type=float, default=0.1, help="BEMA edge confidence (default: 0.1)")
    esd.add_argument("--gof-threshold", type=float, default=0.1, help="fits_mp = GoF error below this (default: 0.1)")
    for p in (*curve_parsers, *run_parsers, rand, var, syn, p3r, p3v, p4, esd):
        p.add_argument("--out", default="figures", help="output folder (default: figures)")
    exp = sub.add_parser("export", help="copy run records (no checkpoints) to another folder, e.g. results/")
    exp.add_argument("--runs", required=True)
    exp.add_argument("--to", required=True)
    rep = sub.add_parser("reproduction", help="write docs/REPRODUCTION.md from the records in results/ and its template")
    rep.add_argument("--results", default="results", help="the committed run records (default: results)")
    rep.add_argument("--template", default=str(TEMPLATE))
    rep.add_argument("--out", default=str(DOCUMENT))
    rep.add_argument("--check", action="store_true", help="only compare with --out; exit 1 when it differs")
    args = parser.parse_args(argv)

    try:
        if args.command == "export":
            print(f"exported {export_records(args.runs, args.to)} run records to {args.to}")
            return 0
        if args.command == "reproduction":
            return write_reproduction(Path(args.results), Path(args.template), Path(args.out), check=args.check)
        out = Path(args.out)
        if args.command in CURVE_FIGURES:
            df = load_wandb_runs(args.wandb) if args.wandb else load_runs(args.runs)
            paths = plot_curves(df, CURVE_FIGURES[args.command], out, profile=args.profile)
            if args.command == "p2-examples" and not args.wandb:
                paths += write_p2_parameter_table(args.runs, out)
        elif args.command == "p3-rand":
            paths = plot_randomness(args.runs, out)
        elif args.command == "p1-var-ratio":
            paths = plot_p1_var_ratio(args.runs, out)
        elif args.command in RUN_FIGURES:
            paths = RUN_FIGURES[args.command][2](args.run, out)
        elif args.command == "p3-vit":
            paths = plot_p3_vit(args.run, out, ft_runs=args.ft_runs)
        elif args.command == "p4":
            paths = plot_p4(args.runs, out)
        elif args.command == "p2-synthetic":
            paths = plot_p2_fig2(args.runs, out) + plot_p2_fig3(args.runs, out)
        elif args.command == "p3-regression":
            paths = plot_p3_regression(args.runs, out)
        else:
            paths = plot_esd_grid(args.run, out / args.name, layers=args.layers, alpha=args.alpha, beta=args.beta,
                                  gof_threshold=args.gof_threshold)
    except (OSError, ValueError) as exc:  # missing or unwritable paths, a file where a folder is expected, bad records
        print(f"error: {exc}", file=sys.stderr)
        return 1
    for path in paths:
        print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
