#!/usr/bin/env bash
# Run any dacl config locally: launch/local.sh configs/X.py WORKDIR [--config.a.b=v ...]
# Set NPROC>1 to start that many local processes with jax.distributed (launch/local_multiprocess.sh).
set -euo pipefail
if [ $# -lt 2 ]; then
  echo "usage: $0 CONFIG WORKDIR [--config.a.b=v ...]" >&2
  exit 2
fi
NPROC=${NPROC:-1}
if [ "$NPROC" -eq 1 ]; then
  CONFIG=$1; WORKDIR=$2; shift 2
  exec dacl train --config="$CONFIG" --workdir="$WORKDIR" "$@"
fi
exec "$(dirname "$0")/local_multiprocess.sh" --nproc "$NPROC" "$@"
