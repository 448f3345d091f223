#!/usr/bin/env bash
# N local processes under jax.distributed (a coordinator on 127.0.0.1; on CPU one device each).
#
#   launch/local_multiprocess.sh [--dry-run] [--nproc N] [--port P] CONFIG WORKDIR [--config.a.b=v ...]
#
# Each process runs the same `dacl train` command with DACL_COORDINATOR / DACL_NUM_PROCESSES /
# DACL_PROCESS_ID set (dacl.parallel.distributed_init_kwargs). If any process fails, the others
# are stopped and the exit status is the failure's; rerunning the same command resumes from the
# workdir's last checkpoint. --dry-run prints the commands instead of running them.
set -euo pipefail
DRY=0; NPROC=${NPROC:-2}; PORT=${PORT:-12355}
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1; shift ;;
    --nproc) NPROC=$2; shift 2 ;;
    --port) PORT=$2; shift 2 ;;
    *) break ;;
  esac
done
if [ $# -lt 2 ]; then
  echo "usage: $0 [--dry-run] [--nproc N] [--port P] CONFIG WORKDIR [--config.a.b=v ...]" >&2
  exit 2
fi
CONFIG=$1; WORKDIR=$2; shift 2
DACL=${DACL:-dacl}
cmd_for() {   # the command of process $1 (overrides follow), shell-quoted
  local id=$1; shift
  printf 'DACL_COORDINATOR=127.0.0.1:%s DACL_NUM_PROCESSES=%s DACL_PROCESS_ID=%s %s train' \
    "$PORT" "$NPROC" "$id" "$DACL"
  printf ' %q' "--config=$CONFIG" "--workdir=$WORKDIR" "$@"
  printf '\n'
}
if [ "$DRY" -eq 1 ]; then
  for ((i = 0; i < NPROC; i++)); do cmd_for "$i" "$@"; done
  exit 0
fi
pids=()
# Stop every process: SIGTERM, then SIGKILL after 5 s. jax.distributed catches SIGTERM as a
# preemption notice, so a process that is not blocked in a collective may carry on after it.
any_alive() {   # a process still running (an exited child stays a zombie until waited for)
  local p s
  for p in "${pids[@]}"; do
    s=$(ps -o stat= -p "$p" 2>/dev/null) || continue
    case "$s" in Z*) ;; *) return 0 ;; esac
  done
  return 1
}
stop_all() {
  kill "${pids[@]}" 2>/dev/null || true
  for _ in $(seq 10); do
    any_alive || return 0
    sleep 0.5
  done
  kill -KILL "${pids[@]}" 2>/dev/null || true
}
trap stop_all EXIT
for ((i = 0; i < NPROC; i++)); do
  DACL_COORDINATOR=127.0.0.1:$PORT DACL_NUM_PROCESSES=$NPROC DACL_PROCESS_ID=$i \
    $DACL train --config="$CONFIG" --workdir="$WORKDIR" "$@" &
  pids+=($!)
done
# wait -n: whichever process ends first; a failure (or a SIGKILL) stops the rest at once, since
# they would otherwise block in their next collective until the coordinator's heartbeat timeout
status=0
for ((i = 0; i < NPROC; i++)); do
  rc=0; wait -n || rc=$?
  if [ "$rc" -ne 0 ] && [ "$status" -eq 0 ]; then
    status=$rc; stop_all
  fi
done
trap - EXIT
exit $status
