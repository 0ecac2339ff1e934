"""P3 regression remark ("noisy Fourier targets, fixed features. MSE: MP pruning 0.149, L1 0.416, L2 2.563, none
2.574"; spectra `ideal/l1/l2/pruning_spectrum.png`): the figure and the verdict, from `experiments.p3_regression`
records only (`summary.json`, `spectra.csv`, `curves.csv`, `selection.csv` of each seed's run folder).

    python -m analysis p3-regression --runs runs/p3_regression/paper --out figures/paper
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd

from analysis.plotting import plt, save_figure
from analysis.runs import finished_records
from analysis.verdicts import INCONCLUSIVE, NOT_REPRODUCED, REPRODUCED, Outcome, Part, combine, interval_verdict, not_run, paired_mean_interval
from rmt.runfolder import SPECTRA_CSV, SUMMARY_JSON

KIND = "p3_regression"
ARMS = ("none", "l2", "l1", "mp_p1", "mp")  # plotting order: worst expected first
LABELS = {"none": "none", "l1": "L1", "l2": "L2", "mp": "MP pruning", "mp_p1": "MP, P1 schedule", "ideal": "ideal (noise-free)"}
SHORT = {"none": "none", "l1": "L1", "l2": "L2", "mp": "MP", "mp_p1": "MP (P1 schedule)"}
COLORS = {"none": "tab:gray", "l1": "tab:orange", "l2": "tab:green", "mp": "tab:red", "mp_p1": "tab:purple", "ideal": "black"}
PAPER_MSE = {"mp": 0.149, "l1": 0.416, "l2": 2.563, "none": 2.574}  # P3 (spec notes/P3_VIT_NOTES.md §F6)
METRIC = "test_mse_clean"  # the verdict's MSE: held-out inputs, noise-free targets (excess over the noise floor)
L2_NONE_TOLERANCE = 0.10   # "L2 ≈ none": |none - L2| / none within 10 % (the paper's gap: 0.4 %)
SETTINGS = ("problem", "train", "optim", "pruning", "reg", "dtype")  # what makes records of one setting (seeds aside)
RULE = ("Test MSE against noise-free targets on held-out inputs, paired over seeds (95 % t-interval of the mean "
        "difference; one seed: the point value): MP < L1 and L1 < L2 each hold when the interval of the difference lies "
        "above 0 (wholly below: contradicted), and L2 ≈ none when the interval of (none − L2) / none lies within "
        f"±{L2_NONE_TOLERANCE:.0%} (wholly outside: contradicted); all three hold: reproduced, some: partly, none and one "
        "contradicted: not reproduced, else inconclusive.")


def load_p3_regression(runs: str | Path) -> list[dict]:
    """Every finished `p3_regression` record below `runs`, in seed order: its config, summary, spectra, curves and
    λ selection.  Unfinished runs (no summary.json) are named on stderr and left out; two folders holding the same run
    or records of several profiles (settings) are refused with a ValueError."""
    found = [{"dir": run_dir, "config": config, "summary": json.loads((run_dir / SUMMARY_JSON).read_text()),
              "spectra": pd.read_csv(run_dir / SPECTRA_CSV), "curves": pd.read_csv(run_dir / "curves.csv"),
              "selection": pd.read_csv(run_dir / "selection.csv")} for run_dir, config in finished_records(runs, KIND)]
    profiles = {(r["config"].get("profile_name"), json.dumps({k: r["config"].get(k) for k in SETTINGS}, sort_keys=True, default=str))
                for r in found}
    if len(profiles) > 1:
        names = sorted({p for p, _ in profiles}, key=str)
        raise ValueError(f"{runs} holds p3_regression records of {len(profiles)} different settings (profiles {names}): "
                         f"point --runs at one profile's folder")
    return sorted(found, key=lambda r: r["summary"]["seed"])


def mse_table(records: list[dict]) -> pd.DataFrame:
    """One row per seed and arm: the test MSEs (noise-free and noisy targets), the excess risk, rank, λ."""
    return pd.DataFrame([{"seed": r["summary"]["seed"], "arm": arm, **{k: v for k, v in values.items()}}
                         for r in records for arm, values in r["summary"]["arms"].items()])


def _paired(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float, str]:
    """Mean of b - a with its 95 % interval (a point when there is one seed)."""
    if len(a) >= 2:
        iv = paired_mean_interval(a, b)
        return iv.mean, iv.low, iv.high, f"95 % CI [{iv.low:+.3f}, {iv.high:+.3f}], {iv.n} seeds"
    d = float(b[0] - a[0])
    return d, d, d, "1 seed"


def measure_p3_regression(results: Path) -> Outcome:
    """The verdict on the regression remark from the committed records: `results` is the results root (records in
    `results/p3_regression/<profile>/seed<k>/`; the `paper` profile when present) or that experiment folder itself."""
    results = Path(results)
    root = results / KIND if (results / KIND).is_dir() else results
    if (root / "paper").is_dir():
        root = root / "paper"
    records = load_p3_regression(root) if root.is_dir() else []
    if not records:
        return not_run(RULE, f"no finished p3_regression records below {root} (`make reproduce-p3-regression`, then "
                             f"`python -m analysis export --runs <runs>/p3_regression --to results/p3_regression`)")
    return judge(records)


def judge(records: list[dict]) -> Outcome:
    """The rule `RULE` applied to finished records of one setting (`load_p3_regression`)."""
    df = mse_table(records)
    wide = df.pivot(index="seed", columns="arm", values=METRIC)
    mean = wide.mean()
    seeds = len(wide)
    parts = []
    for name, lo_arm, hi_arm in (("MP < L1", "mp", "l1"), ("L1 < L2", "l1", "l2")):
        d, low, high, how = _paired(wide[lo_arm].to_numpy(), wide[hi_arm].to_numpy())
        verdict = interval_verdict(low, high, claim_above=0.0) if seeds >= 2 else (REPRODUCED if d > 0 else NOT_REPRODUCED)
        parts.append(Part(name, verdict, f"{SHORT[hi_arm]} − {SHORT[lo_arm]} = {d:+.3f} ({how})"))
    rel = ((wide["none"] - wide["l2"]) / wide["none"]).to_numpy()
    if seeds >= 2:
        iv = paired_mean_interval(np.zeros_like(rel), rel)
        low, high, how = iv.low, iv.high, f"95 % CI [{iv.low:+.1%}, {iv.high:+.1%}], {seeds} seeds"
    else:
        low = high = float(rel[0])
        how = "1 seed"
    tol = L2_NONE_TOLERANCE
    inside, outside = -tol <= low and high <= tol, low > tol or high < -tol
    verdict = REPRODUCED if inside else NOT_REPRODUCED if outside else INCONCLUSIVE
    parts.append(Part("L2 ≈ none", verdict, f"(none − L2) / none = {float(rel.mean()):+.1%} ({how}; tolerance ±{tol:.0%})"))

    s0 = records[0]["summary"]
    st = s0["settings"]
    lam = {arm: sorted({float(v) for v in df[df["arm"] == arm]["lambda"]}) for arm in ("l1", "l2")}
    ranks = {arm: sorted({int(v) for v in df[df["arm"] == arm]["rank"]}) for arm in ("mp", "mp_p1")}

    dim = records[0]["config"]["problem"]["dim"]
    features = f"{'orthogonally mixed ' if st['mix'] == 'orthogonal' else ''}Fourier modes on the {dim}-torus"

    def span(values: list) -> str:
        return f"{values[0]:g}" if len(values) == 1 else f"{values[0]:g}–{values[-1]:g}"

    numbers = (f"test MSE vs noise-free targets, mean of {seeds} seed{'s' if seeds > 1 else ''}: MP {mean['mp']:.3f}, "
               f"L1 {mean['l1']:.3f}, L2 {mean['l2']:.3f}, none {mean['none']:.3f} (MP with P1's in-training schedule "
               f"{mean['mp_p1']:.3f}); paper: {PAPER_MSE['mp']:.3f}, {PAPER_MSE['l1']:.3f}, {PAPER_MSE['l2']:.3f}, "
               f"{PAPER_MSE['none']:.3f}. Relative to none: ours {mean['mp'] / mean['none']:.3f}, {mean['l1'] / mean['none']:.3f}, "
               f"{mean['l2'] / mean['none']:.3f}; paper {PAPER_MSE['mp'] / PAPER_MSE['none']:.3f}, "
               f"{PAPER_MSE['l1'] / PAPER_MSE['none']:.3f}, {PAPER_MSE['l2'] / PAPER_MSE['none']:.3f}. "
               f"{st['features']} fixed features ({features}) → {st['outputs']} outputs, "
               f"n = {st['n_train']}, rank-{st['ideal_rank']} Fourier targets, noise σ = {st['noise']:g}; λ by validation "
               f"(L1 {span(lam['l1'])}, L2 {span(lam['l2'])}); MP rank {span(ranks['mp'])} (P1 schedule {span(ranks['mp_p1'])})")
    facts = {"seeds": str(seeds), **{f"mse_{arm}": f"{mean[arm]:.3f}" for arm in ARMS},
             **{f"ratio_{arm}": f"{mean[arm] / mean['none']:.3f}" for arm in ("mp", "l1", "l2", "mp_p1")},
             "rank_mp": span(ranks["mp"]), "rank_mp_p1": span(ranks["mp_p1"]), "ideal_rank": str(st["ideal_rank"]),
             "lambda_l1": span(lam["l1"]), "lambda_l2": span(lam["l2"]),
             **{f"noisy_mse_{arm}": f"{df[df['arm'] == arm]['test_mse'].mean():.3f}" for arm in ARMS}}
    return Outcome(combine(parts), RULE, numbers, tuple(parts), facts)


def plot_p3_regression(runs: str | Path, out_dir: str | Path) -> list[Path]:
    """Top: test MSE per arm (seeds as dots), ours vs the paper relative to `none`, the λ selection, the excess risk
    per epoch; bottom: singular values of the learned matrix per arm (first seed) against the ideal one, with each
    matrix's MP edge σ₊."""
    records = load_p3_regression(runs)
    if not records:
        raise FileNotFoundError(f"no finished experiments.p3_regression records below {runs}: run "
                                f"`make reproduce-p3-regression` first")
    df = mse_table(records)
    outcome = judge(records)
    fig, axes = plt.subplots(2, 4, figsize=(17, 7.6))
    values = []

    ax = axes[0, 0]
    for i, arm in enumerate(ARMS):
        v = df[df["arm"] == arm][METRIC].to_numpy()
        ax.bar(i, v.mean(), color=COLORS[arm], alpha=0.75)
        ax.scatter(np.full(len(v), i), v, color="black", s=8, zorder=3)
        ax.text(i, v.mean(), f"{v.mean():.3f}", ha="center", va="bottom", fontsize=8)
        values += [{"panel": "test_mse_clean", "arm": arm, "seed": int(s), "x": i, "y": float(y)}
                   for s, y in zip(df[df["arm"] == arm]["seed"], v)]
    ax.set_xticks(range(len(ARMS)), [LABELS[a] for a in ARMS], rotation=20, fontsize=8)
    ax.set_ylabel("test MSE vs noise-free targets")
    ax.set_title(f"(a) test MSE, {len(records)} seeds (dots)", fontsize=9)

    ax = axes[0, 1]
    compared = ("none", "l2", "l1", "mp")
    mean = df.groupby("arm")[METRIC].mean()
    x = np.arange(len(compared))
    ours = [mean[a] / mean["none"] for a in compared]
    paper = [PAPER_MSE[a] / PAPER_MSE["none"] for a in compared]
    ax.bar(x - 0.2, ours, 0.4, color=[COLORS[a] for a in compared], alpha=0.75, label="ours")
    ax.bar(x + 0.2, paper, 0.4, color="white", edgecolor=[COLORS[a] for a in compared], hatch="//", label="paper (P3)")
    for xi, o, p in zip(x, ours, paper):
        ax.text(xi - 0.2, o, f"{o:.2f}", ha="center", va="bottom", fontsize=7)
        ax.text(xi + 0.2, p, f"{p:.2f}", ha="center", va="bottom", fontsize=7)
    values += [{"panel": "relative_to_none", "arm": a, "x": float(xi), "y": o, "paper": p} for a, xi, o, p in zip(compared, x, ours, paper)]
    ax.set_xticks(x, [LABELS[a] for a in compared], fontsize=8)
    ax.set_ylabel("MSE / MSE of none")
    ax.set_title("(b) relative to none: ours vs the paper", fontsize=9)
    ax.legend(fontsize=7)

    ax = axes[0, 2]
    sel = pd.concat([r["selection"].assign(seed=r["summary"]["seed"]) for r in records], ignore_index=True)
    for penalty, g in sel.groupby("penalty"):
        curve = g.groupby("lambda")["val_mse"].mean()
        ax.plot(curve.index, curve.to_numpy(), marker="o", ms=3, color=COLORS[penalty], label=LABELS[penalty])
        chosen = g[g["chosen"]]
        ax.scatter(chosen["lambda"], chosen["val_mse"], marker="*", s=60, color=COLORS[penalty], edgecolor="black", zorder=3)
        values += [{"panel": "selection", "arm": penalty, "x": float(lam), "y": float(v)} for lam, v in curve.items()]
    ax.set_xscale("log")
    ax.set_xlabel("λ")
    ax.set_ylabel("validation MSE (noisy targets)")
    ax.set_title("(c) λ selection (mean of seeds; ★ chosen per seed)", fontsize=9)
    ax.legend(fontsize=7)

    ax = axes[0, 3]
    curves = pd.concat([r["curves"] for r in records], ignore_index=True).groupby(["arm", "epoch"], as_index=False)["excess_risk"].mean()
    for arm in ARMS:
        c = curves[curves["arm"] == arm]
        ax.plot(c["epoch"], c["excess_risk"], color=COLORS[arm], lw=1.2, ls="--" if arm == "mp" else "-",
                label=LABELS[arm] + (" (= none, pruned after the last epoch)" if arm == "mp" else ""))
        values += [{"panel": "excess_risk", "arm": arm, "x": int(e), "y": float(v)} for e, v in zip(c["epoch"], c["excess_risk"])]
    ax.set_yscale("log")
    ax.set_xlabel("epoch")
    ax.set_ylabel("‖W − W*‖²_F / m (excess risk)")
    ax.set_title("(d) distance to the ideal matrix while training", fontsize=9)
    ax.legend(fontsize=7)

    first = records[0]
    spectra, arms_summary = first["spectra"], first["summary"]["arms"]
    ideal = spectra[spectra["arm"] == "ideal"]
    none = spectra[spectra["arm"] == "none"]
    for ax, (title, shown) in zip(axes[1], [("ideal", ["ideal"]), ("L1", ["l1"]), ("L2", ["l2"]), ("MP pruning", ["mp", "mp_p1"])]):
        if shown != ["ideal"]:
            ax.plot(ideal["index"] + 1, ideal["singular_value"], color="black", ls="--", lw=1, label=LABELS["ideal"])
        ax.plot(none["index"] + 1, none["singular_value"], color=COLORS["none"], lw=1, alpha=0.6, label=f"{LABELS['none']} (learned)")
        for arm in shown:
            s = spectra[spectra["arm"] == arm]
            ax.plot(s["index"] + 1, s["singular_value"], color=COLORS[arm], marker=".", ms=3, lw=1.2,
                    label=LABELS[arm] + (f", rank {arms_summary[arm]['rank']}" if arm != "ideal" else ""))
            values += [{"panel": "spectrum", "arm": arm, "seed": first["summary"]["seed"], "x": int(i) + 1, "y": float(v)}
                       for i, v in zip(s["index"], s["singular_value"])]
            if arm in ("l1", "l2"):  # a pruned matrix's own fit is meaningless (its bulk is gone): none's edge is the one MP used
                ax.axhline(arms_summary[arm]["sigma_plus"], color=COLORS[arm], ls=":", lw=0.9, label=f"σ₊ of {LABELS[arm]}")
        ax.axhline(arms_summary["none"]["sigma_plus"], color=COLORS["none"], ls=":", lw=0.9, label="σ₊ of none (MP's cut)")
        ax.set_xlabel("index")
        ax.set_ylabel("singular value")
        ax.set_title(f"{title} spectrum (seed {first['summary']['seed']})", fontsize=9)
        ax.legend(fontsize=7)
    values += [{"panel": "spectrum", "arm": "none", "seed": first["summary"]["seed"], "x": int(i) + 1, "y": float(v)}
               for i, v in zip(none["index"], none["singular_value"])]
    st = first["summary"]["settings"]
    head = (f"P3 regression remark — {st['features']} fixed features → {st['outputs']} outputs, n = {st['n_train']}, "
            f"rank-{st['ideal_rank']} noisy Fourier targets (σ = {st['noise']:g})")
    head += f"\nverdict by the declared rule: {outcome.verdict} — " + "; ".join(f"{p.name}: {p.verdict}" for p in outcome.parts)
    fig.suptitle(head, fontsize=10)
    return save_figure(fig, pd.DataFrame(values), Path(out_dir) / "p3_regression")
