"""Shared fixtures: composed Hydra configs and the MNIST data root."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from experiments.data import ensure_dataset

CONF_DIR = str(Path(__file__).resolve().parent.parent / "conf")


def compose_named(name: str, *overrides: str):
    """The composed config `conf/<name>.yaml` with `overrides`."""
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name=name, overrides=list(overrides))


@pytest.fixture(scope="session")
def data_root() -> Path:
    """The project's data root with MNIST present (copied from a mirror by `make data` or here)."""
    root = Path(os.environ.get("RMT_DATA_ROOT", Path(__file__).resolve().parent.parent / "data"))
    ensure_dataset("mnist", root)
    return root


@pytest.fixture
def compose_cfg(tmp_path, data_root):
    """compose_cfg(*overrides) -> DictConfig of `train.yaml`, runs under tmp_path, W&B off."""

    def make(*overrides: str):
        base = [f"paths.runs_dir={tmp_path / 'runs'}", f"paths.data_dir={data_root}", "logger=local", "progress=false"]
        with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
            return compose(config_name="train", overrides=base + list(overrides))

    return make
