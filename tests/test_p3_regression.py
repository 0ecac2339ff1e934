"""P3 regression remark (experiments.p3_regression, analysis.p3_regression) on a small planted problem: a rank-4
ideal matrix plus noise, where removing the MP bulk must beat plain least squares; records, figure, verdict."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from analysis.__main__ import main as analysis_main
from analysis.p3_regression import load_p3_regression, measure_p3_regression
from analysis.verdicts import NOT_RUN, VERDICTS
from experiments import p3_regression
from experiments.errors import RunConfigError
from tests.conftest import compose_named

# 60 features -> 30 outputs, rank-4 targets, n = 4 P: seconds per seed.
SMALL = ("profile_name=smoke", "problem.features=60", "problem.outputs=30", "problem.modes=2", "problem.n_train=240",
         "problem.n_test=2000", "train.epochs=30", "train.batch_size=60", "pruning.keep_horizon=25", "reg.grid=[0.01,0.1]",
         "threads=1")


@pytest.fixture(scope="module")
def small_runs(tmp_path_factory) -> Path:
    runs = tmp_path_factory.mktemp("p3reg")
    for seed in (0, 1):
        p3_regression.run(compose_named("p3_regression", *SMALL, f"seed={seed}", f"paths.runs_dir={runs}"))
    return runs / "p3_regression" / "smoke"


def test_problem_is_the_planted_one():
    cfg = compose_named("p3_regression", *SMALL)
    prob = p3_regression.Problem(cfg, torch.device("cpu"), torch.float64)
    # The ideal matrix maps the fixed features to the noise-free targets exactly, and has rank 2K.
    assert torch.allclose(prob.test_x @ prob.ideal_t.T, prob.test_clean, atol=1e-10)
    s = np.linalg.svd(prob.ideal, compute_uv=False)
    assert (s > 1e-9 * s[0]).sum() == 4
    # The targets carry noise of the configured size; the features are orthonormal under the input law.
    assert float((prob.train_y - prob.train_clean).std()) == pytest.approx(1.0, rel=0.05)
    gram = (prob.test_x.T @ prob.test_x / len(prob.test_x)).numpy()
    assert np.abs(gram - np.eye(60)).max() < 0.15
    assert len({tuple(f) for f in prob.freqs}) == 30 and not any((-f).tolist() in prob.freqs.tolist() for f in prob.freqs)


def test_mp_pruning_beats_least_squares_and_records_are_written(small_runs):
    for seed in (0, 1):
        run = small_runs / f"seed{seed}"
        for name in ("config.yaml", "env.json", "summary.json", "spectra.csv", "curves.csv", "selection.csv"):
            assert (run / name).exists(), name
        summary = json.loads((run / "summary.json").read_text())
        arms = summary["arms"]
        assert set(arms) == set(p3_regression.ARMS)
        # The none arm trained to the least-squares solution; removing its MP bulk leaves about the planted rank and
        # a much smaller test error; L1 / L2 took a lambda from the grid.
        assert arms["none"]["excess_risk"] == pytest.approx(summary["ols_excess_risk"], rel=0.05)
        assert arms["mp"]["test_mse_clean"] < 0.5 * arms["none"]["test_mse_clean"]
        assert 4 <= arms["mp"]["rank"] <= 8 and arms["none"]["rank"] == 30
        assert arms["l1"]["lambda"] in (0.01, 0.1) and arms["l2"]["lambda"] in (0.01, 0.1)
        spectra = pd.read_csv(run / "spectra.csv")
        assert set(spectra["arm"]) == {"ideal", *p3_regression.ARMS} and (spectra.groupby("arm").size() == 30).all()
        ideal = spectra[spectra["arm"] == "ideal"]["singular_value"]
        assert (ideal > 1e-9).sum() == 4
        curves = pd.read_csv(run / "curves.csv")
        assert len(curves) == len(p3_regression.ARMS) * 30
        last = curves[curves["epoch"] == 30].set_index("arm")
        assert last.loc["mp", "excess_risk"] == pytest.approx(arms["mp"]["excess_risk"])
        selection = pd.read_csv(run / "selection.csv")
        assert selection.groupby("penalty")["chosen"].sum().tolist() == [1, 1]


def test_figure_and_verdict_from_records(small_runs, tmp_path):
    assert analysis_main(["p3-regression", "--runs", str(small_runs), "--out", str(tmp_path)]) == 0
    assert (tmp_path / "p3_regression.png").stat().st_size > 10_000
    plotted = pd.read_csv(tmp_path / "p3_regression.csv")
    assert {"test_mse_clean", "relative_to_none", "selection", "excess_risk", "spectrum"} <= set(plotted["panel"])
    outcome = measure_p3_regression(small_runs.parent)
    assert outcome.verdict in VERDICTS and outcome.verdict != NOT_RUN
    assert [p.name for p in outcome.parts] == ["MP < L1", "L1 < L2", "L2 ≈ none"]
    assert outcome.parts[0].verdict == "reproduced"  # planted low rank: MP beats L1 on both seeds
    assert "mean of 2 seeds" in outcome.numbers and "|" not in outcome.numbers
    assert measure_p3_regression(small_runs.parent) == outcome  # deterministic text
    assert measure_p3_regression(tmp_path / "nothing").verdict == NOT_RUN


def test_copies_and_mixed_settings_are_refused(small_runs, tmp_path):
    import shutil

    shutil.copytree(small_runs, tmp_path / "a")
    shutil.copytree(small_runs / "seed0", tmp_path / "a" / "copy" / "seed0")
    with pytest.raises(ValueError, match="hold the same run"):
        load_p3_regression(tmp_path / "a")


def test_bad_settings_are_named_before_anything_is_written(tmp_path):
    with pytest.raises(RunConfigError, match=r"problem.mix='sparse'"):
        p3_regression.run(compose_named("p3_regression", "problem.mix=sparse", f"run_dir={tmp_path}/x"))
    with pytest.raises(RunConfigError, match="must be even"):
        p3_regression.run(compose_named("p3_regression", "problem.features=61", f"run_dir={tmp_path}/y"))
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
