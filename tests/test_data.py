"""Data layer: offline mirror first, one clear error when data cannot be had."""

import shutil

import pytest
import torch

import experiments.data as data


def test_mirror_copy_then_load(tmp_path, monkeypatch, data_root):
    mirror = tmp_path / "mirror"
    shutil.copytree(data_root / "MNIST" / "raw", mirror / "MNIST" / "raw",
                    ignore=shutil.ignore_patterns("*-ubyte"))  # only the official gz files
    monkeypatch.setenv("RMT_DATA_MIRROR", str(mirror))
    monkeypatch.setattr(data, "SHARED_DATA", tmp_path / "absent")
    root = tmp_path / "root"
    raw = data.ensure_dataset("mnist", root)
    assert sorted(p.name for p in raw.glob("*.gz")) == sorted(data.TENSOR_DATASETS["mnist"].files)
    x, y = data.load_tensors("mnist", root, train=False)
    assert x.shape == (10000, 1, 28, 28) and y.shape == (10000,)
    assert x.min() == -1.0 and x.max() == 1.0 and y.dtype == torch.long


def test_missing_data_without_network_is_one_clear_error(tmp_path, monkeypatch):
    monkeypatch.delenv("RMT_DATA_MIRROR", raising=False)
    monkeypatch.setattr(data, "SHARED_DATA", tmp_path / "absent")

    class Offline:
        def __init__(self, *args, **kwargs):
            raise OSError("Name or service not known")

    monkeypatch.setattr(data, "_torchvision_class", lambda name: Offline)
    with pytest.raises(data.DataUnavailableError, match="RMT_DATA_MIRROR.*make data"):
        data.ensure_dataset("mnist", tmp_path / "root")


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(KeyError, match="fashion_mnist"):
        data.ensure_dataset("cifar10", "x")


def test_batches_cover_data_once_in_seeded_order():
    x, y = torch.arange(10).float()[:, None], torch.arange(10)
    first = torch.cat([b for _, b in data.batches(x, y, 3, shuffle_seed=1)])
    again = torch.cat([b for _, b in data.batches(x, y, 3, shuffle_seed=1)])
    assert sorted(first.tolist()) == list(range(10)) and torch.equal(first, again)
    assert not torch.equal(first, torch.arange(10))
