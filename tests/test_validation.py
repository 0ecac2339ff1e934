"""Bad settings end in one `error: ...` line naming the value and what is accepted, before anything runs."""

import subprocess
import sys
from pathlib import Path

import pytest

import experiments.p4_limit as p4_limit
import experiments.train as train
from experiments import confidence_bound, magnitude_sweep, p3_prune, randomness_removal, rank_sweep, synthetic
from experiments.errors import RunConfigError
from tests.conftest import compose_named

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("override, expected", [
    ("train.epochs=abc", "train.epochs='abc' (expected an integer >= 1)"),
    ("train.epochs=-3", "train.epochs=-3 (expected an integer >= 1)"),
    ("train.epochs=2.5", "train.epochs=2.5 (expected an integer >= 1)"),
    ("seed=abc", "seed='abc' (expected an integer >= 0)"),
    ("train.batch_size=0", "train.batch_size=0 (expected an integer >= 1)"),
    ("pruning.keep_horizon=0", "pruning.keep_horizon=0 (expected a number > 0)"),
    ("optim.lr=nan", "optim.lr=nan (expected a number > 0)"),
    ("optim.momentum=1.5", "optim.momentum=1.5 (expected a number >= 0 and <= 1)"),
    ("pruning.schedule=cosine", "pruning.schedule='cosine' (expected one of linear, constant)"),
    ("dtype=float16", "dtype='float16' (expected one of float32, float64)"),
    ("profile.train_subset=0", "profile.train_subset=0 (expected an integer >= 1 or null)"),
])
def test_bad_train_settings_are_named(compose_cfg, override, expected):
    with pytest.raises(RunConfigError, match="bad setting") as err:
        train.run(compose_cfg("profile=smoke", override))
    assert expected in str(err.value)


def test_every_bad_setting_in_one_message(compose_cfg, tmp_path):
    with pytest.raises(RunConfigError) as err:
        train.run(compose_cfg("profile=smoke", "seed=-1", "train.batch_size=x"))
    assert str(err.value).startswith("bad settings: ") and "seed=-1" in str(err.value) and "train.batch_size='x'" in str(err.value)
    assert not (tmp_path / "runs").exists()  # nothing was created


def test_bad_p4_limit_settings_are_named(tmp_path):
    cfg = compose_named("p4_limit", f"paths.runs_dir={tmp_path}", "ratio_steps=1", "lanczos.probes=0")
    with pytest.raises(RunConfigError, match=r"ratio_steps=1 \(expected an integer >= 2\); lanczos.probes=0"):
        p4_limit.run(cfg)


def test_command_line_prints_one_error_line_and_fails(tmp_path):
    done = subprocess.run([sys.executable, "-m", "experiments.train", "train.epochs=abc", f"paths.runs_dir={tmp_path}",
                           "logger=local", "progress=false"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "Traceback" not in done.stderr
    lines = [line for line in done.stderr.splitlines() if line.strip() and "Warning" not in line and "warnings.warn" not in line]
    assert lines == ["error: bad setting: train.epochs='abc' (expected an integer >= 1)"]
    assert not any(tmp_path.rglob(".hydra"))  # the failed run left no folder behind


@pytest.mark.parametrize("config, runner, override, expected", [
    ("synthetic", synthetic, "n=abc", "n='abc' (expected an integer >= 10)"),
    ("synthetic", synthetic, "alpha=2", "alpha=2 (expected a number > 0 and < 0.5)"),
    ("synthetic", synthetic, "alpha_grid=[]", "alpha_grid=[] (expected a non-empty list of numbers > 0 and < 0.5)"),
    ("rank_sweep", rank_sweep, "ranks.step=0", "ranks.step=0 (expected an integer >= 1)"),
    ("rank_sweep", rank_sweep, "beta=1", "beta=1 (expected a number > 0 and < 1)"),
    ("magnitude_sweep", magnitude_sweep, "k_max=0", "k_max=0 (expected an integer >= 1)"),
    ("randomness_removal", randomness_removal, "thetas=[]", "thetas=[] (expected a non-empty list of numbers >= 0 and <= 1)"),
    ("randomness_removal", randomness_removal, "lambda_l2=nan", "lambda_l2=nan (expected a number >= 0 or null)"),
    ("randomness_removal", randomness_removal, "noise_draws=0", "noise_draws=0 (expected an integer >= 1)"),
    ("confidence_bound", confidence_bound, "threads=-2", "threads=-2 (expected an integer >= 1 or null)"),
    ("p3_prune", p3_prune, "cycles=0", "cycles=0 (expected an integer >= 1)"),
    ("p3_prune", p3_prune, "baselines.latency_batch=[]", "baselines.latency_batch=[] (expected a non-empty list of integers >= 1)"),
    ("p4_limit", p4_limit, "mp.alpha=0.7", "mp.alpha=0.7 (expected a number > 0 and < 0.5)"),
])
def test_every_runner_checks_its_settings_first(tmp_path, config, runner, override, expected):
    with pytest.raises(RunConfigError, match="bad setting") as err:
        runner.run(compose_named(config, override, f"paths.runs_dir={tmp_path}"))
    assert expected in str(err.value)
    assert not any(tmp_path.iterdir())  # nothing written


def test_alpha_and_beta_bounds_follow_the_fit(compose_cfg):
    with pytest.raises(RunConfigError) as err:
        train.run(compose_cfg("profile=smoke", "pruning.alpha=0.5", "pruning.beta=1"))
    assert "pruning.alpha=0.5 (expected a number > 0 and < 0.5)" in str(err.value)
    assert "pruning.beta=1 (expected a number > 0 and < 1)" in str(err.value)
