#!/usr/bin/env bash
# The README's main command: install, then run the main job on the embedded default.
set -euo pipefail
cd "$(dirname "$0")/.."
. launch/install.sh
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu} HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1
WORKDIR=${WORKDIR:-runs/main}
dacl train --config=configs/dagrpo_stream.py --workdir="$WORKDIR" "$@"
