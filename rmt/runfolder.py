"""The run folder's file names and the only safe ways to write them: atomic rewrites, appends whose torn last line
a reader drops, one writer per folder, and the run's kind.  Standard library only (plus PyYAML to read config.yaml).

A run folder holds
- `config.yaml`   the resolved config (with the `kind` of run: the runner's name) and, for training, the `effective`
                  settings the profile produced and the settings' `fingerprint`;
- `env.json`      package versions, git commit, device and numerics (earlier sessions of a resumed run in `earlier`);
- `metrics.jsonl` / `metrics.csv`  one row per epoch (scalars);
- `layers.csv`    one row per layer and epoch (rank, sigma_plus, bulk fraction, GoF, split, ...);
- `summary.json`  final numbers, written when the run ends (its absence means: unfinished);
- `spectra.csv`   singular values of every layer of the final model (for ESD figures);
- `checkpoint.pt` (+ `checkpoint.prev.pt`) the last two epochs' state; stage files of other runners (`stages.json`
                  and the files it lists with their digests, e.g. P4's `curve.csv`, `spectrum.csv`);
- `.lock`         the writer's lock (empty when no run holds it).

Conventions:
- Every whole-file write goes through `atomic_write_text` / `atomic_write_bytes`: a temporary file in the same
  folder, flushed and fsynced, renamed over the target, the folder fsynced.  A kill at any instant leaves the old
  file or the new one, never a mixture.
- Appended files (`metrics.jsonl`, `metrics.csv`, `layers.csv`) end every row with a newline; a reader drops a last
  line without one (what a kill mid-append leaves) and says so once per file (`read_jsonl`, `read_csv_rows`).
- `RunFolderLock` is held by the process writing a run folder for the run's life: a second writer is refused in one
  line naming the holder; a lock left by a process that is gone is taken over, with a note.  The lock is an
  advisory `flock` on `LOCK_FILE` (released by the kernel when its holder dies, so a requeued job gets its folder
  back); the file names the holder while it is held and is emptied, not deleted, when released.
"""

from __future__ import annotations

import csv
import fcntl
import io
import json
import os
import socket
import sys
import time
from pathlib import Path

CONFIG_YAML = "config.yaml"
ENV_JSON = "env.json"
METRICS_JSONL = "metrics.jsonl"
METRICS_CSV = "metrics.csv"
LAYERS_CSV = "layers.csv"
SUMMARY_JSON = "summary.json"
SPECTRA_CSV = "spectra.csv"
CHECKPOINT = "checkpoint.pt"
CHECKPOINT_PREV = "checkpoint.prev.pt"
STAGES_JSON = "stages.json"
CURVE_CSV = "curve.csv"  # P4 limit runs
SPECTRUM_CSV = "spectrum.csv"
LOCK_FILE = ".lock"

_warned: set[str] = set()


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | Path, data: bytes) -> None:
    """Replace `path` with `data` atomically (temp file + fsync + rename + folder fsync)."""
    path = Path(path)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with tmp.open("wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    atomic_write_bytes(path, text.encode("utf-8"))


def csv_text(rows: list[dict], columns: list[str] | None = None) -> str:
    """Rows as CSV text with a header (`columns`, else the union of the rows' keys in first-seen order)."""
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns or list(dict.fromkeys(k for row in rows for k in row)), lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buf.getvalue()


def _complete_lines(path: Path) -> list[str]:
    """The file's lines, without a torn last one (no final newline), which is reported once per file."""
    text = path.read_text(encoding="utf-8")
    lines = text.split("\n")
    tail = lines.pop()  # "" when the file ends with a newline
    if tail.strip():
        key = str(path.resolve())
        if key not in _warned:
            _warned.add(key)
            print(f"warning: {path} ends with a cut-off line (a write was interrupted); it is ignored", file=sys.stderr)
    return lines


def read_jsonl(path: str | Path) -> list[dict]:
    """The JSON objects of a JSON-lines file; a torn last line is dropped (said once); a missing file is empty."""
    path = Path(path)
    if not path.exists():
        return []
    return [json.loads(line) for line in _complete_lines(path) if line.strip()]


def read_csv_rows(path: str | Path) -> tuple[list[str], list[dict]]:
    """(header, rows) of a CSV file written by this module; a torn last line is dropped (said once)."""
    path = Path(path)
    if not path.exists():
        return [], []
    lines = _complete_lines(path)
    reader = csv.DictReader(io.StringIO("\n".join(lines) + "\n"))
    rows = list(reader)
    return list(reader.fieldnames or []), rows


def read_csv_header(path: str | Path) -> list[str]:
    """The column names of a CSV file (its first line), [] when it is missing or empty."""
    path = Path(path)
    if not path.exists():
        return []
    with path.open(newline="", encoding="utf-8") as fh:
        first = fh.readline()
    return next(csv.reader([first]), []) if first.endswith("\n") else []


def append_line(path: str | Path, line: str) -> None:
    """Append one newline-terminated line and flush it to disk; a torn last line (a killed writer's) is cut off first."""
    path = Path(path)
    with path.open("a+b") as fh:
        size = fh.seek(0, os.SEEK_END)
        end = size
        while end:  # back to the last newline (or the start): what follows it is a torn line
            start = max(0, end - 65536)
            fh.seek(start)
            chunk = fh.read(end - start)
            if end == size and chunk.endswith(b"\n"):
                break
            cut = chunk.rfind(b"\n")
            if cut >= 0 or start == 0:
                fh.truncate(start + cut + 1)
                break
            end = start
        fh.write(line.rstrip("\n").encode("utf-8") + b"\n")
        fh.flush()
        os.fsync(fh.fileno())


def read_config(folder: Path) -> dict | None:
    """The config.yaml a run left in `folder` (None: none, or one cut off or garbled, which is said)."""
    path = Path(folder) / CONFIG_YAML
    if not path.exists():
        return None
    import yaml  # PyYAML: the one package this module reads config.yaml with

    try:
        config = yaml.safe_load(path.read_text())
    except yaml.YAMLError:
        config = None
    if not isinstance(config, dict):
        print(f"warning: {path} is empty or not a config (a write was interrupted?); it is ignored", file=sys.stderr)
        return None
    return config


def run_kind(config: dict | None) -> str | None:
    """The runner that wrote a config (`kind`; records from before it was written: `train` when they hold the
    training runner's `effective` settings, else unknown)."""
    if config is None:
        return None
    return config.get("kind") or ("train" if "effective" in config else None)


class RunFolderBusyError(RuntimeError):
    """Another live process writes this run folder."""


class RunFolderLock:
    """`with RunFolderLock(folder):` — this process is the folder's only writer until the block ends."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.fd: int | None = None

    def acquire(self) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        path = self.folder / LOCK_FILE
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder(fd)
            os.close(fd)
            raise RunFolderBusyError(
                f"{self.folder} is being written by another run ({holder}); wait for it to end, or give this run another "
                f"run_name / hydra.run.dir") from None
        previous = self._holder_record(fd)  # non-empty only when its writer ended without releasing the lock
        if previous and previous.get("pid") != os.getpid():
            print(f"note: {self.folder} was locked by pid {previous.get('pid')} on {previous.get('host')}, which has ended; "
                  f"taking it over", file=sys.stderr)
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                  "since": time.strftime("%Y-%m-%dT%H:%M:%S")}).encode(), 0)
        self.fd = fd

    @staticmethod
    def _holder_record(fd: int) -> dict:
        try:
            return json.loads(os.pread(fd, 4096, 0) or b"{}")
        except (OSError, json.JSONDecodeError):
            return {}

    def _holder(self, fd: int) -> str:
        rec = self._holder_record(fd)
        return f"pid {rec.get('pid', '?')} on {rec.get('host', '?')} since {rec.get('since', '?')}" if rec else "unknown holder"

    def release(self) -> None:
        if self.fd is None:
            return
        try:
            os.ftruncate(self.fd, 0)
        except OSError:
            pass
        fcntl.flock(self.fd, fcntl.LOCK_UN)
        os.close(self.fd)
        self.fd = None  # the emptied file stays: deleting it would race with a writer about to lock it

    def __enter__(self) -> RunFolderLock:
        self.acquire()
        return self

    def __exit__(self, *exc) -> None:
        self.release()


class RunFolder:
    """One run folder: where each record file is, how to read it (torn last lines dropped) and how to write it
    (atomically, or as whole appended lines).  `truncate(epoch)` drops rows after a resumed checkpoint."""

    def __init__(self, run_dir: str | Path):
        self.dir = Path(run_dir)

    def config(self) -> dict | None:
        return read_config(self.dir)

    def finished(self) -> bool:
        return (self.dir / SUMMARY_JSON).exists()

    def write_config(self, config: dict) -> None:
        import yaml

        atomic_write_text(self.dir / CONFIG_YAML, yaml.safe_dump(config, sort_keys=False))

    def read_rows(self) -> list[dict]:
        """The per-epoch rows of metrics.jsonl (a row cut off by a kill is dropped, said once)."""
        return read_jsonl(self.dir / METRICS_JSONL)

    def truncate(self, last_epoch: int) -> None:
        """Keep only whole rows of epochs `<= last_epoch` in every per-epoch file (each rewritten atomically)."""
        rows = [r for r in self.read_rows() if r["epoch"] <= last_epoch]
        if rows or (self.dir / METRICS_JSONL).exists():
            atomic_write_text(self.dir / METRICS_JSONL, "".join(json.dumps(r) + "\n" for r in rows))
        self._rewrite_csv(METRICS_CSV, rows)
        header, layer_rows = read_csv_rows(self.dir / LAYERS_CSV)
        if header:
            kept = [r for r in layer_rows if r.get("epoch") and int(r["epoch"]) <= last_epoch]
            self._rewrite_csv(LAYERS_CSV, kept, header)

    def _rewrite_csv(self, name: str, rows: list[dict], columns: list[str] | None = None) -> None:
        path = self.dir / name
        if not rows:
            path.unlink(missing_ok=True)
            return
        atomic_write_text(path, csv_text(rows, columns))

    def _append_csv(self, name: str, rows: list[dict]) -> None:
        """Append rows; when they bring new columns, the file is rewritten (atomically) with the union of columns."""
        if not rows:
            return
        path = self.dir / name
        columns = list(dict.fromkeys(k for row in rows for k in row))
        header = read_csv_header(path)
        if not header or not set(columns) <= set(header):
            header, old = read_csv_rows(path)
            self._rewrite_csv(name, old + rows, list(dict.fromkeys([*header, *columns])))
            return
        for line in csv_text(rows, header).splitlines()[1:]:
            append_line(path, line)

    def log_epoch(self, row: dict, layers: list[dict]) -> None:
        append_line(self.dir / METRICS_JSONL, json.dumps(row))
        self._append_csv(METRICS_CSV, [row])
        self._append_csv(LAYERS_CSV, [{"epoch": row["epoch"], **layer} for layer in layers])

    def discard_results(self) -> None:
        """Remove what a finished run writes at its end (summary, final spectra) before the run goes on."""
        for name in (SUMMARY_JSON, SPECTRA_CSV):
            (self.dir / name).unlink(missing_ok=True)

    def read_spectra(self) -> list[tuple[str, int, int, list[float]]]:
        """(layer, out, fan_in, singular values) per layer of `spectra.csv` (the final model's spectra), in file order;
        FileNotFoundError when the run has not written it (it does when it finishes)."""
        path = self.dir / SPECTRA_CSV
        if not path.exists():
            raise FileNotFoundError(f"{self.dir} has no {SPECTRA_CSV} (written when a run finishes)")
        layers: dict[str, tuple[int, int, list[float]]] = {}
        for row in read_csv_rows(path)[1]:
            entry = layers.setdefault(row["layer"], (int(row["out"]), int(row["fan_in"]), []))
            entry[2].append(float(row["singular_value"]))
        return [(name, out, fan_in, values) for name, (out, fan_in, values) in layers.items()]

    def write_spectra(self, rows: list[dict]) -> None:
        self._rewrite_csv(SPECTRA_CSV, rows)

    def write_summary(self, summary: dict) -> None:
        atomic_write_text(self.dir / SUMMARY_JSON, json.dumps(summary, indent=2))

    def write_frame(self, name: str, frame) -> None:
        """A table of the record (a pandas DataFrame) as `name`, written atomically."""
        atomic_write_text(self.dir / name, frame.to_csv(index=False))

    def write_json(self, name: str, data: dict) -> None:
        atomic_write_text(self.dir / name, json.dumps(data, indent=2))
