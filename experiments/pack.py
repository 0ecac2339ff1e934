"""The GPU pack: paper-profile runs for a short, one-command window on a GPU machine, and their ingestion here.

    python -m experiments.pack run --out OUT [--budget 540] [--profile paper] [--device auto]
    python -m experiments.pack bundle [--datasets mnist,fashion_mnist]      # before the window, here
    python -m experiments.pack ingest OUT/*.tgz [--allow-other-version]     # after it, here
    python -m experiments.pack estimates OUT/pack.log                       # measured rows for ESTIMATES

`run` spends at most `--budget` wall-clock seconds: a self-check (the CUDA tests, including the CUDA-graph vs
eager equivalence) and the GPU benchmarks first, then `QUEUE` in order, several runs side by side.  A run whose
record is already committed under `results/` is skipped, so successive windows make progress; a run starts only
when its estimate (`ESTIMATES`) fits the time left.  What finished goes into OUT as one `.tgz` per queue group
(records only, no checkpoints) plus `pack.log` (JSON lines: every start, end, skip and measured time, and the
benchmarks' results): at most `MAX_FILES` files of at most `MAX_FILE_BYTES` each.  It exits 0 when the budget
ends, listing what finished and what did not.

It needs only this folder and a Python with torch, torchvision, timm, pandas, matplotlib, scipy, tqdm, pyyaml and
joblib: `bundle` copies the pure-Python packages the runners need beyond those (Hydra, OmegaConf, ANTLR, pytest)
from this environment into `BUNDLE_DIR`, with the datasets chosen, and `run` uses that folder when present.  The
tracked files plus the bundle must stay under `MAX_TRAVEL_BYTES` (what a GPU window carries).
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import io
import itertools
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from rmt.runfolder import LOCK_FILE, METRICS_CSV, SUMMARY_JSON, atomic_write_text, read_csv_rows

ROOT = Path(__file__).resolve().parent.parent
BUNDLE_DIR = ROOT / ".pack"
RESULTS = ROOT / "results"
MAX_FILES = 8
MAX_FILE_BYTES = 16 * 2**20
MAX_TRAVEL_BYTES = 64 * 2**20
PACKAGING_RESERVE_S = 10  # kept back from the budget to stop runs and write the archives
SELF_CHECK_LIMIT_S = 60

# Modules copied into the bundle (top-level import names; each with its dist-info when present).
BUNDLE_MODULES = ("hydra", "hydra_plugins", "omegaconf", "antlr4", "pytest", "_pytest", "pluggy", "iniconfig", "packaging",
                  "py")

# Seconds per run: (start-up, per epoch), by device kind and experiment name, at the profile's sizes.  CPU row: a
# smoke run (4 epochs) took 15-25 s here on 2 shared cores (start-up ~8-15 s of it).  CUDA rows: the H100 eager
# Fig. 1 (a) epoch (0.50 s, launch-bound) scaled by each experiment's steps per epoch, until a pack's log gives
# measured ones (`python -m experiments.pack estimates OUT/pack.log` prints them).
ESTIMATES: dict[str, dict[str, tuple[float, float]]] = {
    "cuda": {"fig1": (12, 0.5), "p1_fmnist_ablation": (12, 0.6), "p1_var": (12, 0.5), "p1_fig3": (12, 0.6),
             "p3_vit_demo": (15, 3.0), "p3_vit_demo_prune": (60, 0.0), "p3_vit_demo_ft": (15, 3.0), "p4": (12, 0.5),
             "p4_limit": (90, 0.0), "p2_examples": (12, 0.5)},
    "cpu": {"default": (10, 1.0)},
}
# Runs sharing one GPU slow each other down; a start assumes this many overlap without loss (to be measured).
GPU_OVERLAP = 4


@dataclass(frozen=True)
class Step:
    """Runs of one runner: `module` (experiments.<module>) with `config` (its primary config) and `overrides`;
    `sweep` overrides the config's own `hydra.sweeper.params` (None: use them).  `profile_key` names the
    profile setting of that runner."""

    module: str
    config: str
    overrides: tuple[str, ...] = ()
    sweep: dict[str, tuple[str, ...]] | None = None
    profile_key: str = "profile"


@dataclass(frozen=True)
class Group:
    """One archive of the pack: steps run in order (a later step's runs start when the earlier step's have ended)."""

    name: str
    steps: tuple[Step, ...]


QUEUE: tuple[Group, ...] = (
    Group("p1_fig1", (Step("train", "train", ("experiment=fig1",)),)),
    Group("p1_fmnist_ablation", (Step("train", "train", ("experiment=p1_fmnist_ablation",)),)),
    Group("p1_var", (Step("train", "train", ("experiment=p1_var",)),)),
    Group("p1_fig3", (Step("train", "train", ("experiment=p1_fig3",)),)),
    Group("p3_vit_demo", (Step("train", "train", ("experiment=p3_vit_demo",)),
                          Step("p3_prune", "p3_prune", ("experiment=p3_vit_demo_prune",)),
                          Step("train", "train", ("experiment=p3_vit_demo_ft",)))),
    Group("p4_fc12", (Step("train", "train", ("experiment=p4", "model=fc12"), {"data": ("mnist", "fashion_mnist")}),
                      Step("p4_limit", "p4_limit", ("net=fc12",), {"dataset": ("mnist", "fashion_mnist")},
                           profile_key="profile_name"))),
    Group("p2_examples", (Step("train", "train", ("experiment=p2_examples",)),)),
)


@dataclass
class Unit:
    """One run of the queue."""

    group: str
    step: int
    module: str
    args: list[str]
    record: str  # run folder relative to the runs root: <name>/<profile>/<run_name>
    experiment: str  # cfg.name
    epochs: int
    dataset: str  # what it reads: data.name of a training run, the source run's dataset otherwise
    after: list[str] = field(default_factory=list)  # records that must end first
    state: str = "waiting"  # waiting | running | finished | failed | skipped | killed | not-started
    started: float = 0.0
    estimate_s: float = 0.0
    proc: subprocess.Popen | None = None
    log: Path | None = None
    archive: bool = True  # False: committed already, run again only as the source of a later step


def code_digest(root: Path = ROOT) -> str:
    """sha256 (16 hex) of the code and configs that make the numbers: rmt/, experiments/ and conf/ (.py, .yaml)."""
    h = hashlib.sha256()
    for path in sorted(p for d in ("rmt", "experiments", "conf") for p in (root / d).rglob("*") if p.suffix in (".py", ".yaml")):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def sweep_values(text: object) -> tuple[str, ...]:
    """The values of one Hydra sweeper parameter (`a,b,c` or `range(0,5)`)."""
    s = str(text).strip()
    if s.startswith("range(") and s.endswith(")"):
        return tuple(str(v) for v in range(*(int(x) for x in s[6:-1].split(","))))
    return tuple(v.strip() for v in s.split(","))


def expand(queue: tuple[Group, ...], profile: str, runs_dir: Path, data_dir: Path) -> list[Unit]:
    """Every run of the queue, with its record folder and epochs, from the composed configs."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    from experiments.common import CONF_DIR

    units: list[Unit] = []
    paths = [f"paths.runs_dir={runs_dir}", f"paths.data_dir={data_dir}"]
    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        for group in queue:
            previous: list[str] = []
            for index, step in enumerate(group.steps):
                base = [*step.overrides, f"{step.profile_key}={profile}"]
                sweep = step.sweep
                if sweep is None:
                    cfg = compose(config_name=step.config, overrides=base + paths, return_hydra_config=True)
                    params = OmegaConf.select(cfg, "hydra.sweeper.params") or {}
                    sweep = {k: sweep_values(v) for k, v in params.items()}
                current = []
                for combo in itertools.product(*sweep.values()):
                    args = base + [f"{k}={v}" for k, v in zip(sweep, combo)]
                    cfg = compose(config_name=step.config, overrides=args + paths)
                    record = str(Path(cfg.run_dir).relative_to(runs_dir))
                    epochs = 0
                    if step.module == "train":
                        from experiments.train import effective_settings

                        epochs = effective_settings(cfg)["epochs"]
                    dataset = OmegaConf.select(cfg, "data.name") or OmegaConf.select(cfg, "dataset")
                    units.append(Unit(group.name, index, step.module, args, record, str(cfg.name), epochs, str(dataset),
                                      after=list(previous)))
                    current.append(record)
                previous = current
    return units


def estimate(unit: Unit, device_kind: str) -> float:
    table = ESTIMATES.get(device_kind, ESTIMATES["cpu"])
    startup, per_epoch = table.get(unit.experiment, table.get("default", (10.0, 1.0)))
    return startup + per_epoch * unit.epochs


def finished(folder: Path) -> bool:
    return (folder / SUMMARY_JSON).is_file()


def parallel_slots(device_kind: str, threads: int) -> int:
    """How many runs at once: on CUDA from the GPU's free memory (4 GiB a run) and the cores (2 a run), at most 8;
    on the CPU one per `threads` cores."""
    cores = os.cpu_count() or 1
    if device_kind == "cuda":
        import torch

        free, _ = torch.cuda.mem_get_info()
        return max(1, min(8, cores // 2, int(free // (4 * 2**30))))
    return max(1, cores // threads)


class Log:
    """pack.log: one JSON object a line, flushed at once; each event also printed in a short form."""

    def __init__(self, path: Path):
        self.path, self.start = path, time.monotonic()
        self.file = path.open("a", encoding="utf-8")

    def __call__(self, event: str, **fields) -> None:
        row = {"t": round(time.monotonic() - self.start, 2), "event": event, **fields}
        self.file.write(json.dumps(row, default=str) + "\n")
        self.file.flush()
        short = " ".join(f"{k}={v}" for k, v in fields.items() if k not in ("output", "result"))
        print(f"[{row['t']:7.1f} s] {event} {short}", flush=True)

    def close(self) -> None:
        self.file.close()


def child_env(data_dir: Path) -> dict:
    """The runners' environment: the bundle's packages first on the path, W&B off, unbuffered output."""
    site = BUNDLE_DIR / "site"
    paths = [str(site)] * site.is_dir() + [str(ROOT)] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths), "PYTHONUNBUFFERED": "1", "WANDB_MODE": "disabled",
            "RMT_DATA_ROOT": str(data_dir)}


def self_check(log: Log, device_kind: str, profile: str, env: dict, deadline: float, scratch: Path) -> bool:
    """The CUDA tests and the GPU benchmarks (on a CPU: only what runs in seconds, at the smoke profile).
    Returns whether the CUDA tests passed (False: the CUDA-graph step is switched off for the queue)."""
    ok = True
    if device_kind == "cuda":
        cmd = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests", "-k", "cuda", "-m", ""]
        done = run_bounded(cmd, env, deadline - time.monotonic())
        ok = done.returncode == 0
        log("self-check", passed=ok, rc=done.returncode, output=done.stdout[-3000:])
    else:
        log("self-check", passed=None, note="no CUDA device: the CUDA tests and the CUDA-graph check need one")
    bench_profile = "paper" if device_kind == "cuda" else "smoke"
    device = "cuda" if device_kind == "cuda" else "cpu"
    repeats = ["--repeats", "3" if device_kind == "cuda" else "1"]
    benches = [("train_speed_fig1a", ["benchmarks/train_speed.py", "--panel", "fig1a", "--profile", bench_profile, *repeats]),
               ("train_speed_fig1b", ["benchmarks/train_speed.py", "--panel", "fig1b", "--profile", bench_profile, *repeats])]
    if device_kind == "cuda":
        benches += [("analyze_speed_vitb", ["benchmarks/analyze_speed.py", "--models", "vit_base_patch16_224", "--no-weightwatcher"]),
                    ("hessian_speed_fc5", ["benchmarks/hessian_speed.py"])]
    for name, script in benches:
        left = deadline - time.monotonic()
        if left < 5:
            log("benchmark", name=name, skipped="self-check time used up")
            continue
        out = scratch / f"{name}.json"
        done = run_bounded([sys.executable, *script, "--device", device, "--json", str(out)], env, left)
        result = json.loads(out.read_text()) if out.is_file() else None
        log("benchmark", name=name, rc=done.returncode, result=result, output=done.stdout[-1500:] if result is None else "")
    return ok


def run_bounded(cmd: list[str], env: dict, timeout: float) -> subprocess.CompletedProcess:
    """Run `cmd` in the project folder; a run past `timeout` is killed (rc -9)."""
    try:
        return subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=max(1.0, timeout))
    except subprocess.TimeoutExpired as exc:
        out = (exc.stdout or b"").decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        return subprocess.CompletedProcess(cmd, -9, out + "\n[killed: time limit]", "")


def unit_command(unit: Unit, device: str, threads: int, runs_dir: Path, data_dir: Path, graphs: bool) -> list[str]:
    extra = [f"device={device}", f"threads={threads}", "progress=false", f"paths.runs_dir={runs_dir}", f"paths.data_dir={data_dir}"]
    if unit.module == "train":
        extra += ["logger=local"] + ([] if graphs else ["train.cuda_graph=false"])
    return [sys.executable, "-m", f"experiments.{unit.module}", *unit.args, *extra]


def stop_all(units: list[Unit], grace_s: float = 5.0) -> None:
    """End every running unit: SIGTERM to all at once, SIGKILL to those still running after `grace_s` in all."""
    alive = [u for u in units if u.proc is not None and u.proc.poll() is None]
    for u in alive:
        u.proc.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace_s
    for u in alive:
        try:
            u.proc.wait(max(0.0, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            u.proc.kill()
            u.proc.wait()


def archive(groups: dict[str, list[Unit]], runs_dir: Path, out: Path, manifest: dict, log: Log) -> list[Path]:
    """One `<group>.tgz` per group with finished runs: their folders without checkpoints, and a manifest."""
    written = []
    for name, units in groups.items():
        done = [u for u in units if u.state == "finished" and u.archive]
        if not done:
            continue
        path = out / f"{name}.tgz"
        with tarfile.open(path, "w:gz") as tar:
            info = json.dumps({**manifest, "group": name, "records": [u.record for u in done]}, indent=1).encode()
            entry = tarfile.TarInfo("manifest.json")
            entry.size, entry.mtime = len(info), int(time.time())
            tar.addfile(entry, io.BytesIO(info))
            for u in done:
                tar.add(runs_dir / u.record, arcname=u.record,
                        filter=lambda ti: None if ti.name.endswith((".pt", ".tmp", LOCK_FILE)) or "/checkpoints" in ti.name else ti)
        if path.stat().st_size > MAX_FILE_BYTES:
            log("archive-too-large", group=name, bytes=path.stat().st_size, limit=MAX_FILE_BYTES)
            path.unlink()
            continue
        written.append(path)
    return written


def pack_run(out: Path, budget: float, profile: str, device: str, results: Path, threads: int, slots: int | None,
             self_check_s: float) -> int:
    t0 = time.monotonic()
    deadline = t0 + budget - PACKAGING_RESERVE_S
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        sys.exit(f"error: {out} is not empty; the pack writes its archives into an empty folder")
    import torch

    from experiments.common import resolve_device
    from experiments.data import ensure_dataset

    device_kind = resolve_device(device).type
    bundle_data = BUNDLE_DIR / "data"
    data_dir = bundle_data if bundle_data.is_dir() else Path(os.environ.get("RMT_DATA_ROOT", ROOT / "data"))
    env = child_env(data_dir)
    log = Log(out / "pack.log")
    scratch = Path(tempfile.mkdtemp(prefix="rmt-pack-"))
    runs_dir = scratch / "runs"
    manifest = {"code_digest": code_digest(), "profile": profile, "device": device_kind,
                "gpu": torch.cuda.get_device_name() if device_kind == "cuda" else None, "torch": torch.__version__,
                "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
    log("pack-start", budget_s=budget, **manifest, data_dir=str(data_dir), bundle=BUNDLE_DIR.is_dir())
    units: list[Unit] = []
    try:
        with ThreadPoolExecutor(1) as pool:  # composing every run's config takes seconds: meanwhile, the self-check
            planned = pool.submit(expand, QUEUE, profile, runs_dir, data_dir)
            graphs = self_check(log, device_kind, profile, env, min(deadline, t0 + self_check_s), scratch)
            units = planned.result()
        if not graphs:
            log("cuda-graphs-off", reason="the self-check failed: the queue trains eagerly")
        available = {name for name in ("mnist", "fashion_mnist") if dataset_present(data_dir, name)}
        for u in units:
            if finished(results / u.record):
                u.state = "skipped"
                log("skip", record=u.record, reason=f"committed under {results.name}/")
            elif u.dataset not in available:
                u.state = "skipped"
                log("skip", record=u.record, reason=f"dataset {u.dataset} is not in {data_dir}")
        needed = {r for u in units if u.state == "waiting" for r in u.after}
        for u in units:  # a committed run whose later step is not: its weights (never archived) are needed here
            if u.state == "skipped" and u.record in needed and u.dataset in available:
                u.state, u.archive = "waiting", False
                log("rerun", record=u.record, reason="committed, but a later step needs its weights")
        for name in sorted({u.dataset for u in units if u.state == "waiting"}):  # unpacked once, before runs share it
            ensure_dataset(name, data_dir)
        n_slots = slots or parallel_slots(device_kind, threads)
        log("queue", runs=len(units), to_run=sum(u.state == "waiting" for u in units), slots=n_slots)
        schedule(units, n_slots, deadline, device_kind, device, threads, runs_dir, data_dir, env, graphs, log, scratch)
    finally:
        groups: dict[str, list[Unit]] = {}
        stop_all(units)
        for u in units:
            groups.setdefault(u.group, []).append(u)
        written = archive(groups, runs_dir, out, manifest, log) if groups else []
        summary = {s: [u.record for u in units if u.state == s]
                   for s in ("finished", "failed", "killed", "not-started", "skipped")}
        log("pack-end", wall_s=round(time.monotonic() - t0, 1), archives=[p.name for p in written],
            **{k: len(v) for k, v in summary.items()})
        log.close()
        shutil.rmtree(scratch, ignore_errors=True)
    for state, records in summary.items():
        if records and state != "skipped":
            print(f"{state}: {len(records)}" + (f" ({', '.join(records[:12])}{' ...' if len(records) > 12 else ''})"))
    files = sorted(out.iterdir())
    assert len(files) <= MAX_FILES, files
    print(f"wrote {len(files)} files to {out}: {', '.join(p.name for p in files)}")
    return 0


def schedule(units: list[Unit], slots: int, deadline: float, device_kind: str, device: str, threads: int, runs_dir: Path,
             data_dir: Path, env: dict, graphs: bool, log: Log, scratch: Path) -> None:
    """Start ready units in queue order while they fit; poll; stop at the deadline."""
    by_record = {u.record: u for u in units}
    while True:
        now = time.monotonic()
        for u in units:
            if u.state == "running" and u.proc.poll() is not None:
                ok = u.proc.returncode == 0 and finished(runs_dir / u.record)
                u.state = "finished" if ok else "failed"
                wall = now - u.started
                epoch_s = epoch_seconds(runs_dir / u.record)
                log("end", record=u.record, state=u.state, rc=u.proc.returncode, wall_s=round(wall, 1),
                    estimate_s=round(u.estimate_s, 1), epochs=u.epochs, epoch_s=epoch_s,
                    output="" if ok else u.log.read_text()[-2000:])
        for u in units:  # a unit whose predecessor did not finish cannot run
            if u.state == "waiting" and any(by_record[r].state in ("failed", "killed", "not-started", "skipped")
                                            for r in u.after if r in by_record):
                u.state = "not-started"  # a skipped (committed) source has no weights here to start from
                log("not-started", record=u.record, reason="an earlier step of its group did not run here")
        running = [u for u in units if u.state == "running"]
        waiting = [u for u in units if u.state == "waiting"]
        if not running and not waiting:
            return
        if now >= deadline:
            stop_all(running)
            for u in running:  # one that ended on its own in the meantime keeps its record
                u.state = "finished" if u.proc.returncode == 0 and finished(runs_dir / u.record) else "killed"
                log("end" if u.state == "finished" else "killed", record=u.record, state=u.state, reason="budget",
                    ran_s=round(now - u.started, 1), epochs=u.epochs, epoch_s=epoch_seconds(runs_dir / u.record),
                    wall_s=round(now - u.started, 1))
            for u in waiting:
                u.state = "not-started"
            log("not-started", records=len(waiting), reason="budget used up")
            return
        for u in waiting:
            if len(running) >= slots:
                break
            if any(by_record[r].state != "finished" for r in u.after if r in by_record):
                continue
            slowdown = max(1.0, (len(running) + 1) / GPU_OVERLAP) if device_kind == "cuda" else 1.0
            u.estimate_s = estimate(u, device_kind) * slowdown
            if now + u.estimate_s > deadline:
                continue  # a later, shorter run may still fit
            u.log = scratch / (u.record.replace("/", "__") + ".out")
            with u.log.open("w") as f:
                u.proc = subprocess.Popen(unit_command(u, device, threads, runs_dir, data_dir, graphs), cwd=ROOT, env=env,
                                          stdout=f, stderr=subprocess.STDOUT)
            u.state, u.started = "running", time.monotonic()
            running.append(u)
            log("start", record=u.record, estimate_s=round(u.estimate_s, 1))
        if not running:  # nothing runs and nothing ready fits in the time left: the rest cannot start
            for u in waiting:
                u.state = "not-started"
            log("not-started", records=len(waiting), reason=f"no estimate fits the {deadline - now:.0f} s left")
            return
        time.sleep(0.5)


def epoch_seconds(folder: Path) -> float | None:
    """Mean seconds per epoch of a training record (metrics.csv's `time_s` over its epochs), None otherwise."""
    _, rows = read_csv_rows(folder / METRICS_CSV)  # a row cut off by a kill is dropped
    return round(float(rows[-1]["time_s"]) / len(rows), 4) if rows and rows[-1].get("time_s") else None


def dataset_present(root: Path, name: str) -> bool:
    from experiments.data import TENSOR_DATASETS

    spec = TENSOR_DATASETS[name]
    return all((root / spec.folder / "raw" / f).is_file() for f in spec.files)


def tracked_bytes() -> int:
    """Bytes of the files a GPU window carries besides the bundle: git's tracked and untracked-not-ignored files."""
    listing = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                             capture_output=True, check=True).stdout.split(b"\0")
    return sum((ROOT / name.decode()).stat().st_size for name in listing if name and (ROOT / name.decode()).is_file())


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def bundle(datasets: list[str], data_root: Path, target: Path = BUNDLE_DIR) -> int:
    """Write `target`: site/ (the pure-Python packages of BUNDLE_MODULES, copied from this environment) and data/
    (the official gz files of `datasets`), refusing a bundle that would not travel."""
    from experiments.data import TENSOR_DATASETS, ensure_dataset

    unknown = sorted(set(datasets) - set(TENSOR_DATASETS))
    if unknown:
        sys.exit(f"error: unknown dataset(s) {unknown}; choose from {sorted(TENSOR_DATASETS)}")
    staging = target.with_name(target.name + ".new")
    shutil.rmtree(staging, ignore_errors=True)
    site = staging / "site"
    site.mkdir(parents=True)
    for module in BUNDLE_MODULES:
        spec = importlib.util.find_spec(module)
        if spec is None:
            print(f"note: {module} is not installed here; not bundled", file=sys.stderr)
            continue
        origin = Path(next(iter(spec.submodule_search_locations))) if spec.submodule_search_locations else Path(spec.origin)
        dest = site / origin.name
        if origin.is_dir():
            shutil.copytree(origin, dest, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"), dirs_exist_ok=True)
        else:
            shutil.copy2(origin, dest)
    for name in datasets:
        raw = ensure_dataset(name, data_root)
        spec = TENSOR_DATASETS[name]
        dest = staging / "data" / spec.folder / "raw"
        dest.mkdir(parents=True)
        for f in spec.files:  # only the gz files: the runner unpacks them there
            shutil.copy2(raw / f, dest / f)
    size, carried = folder_bytes(staging), tracked_bytes()
    if size + carried > MAX_TRAVEL_BYTES:
        shutil.rmtree(staging)
        sys.exit(f"error: the bundle ({size / 2**20:.1f} MiB) plus the tracked files ({carried / 2**20:.1f} MiB) exceed "
                 f"{MAX_TRAVEL_BYTES / 2**20:.0f} MiB; bundle fewer datasets (--datasets mnist)")
    shutil.rmtree(target, ignore_errors=True)
    os.replace(staging, target)
    packages = ", ".join(sorted(p.name for p in (target / "site").iterdir()))
    print(f"bundle {target}: {size / 2**20:.1f} MiB (packages: {packages}; "
          f"datasets: {', '.join(datasets) or 'none'}); with the tracked files {(size + carried) / 2**20:.1f} MiB "
          f"of {MAX_TRAVEL_BYTES / 2**20:.0f}")
    return 0


def ingest(archives: list[Path], results: Path, allow_other_version: bool) -> int:
    """Put the records of pack archives under `results/`; a record already there is kept (and said so)."""
    ours = code_digest()
    for path in archives:
        if not path.is_file():
            sys.exit(f"error: {path} does not exist")
        with tarfile.open(path, "r:gz") as tar:
            try:
                manifest = json.load(tar.extractfile("manifest.json"))
            except (KeyError, json.JSONDecodeError):
                sys.exit(f"error: {path} is not a pack archive (it holds no manifest.json)")
            if manifest["code_digest"] != ours and not allow_other_version:
                sys.exit(f"error: {path.name} was made by code version {manifest['code_digest']}, this checkout is {ours}; "
                         f"its numbers may differ from what this code makes. Check out that version, or pass "
                         f"--allow-other-version (each ingested run then records it in pack.json)")
            with tempfile.TemporaryDirectory() as tmp:
                members = [m for m in tar.getmembers() if m.name != "manifest.json"]
                for m in members:
                    if m.name.startswith("/") or ".." in Path(m.name).parts or not (m.isfile() or m.isdir()):
                        sys.exit(f"error: {path.name} holds an unsafe entry {m.name!r}; not ingested")
                tar.extractall(tmp, members=members)
                for record in manifest["records"]:
                    parts = Path(record).parts
                    if Path(record).is_absolute() or ".." in parts or len(parts) != 3 or not (Path(tmp) / record).is_dir():
                        sys.exit(f"error: {path.name} lists a record {record!r} that is not one of its run folders; not ingested")
                    dest = results / record
                    if dest.exists():
                        print(f"kept {dest} (already there)")
                        continue
                    staging = dest.with_name(f".{dest.name}.ingest")  # a copy cut short never reads as a record
                    shutil.rmtree(staging, ignore_errors=True)
                    shutil.copytree(Path(tmp) / record, staging)
                    provenance = {k: manifest[k] for k in ("code_digest", "device", "gpu", "torch", "started")}
                    provenance.update(archive=path.name, ingested_by=ours,
                                      other_version=manifest["code_digest"] != ours)
                    atomic_write_text(staging / "pack.json", json.dumps(provenance, indent=1) + "\n")
                    os.replace(staging, dest)
                    print(f"ingested {dest}")
    return 0


def measured_estimates(log_path: Path) -> dict[str, dict[str, tuple[float, float]]]:
    """`ESTIMATES` rows measured by a pack: per device kind and experiment, (start-up, per epoch) seconds from the
    `end` events of finished runs (per epoch: the mean `epoch_s`; start-up: the mean of wall time minus the epochs)."""
    events = [json.loads(line) for line in log_path.read_text().splitlines() if line.strip()]
    device = next((e["device"] for e in events if e["event"] == "pack-start"), "cpu")
    per: dict[str, list[tuple[float, float]]] = {}
    for e in events:
        if e["event"] == "end" and e["state"] == "finished":
            experiment = e["record"].split("/")[0]
            epoch_s = e.get("epoch_s") or 0.0
            per.setdefault(experiment, []).append((max(0.0, e["wall_s"] - epoch_s * e["epochs"]), epoch_s))
    return {device: {k: (round(sum(s for s, _ in v) / len(v), 1), round(sum(x for _, x in v) / len(v), 4)) for k, v in per.items()}}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m experiments.pack", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser("run", help="run the queue under a wall-clock budget and write the archives")
    run.add_argument("--out", type=Path, required=True)
    run.add_argument("--budget", type=float, default=540.0, help="wall-clock seconds in all (default 540)")
    run.add_argument("--profile", default="paper", choices=("paper", "quick", "smoke"))
    run.add_argument("--device", default="auto")
    run.add_argument("--results", type=Path, default=RESULTS, help="committed records: runs found there are skipped")
    run.add_argument("--threads", type=int, default=1, help="CPU threads per run")
    run.add_argument("--slots", type=int, default=None, help="runs at once (default: from GPU memory and cores)")
    run.add_argument("--self-check-s", type=float, default=SELF_CHECK_LIMIT_S)
    bun = sub.add_parser("bundle", help=f"write {BUNDLE_DIR.name}/: packages and datasets for a machine without a registry")
    bun.add_argument("--datasets", default="mnist", help="comma-separated: mnist, fashion_mnist (default mnist)")
    bun.add_argument("--data-root", type=Path, default=Path(os.environ.get("RMT_DATA_ROOT", ROOT / "data")))
    ing = sub.add_parser("ingest", help="put archived records under results/")
    ing.add_argument("archives", type=Path, nargs="+")
    ing.add_argument("--results", type=Path, default=RESULTS)
    ing.add_argument("--allow-other-version", action="store_true")
    est = sub.add_parser("estimates", help="the ESTIMATES rows a pack's log measured (to update the table)")
    est.add_argument("log", type=Path)
    args = parser.parse_args(argv)
    if args.command == "estimates":
        for device, rows in measured_estimates(args.log).items():
            print(f"{device!r}: {{" + ", ".join(f"{k!r}: {v}" for k, v in sorted(rows.items())) + "},")
        return 0
    if args.command == "run":
        if args.budget < PACKAGING_RESERVE_S + 10:
            sys.exit(f"error: --budget must be at least {PACKAGING_RESERVE_S + 10} s")
        return pack_run(args.out, args.budget, args.profile, args.device, args.results, args.threads, args.slots,
                        args.self_check_s)
    if args.command == "bundle":
        return bundle([d for d in args.datasets.split(",") if d], args.data_root)
    return ingest(args.archives, args.results, args.allow_other_version)


if __name__ == "__main__":
    sys.exit(main())
