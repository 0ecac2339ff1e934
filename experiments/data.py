"""Data layer: dataset registry, offline-first fetching, and in-memory batching.

Where the raw files come from, in order: `$RMT_DATA_MIRROR` (a folder laid out like the data
root), the repository's sibling `../shared/data` if present, else torchvision's download.
Small image datasets (MNIST, Fashion-MNIST) are held as tensors in memory and batched by
index, so the training loop has no DataLoader overhead.  New datasets register a
`TensorDatasetSpec` (or, for image folders such as ImageNet, a loader of their own).
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

REPO_ROOT = Path(__file__).resolve().parent.parent
SHARED_DATA = REPO_ROOT.parent / "shared" / "data"


class DataUnavailableError(RuntimeError):
    """The dataset is neither on disk nor in a mirror, and could not be downloaded."""


@dataclass(frozen=True)
class TensorDatasetSpec:
    folder: str  # torchvision's folder name under the data root
    files: tuple[str, ...]
    num_classes: int


TENSOR_DATASETS = {
    "mnist": TensorDatasetSpec("MNIST", ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                         "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"), 10),
    "fashion_mnist": TensorDatasetSpec("FashionMNIST", ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz",
                                                        "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"), 10),
}


def _spec(name: str) -> TensorDatasetSpec:
    if name not in TENSOR_DATASETS:
        raise KeyError(f"unknown dataset {name!r}; known: {sorted(TENSOR_DATASETS)}")
    return TENSOR_DATASETS[name]


def _torchvision_class(name: str):
    from torchvision import datasets

    return {"mnist": datasets.MNIST, "fashion_mnist": datasets.FashionMNIST}[name]


def mirror_candidates() -> list[Path]:
    """Local folders searched for raw files before any download, in order."""
    found = []
    if os.environ.get("RMT_DATA_MIRROR"):
        found.append(Path(os.environ["RMT_DATA_MIRROR"]))
    if SHARED_DATA.is_dir():
        found.append(SHARED_DATA)
    return found


def ensure_dataset(name: str, root: str | Path) -> Path:
    """Make sure `<root>/<Folder>/raw/` holds the dataset, unpacked; return the raw folder.

    Missing gz files are copied from the first mirror that has them all; torchvision then
    checks their MD5s and unpacks them, downloading only what is still missing.
    Raises `DataUnavailableError` with instructions when nothing works.
    """
    spec = _spec(name)
    raw = Path(root) / spec.folder / "raw"
    if not all((raw / f).is_file() for f in spec.files):
        for mirror in mirror_candidates():
            src = mirror / spec.folder / "raw"
            if all((src / f).is_file() for f in spec.files):
                raw.mkdir(parents=True, exist_ok=True)
                for f in spec.files:
                    shutil.copyfile(src / f, raw / f)
                break
    try:
        for train in (True, False):
            _torchvision_class(name)(str(root), train=train, download=True)
    except Exception as exc:  # network errors come in many types
        raise DataUnavailableError(
            f"dataset {name!r} is not in {raw} and could not be downloaded ({type(exc).__name__}: {exc}).\n"
            f"Fix: put the four official {spec.folder} *.gz files into {raw}/, or set RMT_DATA_MIRROR to a folder "
            f"holding {spec.folder}/raw/, then run `make data`."
        ) from None
    return raw


SCALES = {"minus_one_one": (127.5, 1.0), "unit": (255.0, 0.0)}  # pixel / divisor - offset


def load_tensors(name: str, root: str | Path, train: bool, scale: str = "minus_one_one") -> tuple[torch.Tensor, torch.Tensor]:
    """Images as float32 `(n, 1, 28, 28)`, labels as int64.

    scale: `minus_one_one` maps pixels to [-1, 1] (P1 code); `unit` to [0, 1] (P2 code, no normalisation).
    """
    if scale not in SCALES:
        raise ValueError(f"unknown scale {scale!r}; known: {sorted(SCALES)}")
    ensure_dataset(name, root)
    ds = _torchvision_class(name)(str(root), train=train, download=False)
    divisor, offset = SCALES[scale]
    x = ds.data.unsqueeze(1).float().div_(divisor).sub_(offset)
    return x, ds.targets.long()


def subset(x: torch.Tensor, y: torch.Tensor, n: int | None, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A fixed random subset of `n` examples (all when `n` is None or too large)."""
    if n is None or n >= len(x):
        return x, y
    idx = torch.randperm(len(x), generator=torch.Generator().manual_seed(seed))[:n]
    return x[idx], y[idx]


def run_data(config: dict, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """The training or test tensors a run's resolved config asks for (dataset, scale, profile subset)."""
    d = config["data"]
    n = config["effective"]["train_subset" if train else "test_subset"]
    scale = d.get("scale", "minus_one_one")  # records made before the option existed used [-1, 1]
    return subset(*load_tensors(d["name"], config["paths"]["data_dir"], train=train, scale=scale), n, d["subset_seed"])


def batches(x: torch.Tensor, y: torch.Tensor, batch_size: int, shuffle_seed: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Mini-batches of in-memory tensors; shuffled by a generator seeded with `shuffle_seed`."""
    n = len(x)
    order = torch.randperm(n, generator=torch.Generator().manual_seed(shuffle_seed)) if shuffle_seed is not None else None
    for start in range(0, n, batch_size):
        idx = order[start:start + batch_size] if order is not None else slice(start, start + batch_size)
        yield x[idx], y[idx]


def num_classes(name: str) -> int:
    return _spec(name).num_classes


def main() -> None:
    """`python -m experiments.data [ROOT]`: fetch every tensor dataset into ROOT (default ./data)."""
    import sys

    root = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("RMT_DATA_ROOT", "data"))
    for name in TENSOR_DATASETS:
        try:
            print(f"{name}: {ensure_dataset(name, root)}")
        except DataUnavailableError as exc:
            sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
