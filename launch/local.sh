#!/usr/bin/env bash
# Run any dacl config locally: launch/local.sh configs/X.py WORKDIR [--config.a.b=v ...]
# Set NPROC>1 to start that many local processes with jax.distributed (CPU: one device each).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG WORKDIR [--config.a.b=v ...]" >&2
  exit 2
fi
CONFIG=$1; WORKDIR=$2; shift 2
NPROC=${NPROC:-1}
if [ "$NPROC" -eq 1 ]; then
  exec dacl train --config="$CONFIG" --workdir="$WORKDIR" "$@"
fi
PORT=${PORT:-12355}
pids=()
for ((i = 0; i < NPROC; i++)); do
  DACL_COORDINATOR=127.0.0.1:$PORT DACL_NUM_PROCESSES=$NPROC DACL_PROCESS_ID=$i \
    dacl train --config="$CONFIG" --workdir="$WORKDIR" "$@" &
  pids+=($!)
done
status=0
for p in "${pids[@]}"; do wait "$p" || status=$?; done
exit $status
