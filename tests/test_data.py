"""Data layer: offline mirror first, one clear error when data cannot be had."""

import shutil
from pathlib import Path

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


@pytest.fixture
def offline(tmp_path, monkeypatch):
    """No mirror and no network: every download fails as on a machine without a route."""
    monkeypatch.delenv("RMT_DATA_MIRROR", raising=False)
    monkeypatch.setattr(data, "SHARED_DATA", tmp_path / "absent")

    def no_route(*args, **kwargs):
        raise OSError("Name or service not known")

    monkeypatch.setattr("torchvision.datasets.utils.download_url", no_route)


def test_missing_data_without_network_is_one_clear_error(tmp_path, offline):
    with pytest.raises(data.DataUnavailableError, match="raw lacks train-images-idx3-ubyte.gz, train-labels.*RMT_DATA_MIRROR.*make data"):
        data.ensure_dataset("mnist", tmp_path / "root")


@pytest.fixture
def local_copy(tmp_path, data_root) -> Path:
    """A data root holding a verified MNIST (gz and unpacked files) that a test may damage."""
    root = tmp_path / "root"
    shutil.copytree(data_root / "MNIST" / "raw", root / "MNIST" / "raw")
    return root


def test_truncated_gz_is_named_and_repaired_from_the_mirror(tmp_path, monkeypatch, data_root, local_copy, capsys):
    monkeypatch.setenv("RMT_DATA_MIRROR", str(data_root))
    monkeypatch.setattr(data, "SHARED_DATA", tmp_path / "absent")
    gz = local_copy / "MNIST" / "raw" / "train-labels-idx1-ubyte.gz"
    gz.write_bytes(gz.read_bytes()[:5000])
    data.ensure_dataset("mnist", local_copy)
    assert gz.read_bytes() == (data_root / "MNIST" / "raw" / gz.name).read_bytes()
    assert f"{gz} was corrupt (5000 bytes" in capsys.readouterr().err


def test_corrupt_gz_without_intact_copy_is_named_and_kept(local_copy, offline):
    gz = local_copy / "MNIST" / "raw" / "t10k-labels-idx1-ubyte.gz"
    gz.write_bytes(b"\x1f\x8b" + bytes(100))
    with pytest.raises(data.DataUnavailableError) as err:
        data.ensure_dataset("mnist", local_copy)
    assert f"{gz} is corrupt (102 bytes, MD5" in str(err.value) and "expected ec29112dd5afa0611ce80d1b7f02629c" in str(err.value)
    assert "train-images" not in str(err.value)  # only the bad file is named
    assert gz.stat().st_size == 102  # nothing deleted behind the user's back


@pytest.mark.parametrize("damage", [lambda b: b[:1000], lambda b: b"\x00\x00\x09\x03" + b[4:], lambda b: b[:6]])
def test_damaged_unpacked_file_is_unpacked_again(local_copy, offline, capsys, damage, data_root):
    idx = local_copy / "MNIST" / "raw" / "t10k-images-idx3-ubyte"
    idx.write_bytes(damage(idx.read_bytes()))
    data.ensure_dataset("mnist", local_copy)
    assert f"{idx} was " in capsys.readouterr().err
    x, _ = data.load_tensors("mnist", local_copy, train=False)
    assert torch.equal(x, data.load_tensors("mnist", data_root, train=False)[0])


def test_unknown_dataset_lists_known_ones():
    with pytest.raises(KeyError, match="fashion_mnist"):
        data.ensure_dataset("cifar10", "x")


def test_batches_cover_data_once_in_seeded_order():
    split = data.TensorSplit(torch.arange(10).float()[:, None], torch.arange(10))
    first = torch.cat([b for _, b in split.batches(3, shuffle_seed=1)])
    again = torch.cat([b for _, b in split.batches(3, shuffle_seed=1)])
    assert sorted(first.tolist()) == list(range(10)) and torch.equal(first, again)
    assert not torch.equal(first, torch.arange(10))
    assert torch.equal(torch.cat([b for _, b in split.batches(4)]), torch.arange(10))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_tensor_split_batches_on_the_gpu_in_the_cpu_order():
    x, y = torch.arange(100).float()[:, None], torch.arange(100)
    cpu = torch.cat([b for _, b in data.TensorSplit(x, y).batches(7, shuffle_seed=3)])
    gpu = [b for _, b in data.TensorSplit(x.cuda(), y.cuda()).batches(7, shuffle_seed=3)]
    assert all(b.is_cuda for b in gpu) and torch.equal(torch.cat(gpu).cpu(), cpu)


SAMPLE = data.SHARED_DATA / "imagenet-sample"
needs_sample = pytest.mark.skipif(not SAMPLE.is_dir(), reason="needs ../shared/data/imagenet-sample")


@needs_sample
def test_imagenet_folder_labels_are_global_indices():
    import csv
    import json

    ds = data.imagenet_folder_dataset(SAMPLE, "val", transform=None)
    expected = {row["filename"]: int(row["class_index"]) for row in csv.DictReader((SAMPLE / "labels.csv").open())}
    assert len(ds) == 100 and {Path(p).name: label for p, label in ds.samples} == expected
    index = json.loads((SAMPLE / "imagenet_class_index.json").read_text())
    assert data.imagenet_synsets() == [index[str(i)][0] for i in range(1000)]


@needs_sample
def test_imagenet_folder_through_timm_transforms(tmp_path):
    from rmt.models import build_model

    model = build_model("timm", model_name="vit_tiny_patch16_224", kwargs={"img_size": 32, "patch_size": 8, "depth": 1,
                                                                              "embed_dim": 32, "num_heads": 2}, num_classes=1000)
    cfg = {"root": str(SAMPLE), "train_split": "val", "test_split": "val", "channels": 3, "image_size": 32,
           "subset_seed": 0, "workers": 0}
    run_data = data.imagenet_folder(cfg, "unused", torch.device("cpu"), None, 10, model=model)
    assert len(run_data.train) == 100 and len(run_data.test) == 10 and run_data.num_classes == 1000
    x, y = next(run_data.test.batches(4))
    assert x.shape == (4, 3, 32, 32) and x.dtype == torch.float32 and y.max() < 1000
    assert model(x).shape == (4, 1000)


@needs_sample
@pytest.mark.parametrize("workers", [0, 1])
@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_image_is_one_line_naming_it(tmp_path, workers, damage):
    good = next((SAMPLE / "val" / "n01440764").iterdir())
    folder = tmp_path / "val" / "n01440764"
    folder.mkdir(parents=True)
    (folder / "a.JPEG").write_bytes(good.read_bytes())
    bad = folder / "b.JPEG"
    bad.write_bytes(good.read_bytes()[:2000] if damage == "truncated" else b"not an image at all")
    cfg = {"root": str(tmp_path), "train_split": "val", "test_split": "val", "channels": 3, "image_size": 32,
           "subset_seed": 0, "workers": workers}
    run_data = data.imagenet_folder(cfg, "unused", torch.device("cpu"), None, None)
    with pytest.raises(data.DataUnavailableError) as caught:
        list(run_data.test.batches(2))
    message = str(caught.value)
    assert "\n" not in message and str(bad) in message and "remove or replace it" in message


@needs_sample
def test_imagenet_folder_batches_do_not_depend_on_workers_or_the_run():
    cfg = {"root": str(SAMPLE), "train_split": "val", "test_split": "val", "channels": 3, "image_size": 32, "subset_seed": 0}

    def first_batches(workers: int) -> list[torch.Tensor]:
        run_data = data.imagenet_folder({**cfg, "workers": workers}, "unused", torch.device("cpu"), 24, 8)
        return [x for epoch in (1, 2) for x, _ in run_data.train.batches(8, shuffle_seed=epoch)]

    torch.manual_seed(0)
    reference = first_batches(0)
    state = torch.get_rng_state()
    again = first_batches(0)
    assert torch.equal(torch.get_rng_state(), state)  # the training's random state is not consumed
    assert all(torch.equal(a, b) for a, b in zip(reference, again))
    assert all(torch.equal(a, b) for a, b in zip(reference, first_batches(2)))
    assert not torch.equal(reference[0], reference[3])  # a new epoch draws new augmentations


def test_missing_imagenet_root_says_what_to_put_where(tmp_path):
    with pytest.raises(data.DataUnavailableError, match=r"(?s)no ImageNet split 'val'.*<synset>/\*\.JPEG.*IMAGENET_ROOT"):
        data.imagenet_folder_dataset(tmp_path / "imagenet", "val", transform=None)


@pytest.mark.parametrize("argv, message", [
    (["--help"], "usage: python -m experiments.data [ROOT]"),
    (["/etc/hostname"], "error: [Errno 20] Not a directory: '/etc/hostname/MNIST/raw'"),
])
def test_data_command_rejects_options_and_file_roots(monkeypatch, tmp_path, argv, message):
    monkeypatch.setattr("sys.argv", ["experiments.data", *argv])
    with pytest.raises(SystemExit) as done:
        data.main()
    assert str(done.value) == message or str(done.value).startswith(message)
    assert not (Path.cwd() / "--help").exists()
