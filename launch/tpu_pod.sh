#!/usr/bin/env bash
# Run a dacl config on every worker of a Cloud TPU VM slice (e.g. v5litepod-16 = 4 hosts x 4 chips).
#
#   launch/tpu_pod.sh [--dry-run] --name NAME --zone ZONE --bucket BUCKET [--project P]
#       [--type v5litepod-16] [--version v2-alpha-tpuv5-lite] [--spot] [--repo URL] [--ref REV]
#       (--repo default: $DACL_REPO, else this checkout's origin URL)
#       CONFIG RUN [--config.a.b=v ...]
#
# 1. Reuses the slice NAME if it is READY; creates it if it does not exist; deletes and recreates
#    it if it was PREEMPTED (or is otherwise unusable).
# 2. On every worker (--worker=all): clones or updates dacl at REV, installs it with jax[tpu], and
#    mounts gs://BUCKET at /gcs/BUCKET with gcsfuse, so checkpoints, metrics and results live in
#    the bucket and outlive the VMs.
# 3. Runs `dacl train --config=CONFIG --workdir=/gcs/BUCKET/RUN` on all workers at once with
#    DACL_DISTRIBUTED=auto: jax.distributed.initialize() finds the slice's hosts by itself.
# After a preemption, run the same command again: step 1 recreates the slice and the run resumes
# from the last checkpoint in the bucket.
# --dry-run prints the gcloud commands (with the create/delete branch that applies when the slice
# is missing) and runs nothing.
set -euo pipefail
DRY=0; NAME=""; ZONE=""; BUCKET=""; PROJECT=""; TYPE=v5litepod-16; VERSION=v2-alpha-tpuv5-lite
SPOT=""; REF=main
# the repository the workers clone: --repo, else DACL_REPO, else this checkout's origin
REPO=${DACL_REPO:-$(git -C "$(dirname "$0")/.." config --get remote.origin.url 2>/dev/null || true)}
while [ $# -gt 0 ]; do
  case "$1" in
    --dry-run) DRY=1; shift ;;
    --name) NAME=$2; shift 2 ;;
    --zone) ZONE=$2; shift 2 ;;
    --bucket) BUCKET=${2#gs://}; shift 2 ;;
    --project) PROJECT=$2; shift 2 ;;
    --type) TYPE=$2; shift 2 ;;
    --version) VERSION=$2; shift 2 ;;
    --spot) SPOT="--spot"; shift ;;
    --repo) REPO=$2; shift 2 ;;
    --ref) REF=$2; shift 2 ;;
    -*) echo "unknown option $1" >&2; exit 2 ;;
    *) break ;;
  esac
done
if [ -z "$NAME" ] || [ -z "$ZONE" ] || [ -z "$BUCKET" ] || [ $# -lt 2 ]; then
  echo "usage: $0 [--dry-run] --name NAME --zone ZONE --bucket BUCKET [options] CONFIG RUN [--config.a.b=v ...]" >&2
  exit 2
fi
CONFIG=$1; RUN=$2; shift 2
if [ -z "$REPO" ]; then
  echo "no repository URL for the workers to clone: pass --repo URL (or set DACL_REPO)" >&2
  exit 2
fi
PROJ=(); [ -n "$PROJECT" ] && PROJ=(--project "$PROJECT")
TPU=(gcloud compute tpus tpu-vm)
MNT=/gcs/$BUCKET
OVERRIDES=$(printf ' %q' "$@")
INSTALL="set -e; [ -d dacl ] || git clone -q $REPO dacl; cd dacl && git fetch -q origin && git checkout -q $REF; \
python3 -m pip install -q -e . 'jax[tpu]>=0.10.2,<0.11'; \
mountpoint -q $MNT || { sudo mkdir -p $MNT && sudo chown \$(id -u) $MNT && gcsfuse --implicit-dirs $BUCKET $MNT; }"
TRAIN="cd dacl && DACL_DISTRIBUTED=auto python3 -m dacl.cli train --config=$CONFIG --workdir=$MNT/$RUN$OVERRIDES"

run() {   # print (dry run) or execute one command
  if [ "$DRY" -eq 1 ]; then printf '%q ' "$@"; printf '\n'; else "$@"; fi
}

if [ "$DRY" -eq 1 ]; then
  STATE=MISSING
  echo "# state: $(printf '%q ' "${TPU[@]}" describe "$NAME" --zone "$ZONE" "${PROJ[@]}" --format='value(state)')(dry run: assumed missing)"
else
  STATE=$("${TPU[@]}" describe "$NAME" --zone "$ZONE" "${PROJ[@]}" --format='value(state)' 2>/dev/null || echo MISSING)
fi
case "$STATE" in
  READY) echo "reusing TPU slice $NAME" >&2 ;;
  MISSING) run "${TPU[@]}" create "$NAME" --zone "$ZONE" "${PROJ[@]}" --accelerator-type "$TYPE" --version "$VERSION" $SPOT ;;
  *) echo "TPU slice $NAME is $STATE: recreating it" >&2
     run "${TPU[@]}" delete "$NAME" --zone "$ZONE" "${PROJ[@]}" --quiet
     run "${TPU[@]}" create "$NAME" --zone "$ZONE" "${PROJ[@]}" --accelerator-type "$TYPE" --version "$VERSION" $SPOT ;;
esac
run "${TPU[@]}" ssh "$NAME" --zone "$ZONE" "${PROJ[@]}" --worker=all --command "$INSTALL"
run "${TPU[@]}" ssh "$NAME" --zone "$ZONE" "${PROJ[@]}" --worker=all --command "$TRAIN"
