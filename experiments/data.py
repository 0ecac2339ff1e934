"""Data layer: dataset registry, offline-first fetching, and in-memory batching.

A dataset is a registered builder (`@register_dataset(name)`) returning `RunData`: train and test
splits on the run's device plus the facts a model needs (input shape, number of classes).  Two kinds:
- in-memory tensors (MNIST, Fashion-MNIST): held on the device and batched by index there, so the
  training loop has no DataLoader overhead.  Raw files are verified against torchvision's MD5s; a
  missing or corrupt one comes from, in order: `$RMT_DATA_MIRROR` (a folder laid out like the data
  root), the repository's sibling `../shared/data` if present, else torchvision's download;
- image folders in ImageNet layout (`imagenet_folder`): a `DataLoader` with workers over timm's data
  config and transforms for the run's model, labels = global ImageNet-1k indices.
"""

from __future__ import annotations

import gzip
import math
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
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


def _gz_problem(path: Path, md5: str) -> str | None:
    """What is wrong with an official gz file (None: present, with torchvision's MD5)."""
    from torchvision.datasets.utils import calculate_md5

    if not path.is_file():
        return "missing"
    actual = calculate_md5(str(path))
    return None if actual == md5 else f"corrupt ({path.stat().st_size} bytes, MD5 {actual}, expected {md5})"


def _idx_problem(path: Path) -> str | None:
    """What is wrong with an unpacked IDX file (None: its header is valid and its size matches it)."""
    if not path.is_file():
        return "missing"
    with path.open("rb") as f:
        head = f.read(4)
        if len(head) < 4 or head[:3] != b"\x00\x00\x08" or not 1 <= head[3] <= 4:
            return "corrupt (not an IDX file of unsigned bytes)"
        dims = f.read(4 * head[3])
    if len(dims) < 4 * head[3]:
        return "truncated (cut inside its header)"
    shape = [int.from_bytes(dims[i:i + 4], "big") for i in range(0, len(dims), 4)]
    expected = 4 + len(dims) + math.prod(shape)
    size = path.stat().st_size
    return None if size == expected else f"truncated or corrupt ({size} bytes; its header {shape} implies {expected})"


def _download_gz(name: str, raw: Path, filename: str, md5: str) -> None:
    """Fetch one official gz file from torchvision's mirrors (raises on failure or a bad MD5)."""
    from torchvision.datasets.utils import download_url

    errors, staging = [], raw / ".download"  # a failed download never overwrites the file it should replace
    for url in _torchvision_class(name).mirrors:
        try:
            download_url(f"{url}{filename}", str(staging), filename, md5)
            os.replace(staging / filename, raw / filename)
            return
        except Exception as exc:  # network errors come in many types
            errors.append(f"{url}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    raise OSError("; ".join(errors))


def _unpack(gz: Path, target: Path) -> None:
    """Decompress `gz` into `target` atomically (an interrupted unpack leaves no half file behind)."""
    tmp = target.with_suffix(f".{os.getpid()}.tmp")  # runs unpacking at once each write their own
    with gzip.open(gz, "rb") as src, tmp.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)
    os.replace(tmp, target)


def ensure_dataset(name: str, root: str | Path) -> Path:
    """Make sure `<root>/<Folder>/raw/` holds the dataset, verified and unpacked; return the raw folder.

    Each official gz file is checked against torchvision's MD5; a missing or corrupt one is copied from the
    first mirror holding an intact copy, else downloaded (a repair is reported on stderr, naming the file).
    Unpacked IDX files are checked against their headers and re-extracted when truncated or corrupt.
    Raises `DataUnavailableError` naming each bad file and what to do when nothing works.
    """
    spec = _spec(name)
    raw = Path(root) / spec.folder / "raw"
    md5s = dict(_torchvision_class(name).resources)
    unresolved = {}
    for filename in spec.files:
        problem = _gz_problem(raw / filename, md5s[filename])
        if problem is None:
            continue
        raw.mkdir(parents=True, exist_ok=True)
        intact = next((m / spec.folder / "raw" / filename for m in mirror_candidates()
                       if _gz_problem(m / spec.folder / "raw" / filename, md5s[filename]) is None), None)
        if intact is not None:
            shutil.copyfile(intact, raw / filename)
            source = str(intact)
        else:
            try:
                _download_gz(name, raw, filename, md5s[filename])
                source = "the download"
            except OSError as exc:
                unresolved[filename] = (problem, exc)
                continue
        if problem != "missing":
            print(f"warning: {raw / filename} was {problem}; replaced it with an intact copy from {source}", file=sys.stderr)
    if unresolved:
        missing = [f for f, (problem, _) in unresolved.items() if problem == "missing"]
        bad = "; ".join([f"{raw} lacks {', '.join(missing)}"] * bool(missing)
                        + [f"{raw / f} is {problem}" for f, (problem, _) in unresolved.items() if problem != "missing"])
        first_error = next(iter(unresolved.values()))[1]
        mirrors = ", ".join(str(m) for m in mirror_candidates()) or "none found"
        raise DataUnavailableError(
            f"dataset {name!r}: {bad}. No mirror holds an intact copy (mirrors: {mirrors}) and the download failed "
            f"({first_error}). Fix: put the four official {spec.folder} *.gz files into {raw}/, or set RMT_DATA_MIRROR to a "
            f"folder holding {spec.folder}/raw/, then run `make data`.")
    for filename in spec.files:
        unpacked = raw / filename.removesuffix(".gz")
        problem = _idx_problem(unpacked)
        if problem is not None:
            _unpack(raw / filename, unpacked)
            if problem != "missing":
                print(f"warning: {unpacked} was {problem}; unpacked it again from {filename}", file=sys.stderr)
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


def subset_indices(n: int, size: int | None, seed: int) -> torch.Tensor | None:
    """Indices of a fixed random subset of `size` of `n` examples (None: all of them)."""
    if size is None or size >= n:
        return None
    return torch.randperm(n, generator=torch.Generator().manual_seed(seed))[:size]


def shuffled_order(n: int, shuffle_seed: int | None) -> torch.Tensor | None:
    """The epoch's example order (drawn on the CPU, so every device sees the same batches)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(shuffle_seed)) if shuffle_seed is not None else None


class TensorSplit:
    """A split held as two tensors on the run's device; batches are index slices there (the fast path)."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor):
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def batches(self, batch_size: int, shuffle_seed: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """Mini-batches in a seeded shuffled order (or in order without a seed), on the tensors' device."""
        order = shuffled_order(len(self), shuffle_seed)
        if order is not None:
            order = order.to(self.x.device)
        for start in range(0, len(self), batch_size):
            idx = order[start:start + batch_size] if order is not None else slice(start, start + batch_size)
            yield self.x[idx], self.y[idx]


class SeededSamples(torch.utils.data.Dataset):
    """A dataset whose random transforms draw, for example `i` of an epoch, from generators seeded by `(epoch_seed, i)`
    (Python's `random`, NumPy's and torch's, each restored afterwards): an example's augmentation is the same whichever
    worker reads it and however many there are, `workers=0` included, and the training's own random state is untouched."""

    def __init__(self, dataset: torch.utils.data.Dataset):
        self.dataset, self.epoch_seed = dataset, 0

    def __len__(self) -> int:
        return len(self.dataset)

    def __getitem__(self, index: int):
        import random

        import numpy as np

        seed = (self.epoch_seed * 1_000_003 + int(index)) % 2**32
        py_state, np_state = random.getstate(), np.random.get_state()
        random.seed(seed)
        np.random.seed(seed)
        try:
            with torch.random.fork_rng(devices=[]):
                torch.manual_seed(seed)
                return self.dataset[index]
        finally:
            random.setstate(py_state)
            np.random.set_state(np_state)


class LoaderSplit:
    """A map-style dataset read by a `DataLoader` with worker processes; batches are moved to `device`.
    The dataset is made on first use (`make()`), so an unused split costs nothing and need not exist.  Results do
    not depend on the number of workers (`SeededSamples`)."""

    def __init__(self, make: Callable[[], torch.utils.data.Dataset], device: torch.device, workers: int):
        self._make, self._dataset, self.device = make, None, device
        self.workers = min(workers, os.cpu_count() or 1)  # more processes than cores only slow the loader down

    @property
    def dataset(self) -> torch.utils.data.Dataset:
        if self._dataset is None:
            self._dataset = SeededSamples(self._make())
        return self._dataset

    def __len__(self) -> int:
        return len(self.dataset)

    def batches(self, batch_size: int, shuffle_seed: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        from torch.utils.data import DataLoader

        gen = torch.Generator().manual_seed(shuffle_seed if shuffle_seed is not None else 0)
        self.dataset.epoch_seed = shuffle_seed if shuffle_seed is not None else 0
        loader = DataLoader(self.dataset, batch_size=batch_size, shuffle=shuffle_seed is not None, generator=gen,
                            num_workers=self.workers, pin_memory=self.device.type == "cuda",
                            persistent_workers=False)
        try:
            for x, y in loader:
                yield x.to(self.device, non_blocking=True), y.to(self.device, non_blocking=True)
        except DataUnavailableError as exc:  # from a worker, it carries the worker's traceback: keep its last line
            last = str(exc).strip().splitlines()[-1]
            raise DataUnavailableError(last.split("DataUnavailableError: ", 1)[-1]) from None


Split = TensorSplit | LoaderSplit


@dataclass
class RunData:
    """A run's training and test splits on its device, and the facts a model needs."""

    train: Split
    test: Split
    input_shape: tuple[int, ...]  # one example, e.g. (1, 28, 28)
    num_classes: int


DatasetBuilder = Callable[..., RunData]
DATASETS: dict[str, DatasetBuilder] = {}


def register_dataset(name: str) -> Callable[[DatasetBuilder], DatasetBuilder]:
    """Register `builder(data: dict, data_dir, device, train_subset, test_subset, model) -> RunData`."""

    def decorate(builder: DatasetBuilder) -> DatasetBuilder:
        DATASETS[name] = builder
        return builder

    return decorate


def _tensor_dataset(name: str) -> DatasetBuilder:
    def build(data: dict, data_dir: str | Path, device: torch.device, train_subset: int | None, test_subset: int | None,
              model: torch.nn.Module | None = None) -> RunData:
        scale = data.get("scale", "minus_one_one")  # records made before the option existed used [-1, 1]
        splits = []
        for train, size in ((True, train_subset), (False, test_subset)):
            x, y = load_tensors(name, data_dir, train=train, scale=scale)
            idx = subset_indices(len(y), size, data["subset_seed"])
            if idx is not None:
                x, y = x[idx], y[idx]
            splits.append(TensorSplit(x.to(device), y.to(device)))
        return RunData(splits[0], splits[1], tuple(splits[0].x.shape[1:]), _spec(name).num_classes)

    return build


for _name in TENSOR_DATASETS:
    register_dataset(_name)(_tensor_dataset(_name))


def imagenet_synsets() -> list[str]:
    """The standard ImageNet-1k class order (synset ids; index = label), from timm's bundled class info."""
    from timm.data import ImageNetInfo

    return list(ImageNetInfo().label_names())


IMAGENET_LAYOUT = ("{root}/{split}/<synset>/*.JPEG with the standard ILSVRC2012 synset folders (e.g. "
                   "{root}/{split}/n01440764/ILSVRC2012_val_00000293.JPEG; the validation images sorted into synset folders)")


def read_rgb_image(path: str):
    """An image file as RGB (PIL), or one DataUnavailableError naming the file when it is truncated or not an image."""
    from PIL import Image

    try:
        with open(path, "rb") as fh:
            return Image.open(fh).convert("RGB")
    except (OSError, SyntaxError, ValueError) as exc:  # PIL: UnidentifiedImageError (an OSError), truncated data
        raise DataUnavailableError(f"image {path} cannot be read ({type(exc).__name__}: {exc}); remove or replace it") from None


def imagenet_folder_dataset(root: str | Path, split: str, transform) -> torch.utils.data.Dataset:
    """An ImageFolder whose labels are the global ImageNet-1k indices of its synset folders (a folder may hold
    only some of the 1000 classes, as in a sample)."""
    from torchvision.datasets import ImageFolder

    folder = Path(root) / split
    if not folder.is_dir():
        raise DataUnavailableError(f"no ImageNet split {split!r} at {folder}. Put the images there as "
                                   + IMAGENET_LAYOUT.format(root=root, split=split)
                                   + ", or point data.root (or $IMAGENET_ROOT) at the folder that holds train/ and val/.")
    index = {synset: i for i, synset in enumerate(imagenet_synsets())}

    class GlobalLabels(ImageFolder):
        def find_classes(self, directory):
            present = sorted(d.name for d in Path(directory).iterdir() if d.is_dir())
            unknown = [d for d in present if d not in index]
            if unknown:
                raise DataUnavailableError(f"{directory} has folders that are not ImageNet-1k synsets: {unknown[:5]}")
            if not present:
                raise DataUnavailableError(f"{directory} holds no synset folders; expected " + IMAGENET_LAYOUT.format(root=root, split=split))
            return present, {d: index[d] for d in present}

    return GlobalLabels(str(folder), transform=transform, loader=read_rgb_image)


@register_dataset("imagenet_folder")
def imagenet_folder(data: dict, data_dir: str | Path, device: torch.device, train_subset: int | None,
                    test_subset: int | None, model: torch.nn.Module | None = None) -> RunData:
    """ImageNet-layout folders read through timm's data config and transforms for `model`; fixed seeded
    subsets when the profile asks for them (`None` = the whole folder)."""
    from timm.data import create_transform, resolve_data_config
    from torch.utils.data import Subset

    size = data.get("image_size") or getattr(getattr(model, "patch_embed", None), "img_size", None)  # a ViT's own size
    size = tuple(size) if isinstance(size, (tuple, list)) else (size, size)
    args = {"input_size": (int(data["channels"]), int(size[0]), int(size[1]))} if size[0] else {}
    timm_cfg = resolve_data_config(args, model=model)

    def make(split: str, size_limit: int | None, training: bool):
        def dataset() -> torch.utils.data.Dataset:
            ds = imagenet_folder_dataset(data["root"], split, create_transform(**timm_cfg, is_training=training))
            idx = subset_indices(len(ds), size_limit, data["subset_seed"])
            return Subset(ds, idx.tolist()) if idx is not None else ds
        return dataset

    splits = [LoaderSplit(make(data["train_split"], train_subset, True), device, int(data["workers"])),
              LoaderSplit(make(data["test_split"], test_subset, False), device, int(data["workers"]))]
    return RunData(splits[0], splits[1], tuple(timm_cfg["input_size"]), 1000)


@dataclass(frozen=True)
class DataRequest:
    """What data a run reads: the dataset's settings (the `data` config group, `name` first), the folder datasets
    live in, and the fixed subsets the profile asks for (None: the whole split)."""

    data: dict
    data_dir: str
    train_subset: int | None = None
    test_subset: int | None = None

    @classmethod
    def of_run(cls, config: dict, data_dir: str | None = None, **subsets) -> DataRequest:
        """The request recorded in a training run's resolved config (`data`, `paths.data_dir`, the `effective`
        subsets); `data_dir` and `train_subset` / `test_subset` override it (e.g. the data root of this machine)."""
        effective = config.get("effective", {})
        request = cls(dict(config["data"]), str(data_dir or config["paths"]["data_dir"]), effective.get("train_subset"),
                      effective.get("test_subset"))
        return replace(request, **subsets)


def build_data(request: DataRequest, device: torch.device, model: torch.nn.Module | None = None) -> RunData:
    """The data `request` asks for, on `device` (`model`: for data configs that depend on it, e.g. a ViT's image size)."""
    name = request.data["name"]
    if name not in DATASETS:
        raise DataUnavailableError(f"unknown dataset {name!r}; registered: {sorted(DATASETS)}")
    return DATASETS[name](request.data, request.data_dir, device, request.train_subset, request.test_subset, model)


def main() -> None:
    """`python -m experiments.data [ROOT]`: fetch and verify every tensor dataset into ROOT (default ./data)."""
    if len(sys.argv) > 2 or (len(sys.argv) == 2 and sys.argv[1].startswith("-")):
        sys.exit("usage: python -m experiments.data [ROOT]   (ROOT defaults to $RMT_DATA_ROOT, else ./data)")
    root = Path(sys.argv[1] if len(sys.argv) > 1 else os.environ.get("RMT_DATA_ROOT", "data"))
    for name in TENSOR_DATASETS:
        try:
            print(f"{name}: {ensure_dataset(name, root)}")
        except (DataUnavailableError, OSError) as exc:  # OSError: ROOT is a file, not writable, ...
            sys.exit(f"error: {exc}")


if __name__ == "__main__":
    main()
