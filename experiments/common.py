"""What every runner shares: device and numerics settings, the model spec from config, evaluation, loading a
source run, the Hydra entry."""

from __future__ import annotations

import hashlib
import inspect
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf

from experiments.checkpoints import load_checkpoint
from experiments.data import DataRequest, RunData, Split, build_data
from experiments.errors import USER_ERRORS, RunConfigError
from experiments.records import RunRecord
from experiments.sweeps import (
    discard_failed_run,
    exit_with_parent,
    holds_only_hydra_files,
    one_line,
    record_failure,
    run_folder,
    sweep_to_watch,
)
from rmt.models import MODEL_BUILDERS, model_from_checkpoint
from rmt.runfolder import CONFIG_YAML, RunFolderBusyError, RunFolderLock, read_config, run_kind

T = TypeVar("T")
CONF_DIR = Path(__file__).resolve().parent.parent / "conf"
DTYPES = {"float32": torch.float32, "float64": torch.float64}


def resolve_device(spec: str) -> torch.device:
    """`auto` -> the GPU when one is present, else the CPU; `cpu`, `cuda`, `cuda:1` as given (checked)."""
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(spec)
    except RuntimeError:
        raise RunConfigError(f"device must be auto, cpu, cuda or cuda:<index>; got {spec!r}") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise RunConfigError(f"device={spec} but no CUDA GPU is visible to torch; use device=cpu or device=auto")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise RunConfigError(f"device={spec} but only {torch.cuda.device_count()} GPU(s) are visible")
    elif device.type != "cpu":
        raise RunConfigError(f"device must be auto, cpu, cuda or cuda:<index>; got {spec!r}")
    return device


def resolve_dtype(name: str) -> torch.dtype:
    if name not in DTYPES:
        raise RunConfigError(f"dtype must be one of {sorted(DTYPES)}; got {name!r}")
    return DTYPES[name]


def numerics(device: torch.device, dtype: str) -> dict:
    """The settings besides the config that change a run's numbers: device (GPU model), CPU threads (CPU runs), dtype.

    Call after `torch.set_num_threads`.  Stored in each checkpoint; a resume under other numerics is refused."""
    if device.type == "cuda":
        return {"device": f"cuda:{torch.cuda.get_device_name(device)}", "threads": None, "dtype": dtype}
    return {"device": "cpu", "threads": torch.get_num_threads(), "dtype": dtype}


def setup_numerics(cfg: DictConfig) -> tuple[torch.device, torch.dtype, dict]:
    """Apply `threads`, resolve `device` and `dtype`; returns them and the `numerics` record."""
    if cfg.threads:
        torch.set_num_threads(int(cfg.threads))
    dtype_name = str(cfg.get("dtype", "float32"))
    device = resolve_device(str(cfg.device))
    return device, resolve_dtype(dtype_name), numerics(device, dtype_name)


# Model config keys that are not architecture: the run label and where initial weights come from.
NON_ARCH_KEYS = ("name", "pretrained", "checkpoint")
# Model config lists of widths that the profile scales (and a timm model's `kwargs.embed_dim`).
WIDTH_KEYS = ("hidden", "channels")


def model_spec(cfg: DictConfig) -> dict:
    """`rmt.models.build_model(**spec)` arguments: the model config (widths scaled by the profile) plus the
    data facts `input_shape` and `num_classes` where the builder takes them."""
    p = cfg.profile
    spec = {k: v for k, v in OmegaConf.to_container(cfg.model, resolve=True).items() if k not in NON_ARCH_KEYS}
    for key in WIDTH_KEYS:
        if key in spec:
            spec[key] = [max(int(p.min_width), round(v * p.width_scale)) for v in spec[key]]
    kwargs = spec.get("kwargs") or {}
    if "embed_dim" in kwargs:  # a transformer's width: scaled, kept a multiple of its heads
        heads = int(kwargs.get("num_heads", 1))
        kwargs["embed_dim"] = heads * max(-(-int(p.min_width) // heads), round(kwargs["embed_dim"] * p.width_scale / heads))
    if spec["kind"] not in MODEL_BUILDERS:
        raise RunConfigError(f"unknown model kind {spec['kind']!r}; known: {sorted(MODEL_BUILDERS)}")
    takes = inspect.signature(MODEL_BUILDERS[spec["kind"]]).parameters
    size = cfg.data.get("image_size")
    facts = {"input_shape": [int(cfg.data.channels), size, size], "num_classes": int(cfg.data.num_classes)}
    return {**spec, **{k: v for k, v in facts.items() if k in takes}}


@torch.no_grad()
def evaluate(model: torch.nn.Module, split: Split, batch_size: int, progress: bool = False) -> tuple[float, float, float]:
    """(mean cross-entropy, top-1, top-5 accuracy) of `model` in eval mode over a split (top-5 = top-1 with < 5
    classes); sums stay on the device until the end."""
    from tqdm.auto import tqdm

    model.eval()
    param = next(model.parameters())
    loss_sum = torch.zeros((), dtype=torch.float64, device=param.device)
    correct = torch.zeros(2, dtype=torch.long, device=param.device)
    for xb, yb in tqdm(split.batches(batch_size), total=-(-len(split) // batch_size), desc="eval", unit="batch",
                       disable=not progress, leave=False):
        logits = model(xb.to(param.dtype))
        loss_sum += F.cross_entropy(logits.float(), yb, reduction="sum")
        top = logits.topk(min(5, logits.shape[1]), dim=1).indices
        correct += torch.stack([(top[:, 0] == yb).sum(), (top == yb[:, None]).any(1).sum()])
    top1, top5 = (correct.double() / len(split)).tolist()
    return loss_sum.item() / len(split), top1, top5


@torch.no_grad()
def weights_digest(model: torch.nn.Module) -> str:
    """sha256 (16 hex digits) of a model's state dict, names and bytes in order: equal digests mean identical weights
    (both arms' initial weights; the exact model a cached stage was computed on)."""
    digest = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        digest.update(name.encode())
        digest.update(tensor.detach().cpu().contiguous().view(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()[:16]


@dataclass
class SourceRun:
    """A finished (or interrupted) training run, loaded to analyse: its model on the device, config, checkpoint."""

    dir: Path
    model: torch.nn.Module
    config: dict
    checkpoint: dict

    def data(self, device: torch.device, data_dir: str | None = None) -> RunData:
        """The run's data on `device` (read from `data_dir` when given, else where the run read it)."""
        return build_data(DataRequest.of_run(self.config, data_dir), device, model=self.model)


def load_source_run(run_dir: str | Path, device: torch.device) -> SourceRun:
    """The trained model of a run folder (eval mode, on `device`), loadable wherever it was trained."""
    run_dir = Path(run_dir)
    if not (run_dir / CONFIG_YAML).exists():
        raise FileNotFoundError(f"{run_dir} is not a run folder (no {CONFIG_YAML})")
    config = read_config(run_dir)
    if config is None:
        raise RunConfigError(f"{run_dir / CONFIG_YAML} is empty or cut off: that run's record is damaged")
    kind = run_kind(config)
    if kind != "train":
        raise RunConfigError(f"{run_dir} holds a {kind or 'non-training'} run, not a training run: point to the run "
                             f"folder of `experiments.train`")
    ckpt = load_checkpoint(run_dir)
    if ckpt is None:
        raise FileNotFoundError(f"{run_dir} has no checkpoint: the run has not finished an epoch")
    return SourceRun(run_dir, model_from_checkpoint(ckpt).to(device).eval(), config, ckpt)


def begin_record(cfg: DictConfig, kind: str, **extra) -> RunRecord:
    """The run folder `cfg.run_dir` of a `kind` run (the runner's name; a folder of another kind is refused) with its
    resolved config (plus `extra` entries) and environment written.  A summary left by an earlier run there is removed
    first: until this run writes its own, the folder reads as unfinished."""
    record = RunRecord(cfg.run_dir)
    record.claim(kind)
    record.discard_results()
    record.begin({**OmegaConf.to_container(cfg, resolve=True), **extra}, kind)
    return record


def hydra_entry(config_name: str, run: Callable[[DictConfig], T], report: Callable[[T], object] | None = None,
                extra_errors: tuple[type[Exception], ...] = ()) -> Callable[[], None]:
    """`main()` of a runner: Hydra composes `conf/<config_name>.yaml`; the run folder `cfg.run_dir` is Hydra's output
    directory (`hydra.run.dir`, or `hydra.sweep.dir`/`subdir`; by default derived from `paths.runs_dir`); `run(cfg)`
    runs and `report(result)` prints (its return value is Hydra's job return value).

    A user error ends a single run with one `error: ...` line; in a sweep it is reported and the sweep goes on
    (`experiments.sweeps.SweepReport` lists every failed job at the end).  Either way a job that failed in a run folder
    it created leaves nothing there unless it saved state to resume from (`experiments.sweeps.discard_failed_run`).
    Hydra's own errors (unknown option, bad override) are one line too.
    """

    @hydra.main(version_base="1.3", config_path=str(CONF_DIR), config_name=config_name)
    def job(cfg: DictConfig) -> object:
        hydra_cfg = HydraConfig.get()
        cfg.run_dir = str(run_folder(hydra_cfg.runtime.output_dir))
        sweep_pid = sweep_to_watch()
        if sweep_pid is not None:
            exit_with_parent(sweep_pid)  # a local worker process of a sweep: it must not outlive it
        lock = RunFolderLock(cfg.run_dir)  # the folder's only writer for the run's life
        try:
            lock.acquire()
        except RunFolderBusyError as exc:  # another live run's folder: nothing in it is touched
            if hydra_cfg.mode != RunMode.MULTIRUN:
                sys.exit(f"error: {exc}")
            print(record_failure(hydra_cfg.sweep.dir, hydra_cfg.job.num, list(hydra_cfg.overrides.task), exc, True),
                  file=sys.stderr)
            return None
        try:
            fresh = holds_only_hydra_files(Path(cfg.run_dir), hydra_cfg.job.name)
            result = run(cfg)
        except Exception as exc:
            if fresh:  # still under the lock: no other writer can be adding to the folder
                discard_failed_run(Path(cfg.run_dir), OmegaConf.select(cfg, "paths.runs_dir"))
            user_error = isinstance(exc, (*USER_ERRORS, *extra_errors))
            if hydra_cfg.mode != RunMode.MULTIRUN:
                if user_error:
                    sys.exit(f"error: {exc}")
                raise
            print(record_failure(hydra_cfg.sweep.dir, hydra_cfg.job.num, list(hydra_cfg.overrides.task), exc, user_error),
                  file=sys.stderr)
            return None
        finally:
            lock.release()
        return report(result) if report is not None else None

    def main() -> None:
        os.environ.setdefault("HYDRA_FULL_ERROR", "1")  # Hydra's own errors reach the handler below unabridged
        try:
            job()
        except HydraException as exc:
            sys.exit(f"error: {one_line(exc)}")
        except KeyboardInterrupt:  # a training run resumes from its last checkpoint when the command is run again
            print("interrupted", file=sys.stderr)
            sys.exit(130)
        except Exception as exc:
            if type(exc).__name__ != "UncompletedJobError":  # submitit: a cluster job ended without a result
                raise
            head = " ".join(str(exc).split("Error stream produced")[0].split())  # submitit's own lines, joined
            sys.exit(f"error: {head} (its log beside that path holds the rest; re-running the command resumes every "
                     f"unfinished run from its last checkpoint)")

    return main
