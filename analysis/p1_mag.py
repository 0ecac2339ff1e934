"""P1 magnitude sweep: test accuracy vs non-zero parameters, MP-pruned vs unpruned net, and its rule.

The records are those of `experiments.magnitude_sweep` (`magnitude_sweep.csv`: arm, k, threshold, nonzero_params,
test_acc; `summary.json`: per arm the source run, its parameters and its unthresholded test accuracy): the FC Fig. 1 (b)
nets (`results/p1_mag/<profile>/fig1b`, thresholds 1/(1+k)) and the P1 CNN (`.../cnn`, thresholds 1/(20(1+k))).
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.curves import SERIES_STYLE
from analysis.plotting import plt, save_figure
from analysis.verdicts import NOT_REPRODUCED, PARTLY, REPRODUCED, Outcome, Part, not_run, signed

SWEEP_CSV = "magnitude_sweep.csv"
LEVELS_PP = (1.0, 2.0, 5.0)  # accuracy levels below the unpruned net's accuracy (as the P1-mag/quick row's rule)
FAR_FEWER = 0.8              # "far fewer": at most 0.8x the non-zeros of magnitude alone, at every level
FEWER = 0.9                  # partly: at most 0.9x at some level (a 10 % margin: equal-size nets differ by less)


def threshold_label(df: pd.DataFrame) -> str:
    """The sweep's thresholds in the P1 notation: `1/(1+k)` or `1/(20(1+k))`, k < k_max."""
    scale = 1.0 / float(df["threshold"].max())
    k_max = int(df["k"].max()) + 1
    return f"1/(1+k), k < {k_max}" if math.isclose(scale, 1.0) else f"1/({scale:g}(1+k)), k < {k_max}"


def plot_p1_mag(run_dir: str | Path, out_dir: str | Path) -> list[Path]:
    """`p1_mag.png` for the Fig. 1 (b) sweep (run `fig1b`), `p1_mag_<run name>.png` for any other (e.g. `cnn`)."""
    run_dir = Path(run_dir)
    if not (run_dir / SWEEP_CSV).exists():
        raise FileNotFoundError(f"no {SWEEP_CSV} in {run_dir}: run `python -m experiments.magnitude_sweep` first")
    df = pd.read_csv(run_dir / SWEEP_CSV)
    own_name = run_dir.name != "fig1b"
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    for arm, g in df.groupby("arm"):
        color, label = SERIES_STYLE[arm]
        ax.plot(g["nonzero_params"], 100 * g["test_acc"], marker="o", ms=3, color=color, label=f"{label} + magnitude")
    ax.set_xscale("log")
    ax.set_xlabel(f"non-zero parameters (thresholds {threshold_label(df)})")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title("P1 — accuracy vs non-zero parameters" + (f" ({run_dir.name} nets)" if own_name else ""), fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save_figure(fig, df, Path(out_dir) / ("p1_mag" + (f"_{run_dir.name}" if own_name else "")))


def fewest_nonzeros(curve: pd.DataFrame, level: float) -> int | None:
    """The fewest non-zero parameters with which a sweep curve reaches `level` (None: no point does)."""
    ok = curve[curve["test_acc"] >= level]
    return int(ok["nonzero_params"].min()) if len(ok) else None


def above_share(mp: pd.DataFrame, mag: pd.DataFrame) -> tuple[int, int, float]:
    """MP + magnitude against the magnitude-only curve interpolated at the same non-zero count (linear in log count,
    only where the counts overlap): (points at or above it, points compared, mean accuracy difference)."""
    ref = mag.sort_values("nonzero_params")
    x, y = np.log(ref["nonzero_params"].to_numpy(float)), ref["test_acc"].to_numpy(float)
    inside = mp[(mp["nonzero_params"] >= ref["nonzero_params"].min()) & (mp["nonzero_params"] <= ref["nonzero_params"].max())]
    diff = inside["test_acc"].to_numpy(float) - np.interp(np.log(inside["nonzero_params"].to_numpy(float)), x, y)
    return int((diff >= 0).sum()), len(inside), float(diff.mean()) if len(diff) else math.nan


def count_share(n: int | None, total: int) -> str:
    return "never" if n is None else f"{n:,} ({100 * n / total:.1f} %)"


RULE = (f"for accuracy levels {', '.join(f'{v:g}' for v in LEVELS_PP)} pp below the unpruned net's test accuracy: the "
        f"fewest non-zero parameters with which each sweep curve (magnitude thresholds on the unpruned net; on the "
        f"MP-pruned net) reaches the level; **reproduced**: MP + magnitude needs ≤ {FAR_FEWER:g}× the non-zeros of "
        f"magnitude alone at every level ('far fewer'; a level only MP + magnitude reaches counts as 0×, one it never "
        f"reaches as ∞); **partly**: ≤ {FEWER:g}× at some level; **not reproduced** otherwise")


def measure_mag_sweep(run_dir: Path, what: str) -> Outcome:
    """The P1-mag rule (`RULE`) on one `experiments.magnitude_sweep` record; `what` names the nets in the numbers."""
    if not (run_dir / SWEEP_CSV).exists() or not (run_dir / "summary.json").exists():
        return not_run(RULE, f"not run: no magnitude-sweep record in {run_dir}")
    df = pd.read_csv(run_dir / SWEEP_CSV)
    summary = json.loads((run_dir / "summary.json").read_text())
    dense = summary["normal"]["test_acc"]
    mag, mp = df[df["arm"] == "normal"], df[df["arm"] == "rmt"]
    cells, ratios = [], []
    for level_pp in LEVELS_PP:
        level = dense - level_pp / 100
        n_mag, n_mp = fewest_nonzeros(mag, level), fewest_nonzeros(mp, level)
        ratio = math.inf if n_mp is None else 0.0 if n_mag is None else n_mp / n_mag
        ratios.append(ratio)
        cells.append(f"≥ {100 * level:.2f} %: magnitude alone {count_share(n_mag, summary['normal']['params'])}, MP + magnitude "
                     f"{count_share(n_mp, summary['normal']['params'])}")
    verdict = (REPRODUCED if all(r <= FAR_FEWER for r in ratios) else PARTLY if any(r <= FEWER for r in ratios)
               else NOT_REPRODUCED)
    ratio_text = ", ".join("never reached" if math.isinf(r) else "only MP + magnitude reaches it" if r == 0 else f"{r:.2f}×"
                           for r in ratios)
    above, compared, mean_diff = above_share(mp, mag)
    numbers = (f"{what}, thresholds {threshold_label(df)}; unpruned {summary['normal']['params']:,} parameters → "
               f"{100 * dense:.2f} %, MP-pruned {summary['rmt']['params']:,} → {100 * summary['rmt']['test_acc']:.2f} %; "
               f"fewest non-zeros to reach " + "; ".join(cells) + f" (MP + magnitude / magnitude alone: {ratio_text}); "
               f"MP + magnitude at or above the magnitude-only curve (interpolated at equal non-zero counts) at {above} "
               f"of {compared} points, by {signed(100 * mean_diff)} on average")
    evidence = f"non-zeros MP + magnitude / magnitude alone: {ratio_text}"
    return Outcome(verdict, RULE, numbers, (Part("far fewer non-zeros at the same accuracy", verdict, evidence),),
                   {"ratios": ratio_text, "above": f"{above}/{compared}", "mean_gap": signed(100 * mean_diff)})


def measure_p1_cnn_mag(results: Path) -> Outcome:
    """P1-mag on the P1 CNN quick nets (`results/p1_mag/quick/cnn`; P1 CNN thresholds 1/(20(1+k)))."""
    run = Path(results) / "p1_mag" / "quick" / "cnn"
    nets = "P1 CNN quick nets"
    if (run / "summary.json").exists():
        source = Path(json.loads((run / "summary.json").read_text())["normal"]["source_run"])
        nets += f" ({source.parent.parent.name}/{source.parent.name}, seed 0)"
    return measure_mag_sweep(run, nets)
