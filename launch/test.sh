#!/usr/bin/env bash
# The README's test command: install, then run the whole suite on CPU (2 workers).
set -euo pipefail
cd "$(dirname "$0")/.."
. launch/install.sh
export JAX_PLATFORMS=cpu HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
# The suite is compile-bound: XLA's CPU backend at LLVM -O0 compiles ~25 % faster (CPU time of
# the Co-PLMs e2e test 557 -> 423 s) and runs the tiny test models' programs ~2x slower
# (BUILD_NOTES.md, "Test suite"). The README's main job and every other command keep the default.
export XLA_FLAGS="${XLA_FLAGS:-} --xla_backend_optimization_level=0"
python -m pytest -q -n 2 --maxschedchunk=1 --durations=30 tests "$@"   # one test at a time per worker: see tests/conftest.py
