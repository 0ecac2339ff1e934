"""The training runner on the smoke profile: records, identical arms at init, resume, bad checkpoints, W&B failures."""

import json
import socket
import subprocess
import sys
import time
import types
from pathlib import Path

import pandas as pd
import pytest
import torch

import experiments.train as train
from experiments.records import PROBE_TIMEOUT_S, resolve_wandb_mode, server_unreachable
from hydra.errors import ConfigCompositionException

from rmt.models import WeightsUnavailableError, build_model, linear_topology, model_from_checkpoint
from rmt.prune import apply_splits
from rmt.spectra import spectral_layers

SMOKE = ("profile=smoke", "profile.epoch_scale=0.04")  # 4 epochs


def metrics(run_dir: Path) -> pd.DataFrame:
    return pd.read_csv(run_dir / "metrics.csv").drop(columns=["time_s"])


def crash_after_two_epochs(cfg, monkeypatch) -> None:
    """Run `cfg` until its third evaluation raises (a crash in epoch 3), leaving two epochs' checkpoint and record."""
    real_evaluate = train.evaluate

    def crash_on_third(*args, _calls=[0], **kwargs):
        _calls[0] += 1
        if _calls[0] == 3:
            raise KeyboardInterrupt("simulated crash in epoch 3")
        return real_evaluate(*args, **kwargs)

    monkeypatch.setattr(train, "evaluate", crash_on_third)
    with pytest.raises(KeyboardInterrupt):
        train.run(cfg)
    monkeypatch.setattr(train, "evaluate", real_evaluate)


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


def test_arms_start_from_identical_weights_and_only_rmt_prunes(compose_cfg):
    summaries = {arm: train.run(compose_cfg(*SMOKE, f"arm={arm}")) for arm in ("normal", "rmt")}
    other_seed = train.run(compose_cfg(*SMOKE, "arm=normal", "seed=1"))
    assert summaries["normal"]["init_digest"] == summaries["rmt"]["init_digest"] != other_seed["init_digest"]
    torch.manual_seed(0)  # the digest is of the weights the seed gives
    cfg = compose_cfg(*SMOKE)
    assert train.weights_digest(build_model(**train.effective_settings(cfg)["model"])) == summaries["normal"]["init_digest"]
    normal, rmt = summaries["normal"], summaries["rmt"]
    assert normal["params_final"] == normal["params_start"] and rmt["params_final"] < rmt["params_start"]
    layers = pd.read_csv(Path(compose_cfg(*SMOKE, "arm=rmt").run_dir) / "layers.csv")
    pruned = layers[layers["accepted"] == True]  # noqa: E712 (a column of True / False / NaN)
    full_rank, output = pruned[["out", "fan_in"]].min(axis=1), pruned["out"] == 10
    assert len(pruned[~output]) and (pruned["rank"] < full_rank)[~output].all()  # the rank it reports fell
    assert (pruned["rank"][output] == 10).all()  # the output layer is never cut below the number of classes


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
    assert ckpt["splits"] and ckpt["numerics"]["device"] == "cpu"
    model = apply_splits(build_model(**ckpt["model_spec"]), [tuple(s) for s in ckpt["splits"]])
    model.load_state_dict(ckpt["model"])
    rebuilt = model_from_checkpoint(ckpt)
    assert linear_topology(rebuilt) == json.loads((Path(cfg.run_dir) / "summary.json").read_text())["topology_final"]


def test_corrupt_checkpoint_falls_back_then_fails_clearly(compose_cfg):
    cfg = compose_cfg(*SMOKE, "arm=rmt")
    train.run(cfg)
    run_dir = Path(cfg.run_dir)
    (run_dir / "checkpoint.pt").write_bytes(b"not a checkpoint")
    assert train.load_checkpoint(run_dir)["epoch"] == 3  # the previous one
    (run_dir / "checkpoint.prev.pt").write_bytes(b"junk")
    with pytest.raises(RuntimeError, match="no readable checkpoint.*Delete"):
        train.load_checkpoint(run_dir)
    # From the command line: one error line with the advice, no traceback.
    done = subprocess.run([sys.executable, "-m", "experiments.train", *SMOKE, "arm=rmt", f"paths.runs_dir={cfg.paths.runs_dir}",
                           f"paths.data_dir={cfg.paths.data_dir}", "logger=local", "progress=false"],
                          cwd=Path(__file__).resolve().parent.parent, capture_output=True, text=True, timeout=120)
    errors = [line for line in done.stderr.splitlines() if line.startswith("error:")]
    assert done.returncode != 0 and "Traceback" not in done.stderr and len(errors) == 1
    assert "no readable checkpoint" in errors[0] and errors[0].endswith("or point to another run folder.")


def test_diverged_training_is_one_clear_error(compose_cfg):
    with pytest.raises(train.RunConfigError, match=r"training diverged in epoch 1 \(mean training loss nan at lr 1e\+30\)"):
        train.run(compose_cfg(*SMOKE, "optim.lr=1e30"))


def test_changed_settings_in_same_run_dir_are_refused(compose_cfg):
    cfg = compose_cfg(*SMOKE)
    train.run(cfg)
    layers = pd.read_csv(Path(cfg.run_dir) / "layers.csv")  # normal arm: statistics only, full rank
    assert layers["accepted"].isna().all() and not layers["split"].any()
    assert (layers["rank"] == layers[["out", "fan_in"]].min(axis=1)).all()
    with pytest.raises(train.RunConfigError, match="different settings"):
        train.run(compose_cfg(*SMOKE, "optim.lr=0.5"))


def test_bad_arm_is_a_clear_error(compose_cfg):
    with pytest.raises(ConfigCompositionException, match=r"(?s)arm/pruned.*magnitude\s+normal\s+rmt"):
        compose_cfg(*SMOKE, "arm=pruned")


def test_bad_device_is_a_clear_error(compose_cfg):
    with pytest.raises(train.RunConfigError, match="device must be"):
        train.run(compose_cfg(*SMOKE, "device=tpu"))
    if not torch.cuda.is_available():
        with pytest.raises(train.RunConfigError, match="no CUDA GPU"):
            train.run(compose_cfg(*SMOKE, "device=cuda"))


def test_resume_with_other_threads_is_refused_or_recorded(compose_cfg, monkeypatch):
    cfg = compose_cfg(*SMOKE, "arm=rmt", "threads=1")
    crash_after_two_epochs(cfg, monkeypatch)
    try:
        with pytest.raises(train.RunConfigError, match="threads.*allow_numerics_change"):
            train.run(compose_cfg(*SMOKE, "arm=rmt", "threads=2"))
        assert list(metrics(Path(cfg.run_dir))["epoch"]) == [1, 2]  # the refusal lost nothing
        train.run(compose_cfg(*SMOKE, "arm=rmt", "threads=2", "allow_numerics_change=true"))
    finally:
        torch.set_num_threads(2)
    env = json.loads((Path(cfg.run_dir) / "env.json").read_text())
    assert env["numerics"]["threads"] == 2 and env["started_after_epoch"] == 2
    assert [e["numerics"]["threads"] for e in env["earlier"]] == [1]


def test_global_magnitude_prunes_with_frozen_masks(compose_cfg):
    cfg = compose_cfg(*SMOKE, "arm=magnitude", "pruning.ratio=0.6", "pruning.schedule=constant", "pruning.keep_fraction=0.5",
                      "pruning.at_epochs=[50]")  # one step, after epoch 2 of 4 (scaled), zeroing 30 % of the weights
    summary = train.run(cfg)
    df = metrics(Path(cfg.run_dir))
    weights = sum(m.weight.numel() for _, m in spectral_layers(build_model(**train.effective_settings(cfg)["model"])))
    pruned = int(0.3 * weights)
    assert list(df["params"].unique()) == [summary["params_start"]]  # unstructured: no parameter removed
    assert (df[df["epoch"] < 2]["nonzero"] > summary["params_start"] - pruned).all()
    assert (df[df["epoch"] >= 2]["nonzero"] <= summary["params_start"] - pruned).all()
    assert list(df["keep_fraction"]) == [1.0, 0.5, 1.0, 1.0]
    ckpt = torch.load(Path(cfg.run_dir) / "checkpoint.pt", weights_only=True)
    assert sum(int((~m).sum()) for m in ckpt["masks"].values()) == pruned
    for name, mask in ckpt["masks"].items():  # two epochs of SGD with momentum later, pruned entries are still 0
        assert (ckpt["model"][name][~mask] == 0).all()
    layers = pd.read_csv(Path(cfg.run_dir) / "layers.csv")
    assert {"nonzero", "sparsity", "gof", "sigma_plus"} <= set(layers.columns)


class FlakyWandb(types.ModuleType):
    """A wandb stand-in whose init works and whose log raises."""

    def __init__(self):
        super().__init__("wandb")
        self.Settings = dict
        self.logged = 0

    def init(self, **kwargs):
        def log(*a, **k):
            self.logged += 1
            raise ConnectionError("W&B is down")

        return types.SimpleNamespace(log=log, summary={}, finish=lambda: None)


def test_wandb_failure_never_loses_the_local_record(compose_cfg, monkeypatch):
    flaky = FlakyWandb()
    monkeypatch.setitem(sys.modules, "wandb", flaky)
    cfg = compose_cfg(*SMOKE, "logger=offline")
    with pytest.warns(UserWarning, match="W&B mirroring disabled.*W&B is down"):
        summary = train.run(cfg)
    assert flaky.logged == 1  # the first failed log disabled the mirror
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


def test_unreachable_server_is_detected_within_the_probe_timeout(monkeypatch):
    def never_answers(address, timeout=None):
        time.sleep(3)  # far past the probe's timeout; then fails as a dead route would
        raise TimeoutError("timed out")

    monkeypatch.setattr(socket, "create_connection", never_answers)
    t0 = time.perf_counter()
    why = server_unreachable("https://api.wandb.ai", timeout=0.5)
    assert time.perf_counter() - t0 < 2 and why == "no answer from api.wandb.ai:443 within 0.5 s"
    assert PROBE_TIMEOUT_S <= 5  # the bound on the stall per run


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("logger", ["online", "auto"])
def test_api_key_without_route_falls_back_to_offline_and_keeps_the_record(compose_cfg, monkeypatch, capfd, logger):
    monkeypatch.setenv("WANDB_API_KEY", "x" * 40)
    monkeypatch.setenv("WANDB_BASE_URL", f"http://127.0.0.1:{_closed_port()}")
    monkeypatch.delenv("WANDB_MODE", raising=False)
    monkeypatch.delenv("WANDB_SILENT", raising=False)
    cfg = compose_cfg(*SMOKE, f"logger={logger}")
    t0 = time.perf_counter()
    train.run(cfg)
    run_dir = Path(cfg.run_dir)
    out, err = capfd.readouterr()
    assert "W&B: cannot reach http://127.0.0.1" in err and f"wandb sync {run_dir / 'wandb'}" in err
    assert "wandb:" not in out + err  # W&B's own console lines are silenced: one line of ours per run
    assert list(run_dir.glob("wandb/offline-run-*")) and (run_dir / "summary.json").exists()
    assert list(metrics(run_dir)["epoch"]) == [1, 2, 3, 4]
    assert time.perf_counter() - t0 < 60  # was ~100 s of retries before the fallback existed


SAMPLE = Path(__file__).resolve().parent.parent.parent / "shared" / "data" / "imagenet-sample"
TINY_VIT = ("model=timm", "model.model_name=vit_tiny_patch16_224",
            "model.kwargs={img_size:32,patch_size:8,depth:1,embed_dim:32,num_heads:2}")


@pytest.mark.skipif(not SAMPLE.is_dir(), reason="needs ../shared/data/imagenet-sample")
@pytest.mark.parametrize("arm", ["magnitude", "rmt"])
def test_timm_vit_on_imagenet_folder_end_to_end(compose_cfg, arm):
    cfg = compose_cfg(*SMOKE, "data=imagenet_folder", f"data.root={SAMPLE}", "data.train_split=val", "data.workers=0",
                      *TINY_VIT, f"arm={arm}", "train.batch_size=32")
    summary = train.run(cfg)
    df = metrics(Path(cfg.run_dir))
    assert list(df["epoch"]) == [1, 2, 3, 4] and df["test_acc"].between(0, 1).all()
    if arm == "magnitude":
        assert summary["nonzero_final"] < summary["params_final"] == summary["params_start"]
    else:
        assert summary["params_final"] < summary["params_start"]  # ViT layers split by the MP rule
    model = model_from_checkpoint(torch.load(Path(cfg.run_dir) / "checkpoint.pt", weights_only=True))
    assert model(torch.zeros(1, 3, 32, 32)).shape == (1, 1000)


def test_pretrained_weights_unreachable_name_the_local_file_option(compose_cfg, monkeypatch):
    import timm

    def offline(*args, **kwargs):
        raise OSError("We couldn't connect to 'https://huggingface.co'")

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(WeightsUnavailableError, match="model.checkpoint=.*HF_HOME"):
        train.run(compose_cfg(*SMOKE, *TINY_VIT, "model.pretrained=true"))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_gpu_run_records_its_device_and_resumes_on_cpu_only_when_allowed(compose_cfg, monkeypatch):
    cfg = compose_cfg(*SMOKE, "arm=rmt", "device=cuda")
    crash_after_two_epochs(cfg, monkeypatch)
    ckpt = torch.load(Path(cfg.run_dir) / "checkpoint.pt", map_location="cpu", weights_only=True)
    assert ckpt["numerics"]["device"].startswith("cuda:")
    with pytest.raises(train.RunConfigError, match="cuda.*allow_numerics_change"):
        train.run(compose_cfg(*SMOKE, "arm=rmt", "device=cpu"))
    summary = train.run(compose_cfg(*SMOKE, "arm=rmt", "device=cpu", "allow_numerics_change=true"))
    env = json.loads((Path(cfg.run_dir) / "env.json").read_text())
    assert summary["device"] == "cpu" and env["earlier"][0]["device"].startswith("cuda:")
    gpu_full = train.run(compose_cfg(*SMOKE, "arm=rmt", "device=cuda", "name=gpu-full"))
    assert gpu_full["final_test_acc"] > 0


def test_cuda_graph_setting_is_checked_and_off_on_the_cpu(compose_cfg):
    from experiments.cuda_graph import cuda_graph_setting, graphs_usable

    assert not graphs_usable(torch.device("cpu"), True, "auto") and not graphs_usable(torch.device("cpu"), True, False)
    with pytest.raises(train.RunConfigError, match="needs a CUDA device"):
        graphs_usable(torch.device("cpu"), True, True)
    with pytest.raises(train.RunConfigError, match="auto, true or false"):
        cuda_graph_setting("sometimes")
    with pytest.raises(train.RunConfigError, match="train.cuda_graph"):
        train.run(compose_cfg(*SMOKE, "train.cuda_graph=maybe"))
    # not a result setting: a run resumed with another value is the same run
    a, b = (compose_cfg(*SMOKE, f"train.cuda_graph={v}") for v in ("auto", "false"))
    from omegaconf import OmegaConf

    assert train.fingerprint(OmegaConf.to_container(a, resolve=True)) == train.fingerprint(OmegaConf.to_container(b, resolve=True))


def graph_vs_eager(compose_cfg, *overrides: str, epochs: int = 3, prune: bool = False):
    """Train one small net twice on CUDA from the same weights, eagerly and with the CUDA-graph step."""
    from experiments.data import TensorSplit
    from rmt.pruners import PruneState, make_pruner

    cfg = compose_cfg(*SMOKE, "arm=rmt", "device=cuda", *overrides)
    gen = torch.Generator().manual_seed(0)
    x, y = torch.randn(1000, 1, 28, 28, generator=gen).cuda(), torch.randint(0, 10, (1000,), generator=gen).cuda()
    split = TensorSplit(x, y)  # 1000 = 7 full batches of 128 + a partial one
    results = []
    for graphed in (False, True):
        torch.manual_seed(0)
        model = build_model("fc", hidden=[64, 64], input_shape=(1, 28, 28), num_classes=10).cuda()
        state = PruneState()
        state.bind(model)
        opt = train.make_optimizer(model, cfg, capturable=graphed)
        pruner = make_pruner("mp_svd", keep_fraction=0.5, schedule="constant", min_rank={"5": 10}) if prune else None
        losses, memory = [], []
        for epoch in range(1, epochs + 1):
            loss, acc, failure = train.train_epoch(model, opt, split, cfg, state, torch.float32, shuffle_seed=epoch,
                                                   bar=types.SimpleNamespace(update=lambda n: None), graphed=graphed)
            assert failure is None
            losses.append((loss, acc))
            if pruner is not None:  # new shapes every epoch: the next epoch must capture afresh
                result = pruner(model, state, 0.5)
                if result.rebuilt:
                    opt = train.make_optimizer(model, cfg, capturable=graphed)
                    state.bind(model)
            torch.cuda.synchronize()
            memory.append(torch.cuda.memory_allocated())
        results.append((model, losses, memory))
    return results


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("extra", [(), ("optim.grad_clip=1.0",), ("optim=adamw", "reg=none")])
def test_cuda_graph_steps_equal_eager_steps(compose_cfg, extra):
    (eager, eager_losses, _), (graphed, graph_losses, _) = graph_vs_eager(compose_cfg, *extra)
    for (la, aa), (lb, ab) in zip(eager_losses, graph_losses):
        assert la == pytest.approx(lb, rel=1e-5) and aa == pytest.approx(ab, abs=2e-3)
    for (name, a), b in zip(eager.state_dict().items(), graphed.state_dict().values()):
        # the same kernels on the same numbers; a different cuBLAS algorithm choice may reorder sums: float32 level
        torch.testing.assert_close(b, a, rtol=1e-4, atol=1e-5, msg=name)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_graph_recaptures_after_pruning_without_growing_memory(compose_cfg):
    (eager, eager_losses, _), (graphed, graph_losses, memory) = graph_vs_eager(compose_cfg, epochs=12, prune=True)
    assert linear_topology(eager) == linear_topology(graphed)
    assert [round(a, 3) for _, a in graph_losses] == pytest.approx([round(a, 3) for _, a in eager_losses], abs=5e-3)
    assert max(memory[4:]) <= memory[3] * 1.05 + 2**20  # flat once the shapes stop growing: old graphs are released


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_uncapturable_step_falls_back_to_eager_with_one_warning(compose_cfg, monkeypatch):
    from experiments import cuda_graph

    def refuse(self):
        raise cuda_graph.CaptureFailed("RuntimeError: operation not permitted when stream is capturing")

    monkeypatch.setattr(cuda_graph.GraphedEpoch, "capture", refuse)
    with pytest.warns(RuntimeWarning, match="training on eagerly"):
        summary = train.run(compose_cfg(*SMOKE, "arm=rmt", "device=cuda", "name=fallback"))
    assert summary["final_test_acc"] > 0
