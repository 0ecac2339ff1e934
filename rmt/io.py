"""Loading what `rmt analyze` / `rmt prune` are pointed at, and saving pruned models.

A MODEL argument is, in this order:
- a folder written by `rmt prune` (`rmt_model.json` + `model.pt`);
- a run folder of this suite (its `checkpoint.pt` holds the model spec, splits and weights);
- a checkpoint file (`read_checkpoint`: weights only, code-executing pickles refused): a state dict, or a dict holding one under `model`
  or `state_dict` (analysable as weights only: no architecture);
- a timm model name (random init, or `pretrained=True` when the weights are reachable).
"""

from __future__ import annotations

import io
import json
import pickle
import re
import warnings
from pathlib import Path

import torch
from torch import nn

from rmt.models import build_model, model_from_checkpoint
from rmt.prune import apply_splits
from rmt.runfolder import CHECKPOINT, atomic_write_bytes, atomic_write_text

PRUNED_JSON = "rmt_model.json"
PRUNED_WEIGHTS = "model.pt"


class CheckpointFileError(ValueError):
    """A file that cannot be read as a weights-only PyTorch checkpoint: not one, truncated, or refused."""


def _first_line(exc: BaseException, limit: int = 120) -> str:
    """The first line of an exception's message, shortened at a word boundary."""
    line = (str(exc).splitlines() or [""])[0].strip()
    return line if len(line) <= limit else line[:limit].rsplit(" ", 1)[0] + " ..."


def read_checkpoint(path: str | Path):
    """`torch.load(path, weights_only=True)` on the CPU, or one `CheckpointFileError` line saying what the file is.

    `torch.save` writes a zip archive (a raw pickle in the legacy format); anything else is not a checkpoint.
    A pickle that asks for code (an arbitrary class or function) is refused: loading it could run that code.
    """
    path = Path(path)
    with path.open("rb") as f:
        head = f.read(8)
    if not head:
        raise CheckpointFileError(f"{path} is empty: not a PyTorch checkpoint")
    if not head.startswith((b"PK\x03\x04", b"\x80")):  # a zip archive, or a pickle of protocol >= 2
        raise CheckpointFileError(f"{path} is not a PyTorch checkpoint (torch.save writes a zip archive; this file starts with {head!r})")
    try:
        with warnings.catch_warnings():  # torch warns about pickle protocols before refusing or loading
            warnings.simplefilter("ignore", UserWarning)
            return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        message = str(exc)
        wanted = re.search(r"GLOBAL (\S+)", message)
        opcode = re.search(r"Unsupported operand \d+", message)
        what = (f"it asks to import {wanted.group(1)}" if wanted else
                f"it uses pickle features a weights-only load does not allow ({opcode.group(0) if opcode else _first_line(exc)})")
        raise CheckpointFileError(
            f"refused to load {path}: {what}, and unpickling it in full could run code. Only tensors, numbers, strings and "
            f"containers are loaded; if you trust the file, re-save its state dict with torch.save") from None
    except Exception as exc:  # a truncated zip, a cut-off pickle, a corrupt record
        raise CheckpointFileError(f"{path} is truncated or corrupt ({type(exc).__name__}: {_first_line(exc)})") from None


def _state_dict_of(obj) -> dict[str, torch.Tensor]:
    if isinstance(obj, dict):
        for key in ("model", "state_dict"):
            if isinstance(obj.get(key), dict):
                return obj[key]
        if all(isinstance(v, torch.Tensor) for v in obj.values()):
            return obj
    raise ValueError("the checkpoint holds no state dict (expected tensors, or a dict with 'model' / 'state_dict')")


def build_source(source: dict) -> nn.Module:
    """The unpruned architecture a source description names: {"kind": "timm", "name"} or {"kind": "spec", "spec"}
    (a model spec, `rmt.models.build_model(**spec)`)."""
    if source["kind"] == "timm":
        return build_model("timm", model_name=source["name"])
    if source["kind"] == "spec":
        return build_model(**source["spec"])
    raise ValueError(f"unknown model source kind {source['kind']!r}")


def load_model(spec: str, pretrained: bool = False) -> tuple[nn.Module | dict[str, torch.Tensor], dict]:
    """(model, or a bare state dict; the source description used by `save_pruned`)."""
    path = Path(spec)
    if (path / PRUNED_JSON).exists():
        record = json.loads((path / PRUNED_JSON).read_text())
        return load_pruned(path), {**record["source"], "splits": record["splits"]}
    ckpt_path = path / CHECKPOINT if path.is_dir() else path
    if ckpt_path.is_file():
        ckpt = read_checkpoint(ckpt_path)
        if isinstance(ckpt, dict) and "model_spec" in ckpt:  # a checkpoint of this suite's runners: it rebuilds itself
            return model_from_checkpoint(ckpt), {"kind": "spec", "spec": ckpt["model_spec"], "splits": ckpt.get("splits", [])}
        return _state_dict_of(ckpt), {"kind": "state_dict", "path": str(ckpt_path)}
    if path.exists():
        raise FileNotFoundError(f"{path} is neither a run folder (with checkpoint.pt) nor an `rmt prune` output")
    try:
        model = build_model("timm", model_name=spec, pretrained=pretrained)  # WeightsUnavailableError says what to do
    except KeyError as exc:
        raise ValueError(f"{spec!r} is not a file, a folder or a timm model name ({exc.args[0]})") from None
    return model, {"kind": "timm", "name": spec, "pretrained": pretrained}


def save_pruned(model: nn.Module, out_dir: str | Path, source: dict, splits: list[tuple[str, int]], meta: dict) -> Path:
    """Write `model.pt` (state dict) and `rmt_model.json` (source + splits: enough to rebuild the architecture)."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    base_splits = [tuple(s) for s in source.get("splits", [])]
    buffer = io.BytesIO()
    torch.save(model.state_dict(), buffer)
    atomic_write_bytes(out / PRUNED_WEIGHTS, buffer.getvalue())
    record = {"source": {k: v for k, v in source.items() if k != "splits"}, "splits": [list(s) for s in base_splits + list(splits)], **meta}
    atomic_write_text(out / PRUNED_JSON, json.dumps(record, indent=2, default=str))
    return out


def load_pruned(out_dir: str | Path) -> nn.Module:
    """Rebuild a model saved by `save_pruned` (architecture from its source and splits, then the weights)."""
    out = Path(out_dir)
    record = json.loads((out / PRUNED_JSON).read_text())
    model = apply_splits(build_source({**record["source"], "pretrained": False}), [tuple(s) for s in record["splits"]])
    model.load_state_dict(read_checkpoint(out / PRUNED_WEIGHTS))
    return model.eval()
