#!/usr/bin/env bash
# The README's test command: install, then run the whole suite on CPU (2 workers).
set -euo pipefail
cd "$(dirname "$0")/.."
. launch/install.sh
export JAX_PLATFORMS=cpu HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
python -m pytest -q -n 2 --maxschedchunk=1 --durations=30 tests "$@"   # one test at a time per worker: see tests/conftest.py
