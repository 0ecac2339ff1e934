"""Every issue-3 experiment in the smoke profile: it composes, runs, writes its record, and its figure draws."""

import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch
from omegaconf import OmegaConf

from analysis.__main__ import main as analysis_main
from experiments import confidence_bound, randomness_removal, train
from tests.conftest import compose_named



@pytest.fixture(scope="module")
def runs(tmp_path_factory, data_root):
    """Smoke runs of each experiment's sweep points that its figure needs."""
    root = tmp_path_factory.mktemp("runs")
    plan = {
        "p1_var": [("seed=0", "arm=normal"), ("seed=1", "arm=normal"), ("seed=0", "arm=rmt"), ("seed=1", "arm=rmt")],
        "p1_fmnist_ablation": [("arm=normal", "reg=none"), ("arm=rmt", "reg=l1l2")],
        "p2_examples": [("panel=p2_ex4_3", "arm=normal"), ("panel=p2_ex4_3", "arm=rmt")],
        "p3_rand": [("reg=none",), ("reg=l2_strong",)],
        "p1_fig3": [("panel=fig3b", "arm=rmt")],
    }
    for experiment, points in plan.items():
        for point in points:
            cfg = compose_named("train", f"experiment={experiment}", *point, "profile=smoke", "logger=local", "progress=false",
                                f"paths.runs_dir={root}", f"paths.data_dir={data_root}")
            train.run(cfg)
    return root


def config_of(root: Path, experiment: str, run: str) -> dict:
    import yaml

    return yaml.safe_load((root / experiment / "smoke" / run / "config.yaml").read_text())


def test_settings_follow_results_md(runs):
    abl = config_of(runs, "p1_fmnist_ablation", "rmt-l1l2-s0")
    assert abl["data"]["name"] == "fashion_mnist" and abl["optim"]["decay_every"] == 4 and abl["pruning"]["every"] == 4
    assert abl["pruning"]["keep_horizon"] == 200 and abl["series"] == "rmt+l1l2"
    ex = config_of(runs, "p2_examples", "p2_ex4_3-rmt-s0")
    assert ex["pruning"]["schedule"] == "constant" and ex["pruning"]["keep_fraction"] == 0.55 and ex["pruning"]["every"] == 3
    assert ex["pruning"]["gof_threshold"] == 0.15 and ex["model"]["hidden"] == [3000, 3000, 500] and ex["train"]["epochs"] == 90
    fig3 = config_of(runs, "p1_fig3", "fig3b-rmt-s0")
    assert fig3["model"]["hidden"] == [2000, 2000, 2000, 2000, 1000, 500]


def test_p2_examples_prune_every_third_epoch(runs):
    m = pd.read_csv(runs / "p2_examples" / "smoke" / "p2_ex4_3-rmt-s0" / "metrics.csv")
    assert list(m["keep_fraction"]) == [1.0, 1.0, 0.55]


@pytest.mark.parametrize("command,experiment,outputs", [
    ("p1-var", "p1_var", ["p1_var.png"]),
    ("p1-ablation", "p1_fmnist_ablation", ["p1_ablation.png"]),
    ("p2-examples", "p2_examples", ["p2_examples.png", "p2_parameter_table.md"]),
    ("p3-rand", "p3_rand", ["p3_rand.png", "p3_rand_monotonicity.csv"]),
    ("p1-fig3", "p1_fig3", ["p1_fig3.png"]),
])
def test_figures_draw_from_smoke_runs(runs, tmp_path, command, experiment, outputs):
    assert analysis_main([command, "--runs", str(runs / experiment / "smoke"), "--out", str(tmp_path)]) == 0
    for name in outputs:
        assert (tmp_path / name).stat().st_size > 100


def test_p1_var_reports_std_over_seeds(runs, tmp_path):
    analysis_main(["p1-var", "--runs", str(runs / "p1_var" / "smoke"), "--out", str(tmp_path)])
    values = pd.read_csv(tmp_path / "p1_var.csv")
    assert set(values["n_runs"]) == {2}
    last = values[values["epoch"] == values["epoch"].max()].set_index("series")
    for arm in ("normal", "rmt"):  # two seeds: mean (a + b) / 2, population std |a - b| / 2
        a, b = (json.loads((runs / "p1_var" / "smoke" / f"{arm}-s{seed}" / "summary.json").read_text())["final_test_acc"]
                for seed in (0, 1))
        assert last.loc[arm, "test_acc_mean"] == pytest.approx((a + b) / 2)
        assert last.loc[arm, "test_acc_std"] == pytest.approx(abs(a - b) / 2)


def test_p3_randomness_verdicts_are_measured(runs, tmp_path):
    analysis_main(["p3-rand", "--runs", str(runs / "p3_rand" / "smoke"), "--out", str(tmp_path)])
    table = pd.read_csv(tmp_path / "p3_rand_monotonicity.csv")
    assert set(table["series"]) == {"none", "l2_strong"}
    assert set(table["metric"]) == {"sigma_plus", "bulk_fraction", "r_norm", "r_ratio"}
    layers = pd.read_csv(runs / "p3_rand" / "smoke" / "l2_strong-s0" / "layers.csv", dtype={"layer": str})
    row = table[(table["series"] == "l2_strong") & (table["metric"] == "sigma_plus")].iloc[0]
    values = layers[layers["layer"] == str(row["layer"])].sort_values("epoch")["sigma_plus"]
    assert (row["first"], row["last"]) == pytest.approx((values.iloc[0], values.iloc[-1]))


def test_randomness_verdict_on_known_trends():
    from analysis.randomness import monotonicity_table

    trends = {"down": [3.0, 2.0, 1.5, 1.0], "up": [1.0, 2.0, 3.0, 4.0], "dips_at_the_end": [3.0, 5.0, 4.0, 2.9]}
    df = pd.DataFrame([{"series": "s", "layer": name, "epoch": e + 1, "sigma_plus": v, "bulk_fraction": v, "r_norm": v,
                        "r_ratio": v} for name, values in trends.items() for e, v in enumerate(values)])
    table = monotonicity_table(df)[lambda t: t["metric"] == "sigma_plus"].set_index("layer")
    assert table.loc["down", "decreased"] and table.loc["down", "spearman_rho_vs_epoch"] == pytest.approx(-1.0)
    assert not table.loc["up", "decreased"]
    assert not table.loc["dips_at_the_end", "decreased"]  # last < first, but rho = -0.2: not a decrease over training
    assert table.loc["dips_at_the_end", "share_of_steps_decreasing"] == pytest.approx(2 / 3)


def test_p3_loss_sweeps(runs, tmp_path):
    cfg = compose_named("randomness_removal", f"source_run={runs}/p3_rand/smoke/l2_strong-s0", f"run_dir={tmp_path}/loss",
                        "thetas=[0.0,0.5,1.0]", "epsilons=[0.0,0.01]", "noise_draws=1")
    summary = randomness_removal.run(cfg)
    theta = pd.read_csv(tmp_path / "loss" / "theta_sweep.csv")
    assert len(theta) == 3 * 2 and set(theta["split"]) == {"train", "test"}
    assert summary["lambda_l2"] == 1e-4
    train_rows = theta[theta["split"] == "train"].sort_values("removed")
    assert summary["train"]["reg_loss_vs_removed"] == randomness_removal.trend(train_rows["reg_loss"].to_numpy())
    # S_hat and R_hat are orthogonal, so the L2 term is lam (|S_hat|^2 + theta^2 |R_hat|^2): quadratic in theta.
    penalty = (train_rows["reg_loss"] - train_rows["ce"]).to_numpy()[::-1]  # theta = 0, 0.5, 1
    assert penalty[2] > penalty[0] and penalty[1] - penalty[0] == pytest.approx(0.25 * (penalty[2] - penalty[0]), rel=1e-6)
    assert randomness_removal.trend([1, 2, 2]) == "increasing" and randomness_removal.trend([3, 1]) == "decreasing"
    assert randomness_removal.trend([1, 3, 2, 4]) == "not monotone (2 of 3 steps up)"
    at_one = theta[(theta["theta"] == 1.0) & (theta["split"] == "test")].iloc[0]
    final_test = json.loads((runs / "p3_rand" / "smoke" / "l2_strong-s0" / "summary.json").read_text())["final_test_acc"]
    assert at_one["acc"] == pytest.approx(final_test)  # theta = 1 is the trained net itself
    assert analysis_main(["p3-loss", "--run", str(tmp_path / "loss"), "--out", str(tmp_path)]) == 0


def test_schedules_and_lr():
    keep = OmegaConf.create({"schedule": "linear", "keep_fraction": 0.55})
    assert train.keep_fraction(30, keep, 60) == 0.5 and train.keep_fraction(90, keep, 60) == 0.0
    keep.schedule = "constant"
    assert train.keep_fraction(30, keep, 60) == 0.55
    keep.schedule = "cosine"
    with pytest.raises(ValueError, match="schedule"):
        train.keep_fraction(1, keep, 60)
    optim = OmegaConf.create({"lr": 0.01, "lr_decay": 0.5, "decay_every": 4})
    assert [train.learning_rate(e, optim) for e in (1, 4, 5, 9)] == [0.01, 0.01, 0.005, 0.0025]


def test_magnitude_sweep_thresholds_and_counts(runs, tmp_path):
    from experiments import magnitude_sweep

    src = runs / "p1_var" / "smoke"
    cfg = compose_named("magnitude_sweep", f"normal_run={src}/normal-s0", f"rmt_run={src}/rmt-s0", "k_max=5", f"run_dir={tmp_path}/mag")
    summary = magnitude_sweep.run(cfg)
    df = pd.read_csv(tmp_path / "mag" / "magnitude_sweep.csv")
    assert list(df[df["arm"] == "normal"]["threshold"]) == pytest.approx([1, 1 / 2, 1 / 3, 1 / 4, 1 / 5])
    for arm, g in df.groupby("arm"):
        assert g["nonzero_params"].is_monotonic_increasing and g["nonzero_params"].max() <= summary[arm]["params"]
    assert analysis_main(["p1-mag", "--run", str(tmp_path / "mag"), "--out", str(tmp_path)]) == 0


def test_p1_cnn_prunes_conv_layers_at_scaled_epochs(tmp_path, data_root):
    cfg = compose_named("train", "experiment=p1_cnn", "arm=rmt", "profile=smoke", "logger=local", "progress=false",
                        f"paths.runs_dir={tmp_path}", f"paths.data_dir={data_root}")
    settings = train.effective_settings(cfg)
    assert settings["prune_epochs"] == [1, 2] and settings["model"]["input_shape"] == [1, 28, 28]
    summary = train.run(cfg)
    assert summary["topology_start"][0] == settings["model"]["channels"][-1] * 3 * 3
    from torch import nn

    from rmt.models import build_model, linear_topology

    convs = {n: m for n, m in build_model(**settings["model"]).named_modules() if isinstance(m, nn.Conv2d)}
    layers = pd.read_csv(Path(cfg.run_dir) / "layers.csv", dtype={"layer": str})
    first = layers[layers["epoch"] == 1].set_index("layer")
    assert len(convs) == 5
    for name, conv in convs.items():  # fitted through the unfolded out x (in * 3 * 3) matrix
        assert (first.loc[name, "out"], first.loc[name, "fan_in"]) == (conv.out_channels, conv.in_channels * 9)
    paper = train.effective_settings(compose_named("train", "experiment=p1_cnn", "profile=paper"))
    assert paper["prune_epochs"] == [11, 22] and paper["model"]["channels"] == [32, 64, 128, 256, 512]
    assert linear_topology(build_model(**paper["model"])) == [4608, 1000, 10]


def test_confidence_bound_on_width_sweep(tmp_path, data_root):
    for width in (32, 64):
        cfg = compose_named("train", "experiment=p1_confidence", f"model.hidden=[{width},{width}]", "profile=smoke",
                            "profile.width_scale=1.0", "logger=local", "progress=false", f"paths.runs_dir={tmp_path}",
                            f"paths.data_dir={data_root}")
        train.run(cfg)
    table = confidence_bound.run(compose_named("confidence_bound", f"runs={tmp_path}/p1_confidence/smoke", f"run_dir={tmp_path}/cb"))
    assert list(table["N"]) == [32, 64]
    # On these nets the bound is loose (changes ~2 % of tau): it holds for every input, and no input is confident.
    assert (table["bound_held"] == 1.0).all() and (table["median_change_over_tau"] < 0.2).all()
    assert (table["n_inputs"] == 256).all() and (table["acc_before"] > 0.2).all()
    assert analysis_main(["p1-confidence", "--run", str(tmp_path / "cb"), "--out", str(tmp_path)]) == 0


def test_lemma_tau_is_the_formula():
    w1 = torch.tensor([[3.0, 4.0], [0.0, 1.0]])  # N = 2 rows
    w3 = torch.tensor([[1.0, -2.0], [0.5, 0.5]])  # ||W3||_inf = 3
    s = torch.tensor([[1.0, 0.0], [0.0, 2.0]])  # ||W1 s||: 3, sqrt(64 + 4)
    expected = 2 * math.sqrt(2) * 3 * torch.tensor([3.0, math.sqrt(68)]) * math.sqrt(math.log(4) / 2)
    torch.testing.assert_close(confidence_bound.lemma_tau(w1, w3, s), expected)


def test_bound_check_flags_a_violated_bound_and_confident_flips():
    full = torch.tensor([[5.0, 0.0], [5.0, 0.0], [1.0, 0.9], [0.0, 3.0]])
    reduced = torch.tensor([[4.9, 0.0], [0.0, 5.0], [0.3, 1.0], [0.0, 3.0]])
    tau = torch.tensor([0.5, 0.5, 0.5, 0.5])
    out = confidence_bound.bound_check(full, reduced, tau, labels=torch.tensor([0, 0, 1, 1]))
    assert out["bound_held"] == 0.5  # input 1 changed by 5 > tau, input 2 by 0.7 (> tau, < 2 tau)
    assert out["label_flips"] == 2 and out["confident_inputs"] == 3 and out["flips_among_confident"] == 1
    assert out["acc_before"] == 0.75 and out["acc_after"] == 0.75
    assert confidence_bound.bound_check(full, reduced, torch.zeros(4), torch.zeros(4, dtype=torch.long))["bound_held"] == 0.25
