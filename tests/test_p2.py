"""P2 experiments in the smoke profile: synthetic spiked matrix, the Fig. 4 run, the Fig. 5 rank sweep, ESD views."""

import math
from pathlib import Path

import pandas as pd
import pytest

from analysis.__main__ import main as analysis_main
from analysis.esd import plot_esd_grid
from experiments import rank_sweep, synthetic, train
from tests.conftest import compose_named



def test_p2_signal_formula():
    s = synthetic.p2_signal(3)
    i, j = 2, 3  # 1-based
    expected = math.tan(math.pi / 2 + 1 / (j + 1)) + math.cos(i) * math.log(i + j + 1) + math.sin(j) * math.cos(i / j)
    assert s[i - 1, j - 1] == pytest.approx(expected)


def test_synthetic_run_and_figures(tmp_path):
    cfg = compose_named("synthetic", "n=300", f"run_dir={tmp_path}/syn/paper/seed0", "alpha_grid=[0.1,0.25]", "beta_grid=[0.1,0.5]")
    summary = synthetic.run(cfg)
    assert summary["n_eigenvalues_above_lambda_plus"] >= 3 and 0.8 < summary["sigma2"] < 1.2
    alpha = pd.read_csv(tmp_path / "syn/paper/seed0/lambda_vs_alpha.csv")
    assert list(alpha.columns) == ["alpha", "beta", "lambda_plus", "lambda_plus_compat"] and len(alpha) == 2
    assert analysis_main(["p2-synthetic", "--runs", str(tmp_path / "syn"), "--out", str(tmp_path / "fig")]) == 0
    assert (tmp_path / "fig" / "p2_fig2.png").exists() and (tmp_path / "fig" / "p2_fig3.csv").exists()


@pytest.fixture(scope="module")
def p2_run(tmp_path_factory, data_root):
    runs = tmp_path_factory.mktemp("runs")
    cfg = compose_named("train", "experiment=p2_fig4", "profile=smoke", "logger=local", "progress=false",
                        f"paths.runs_dir={runs}", f"paths.data_dir={data_root}")
    train.run(cfg)
    return Path(cfg.run_dir)


def test_p2_fig4_run_uses_p2_settings(p2_run):
    config = (p2_run / "config.yaml").read_text()
    assert "init: torch_default" in config and "scale: unit" in config and "lr: 0.08" in config
    spectra = pd.read_csv(p2_run / "spectra.csv")
    assert set(spectra["layer"].astype(str)) == {"1", "3"}


def test_rank_sweep_and_fig5(p2_run, tmp_path):
    cfg = compose_named("rank_sweep", f"source_run={p2_run}", f"run_dir={tmp_path}/sweep", "ranks.stop=15")
    summary = rank_sweep.run(cfg)
    sweep = pd.read_csv(tmp_path / "sweep" / "rank_sweep.csv")
    assert list(sweep["rank"]) == [0, 5, 10]
    assert sweep["test_acc"].iloc[0] < summary["full_test_acc"]  # rank 0 leaves only the bias
    # The predicted rank is the layer's spike count (the same fit as `rmt analyze`).  The authors' TW term
    # (1+sqrt c)^4/3 replaces (1+sqrt c)^(4/3); sigma2 is the same and t > 0 at beta = 0.1, so their edge is higher
    # (fewer spikes) exactly when their term is larger.
    from rmt.analyze import analyze
    from rmt.io import load_model

    spikes = analyze(load_model(str(p2_run))[0], device="cpu").set_index("layer").loc["1", "spikes"]
    assert summary["predicted_rank_correct"] == spikes
    root = 1 + math.sqrt(min(summary["shape"]) / max(summary["shape"]))
    compat_higher = root ** 4 / 3 > root ** (4 / 3)
    assert (summary["fit_compat"]["lambda_plus"] > summary["fit_correct"]["lambda_plus"]) == compat_higher
    assert summary["fit_compat"]["sigma2"] == summary["fit_correct"]["sigma2"]
    assert (summary["predicted_rank_compat"] <= spikes) if compat_higher else (summary["predicted_rank_compat"] >= spikes)
    assert analysis_main(["p2-fig5", "--run", str(tmp_path / "sweep"), "--out", str(tmp_path / "fig")]) == 0


def test_esd_grid_from_record_equals_rmt_analyze_of_checkpoint(p2_run, tmp_path):
    from rmt.analyze import analyze
    from rmt.io import load_model

    a = pd.read_csv(plot_esd_grid(p2_run, tmp_path / "a")[2])
    b = analyze(load_model(str(p2_run))[0], device="cpu")
    pd.testing.assert_series_equal(a["sigma2"], b["sigma2"], rtol=1e-4, check_names=False)
    spectra = p2_run / "spectra.csv"
    spectra.rename(p2_run / "spectra.bak")
    try:  # figures read records only
        with pytest.raises(FileNotFoundError, match="no spectra.csv.*rmt analyze"):
            plot_esd_grid(p2_run, tmp_path / "b")
    finally:
        (p2_run / "spectra.bak").rename(spectra)
    assert list(a["layer"].astype(str)) == ["1", "3"] and list(a["fits_mp"]) == list(a["gof"] < 0.1)  # the default gof_threshold
    with pytest.raises(ValueError, match="no such layers"):
        plot_esd_grid(p2_run, tmp_path / "c", layers=["7"])


def test_rank_sweep_on_missing_run_is_clear(tmp_path):
    cfg = compose_named("rank_sweep", f"source_run={tmp_path}/nothing", f"run_dir={tmp_path}/x")
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        rank_sweep.run(cfg)


@pytest.mark.parametrize("override, message", [
    ("layer=99", "layer=99 is not a Linear / Conv2d layer of .*; its layers: 1, 3"),
    ("ranks.start=100", r"ranks.stop=100 must exceed ranks.start=100"),
])
def test_rank_sweep_names_a_bad_layer_or_range_before_writing(p2_run, tmp_path, override, message):
    cfg = compose_named("rank_sweep", f"source_run={p2_run}", f"run_dir={tmp_path}/x", override, "ranks.stop=100")
    with pytest.raises(rank_sweep.RunConfigError, match=message):
        rank_sweep.run(cfg)
    assert not (tmp_path / "x").exists()
