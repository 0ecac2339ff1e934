"""SLURM sweeps: before anything is submitted, compare the launcher's request with what the partition offers, so that a
request no node can satisfy fails at once with one line instead of pending forever; and quiet submitit's per-poll
"Bypassing sacct error" warnings on clusters without job accounting (one note says why instead)."""

from __future__ import annotations

import logging
import re
import shutil
import subprocess
from dataclasses import dataclass

from omegaconf import DictConfig

SLURM_LAUNCHER = "SlurmLauncher"  # in hydra-submitit-launcher's _target_
QUERY_TIMEOUT_S = 8


@dataclass(frozen=True)
class Partition:
    """What the largest node of a partition offers, and the partition's limits (None: unlimited)."""

    name: str
    up: bool
    cpus: int
    memory_mb: int
    gpus: int
    max_time_min: int | None
    nodes: int
    usable_nodes: int | None = None  # nodes not DOWN, DRAINED or FAILED (None: not known)


def _query(args: list[str]) -> str:
    if shutil.which(args[0]) is None:
        raise SlurmRequestError(f"hydra/launcher=slurm needs SLURM's client commands on this machine; `{args[0]}` was not "
                                f"found (on a laptop, `sudo scripts/slurm_local.sh up` starts a one-node cluster)")
    try:
        return subprocess.run(args, capture_output=True, text=True, check=True, timeout=QUERY_TIMEOUT_S).stdout
    except subprocess.TimeoutExpired:
        raise SlurmRequestError(f"`{' '.join(args)}` did not answer within {QUERY_TIMEOUT_S} s: is slurmctld running?") from None
    except subprocess.CalledProcessError as exc:
        message = (exc.stderr or exc.stdout or "").strip().splitlines()
        raise SlurmRequestError(f"`{' '.join(args)}` failed: {message[0] if message else f'exit {exc.returncode}'}") from None


class SlurmRequestError(ValueError):
    """The sweep's SLURM request cannot run here (one line, naming the field and the limit)."""


def _fields(line: str) -> dict[str, str]:
    """`scontrol show -o` output: Key=Value pairs separated by spaces."""
    return dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", line))


def _minutes(limit: str) -> int | None:
    """SLURM time limits: UNLIMITED/INFINITE, minutes, MM:SS, HH:MM:SS, D-HH[:MM[:SS]]."""
    if limit.upper() in ("UNLIMITED", "INFINITE", "NONE", ""):
        return None
    days, _, rest = limit.rpartition("-")
    parts = [int(p) for p in rest.split(":")]
    if not days and len(parts) == 1:
        return parts[0]
    if not days and len(parts) == 2:
        return parts[0] + (parts[1] > 0)
    hours, minutes, seconds = (parts + [0, 0])[:3] if days else parts[-3:] if len(parts) == 3 else (parts[0], parts[1], 0)
    return int(days or 0) * 1440 + hours * 60 + minutes + (seconds > 0)


def _gpus(gres: str) -> int:
    """GPUs in a node's Gres string, e.g. `gpu:4`, `gpu:a100:8(S:0-1)`, `(null)`."""
    total = 0
    for item in gres.split(","):
        m = re.match(r"gpu(?::[^:(]+)?:(\d+)", item)
        if m:
            total += int(m.group(1))
    return total


def partition_info(name: str | None) -> Partition:
    """The named partition (None: the cluster's default) from `scontrol show partition/node -o`."""
    partitions = [_fields(line) for line in _query(["scontrol", "show", "partition", "-o"]).splitlines() if line.strip()]
    if not partitions:
        raise SlurmRequestError("scontrol shows no partition: is this SLURM cluster configured?")
    if name is None:
        chosen = next((p for p in partitions if p.get("Default") == "YES"), None)
        if chosen is None:
            raise SlurmRequestError(f"the cluster has no default partition: set hydra.launcher.partition to one of "
                                    f"{', '.join(p['PartitionName'] for p in partitions)}")
    else:
        chosen = next((p for p in partitions if p["PartitionName"] == name), None)
        if chosen is None:
            raise SlurmRequestError(f"hydra.launcher.partition={name} does not exist; this cluster has "
                                    f"{', '.join(p['PartitionName'] for p in partitions)}")
    nodes = [_fields(line) for line in _query(["scontrol", "show", "node", "-o"]).splitlines() if line.strip()]
    members = [n for n in nodes if chosen["PartitionName"] in n.get("Partitions", "").split(",")]
    if not members:
        raise SlurmRequestError(f"partition {chosen['PartitionName']} has no nodes")
    return Partition(name=chosen["PartitionName"], up=chosen.get("State") == "UP",
                     cpus=max(int(n.get("CPUTot", 0)) for n in members),
                     memory_mb=max(int(n.get("RealMemory", 0)) for n in members),
                     gpus=max(_gpus(n.get("Gres", "")) for n in members),
                     max_time_min=_minutes(chosen.get("MaxTime", "UNLIMITED")), nodes=len(members),
                     usable_nodes=sum(not _unusable(n.get("State", "")) for n in members))


def _unusable(state: str) -> bool:
    """A node state (e.g. `IDLE`, `MIXED+DRAIN`, `DOWN*`) in which it takes no new job."""
    return any(flag in state.upper() for flag in ("DOWN", "DRAIN", "FAIL", "INVAL"))


def check_request(launcher: DictConfig, partition: Partition) -> None:
    """Raise SlurmRequestError naming the first field of `launcher` (hydra.launcher) that no node of `partition` can
    grant."""
    where = f"partition {partition.name}"
    if not partition.up:
        raise SlurmRequestError(f"{where} is not UP: jobs would pend until an administrator resumes it")
    if partition.usable_nodes == 0:
        raise SlurmRequestError(f"every node of {where} is down or drained (scontrol show node): jobs would pend until "
                                f"one is resumed")
    tasks = int(launcher.get("tasks_per_node") or 1)
    cpus = int(launcher.get("cpus_per_task") or 1) * tasks
    if cpus > partition.cpus:
        raise SlurmRequestError(f"hydra.launcher.cpus_per_task={launcher.cpus_per_task} (× {tasks} tasks) asks for {cpus} "
                                f"CPUs, but the largest node of {where} has {partition.cpus}: the jobs would pend forever")
    mem_gb = launcher.get("mem_gb")
    if mem_gb and mem_gb * 1024 > partition.memory_mb:
        raise SlurmRequestError(f"hydra.launcher.mem_gb={mem_gb} exceeds the largest node of {where} "
                                f"({partition.memory_mb / 1024:.1f} GB): SLURM refuses it")
    gpus = int(launcher.get("gpus_per_node") or 0)
    if gpus > partition.gpus:
        raise SlurmRequestError(f"hydra.launcher.gpus_per_node={gpus}, but the nodes of {where} have "
                                f"{partition.gpus or 'no'} GPUs" + (" (use hydra/launcher=slurm for a CPU node)" if not partition.gpus else ""))
    if int(launcher.get("nodes") or 1) > partition.nodes:
        raise SlurmRequestError(f"hydra.launcher.nodes={launcher.nodes}, but {where} has {partition.nodes} node(s)")
    timeout = launcher.get("timeout_min")
    if timeout and partition.max_time_min is not None and timeout > partition.max_time_min:
        raise SlurmRequestError(f"hydra.launcher.timeout_min={timeout} exceeds the time limit of {where} "
                                f"({partition.max_time_min} min)")


class _DropSacctWarnings(logging.Filter):
    """Drop submitit's 'Bypassing sacct error' warnings (a safety net if its sacct polls cannot be switched off)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return "Bypassing sacct error" not in record.getMessage()


def accounting_enabled() -> bool:
    """Whether `sacct` answers (a cluster without accounting storage makes it fail on every call)."""
    try:
        return subprocess.run(["sacct", "-n", "-X", "-j", "1"], capture_output=True, timeout=QUERY_TIMEOUT_S).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def before_slurm_sweep(config: DictConfig) -> None:
    """For a sweep launched with hydra-submitit-launcher's SLURM launcher: check the request; on a cluster without job
    accounting, stop submitit's sacct polls (each would print SLURM's error and a warning; submitit then follows the
    jobs through their result files, as it does when a poll fails) and say so once. Polling `squeue` instead was
    tried: a requeued job can show a lasting FAILED state before it is pending again, which ended sweeps early."""
    launcher = config.hydra.launcher
    if SLURM_LAUNCHER not in str(launcher.get("_target_", "")):
        return
    check_request(launcher, partition_info(launcher.get("partition")))
    if not accounting_enabled():
        from submitit.slurm import slurm

        if hasattr(slurm.SlurmInfoWatcher, "_make_command"):
            slurm.SlurmInfoWatcher._make_command = lambda self: None  # None: submitit skips the poll
        print("note: this cluster has no job accounting (`sacct` fails): the sweep follows its jobs through their "
              "result files", flush=True)
        logging.getLogger("submitit").addFilter(_DropSacctWarnings())

