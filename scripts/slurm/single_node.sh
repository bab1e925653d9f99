#!/usr/bin/env bash
# A throw-away single-node Slurm cluster for tests (Debian's slurm-wlm and munge): munged as the munge
# user, slurmctld and slurmd as root, every state/spool/log file under DIR.
#   scripts/slurm/single_node.sh start DIR   # prints `export SLURM_CONF=DIR/slurm.conf`
#   scripts/slurm/single_node.sh stop DIR    # stops the daemons it started
set -euo pipefail
cmd=${1:?start|stop}; dir=${2:?DIR}
mkdir -p "$dir"; dir=$(cd "$dir" && pwd)
host=$(hostname -s)

stop() {
  for p in slurmd slurmctld; do
    [ -f "$dir/$p.pid" ] && kill "$(cat "$dir/$p.pid")" 2>/dev/null || true
  done
  [ -f "$dir/munged.started" ] && pkill -u munge -x munged 2>/dev/null || true
  rm -f "$dir/munged.started"
}

if [ "$cmd" = stop ]; then stop; exit 0; fi

mkdir -p "$dir/state" "$dir/spool"
if ! pgrep -x munged >/dev/null; then
  mkdir -p /run/munge /var/log/munge /var/lib/munge /etc/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge /etc/munge
  [ -f /etc/munge/munge.key ] || runuser -u munge -- mungekey --create --keyfile /etc/munge/munge.key
  runuser -u munge -- /usr/sbin/munged
  touch "$dir/munged.started"
fi
cat > "$dir/slurm.conf" <<CONF
ClusterName=bottleneck-ci
SlurmctldHost=$host(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
StateSaveLocation=$dir/state
SlurmdSpoolDir=$dir/spool
SlurmctldPidFile=$dir/slurmctld.pid
SlurmdPidFile=$dir/slurmd.pid
SlurmctldLogFile=$dir/slurmctld.log
SlurmdLogFile=$dir/slurmd.log
SlurmctldPort=${SLURMCTLD_PORT:-6817}
SlurmdPort=${SLURMD_PORT:-6818}
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
NodeName=$host NodeAddr=127.0.0.1 CPUs=$(nproc) State=UNKNOWN
PartitionName=ci Nodes=ALL Default=YES MaxTime=INFINITE State=UP
CONF
export SLURM_CONF="$dir/slurm.conf"
slurmctld
slurmd
for _ in $(seq 60); do
  if sinfo -h -o %T 2>/dev/null | grep -qE '^(idle|mixed|allocated)'; then
    echo "export SLURM_CONF=$dir/slurm.conf"; exit 0
  fi
  sleep 1
done
echo "single_node.sh: the node did not come up; logs in $dir" >&2
tail -n 20 "$dir"/slurmctld.log "$dir"/slurmd.log >&2 || true
stop; exit 1
