"""P4 end to end on the smoke profile: L1 training -> magnitude curve, SLQ spectrum, predicted limit, MP view ->
records (stages reused on a re-run) -> figure and table."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch

from analysis.__main__ import main as analysis_main
from experiments import p4_limit, train
from experiments.errors import RunConfigError
from rmt.limit import actual_limit
from tests.conftest import compose_named


@pytest.fixture
def trained_fc5(tmp_path, data_root):
    runs = tmp_path / "runs"
    cfg = compose_named("train", "experiment=p4", "profile=smoke", f"paths.runs_dir={runs}", f"paths.data_dir={data_root}",
                        "logger=local", "progress=false")
    assert cfg.reg.l1 == 5e-5 and cfg.reg.l2 == 0 and cfg.optim.lr_decay == 1.0 and cfg.model.init == "kaiming_normal"
    train.run(cfg)
    return runs, data_root


def limit_cfg(runs: Path, data_root: Path, *overrides: str):
    return compose_named("p4_limit", "profile_name=smoke", f"paths.runs_dir={runs}", f"paths.data_dir={data_root}",
                         "progress=false", "ratio_steps=200", "lanczos.steps=24", *overrides)


def test_p4_limit_pipeline_records_figure_and_reuse(trained_fc5, tmp_path):
    runs, data_root = trained_fc5
    cfg = limit_cfg(runs, data_root)
    summary = p4_limit.run(cfg)
    run_dir = Path(cfg.run_dir)
    curve = pd.read_csv(run_dir / "curve.csv")
    assert len(curve) == 200 and curve["ratio"].iloc[1] == 0.005
    assert curve["test_acc"].iloc[0] == pytest.approx(summary["dense_test_acc"])  # p = 0 is the dense net
    assert curve["pruned_norm"].is_monotonic_increasing and curve["width_ratio"].is_monotonic_decreasing
    assert summary["actual_limit_ge"] == actual_limit(curve["ratio"], curve["test_acc"], summary["dense_test_acc"])
    p = summary["predicted_limit"]
    # The fixed point: at p*, p >= gw(R(p)); just below it, p < gw.
    below, above = curve[curve["ratio"] < p - 0.01], curve[curve["ratio"] > p + 0.01]
    assert 0 < p <= 1 and (below["ratio"] < below["width_ratio"]).all() and (above["ratio"] >= above["width_ratio"]).all()
    assert summary["acc_at_predicted"] == curve.iloc[(curve["ratio"] - p).abs().argmin()]["test_acc"]
    spectrum = pd.read_csv(run_dir / "spectrum.csv")
    assert len(spectrum) == 24 and spectrum["weight"].sum() == pytest.approx(1.0)
    assert summary["hessian_dim"] == summary["weights"] and summary["hvps"] == 24
    layers = pd.read_csv(run_dir / "layers.csv")
    assert {"bulk_fraction", "params", "params_after"} <= set(layers.columns) and len(layers) == 5
    assert 0 < summary["mp_ratio"] < 1 and 0 <= summary["mp_pruned_test_acc"] <= 1
    assert summary["reused_stages"] == []

    again = p4_limit.run(cfg)  # a repeated run reuses the curve and the spectrum
    assert again["reused_stages"] == ["curve.csv", "spectrum.csv"] and again["predicted_limit"] == p
    whole = (run_dir / "curve.csv").read_bytes()
    (run_dir / "curve.csv").write_bytes(whole[: len(whole) // 3])  # what a kill during an in-place rewrite leaves
    repaired = p4_limit.run(cfg)
    assert repaired["reused_stages"] == ["spectrum.csv"] and repaired["actual_limit_ge"] == summary["actual_limit_ge"]
    assert len(pd.read_csv(run_dir / "curve.csv")) == 200
    with pytest.raises(RunConfigError, match="holds a train run; a p4_limit run does not write into it"):
        p4_limit.run(limit_cfg(runs, data_root, f"run_dir={cfg.source_run}"))  # its own source run as output
    assert json.loads((Path(cfg.source_run) / "summary.json").read_text())["epochs"] > 0  # untouched
    changed = p4_limit.run(limit_cfg(runs, data_root, "lanczos.steps=12"))
    assert changed["reused_stages"] == ["curve.csv"] and changed["hvps"] == 12
    # Other weights under the same run folder (e.g. the source retrained): nothing is reused.
    ckpt_path = Path(cfg.source_run) / "checkpoint.pt"
    ckpt = torch.load(ckpt_path, weights_only=True)
    ckpt["model"]["1.weight"] *= 0.5
    torch.save(ckpt, ckpt_path)
    changed = p4_limit.run(limit_cfg(runs, data_root, "lanczos.steps=12"))
    assert changed["reused_stages"] == [] and pd.read_csv(run_dir / "curve.csv")["test_acc"].iloc[0] == changed["dense_test_acc"]

    out = tmp_path / "fig"
    assert analysis_main(["p4", "--runs", str(run_dir.parent), "--out", str(out)]) == 0
    table = pd.read_csv(out / "p4_limit_table.csv")
    assert table.loc[0, "predicted p*"] == round(changed["predicted_limit"], 4)
    assert (out / "p4_limit.png").stat().st_size > 1000 and (out / "p4_limit_table.md").exists()


def test_a_run_killed_in_the_lanczos_stage_resumes_after_its_last_product(trained_fc5, monkeypatch):
    runs, data_root = trained_fc5
    reference = p4_limit.run(limit_cfg(runs, data_root, "ratio_steps=20", "run_name=reference"))
    cfg = limit_cfg(runs, data_root, "ratio_steps=20", "lanczos_commit_s=0")  # every step made durable
    real_operator, products = p4_limit.loss_hessian_operator, []

    def killed_after_ten(*args, **kwargs):
        matvec, dim = real_operator(*args, **kwargs)

        def dying(v):
            if len(products) == 10:
                raise KeyboardInterrupt  # stands for the kill
            products.append(1)
            return matvec(v)
        return dying, dim

    monkeypatch.setattr(p4_limit, "loss_hessian_operator", killed_after_ten)
    with pytest.raises(KeyboardInterrupt):
        p4_limit.run(cfg)
    monkeypatch.undo()
    run_dir = Path(cfg.run_dir)
    assert len(list(run_dir.glob(".spectrum.csv.*.partial"))) == 1 and not (run_dir / "summary.json").exists()
    resumed = p4_limit.run(cfg)
    assert resumed["reused_stages"] == ["curve.csv"] and resumed["hvps"] == 24 and resumed["slq_s"] > 0
    assert (run_dir / "spectrum.csv").read_bytes() == (run_dir.parent / "reference" / "spectrum.csv").read_bytes()
    assert resumed["predicted_limit"] == reference["predicted_limit"]
    assert not list(run_dir.glob(".*.partial"))  # the stage's progress folder goes once the stage is written


def test_all_parameters_hessian_and_bad_settings(trained_fc5):
    runs, data_root = trained_fc5
    summary = p4_limit.run(limit_cfg(runs, data_root, "hessian_params=all", "ratio_steps=10", "lanczos.steps=4"))
    assert summary["hessian_dim"] == summary["params"] > summary["weights"]
    with pytest.raises(RunConfigError, match="hessian_params"):
        p4_limit.run(limit_cfg(runs, data_root, "hessian_params=biases", "ratio_steps=10"))
    with pytest.raises(RunConfigError, match="loss_batch_size"):  # one batch: no spread of batch losses
        p4_limit.run(limit_cfg(runs, data_root, "loss_batch_size=100000", "ratio_steps=10"))
    with pytest.raises(FileNotFoundError, match="not a run folder"):
        p4_limit.run(limit_cfg(runs, data_root, "net=fc99"))


def test_p4_nets_have_the_papers_shapes():
    cfg = compose_named("train", "experiment=p4", "model=fc12", "data=fashion_mnist")
    assert list(cfg.model.hidden) == [1000, 900, 800, 750, 700, 650, 600, 500, 400, 200, 100]
    assert cfg.run_name == "fc12-fashion_mnist-s0"
    fc5 = compose_named("train", "experiment=p4")
    assert list(fc5.model.hidden) == [1000, 600, 300, 100] and fc5.train.epochs == 200
    from rmt.models import build_model

    torch.manual_seed(0)
    net = build_model(kind="fc", hidden=[1000], input_shape=[1, 28, 28], num_classes=10, init="kaiming_normal")
    assert net[1].weight.std().item() == pytest.approx((2 / 784) ** 0.5, rel=0.02) and (net[1].bias == 0).all()


def test_limit_of_another_experiments_net_is_labelled_by_its_own_model(tmp_path, data_root):
    source = train.run(compose_named("train", "experiment=fig1", "panel=fig1b", "arm=normal", "profile=smoke",
                                     f"paths.runs_dir={tmp_path}", f"paths.data_dir={data_root}", "logger=local", "progress=false"))
    run_dir = tmp_path / "fig1" / "smoke" / "fig1b-normal-s0"
    assert source["final_test_acc"] > 0
    summary = p4_limit.run(limit_cfg(tmp_path, data_root, f"source_run={run_dir}", "run_name=from-fig1"))
    assert summary["net"] == "fc"  # the fig1 net's own model name, not the config's default fc5
