"""The P1 CNN magnitude sweep (conv kernels thresholded, P1 CNN thresholds), its figure, and the rules of the P1 CNN
magnitude sweep, the CNN authors'-schedule variant and the ablation authors'-baseline variant."""

import json
from pathlib import Path

import pandas as pd
import pytest
import torch
import yaml
from torch import nn

from analysis.__main__ import main as analysis_main
from analysis.p1_mag import measure_mag_sweep, measure_p1_cnn_mag, threshold_label
from analysis.p1_variants import (ABLATION_RUNS, CNN_RUNS, baseline_text, measure_p1_ablation_authors_baseline,
                                  measure_p1_cnn_authors_schedule, split_limit)
from analysis.runs import export_records
from analysis.verdicts import NOT_REPRODUCED, NOT_RUN, PARTLY, REPRODUCED
from experiments import magnitude_sweep, train
from experiments.checkpoints import load_checkpoint
from experiments.errors import RunConfigError
from experiments.validation import MAGNITUDE_SWEEP_RULES, check_config
from rmt.models import model_from_checkpoint
from rmt.pruners import PruneState, make_pruner
from tests.conftest import compose_named


@pytest.fixture(scope="module")
def cnn_run(tmp_path_factory, data_root):
    """One smoke-profile P1 CNN run, cut to 1 epoch on 512 Fashion-MNIST images."""
    root = tmp_path_factory.mktemp("cnn")
    cfg = compose_named("train", "experiment=p1_cnn", "arm=normal", "profile=smoke", "logger=local", "progress=false",
                        "log_spectra=false", "train.epochs=1", "profile.min_epochs=1", f"paths.runs_dir={root}", f"paths.data_dir={data_root}")
    train.run(cfg)
    return Path(cfg.run_dir)


def test_magnitude_sweep_thresholds_conv_kernels(cnn_run, tmp_path):
    out = tmp_path / "runs" / "p1_mag" / "quick" / "cnn"
    cfg = compose_named("magnitude_sweep", f"normal_run={cnn_run}", f"rmt_run={cnn_run}", "k_max=4", "threshold_scale=20",
                        f"run_dir={out}")
    magnitude_sweep.run(cfg)
    df = pd.read_csv(out / "magnitude_sweep.csv")
    normal = df[df["arm"] == "normal"]
    assert list(normal["threshold"]) == pytest.approx([1 / 20, 1 / 40, 1 / 60, 1 / 80])
    assert threshold_label(df) == "1/(20(1+k)), k < 4"
    model = model_from_checkpoint(load_checkpoint(cnn_run))
    weights = {id(m.weight) for m in model.modules() if isinstance(m, (nn.Linear, nn.Conv2d))}
    conv_small = sum(int((m.weight.abs() < 1 / 20).sum()) for m in model.modules() if isinstance(m, nn.Conv2d))
    assert conv_small > 0  # the sweep point below must count zeroed conv kernel entries
    for row in normal.itertuples():  # every Linear and Conv2d weight entry below the threshold is zeroed, nothing else
        expected = sum(int((p.abs() >= row.threshold).sum()) if id(p) in weights else int(torch.count_nonzero(p))
                       for p in model.parameters())
        assert row.nonzero_params == expected
    assert analysis_main(["p1-mag", "--run", str(out), "--out", str(tmp_path / "fig")]) == 0
    assert (tmp_path / "fig" / "p1_mag_cnn.png").stat().st_size > 100 and not (tmp_path / "fig" / "p1_mag.png").exists()
    export_records(tmp_path / "runs", tmp_path / "results")
    outcome = measure_p1_cnn_mag(tmp_path / "results")
    assert outcome.verdict in (REPRODUCED, PARTLY, NOT_REPRODUCED) and "1/(20(1+k))" in outcome.numbers
    assert measure_p1_cnn_mag(tmp_path / "nothing").verdict == NOT_RUN
    with pytest.raises(RunConfigError, match="threshold_scale"):
        check_config(compose_named("magnitude_sweep", "threshold_scale=0"), MAGNITUDE_SWEEP_RULES)


def write_sweep(run_dir: Path, mp_counts: list[int], dense: float = 0.90) -> Path:
    """A magnitude-sweep record: magnitude alone keeps 0.90 down to 1000 non-zeros, MP + magnitude down to mp_counts[-1]."""
    run_dir.mkdir(parents=True)
    mag = [(1000 * 2 ** (3 - k), 0.90 if k <= 3 else 0.5) for k in range(6)]     # 8000, 4000, 2000, 1000 kept, then 500
    rows = [{"arm": "normal", "k": k, "threshold": 0.05 / (k + 1), "nonzero_params": n, "test_acc": a}
            for k, (n, a) in enumerate(reversed(mag))]
    rows += [{"arm": "rmt", "k": k, "threshold": 0.05 / (k + 1), "nonzero_params": n, "test_acc": 0.90}
             for k, n in enumerate(sorted(mp_counts))]
    pd.DataFrame(rows).to_csv(run_dir / "magnitude_sweep.csv", index=False)
    (run_dir / "summary.json").write_text(json.dumps({arm: {"params": 9000, "test_acc": dense} for arm in ("normal", "rmt")}))
    return run_dir


@pytest.mark.parametrize("mp_counts,verdict", [([400, 4000], REPRODUCED), ([850, 4000], PARTLY), ([950, 4000], NOT_REPRODUCED)])
def test_mag_rule_compares_parameters_at_kept_accuracy(tmp_path, mp_counts, verdict):
    outcome = measure_mag_sweep(write_sweep(tmp_path / "cnn", mp_counts), "test nets")
    assert outcome.verdict == verdict and "≥ 89.00 %: magnitude alone 1,000 (11.1 %)" in outcome.numbers


def write_run(run_dir: Path, config: dict, summary: dict, metrics: list[dict], layers: list[dict] | None = None) -> None:
    run_dir.mkdir(parents=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(config))
    (run_dir / "summary.json").write_text(json.dumps(summary))
    pd.DataFrame(metrics).to_csv(run_dir / "metrics.csv", index=False)
    if layers is not None:
        pd.DataFrame(layers).to_csv(run_dir / "layers.csv", index=False)


def write_cnn_variant(results: Path, params_final: int, pruned_acc: float) -> None:
    config = {"effective": {"epochs": 30, "prune_epochs": [11, 22], "keep_horizon": 300.0, "model": {"channels": [16, 16]}},
              "profile": {"test_subset": None}, "data": {"num_classes": 10}}
    metrics = [{"epoch": e, "keep_fraction": 1 - e / 300 if e in (11, 22) else 1.0} for e in range(1, 31)]
    layers = [{"epoch": 22, "layer": "0", "out": 16, "fan_in": 9, "accepted": True, "rank": 8, "n_spikes": 1},
              {"epoch": 22, "layer": "4", "out": 10, "fan_in": 250, "accepted": True, "rank": 10, "n_spikes": 2}]
    for arm, params, acc in (("normal", 1000, 0.85), ("rmt", params_final, pruned_acc)):
        summary = {"final_test_acc": acc, "params_start": 1000, "params_final": params, "splits": [], "topology_start": [144, 10]}
        write_run(results / CNN_RUNS / f"{arm}-s0", config, summary, metrics, layers)


@pytest.mark.parametrize("params_final,acc,verdict", [(400, 0.85, REPRODUCED), (700, 0.845, PARTLY), (1000, 0.85, NOT_REPRODUCED),
                                                       (400, 0.83, NOT_REPRODUCED)])
def test_cnn_schedule_rule(tmp_path, params_final, acc, verdict):
    write_cnn_variant(tmp_path, params_final, acc)
    outcome = measure_p1_cnn_authors_schedule(tmp_path)
    assert outcome.verdict == verdict and "pruning after epochs 11, 22 (keep fraction 0.963, 0.927" in outcome.numbers
    assert outcome.facts["split_limit"] == "0.62"  # 16x9 with 1 spike splits at rank <= 5: f < 5/8; the output layer never
    assert measure_p1_cnn_authors_schedule(tmp_path / "nothing").verdict == NOT_RUN


def test_split_limit_and_the_authors_schedule_settings():
    assert split_limit(16, 9, 1) == pytest.approx(5 / 8) and split_limit(10, 250, 2, min_rank=10) == 0.0
    assert split_limit(250, 1152, 7) == pytest.approx(199 / 243)
    cfg = compose_named("train", "experiment=p1_cnn", "profile=quick", "profile.epoch_scale=1.0")
    settings = train.effective_settings(cfg)
    assert (settings["epochs"], settings["prune_epochs"], settings["keep_horizon"]) == (30, [11, 22], 300)
    assert settings["model"]["channels"] == [16, 16, 32, 64, 128]


def test_authors_baseline_arm_never_prunes_at_constant_lr():
    cfg = compose_named("train", "experiment=p1_fmnist_ablation", "profile=quick", "arm=normal", "pruning.method=mp_svd",
                        "pruning.gof_threshold=0", "pruning.every=1", "optim.lr_decay=1.0")
    assert cfg.arm == "normal" and cfg.series == f"normal+{cfg.reg.name}" and cfg.pruning.method == "mp_svd"
    assert {train.learning_rate(e, cfg.optim) for e in (1, 5, 20)} == {0.01}
    assert "never prunes; optimizer re-created every epoch" in baseline_text(yaml.safe_load(yaml.safe_dump(
        {"optim": dict(cfg.optim), "pruning": dict(cfg.pruning)})))
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(64, 48), nn.ReLU(), nn.Linear(48, 10))
    before = [p.clone() for p in model.parameters()]
    pruner = make_pruner("mp_svd", alpha=0.25, beta=0.1, gof_threshold=0.0)
    result = pruner(model, PruneState(), 0.0)  # keep fraction 0: would cut every accepted layer to its spikes
    assert not result.rebuilt and all(r["accepted"] is False for r in result.layers)
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters()))


def write_ablation(root: Path, finals: dict[str, float]) -> None:
    for series, acc in finals.items():
        arm, reg = series.split("+")
        config = {"optim": {"lr": 0.01, "lr_decay": 1.0 if arm == "normal" else 0.96, "decay_every": 4},
                  "pruning": {"method": "mp_svd", "gof_threshold": 0.0 if arm == "normal" else 1.0, "every": 1 if arm == "normal" else 4},
                  "profile": {"test_subset": None}, "effective": {"sizes": [784, 10], "epochs": 20}}
        write_run(root / f"{arm}-{reg}-s0", config, {"final_test_acc": acc, "final_train_acc": acc + 0.05}, [{"epoch": 1}])


@pytest.mark.parametrize("none,l1l2,verdict", [(0.70, 0.80, REPRODUCED), (0.88, 0.80, PARTLY), (0.91, 0.905, NOT_REPRODUCED)])
def test_ablation_baseline_rule(tmp_path, none, l1l2, verdict):
    finals = {"normal+none": none, "normal+l1l2": l1l2, "normal+l2": 0.85, "rmt+none": 0.85, "rmt+l1l2": 0.90, "rmt+l2": 0.89}
    write_ablation(tmp_path / ABLATION_RUNS, finals)
    outcome = measure_p1_ablation_authors_baseline(tmp_path)
    assert outcome.verdict == verdict and f"none {100 * none:.2f}" in outcome.numbers
    assert "non-MP arms at constant lr 0.01, GoF cutoff 0 (never prunes" in outcome.numbers
    assert measure_p1_ablation_authors_baseline(tmp_path / "nothing").verdict == NOT_RUN
    assert "against the corrected baselines" not in outcome.numbers
    write_ablation(tmp_path / "p1_fmnist_ablation" / "quick", {k: v - 0.01 for k, v in finals.items()})  # the main row's records
    outcome = measure_p1_ablation_authors_baseline(tmp_path)
    assert f"none {100 * none - 1:.2f} → {100 * none:.2f} (+1.00 pp)" in outcome.numbers
    assert outcome.facts["mp_rerun_drift"] == "+1.00, +1.00, +1.00"
    assert baseline_text({"optim": {"lr": 0.02, "lr_decay": 0.96, "decay_every": 1}, "pruning": {"method": "none"}}) == (
        "at lr 0.02 × 0.96 every 1 epochs, no pruning step (optimizer kept)")
