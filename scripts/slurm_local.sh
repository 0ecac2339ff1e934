#!/usr/bin/env bash
# A one-node SLURM cluster on this machine, to try the suite's cluster path (hydra/launcher=slurm) without a cluster.
#
#   sudo scripts/slurm_local.sh up       # install (Debian packages), configure, start munged + slurmctld + slurmd
#   sudo scripts/slurm_local.sh status   # sinfo of the local partition
#   sudo scripts/slurm_local.sh down     # stop the daemons this script started (by their PID files), nothing else
#
# Idempotent: `up` on a running cluster only checks it. Needs root and Debian's slurmctld, slurmd, slurm-client and
# munge (installed with --no-install-recommends when missing). Writes /etc/slurm/slurm.conf only when it is absent or
# was written by this script (a marker line), and keeps its state, logs and PID files in $RMT_SLURM_STATE
# (default /var/lib/rmt-slurm). The node offers all CPUs and the memory less 1 GiB, partition `local`, no GPUs, no
# accounting (sacct fails; the suite's SLURM sweeps then follow their jobs through result files, experiments/slurm.py).
set -euo pipefail

STATE=${RMT_SLURM_STATE:-/var/lib/rmt-slurm}
CONF=/etc/slurm/slurm.conf
MARKER="# written by scripts/slurm_local.sh (rmt-pruning); scripts/slurm_local.sh down stops its daemons"
PARTITION=local
HOST=$(hostname -s)

say() { echo "slurm_local: $*"; }
die() { echo "slurm_local: $*" >&2; exit 1; }

# A PID file's process is alive and is the daemon named by the file (a reused PID of another program is not).
pid_alive() {
  [ -f "$1" ] || return 1
  local pid name
  pid=$(cat "$1"); name=$(basename "$1" .pid)
  kill -0 "$pid" 2>/dev/null && grep -q "^${name}" "/proc/$pid/comm" 2>/dev/null
}

install_packages() {
  local missing=()
  for bin in slurmctld slurmd sinfo munged; do command -v "$bin" >/dev/null || missing+=("$bin"); done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "missing ${missing[*]} and not root: install slurmctld slurmd slurm-client munge"
  command -v apt-get >/dev/null || die "missing ${missing[*]} and no apt-get: install SLURM and munge by hand"
  say "installing slurmctld slurmd slurm-client munge (Debian packages)"
  apt-get update -q >/dev/null
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

write_config() {
  if [ -f "$CONF" ] && ! grep -qF "$MARKER" "$CONF"; then
    die "$CONF exists and was not written by this script: this machine has its own SLURM; use it, or move that file away"
  fi
  local cpus mem
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print int($2 / 1024)}' /proc/meminfo) - 1024 ))
  mkdir -p /etc/slurm "$STATE/ctld" "$STATE/d"
  cat > "$CONF.tmp" <<EOF
$MARKER
ClusterName=rmtlocal
SlurmctldHost=$HOST
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$STATE/ctld
SlurmdSpoolDir=$STATE/d
SlurmctldPidFile=$STATE/slurmctld.pid
SlurmdPidFile=$STATE/slurmd.pid
SlurmctldLogFile=$STATE/slurmctld.log
SlurmdLogFile=$STATE/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
SchedulerType=sched/backfill
ReturnToService=2
JobRequeue=1
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
MpiDefault=none
SlurmctldTimeout=30
SlurmdTimeout=30
KillWait=5
MinJobAge=600
NodeName=$HOST CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$PARTITION Nodes=$HOST Default=YES MaxTime=INFINITE State=UP
EOF
  if ! cmp -s "$CONF.tmp" "$CONF" 2>/dev/null; then mv "$CONF.tmp" "$CONF"; say "wrote $CONF ($cpus CPUs, $mem MiB)"; else rm "$CONF.tmp"; fi
}

start_munge() {
  mkdir -p /run/munge && chown munge:munge /run/munge && chmod 755 /run/munge
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
    chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  fi
  if munge -n </dev/null 2>/dev/null | unmunge >/dev/null 2>&1; then return 0; fi
  runuser -u munge -- /usr/sbin/munged  # its PID file: /run/munge/munged.pid (munged runs as munge)
  touch "$STATE/started-munged"
}

wait_for_node() {
  local i
  for i in $(seq 1 60); do
    state=$(sinfo -h -p "$PARTITION" -o %t 2>/dev/null | head -1 || true)
    case "$state" in idle|mix|alloc) return 0 ;; drain*|down*) scontrol update nodename="$HOST" state=resume 2>/dev/null || true ;; esac
    sleep 0.5
  done
  die "the node did not come up (state: ${state:-none}); see $STATE/slurmctld.log and $STATE/slurmd.log"
}

up() {
  [ "$(id -u)" -eq 0 ] || die "needs root (it starts system daemons)"
  install_packages
  write_config
  start_munge
  pid_alive "$STATE/slurmctld.pid" || { /usr/sbin/slurmctld -i; touch "$STATE/started-slurmctld"; }
  pid_alive "$STATE/slurmd.pid" || { /usr/sbin/slurmd; touch "$STATE/started-slurmd"; }
  wait_for_node
  say "up: partition '$PARTITION' on $HOST ($(sinfo -h -p "$PARTITION" -o '%c CPUs, %m MB')); stop with: $0 down"
}

down() {
  local daemon pidfile stopped=()
  for daemon in slurmd slurmctld munged; do
    pidfile="$STATE/$daemon.pid"
    [ "$daemon" = munged ] && pidfile=/run/munge/munged.pid
    [ -f "$STATE/started-$daemon" ] || continue
    if pid_alive "$pidfile"; then
      pid=$(cat "$pidfile")
      kill "$pid"
      for _ in $(seq 1 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done  # until it has exited
      stopped+=("$daemon")
    fi
    rm -f "$STATE/started-$daemon"
  done
  say "stopped: ${stopped[*]:-nothing (no daemon of this script was running)}"
}

case "${1:-}" in
  up) up ;;
  down) down ;;
  status) sinfo -p "$PARTITION" ;;
  *) echo "usage: $0 up|down|status" >&2; exit 2 ;;
esac
