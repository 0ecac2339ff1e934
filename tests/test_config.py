"""Hydra composition: groups, experiments, profiles, sweeps, and errors on bad keys."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException
from omegaconf import OmegaConf

from experiments.train import effective_settings
from tests.conftest import CONF_DIR

FIG1 = {"fig1a": [3000, 3000, 2000, 500], "fig1b": [1000, 1000, 1000, 500], "fig1c": [2000, 2000, 1000, 500],
        "fig1d": [1500, 3000, 1500, 500], "fig1e": [1000, 1000, 1000, 500]}


def cfg(*overrides, hydra=False):
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=list(overrides), return_hydra_config=hydra)


def test_defaults_are_p1_training_facts():
    c = cfg()
    assert (c.optim.lr, c.optim.momentum, c.optim.lr_decay, c.train.batch_size) == (0.02, 0.9, 0.96, 128)
    assert (c.reg.l1, c.reg.l2, c.pruning.alpha, c.pruning.beta, c.pruning.keep_horizon) == (5e-6, 5e-6, 0.25, 0.1, 300)
    assert c.model.init == "normal_fan_in" and c.pruning.compat is False


@pytest.mark.parametrize("panel,hidden", FIG1.items())
def test_fig1_panels_have_paper_topologies(panel, hidden):
    c = cfg("experiment=fig1", f"panel={panel}", "profile=paper")
    assert list(c.model.hidden) == hidden and c.pruning.gof_threshold == 1.0
    spec = effective_settings(c)["model"]
    assert spec["hidden"] == hidden and spec["input_shape"] == [1, 28, 28] and spec["num_classes"] == 10
    assert c.run_name.startswith(panel)


def test_fig1_sweep_is_panel_by_arm():
    c = cfg("experiment=fig1", hydra=True)
    params = OmegaConf.to_container(c.hydra.sweeper.params)
    assert params == {"panel": "fig1a,fig1b,fig1c,fig1d,fig1e", "arm": "normal,rmt"}


def test_profiles_scale_and_are_recorded():
    paper, quick = effective_settings(cfg("profile=paper")), effective_settings(cfg("profile=quick"))
    assert paper["epochs"] == 100 and paper["keep_horizon"] == 300 and paper["train_subset"] is None
    assert quick["epochs"] == 20 and quick["keep_horizon"] == pytest.approx(60)
    assert quick["model"]["hidden"] == [250, 250, 250, 125] and quick["train_subset"] == 10000


def test_run_dir_is_deterministic_for_resume():
    c = cfg("experiment=fig1", "panel=fig1c", "arm=rmt", "profile=quick", "paths.runs_dir=/x")
    assert c.run_dir == "/x/fig1/quick/fig1c-rmt-s0"


def test_unknown_key_and_group_fail_clearly():
    with pytest.raises(ConfigCompositionException, match="optim.lrr"):
        cfg("optim.lrr=0.1")
    with pytest.raises(ConfigCompositionException, match="profile"):
        cfg("profile=nonexistent")


@pytest.mark.parametrize("launcher,target", [("joblib", "JoblibLauncher"), ("submitit_local", "LocalLauncher"),
                                             ("slurm", "SlurmLauncher"), ("slurm_gpu", "SlurmLauncher")])
def test_launchers_compose(launcher, target):
    c = cfg("experiment=fig1", f"hydra/launcher={launcher}", hydra=True)
    assert c.hydra.launcher._target_.endswith(target)
    if launcher.startswith("slurm"):  # a CPU node by default, one GPU with slurm_gpu; requeued on a time limit
        assert c.hydra.launcher.gpus_per_node == (launcher == "slurm_gpu") and c.hydra.launcher.timeout_min == 720
        assert c.hydra.launcher.max_num_timeout > 0 and c.hydra.launcher.signal_delay_s > 0


def test_make_data_honours_rmt_data_root():
    """`make data` puts the datasets where $RMT_DATA_ROOT says (DATA= still wins), as the README documents."""
    import os
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent

    def planned(*args: str, env: dict | None = None) -> str:
        out = subprocess.run(["make", "-n", "-W", ".venv/.installed", "data", *args], cwd=root, capture_output=True, text=True,
                             env={**{k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL")},
                                  **(env or {})}, check=True).stdout
        return [line for line in out.splitlines() if "experiments.data" in line][-1].strip()

    assert planned(env={"RMT_DATA_ROOT": "/tmp/elsewhere"}).endswith("experiments.data /tmp/elsewhere")
    assert planned("DATA=/tmp/x", env={"RMT_DATA_ROOT": "/tmp/elsewhere"}).endswith("experiments.data /tmp/x")
