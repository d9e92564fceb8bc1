#!/usr/bin/env bash
# Cross-check workbench/llm.py against llama.cpp's own `llama-perplexity --kl-divergence`.
#
#   bash scripts/kld-check.sh TEXT_FILE [FORMAT]
#
# Builds llama-perplexity from the llama.cpp vendored in the llama-cpp-python sdist of the
# installed version (pip download into $WORKBENCH_CACHE/sdist, cmake -DGGML_NATIVE=OFF, only
# that target; kept in $WORKBENCH_CACHE/llama.cpp-<version>/build-portable for the next run),
# then on the same text and n_ctx:
#   1. llama-perplexity --kl-divergence-base on the F32 reference GGUF that llm.py writes;
#      its token stream and its uint16 log-probs are compared with llm.py's cached reference;
#   2. llama-perplexity --kl-divergence on FORMAT (default Q4_0) two ways: every matrix
#      fake-quantized by our codec (an F32 GGUF), and llama.cpp's own pure FORMAT file;
#   3. prints llm.py's statistics beside llama-perplexity's for both (a Markdown table).
# Both sides: n_ctx=$KLD_CTX (512), one sequence per batch (-b n_ctx), flash attention off,
# $JOBS threads (all cores). Work files go to $WORKBENCH_CACHE/kld-check (removed after).
set -euo pipefail
cd "$(dirname "$0")/.."
TEXT=${1:?usage: bash scripts/kld-check.sh TEXT_FILE [FORMAT]}
FORMAT=${2:-Q4_0}
CTX=${KLD_CTX:-512}
JOBS=${JOBS:-$(nproc)}
PY=.venv/bin/python
CACHE=${WORKBENCH_CACHE:-$HOME/.cache/workbench}
[ -f "$TEXT" ] || { echo "kld-check.sh: no such text file: $TEXT" >&2; exit 2; }
VER=$($PY -c 'import llama_cpp; print(llama_cpp.__version__)')

SDIST=$CACHE/sdist/llama_cpp_python-$VER.tar.gz
if [ ! -f "$SDIST" ]; then
  echo "downloading the llama-cpp-python $VER sdist into $CACHE/sdist"
  $PY -m pip download -q --no-deps --no-binary :all: "llama-cpp-python==$VER" -d "$CACHE/sdist"
fi
ROOT=$CACHE/llama.cpp-$VER
SRC=$ROOT/llama_cpp_python-$VER/vendor/llama.cpp
[ -f "$SRC/CMakeLists.txt" ] || { mkdir -p "$ROOT"; tar xzf "$SDIST" -C "$ROOT"; }
BUILD=$ROOT/build-portable
BIN=$BUILD/bin/llama-perplexity
if [ ! -x "$BIN" ]; then
  echo "building llama-perplexity from $SRC ($JOBS jobs; once per machine)"
  t0=$(date +%s)
  cmake -S "$SRC" -B "$BUILD" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=OFF -DBUILD_SHARED_LIBS=OFF \
        -DLLAMA_OPENSSL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF \
        -DLLAMA_BUILD_SERVER=OFF >"$ROOT/cmake-configure.log" 2>&1 \
    || { echo "kld-check.sh: cmake configure failed, see $ROOT/cmake-configure.log" >&2; exit 1; }
  cmake --build "$BUILD" --target llama-perplexity -j "$JOBS" >"$ROOT/cmake-build.log" 2>&1 \
    || { echo "kld-check.sh: build failed, see $ROOT/cmake-build.log" >&2; exit 1; }
  echo "built in $(( $(date +%s) - t0 )) s"
fi

WORK=$CACHE/kld-check
mkdir -p "$WORK"
export KLD_TEXT=$TEXT KLD_FORMAT=$FORMAT KLD_CTX=$CTX KLD_JOBS=$JOBS KLD_BIN=$BIN KLD_WORK=$WORK
exec $PY - <<'PYEOF'
import hashlib, os, re, subprocess, sys, time, types
from pathlib import Path
import numpy as np
from workbench import llm
from workbench.codecs import codec_for
from workbench.formats import resolve

text_path, fmt, ctx, jobs = Path(os.environ["KLD_TEXT"]), os.environ["KLD_FORMAT"], int(os.environ["KLD_CTX"]), int(os.environ["KLD_JOBS"])
binary, work = os.environ["KLD_BIN"], Path(os.environ["KLD_WORK"])
text = text_path.read_text(encoding="utf-8")
ev = llm.LlamaEval(text=types.SimpleNamespace(text=text, name=text_path.name,
                   fingerprint=hashlib.sha256(text.encode()).hexdigest()), n_ctx=ctx, threads=jobs)
t = time.perf_counter(); ref = ev.reference(); t_ref = time.perf_counter() - t
print(f"reference: {ref.n_chunk} chunks x {ctx}, {ref.n_tokens} scored tokens, {ref.nbytes/2**20:.1f} MiB "
      f"({'cached' if ref.from_cache else f'computed in {t_ref:.1f} s'}) at {ref.path}")

# the text exactly as our tokenizer saw it (llama-perplexity -f drops one trailing newline)
txt = work / "text.txt"
txt.write_text(text + ("\n" if text.endswith("\n") else ""), encoding="utf-8")
f32, fake, native, base = (work / n for n in ("reference-f32.gguf", f"fake-{fmt}.gguf", f"native-{fmt}.gguf", "base.kld"))
ev.write_gguf(f32)
codec = codec_for(resolve(fmt)[0])
w = ev.weights()
ev.write_gguf(fake, {n: codec.dequantize(codec.quantize(a, threads=jobs), a.shape) for n, a in w.items()})
ev.quantize_native(fmt, native, pure=True, src=f32)

def perplexity(*args):
    cmd = [binary, "-c", str(ctx), "-b", str(ctx), "-fa", "off", "-t", str(jobs), "--no-warmup", *map(str, args)]
    print("$", " ".join(cmd), flush=True)
    t = time.perf_counter()
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        sys.exit(f"llama-perplexity failed:\n{(run.stderr + run.stdout)[-2000:]}")
    print(f"  ({time.perf_counter() - t:.1f} s)")
    return run.stdout + run.stderr

base_out = perplexity("-m", f32, "-f", txt, "--kl-divergence-base", base)
base_ppl = float(re.search(r"Final estimate: PPL = ([\d.]+)", base_out).group(1))
raw = base.read_bytes()
assert raw[:8] == b"_logits_", "not a llama.cpp logits file"
n_ctx_b, n_vocab, n_chunk = np.frombuffer(raw, np.int32, 3, 8)
tokens = np.frombuffer(raw, np.int32, n_chunk * n_ctx_b, 20)
assert n_ctx_b == ctx and n_chunk == ref.n_chunk, (n_ctx_b, n_chunk, ref.n_chunk)
print("token streams identical:", bool(np.array_equal(tokens, ref.tokens)))
nv = 2 * ((n_vocab + 1) // 2) + 4
per = ctx - 1 - ctx // 2
# per chunk, the n_ctx-1-n_ctx/2 scored tokens: [scale f32, min_log_prob f32, q uint16 x n_vocab]
lp_u16 = np.frombuffer(raw, np.uint16, n_chunk * per * nv, 20 + 4 * tokens.size).reshape(-1, nv)
scale_min = lp_u16[:, :4].copy().view(np.float32)
rows = np.repeat(np.arange(ref.n_tokens), np.diff(ref.offsets))
dec = scale_min[rows, 0] * lp_u16[rows, 4 + ref.index.astype(np.int64)] + scale_min[rows, 1]
diff = np.abs(dec.astype(np.float64) - ref.logp)
print(f"reference log-probs (> -16): llama.cpp uint16 vs ours float32: max |diff| {diff.max():.3g}, "
      f"mean {diff.mean():.3g}; its uint16 step (max-min)/65535: median {np.median(scale_min[:, 0]):.3g}")
print(f"reference sizes: llama.cpp base file {len(raw)/2**20:.1f} MiB, ours {ref.nbytes/2**20:.1f} MiB")
# the next token's NLL as llama.cpp's --kl-divergence reads it back (its "Mean PPL(base)"): a
# token more than 16 nats below the top one is stored at the floor, so that mean is not exact
nxt = np.concatenate([tokens[c * ctx + ctx // 2 + 1:(c + 1) * ctx] for c in range(n_chunk)])
q_next = lp_u16[np.arange(nxt.size), 4 + nxt]
nll_u16 = -(scale_min[:, 0] * q_next + scale_min[:, 1]).astype(np.float64)
floor = q_next == 0
print(f"reference PPL: ours {ref.ppl:.6f}; llama-perplexity on the F32 reference (float logits) "
      f"{base_ppl:.4f}; from its uint16 file {np.exp(nll_u16.mean()):.6f}: {floor.sum()} of {nxt.size} "
      f"next tokens sit at its -16 floor (their NLL there {nll_u16[floor].mean() if floor.any() else 0:.2f} "
      f"against {ref.nll[floor].mean() if floor.any() else 0:.2f}); without them "
      f"{np.exp(ref.nll[~floor].mean()):.6f} vs {np.exp(nll_u16[~floor].mean()):.6f}")

def parse(out):
    pats = {"ppl": r"Mean PPL\(Q\)\s*:\s*([\d.]+)", "ppl_ref": r"Mean PPL\(base\)\s*:\s*([\d.]+)",
            "dppl": r"Mean PPL\(Q\)-PPL\(base\)\s*:\s*(-?[\d.]+)", "kld_mean": r"Mean\s+KLD:\s*(-?[\d.]+)",
            "kld_median": r"Median\s+KLD:\s*(-?[\d.]+)", "kld_p99": r"99\.0%\s+KLD:\s*(-?[\d.]+)",
            "kld_max": r"Maximum KLD:\s*(-?[\d.]+)", "top1": r"Same top p:\s*([\d.]+)"}
    got = {k: float(re.search(p, out).group(1)) for k, p in pats.items()}
    got["top1"] /= 100
    return got

rows_md = []
for label, path in ((f"{fmt} fake (our codec, F32 GGUF)", fake), (f"{fmt} llama.cpp native (pure)", native)):
    theirs = parse(perplexity("-m", path, "--kl-divergence-base", base, "--kl-divergence"))
    t = time.perf_counter(); ours = ev.evaluate_gguf(path); t_ours = time.perf_counter() - t
    print(f"  ours: {t_ours:.1f} s")
    for k in ("kld_mean", "kld_median", "kld_p99", "kld_max", "top1", "ppl", "ppl_ref", "dppl"):
        rows_md.append(f"| {label} | {k} | {ours[k]:.6f} | {theirs[k]:.6f} | {ours[k] - theirs[k]:+.2e} |")
for p in (f32, fake, native, base, txt):
    p.unlink()
print(f"\nn_ctx={ctx}, {ref.n_chunk} chunks, {ref.n_tokens} scored tokens, text {text_path.name}\n")
print("| model | statistic | workbench.llm | llama-perplexity | difference |\n|---|---|---|---|---|")
print(f"| F32 reference | ppl (llama-perplexity --kl-divergence-base run) | {ref.ppl:.6f} | {base_ppl:.4f} | {ref.ppl - base_ppl:+.2e} |")
print("\n".join(rows_md))
PYEOF
