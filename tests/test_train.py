"""The training runner on the smoke profile: records, identical arms at init, resume, bad checkpoints, W&B failures."""

import json
import sys
import types
from pathlib import Path

import pandas as pd
import pytest
import torch

import experiments.train as train
from experiments.records import resolve_wandb_mode
from rmt.models import build_model
from rmt.prune import apply_splits

SMOKE = ("profile=smoke", "profile.epoch_scale=0.04")  # 4 epochs


def metrics(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "metrics.csv").drop(columns=["time_s"])


def test_smoke_run_writes_complete_record(compose_cfg):
    cfg = compose_cfg(*SMOKE, "arm=rmt")
    summary = train.run(cfg)
    run_dir = Path(cfg.run_dir)
    for name in ("config.yaml", "env.json", "metrics.csv", "metrics.jsonl", "layers.csv", "summary.json", "checkpoint.pt"):
        assert (run_dir / name).exists(), name
    df = metrics(run_dir)
    assert list(df["epoch"]) == [1, 2, 3, 4]
    assert df["params"].is_monotonic_decreasing and summary["params_final"] < summary["params_start"]
    layers = pd.read_csv(run_dir / "layers.csv")
    assert {"layer", "rank", "sigma_plus", "bulk_fraction", "gof", "split"} <= set(layers.columns)
    env = json.loads((run_dir / "env.json").read_text())
    assert env["packages"]["torch"] and "device" in env
    assert "effective" in (run_dir / "config.yaml").read_text()


def test_arms_start_from_identical_weights(compose_cfg):
    sizes = train.effective_settings(compose_cfg(*SMOKE))["sizes"]
    states = []
    for arm in ("normal", "rmt"):
        cfg = compose_cfg(*SMOKE, f"arm={arm}")
        torch.manual_seed(cfg.seed)
        states.append(build_model("fc", sizes=sizes).state_dict())
    for k in states[0]:
        assert torch.equal(states[0][k], states[1][k])


def test_interrupted_run_resumes_to_identical_numbers(compose_cfg, monkeypatch):
    full = compose_cfg(*SMOKE, "arm=rmt", "name=full")
    train.run(full)

    cfg = compose_cfg(*SMOKE, "arm=rmt", "name=crashy")
    real_evaluate, calls = train.evaluate, {"n": 0}

    def crash_on_third(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt("simulated crash in epoch 3")
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(train, "evaluate", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        train.run(cfg)
    assert list(metrics(Path(cfg.run_dir))["epoch"]) == [1, 2]
    monkeypatch.setattr(train, "evaluate", real_evaluate)
    summary = train.run(cfg)
    pd.testing.assert_frame_equal(metrics(Path(cfg.run_dir)), metrics(Path(full.run_dir)))
    assert summary["final_test_acc"] == json.loads((Path(full.run_dir) / "summary.json").read_text())["final_test_acc"]


def test_checkpoint_loads_weights_only_and_rebuilds_split_model(compose_cfg):
    cfg = compose_cfg(*SMOKE, "arm=rmt")
    train.run(cfg)
    ckpt = torch.load(Path(cfg.run_dir) / "checkpoint.pt", weights_only=True)
    assert ckpt["splits"]
    model = apply_splits(build_model("fc", sizes=train.effective_settings(cfg)["sizes"]), [tuple(s) for s in ckpt["splits"]])
    model.load_state_dict(ckpt["model"])


def test_corrupt_checkpoint_falls_back_then_fails_clearly(compose_cfg):
    cfg = compose_cfg(*SMOKE, "arm=rmt")
    train.run(cfg)
    run_dir = Path(cfg.run_dir)
    (run_dir / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert train.load_checkpoint(run_dir)["epoch"] == 3  # the previous one
    (run_dir / "checkpoint.prev.pt").write_bytes(b"junk")
    with pytest.raises(RuntimeError, match="no readable checkpoint.*Delete"):
        train.load_checkpoint(run_dir)


def test_changed_settings_in_same_run_dir_are_refused(compose_cfg):
    cfg = compose_cfg(*SMOKE)
    train.run(cfg)
    layers = pd.read_csv(Path(cfg.run_dir) / "layers.csv")  # normal arm: statistics only, full rank
    assert layers["accepted"].isna().all() and not layers["split"].any()
    assert (layers["rank"] == layers[["out", "fan_in"]].min(axis=1)).all()
    with pytest.raises(train.RunConfigError, match="different settings"):
        train.run(compose_cfg(*SMOKE, "optim.lr=0.5"))


def test_bad_arm_is_a_clear_error(compose_cfg):
    with pytest.raises(ValueError, match="arm must be one of"):
        train.run(compose_cfg(*SMOKE, "arm=pruned"))


class FlakyWandb(types.ModuleType):
    """A wandb stand-in whose init works and whose log raises."""

    def __init__(self):
        super().__init__("wandb")

    def init(self, **kwargs):
        def log(*a, **k):
            raise ConnectionError("W&B is down")

        return types.SimpleNamespace(log=log, summary={}, finish=lambda: None)


def test_wandb_failure_never_loses_the_local_record(compose_cfg, monkeypatch):
    monkeypatch.setitem(sys.modules, "wandb", FlakyWandb())
    cfg = compose_cfg(*SMOKE, "logger=offline")
    with pytest.warns(UserWarning, match="W&B mirroring disabled"):
        summary = train.run(cfg)
    assert list(metrics(Path(cfg.run_dir))["epoch"]) == [1, 2, 3, 4]
    assert summary["final_test_acc"] > 0


def test_wandb_auto_mode_is_offline_without_credentials(monkeypatch, tmp_path):
    monkeypatch.delenv("WANDB_API_KEY", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    assert resolve_wandb_mode("auto") == "offline"
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    assert resolve_wandb_mode("auto") == "online"
    assert resolve_wandb_mode("disabled") == "disabled"
    with pytest.raises(ValueError, match="logger.mode"):
        resolve_wandb_mode("sometimes")
