"""docs/REPRODUCTION.md is generated from the committed records; verdicts come from declared rules."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from scipy import stats

from analysis.reproduction import (DOCUMENT, RESULTS, TEMPLATE, VerdictMismatch, arms_outcome, render, unused_results,
                                   variance_outcome)
from analysis.verdicts import (INCONCLUSIVE, NOT_REPRODUCED, NOT_RUN, PARTLY, REPRODUCED, Part, combine, interval_verdict,
                               paired_mean_interval, std_ratio_interval)

ROOT = Path(__file__).resolve().parents[1]


def test_committed_document_is_the_regeneration_of_the_records():
    template = (ROOT / TEMPLATE).read_text()
    assert unused_results(template) == [], "every registered result must be a row of the template"
    assert render(template, ROOT / "results") == (ROOT / DOCUMENT).read_text(), (
        "docs/REPRODUCTION.md differs from its regeneration: run `python -m analysis reproduction`")


def test_a_stated_verdict_that_disagrees_with_the_rule_stops_the_generation():
    template = "| P2-fig4 | {{P2-fig4/paper numbers}} | {{P2-fig4/paper verdict: not reproduced}} |\n"
    with pytest.raises(VerdictMismatch, match="the template says 'not reproduced', its rule says 'reproduced'"):
        render(template, ROOT / "results")
    assert "**reproduced**" in render(template.replace("not reproduced", "reproduced"), ROOT / "results")


def test_unknown_placeholders_and_unused_results_are_refused(tmp_path):
    with pytest.raises(ValueError, match="unknown result"):
        render("{{P9-nothing/quick numbers}}", tmp_path)
    with pytest.raises(ValueError, match="unrecognised placeholders"):
        render("{{P2-fig4/paper colour}}", tmp_path)
    assert "P2-fig4/paper" in unused_results("{{P2-fig5/paper numbers}}")
    assert set(unused_results("")) == set(RESULTS)


def test_missing_records_give_not_run(tmp_path):
    out = render("{{P1-fig1/paper numbers}} {{P1-fig1/paper verdict: not run}}", tmp_path)
    assert "not run" in out


# ------------------------------------------------------------------------------------------------ statistics
def test_combine_and_interval_verdicts():
    r, n, i = (Part("x", v, "") for v in (REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE))
    assert combine([r, r]) == REPRODUCED
    assert combine([i, i]) == INCONCLUSIVE
    assert combine([n, i]) == NOT_REPRODUCED
    assert combine([r, i]) == PARTLY and combine([r, n]) == PARTLY
    assert combine([i, Part("y", NOT_RUN, "")]) == INCONCLUSIVE and combine([Part("y", NOT_RUN, "")]) == NOT_RUN
    assert interval_verdict(0.2, 0.9, claim_below=1.0) == REPRODUCED
    assert interval_verdict(1.1, 3.0, claim_below=1.0) == NOT_REPRODUCED
    assert interval_verdict(0.5, 1.5, claim_below=1.0) == INCONCLUSIVE
    assert interval_verdict(0.001, 0.01, claim_above=0.0) == REPRODUCED


def test_std_ratio_interval_is_exact_for_a_scaled_copy_and_the_f_test_matches_scipy():
    a = np.random.default_rng(1).normal(size=20)
    exact = std_ratio_interval(a, 0.5 * a + 3.0)  # every resample has the same ratio
    assert exact.ratio == pytest.approx(0.5, rel=1e-12)
    assert exact.low == pytest.approx(0.5, rel=1e-12) and exact.high == pytest.approx(0.5, rel=1e-12)
    b = np.random.default_rng(2).normal(scale=2.0, size=20)
    ci = std_ratio_interval(a, b)
    f = np.var(b, ddof=1) / np.var(a, ddof=1)
    assert ci.p_value == pytest.approx(2 * min(stats.f.cdf(f, 19, 19), stats.f.sf(f, 19, 19)), rel=1e-12)
    assert ci.low < ci.ratio < ci.high and ci.n == 20
    with pytest.raises(ValueError, match="at least 3 seeds"):
        std_ratio_interval(a[:2], b[:2])
    with pytest.raises(ValueError, match="NaN"):
        std_ratio_interval(np.append(a[:5], np.nan), b[:6])
    with pytest.raises(ValueError, match="no spread"):
        std_ratio_interval(np.ones(5), b[:5])


def test_paired_mean_interval_is_the_student_t_interval():
    ci = paired_mean_interval(np.zeros(3), np.array([1.0, 2.0, 3.0]))
    half = stats.t.ppf(0.975, 2) / np.sqrt(3)  # sample std of 1, 2, 3 is 1
    assert (ci.mean, ci.low, ci.high) == pytest.approx((2.0, 2.0 - half, 2.0 + half), rel=1e-12)


# ------------------------------------------------------------------------------------------------ rules on planted records
def write_run(folder: Path, arm: str, panel: str, seed: int, acc: list[float], params: list[int], n_splits: list[int]) -> None:
    folder.mkdir(parents=True)
    config = {"kind": "train", "name": "planted", "panel": panel, "arm": arm, "seed": seed, "profile": {"name": "quick"},
              "fingerprint": f"{panel}-{arm}-{seed}", "effective": {"sizes": [784, 100, 10]}}
    (folder / "config.yaml").write_text(yaml.safe_dump(config))
    epochs = range(1, len(acc) + 1)
    pd.DataFrame({"epoch": epochs, "lr": 0.1, "train_loss": 0.1, "train_acc": 1.0, "test_loss": 0.1, "test_acc": acc,
                  "params": params, "nonzero": params, "keep_fraction": 1.0, "n_splits": n_splits,
                  "time_s": 1.0}).to_csv(folder / "metrics.csv", index=False)
    (folder / "summary.json").write_text(json.dumps({"params_start": params[0], "params_final": params[-1], "wall_time_s": len(acc)}))


@pytest.mark.parametrize("gap, reduction, expected", [(+0.002, 0.5, REPRODUCED), (-0.005, 0.5, PARTLY),
                                                      (-0.02, 0.5, NOT_REPRODUCED), (+0.002, 0.1, NOT_REPRODUCED)])
def test_arm_rule_on_planted_curves(tmp_path, gap, reduction, expected):
    n = 12
    normal = [0.95] * n
    pruned = [0.95 + gap] * n
    full, cut = 1000, int(1000 * (1 - reduction))
    for panel in ("fig1a", "fig1b"):
        write_run(tmp_path / f"{panel}-normal", "normal", panel, 0, normal, [full] * n, [0] * n)
        write_run(tmp_path / f"{panel}-rmt", "rmt", panel, 0, pruned, [full] * 3 + [cut] * (n - 3), [0] * 3 + [1] * (n - 3))
    outcome = arms_outcome(tmp_path)
    assert outcome.verdict == expected
    assert "first split at epoch 4, 4" in outcome.numbers


def test_variance_rule_decides_only_with_enough_seeds(tmp_path):
    rng = np.random.default_rng(0)
    for seed in range(20):  # the pruned arm's spread is a tenth of the normal arm's, and 1 pp higher
        base = rng.normal(0.95, 0.004)
        write_run(tmp_path / "many" / f"normal-s{seed}", "normal", "var", seed, [base] * 3, [1000] * 3, [0] * 3)
        write_run(tmp_path / "many" / f"rmt-s{seed}", "rmt", "var", seed, [0.96 + (base - 0.95) / 10] * 3, [500] * 3, [1] * 3)
    outcome = variance_outcome(tmp_path / "many")
    assert outcome.verdict == REPRODUCED, outcome.verdict_cell
    assert "20 seeds per arm" in outcome.numbers
    few = tmp_path / "few"  # 3 seeds of equal spread: the interval of the ratio spans 1, the rule cannot decide
    for seed in range(3):
        write_run(few / f"normal-s{seed}", "normal", "var", seed, [0.95 + 0.004 * rng.normal()] * 3, [1000] * 3, [0] * 3)
        write_run(few / f"rmt-s{seed}", "rmt", "var", seed, [0.95 + 0.004 * rng.normal()] * 3, [500] * 3, [1] * 3)
    assert variance_outcome(few).parts[0].verdict == INCONCLUSIVE


def test_a_panel_with_one_arm_is_named_not_judged(tmp_path):
    write_run(tmp_path / "fig1a-normal", "normal", "fig1a", 0, [0.95] * 12, [1000] * 12, [0] * 12)
    write_run(tmp_path / "fig1a-rmt", "rmt", "fig1a", 0, [0.95] * 12, [500] * 12, [1] * 12)
    write_run(tmp_path / "fig1b-normal", "normal", "fig1b", 0, [0.95] * 12, [1000] * 12, [0] * 12)
    outcome = arms_outcome(tmp_path)
    assert outcome.verdict == REPRODUCED and "panels with one arm only so far (not judged): (b)" in outcome.numbers
    only = tmp_path / "only"
    write_run(only / "fig1b-normal", "normal", "fig1b", 0, [0.95] * 12, [1000] * 12, [0] * 12)
    assert arms_outcome(only).verdict == NOT_RUN
