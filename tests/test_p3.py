"""P3's pruning cycles (rmt.p3, pruner p3_cycles) on small models, and the ViT pipeline end to end on the
100-image ImageNet sample: cycles -> baselines -> fine-tuning with frozen masks -> figure."""

import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from analysis.__main__ import main as analysis_main
from experiments import p3_prune, train
from experiments.data import DataUnavailableError
from rmt import p3
from rmt.models import WeightsUnavailableError, build_model
from rmt.pruners import PruneState, count_nonzero, make_pruner
from rmt.spectra import fit_layers, spectral_layers
from tests.conftest import compose_named

SAMPLE = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "imagenet-sample"
TINY_VIT = "model.kwargs={img_size:32,patch_size:8,depth:2,embed_dim:32,num_heads:2}"


def test_cycle_schedule_and_budget_formula():
    assert p3.cycle_target(1) == pytest.approx(0.0612) and p3.cycle_target(11) == pytest.approx(0.06 * 1.02**11)
    fit = type("Fit", (), {"gof": 0.2, "bulk_fraction": 0.9})()
    assert p3.mp_budget(fit, 3) == pytest.approx((0.8 * 0.9) ** 0.5)
    assert p3.budget_count(fit, 3, 1000) == math.floor((0.72**0.5) * 0.06 * 1.02**3 * 1000)


def test_prune_smallest_removes_exactly_count_nonzero_entries():
    w = torch.tensor([[0.0, -0.3, 0.1], [0.2, 0.0, -0.05]])
    mask = p3.prune_smallest(w, 2)
    assert torch.equal(w, torch.tensor([[0.0, -0.3, 0.0], [0.2, 0.0, 0.0]])) and int(mask.sum()) == 2
    assert int(p3.prune_smallest(w, 10).sum()) == 0  # never more than the non-zeros


def test_singular_vector_sparsification_thresholds():
    torch.manual_seed(0)
    w = torch.randn(40, 30)
    assert torch.allclose(p3.sparsify_singular_vectors(w, sigma_plus=5.0, theta=0.0), w, atol=1e-5)  # nothing zeroed
    assert p3.sparsify_singular_vectors(w, sigma_plus=5.0, theta=1e6).abs().max() == 0  # every entry below T_k


def test_p3_cycles_meet_budgets_keep_masks_and_count_nonzeros():
    torch.manual_seed(0)
    model = build_model("fc", hidden=[120, 80], input_shape=(100,), num_classes=10)
    pruner, state = make_pruner("p3_cycles", reg_steps=3, reg_steps_growth=1), PruneState()
    for i in (1, 2, 3):
        layers = spectral_layers(model)
        fits = fit_layers(layers, alpha=0.25, beta=0.8)
        before = {n: int(torch.count_nonzero(m.weight)) for n, m in layers}
        result = pruner(model, state, 1.0)
        for row in result.layers:  # the MP-modulated budget q r_i nnz, exactly
            assert row["removed"] == p3.budget_count(fits[row["layer"]], i, before[row["layer"]])
            assert int(torch.count_nonzero(model.get_submodule(row["layer"]).weight)) == before[row["layer"]] - row["removed"]
        assert state.cycle == i and result.layers[0]["reg_steps"] == 3 + (i - 1)
    for name, mask in state.masks.items():
        assert (model.get_parameter(name)[~mask] == 0).all()
    assert count_nonzero(model) == sum(int(p.count_nonzero()) for p in model.parameters())
    restored = PruneState.from_checkpoint(state.as_checkpoint())
    assert restored.cycle == 3 and restored.masks.keys() == state.masks.keys()



@pytest.mark.skipif(not SAMPLE.is_dir(), reason="needs ../shared/data/imagenet-sample")
def test_vit_pipeline_on_the_imagenet_sample(tmp_path, data_root):
    """data -> model -> cycles -> baselines -> fine-tune (mask frozen) -> eval -> figure, smoke scale."""
    runs = tmp_path / "runs"
    cfg = compose_named("p3_prune", "model.model_name=vit_tiny_patch16_224", TINY_VIT, f"data.root={SAMPLE}", "data.workers=0",
                        "profile=smoke", "profile.width_scale=1.0", "cycles=2", "baselines.sparsities=[0.1]", "baselines.structured_keep=[0.5]",
                        "baselines.latency_batch=[1,8]", "progress=false", f"paths.runs_dir={runs}", "eval_batch_size=50")
    summary = p3_prune.run(cfg)
    run_dir = Path(cfg.run_dir)
    cycles = pd.read_csv(run_dir / "metrics.csv")
    assert list(cycles["epoch"]) == [0, 1, 2] and cycles["reduction"].is_monotonic_increasing
    assert summary["test_examples"] == 100 and {"top1", "top5", "nonzero"} <= set(cycles.columns)
    base = pd.read_csv(run_dir / "baselines.csv")
    assert set(base["method"]) == {"dense", "p3_cycles", "global_magnitude", "layer_magnitude", "structured_mp"}
    matched = base[base["target"] == 0.1].set_index("method")["nonzero"]
    assert abs(matched["global_magnitude"] - matched["p3_cycles"]) <= 1  # the same non-zeros
    layers = pd.read_csv(run_dir / "layers.csv")
    assert {"sigma_plus", "gof", "bulk_fraction", "q", "removed", "nonzero"} <= set(layers.columns)

    ft = compose_named("train", "experiment=p3_vit_ft", f"prune={run_dir.relative_to(runs)}", "start=p3-10",
                       f"data.root={SAMPLE}", "data.train_split=val", "data.workers=0", "profile=smoke",
                       "train.epochs=100", "train.batch_size=25", "logger=local", "progress=false", f"paths.runs_dir={runs}")
    ft_summary = train.run(ft)
    start = torch.load(run_dir / "checkpoints" / "p3-10.pt", weights_only=True)
    end = torch.load(Path(ft.run_dir) / "checkpoint.pt", weights_only=True)
    for name, mask in start["masks"].items():  # fine-tuning kept every pruned entry at 0
        assert (end["model"][name][~mask] == 0).all() and not torch.equal(end["model"][name], start["model"][name])
    assert ft_summary["nonzero_final"] <= sum(int(m.sum()) for m in start["masks"].values()) + sum(
        v.numel() for k, v in start["model"].items() if k not in start["masks"])
    out = tmp_path / "fig"
    assert analysis_main(["p3-vit", "--run", str(run_dir), "--ft-runs", str(Path(ft.run_dir).parent), "--out", str(out)]) == 0
    table = pd.read_csv(out / "p3_vit.csv")
    assert table.loc[table["start"] == "p3-10", "top1_ft"].notna().all()
    assert (out / "p3_vit.png").stat().st_size > 1000 and (out / "p3_vit_verdict.md").exists()


def test_imagenet_targets_fail_at_once_without_weights_or_data(tmp_path, monkeypatch):
    import rmt.models

    monkeypatch.setattr(rmt.models, "_pretrained_reachable", lambda name, timeout_s=3.0: False)
    cfg = compose_named("p3_prune", "experiment=p3_vitb", f"paths.runs_dir={tmp_path}", "progress=false")
    with pytest.raises(WeightsUnavailableError, match="model.checkpoint=.*HF_HOME"):
        p3_prune.run(cfg)
    cfg = compose_named("p3_prune", "experiment=p3_vitb", "model.pretrained=false", "model.model_name=vit_tiny_patch16_224",
                        TINY_VIT, f"data.root={tmp_path / 'imagenet'}", f"paths.runs_dir={tmp_path}", "progress=false")
    with pytest.raises(DataUnavailableError, match=r"(?s)no ImageNet split 'val'.*IMAGENET_ROOT"):
        p3_prune.run(cfg)
    assert not list(tmp_path.rglob("*.pt"))  # nothing half-made
