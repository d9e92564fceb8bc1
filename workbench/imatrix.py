"""Importance matrices ("imatrix") exactly as llama.cpp reads and writes them.

An imatrix holds, for each weight matrix W[out, in] that a model multiplies activations with,
the per-input-column sum of squared activations (``in_sum2``) and how many activation rows
(tokens) were summed (``counts``). ``llama-quantize --imatrix FILE`` turns each entry into one
float32 importance per column and passes it to ``ggml_quantize_chunk`` for that tensor.

This module follows the llama.cpp sources the workbench tests against
(``common/imatrix-loader.cpp``, ``tools/imatrix/imatrix.cpp``, ``tools/quantize/quantize.cpp``,
``src/llama-quant.cpp``):

* :func:`load` reads both file formats, detected by content (a GGUF file starts with the magic
  ``GGUF``; anything else is parsed as the legacy ``.dat`` binary), and computes each entry's
  vector with quantize.cpp's ``load_imatrix`` arithmetic, in float32:

  - GGUF: ``in_sum2[e, :] / (float) lround(counts[e])`` per matrix ``e`` (an expert of a 3-D
    tensor); a matrix whose count is 0 (an expert never routed to) gets all ones. For a 3-D
    tensor the vector is the flat ``n_expert × in`` one llama-quantize keeps (expert-major).
  - legacy: the file stores ``(sum / count) · ncall``; the vector is ``stored / (float) ncall``
    (stored unchanged when ncall ≤ 0).

  A GGUF imatrix must have the ``imatrix.datasets``, ``imatrix.chunk_count`` and
  ``imatrix.chunk_size`` keys (llama-quantize refuses it otherwise). Damaged files, and
  vectors with NaN/Inf (llama-quantize throws) or negative values, raise :class:`ImatrixError`
  with one line naming the file and the problem.
* :func:`save_gguf` / :func:`save_dat` write what ``llama-imatrix`` writes (same keys, tensor
  names, shapes, order; the legacy file's ``ncall`` scaling), from raw sums and counts.
* :func:`weights_for` gives the vector for one model tensor, or ``None`` and the reason
  (llama-quantize quantizes a tensor without an entry without importance).
* :func:`compute_minilm` computes a real imatrix of the embedded default model
  (all-MiniLM-L6-v2) with the numpy BERT forward pass of :mod:`workbench.minilm` over
  :data:`CALIBRATION_TEXT`;
  ``python -m workbench.imatrix [OUT]`` regenerates ``data/imatrix/all-MiniLM-L6-v2.imatrix.gguf``.
"""
from __future__ import annotations

import hashlib
import math
import re
import struct
import sys
import time
from dataclasses import dataclass
from functools import cached_property, lru_cache
from pathlib import Path

import numpy as np
from numba import njit

# the default model's forward pass lives in workbench.minilm; these names stay importable here
from workbench.minilm import (MiniLM, WordPiece, _blas_on_calling_thread, _bert_forward,  # noqa: F401
                              _gelu_inplace, _layer_norm, _openblas_thread_setter, bert_forward,
                              load_minilm, minilm_embed)


class ImatrixError(ValueError):
    """An imatrix file that cannot be used; its message is one line meant for the user."""


# llama.cpp's metadata keys (common/imatrix-loader.h) and tensor-name suffixes (imatrix.cpp)
KEY_TYPE = "general.type"
KEY_DATASETS = "imatrix.datasets"
KEY_CHUNK_COUNT = "imatrix.chunk_count"
KEY_CHUNK_SIZE = "imatrix.chunk_size"
SUFFIX_SUMS = ".in_sum2"
SUFFIX_COUNTS = ".counts"
GGML_MAX_NAME = 64   # ggml.h: tensor names are at most 63 bytes (llama.cpp rejects longer ones)

REPO_ROOT = Path(__file__).resolve().parents[1]
DEFAULT_MINILM_IMATRIX = REPO_ROOT / "data" / "imatrix" / "all-MiniLM-L6-v2.imatrix.gguf"


@dataclass(frozen=True, eq=False)
class Imatrix:
    path: Path
    format: str                     # "gguf" | "dat"
    datasets: list[str]
    chunk_count: int                # imatrix.chunk_count / the legacy trailer (0 when absent)
    chunk_size: int | None          # imatrix.chunk_size (GGUF only; the legacy file has none)
    entries: dict[str, np.ndarray]  # name → float32 vector llama-quantize passes (sorted names)
    fingerprint: str                # sha256 of the file bytes, first 16 hex digits

    @cached_property
    def _n_blocks(self) -> int:
        return _n_blocks(self.entries)

    @cached_property
    def _canonical_index(self) -> dict[str, str]:
        """canonical (GGUF-style) name → entry name, for matching rule 3 of weights_for."""
        index: dict[str, str] = {}
        for k in self.entries:
            index.setdefault(_canonical(k, self._n_blocks), k)
        return index


def _err(path, msg: str) -> ImatrixError:
    return ImatrixError(f"{path}: {msg}")


# ------------------------------------------------------------------------------------- reading
def load(path) -> Imatrix:
    """Read an imatrix file (llama.cpp's GGUF format or the legacy .dat), see the module doc."""
    p = Path(path)
    try:
        raw = p.read_bytes()
    except IsADirectoryError:
        raise _err(p, "is a directory, not an imatrix file") from None
    except OSError as exc:
        raise _err(p, f"cannot read imatrix file ({exc.strerror or exc.__class__.__name__})") from None
    if not raw:
        raise _err(p, "empty file, not an imatrix")
    fingerprint = hashlib.sha256(raw).hexdigest()[:16]
    if raw[:4] == b"GGUF":
        fmt = "gguf"
        datasets, chunk_count, chunk_size, entries = _load_gguf(p, raw)
    else:
        fmt = "dat"
        datasets, chunk_count, entries = _load_dat(p, raw)
        chunk_size = None
    for name, v in entries.items():
        if not np.isfinite(v).all():
            raise _err(p, f"entry {name!r} has non-finite values (NaN/Inf)")
        if (v < 0).any():
            raise _err(p, f"entry {name!r} has negative values")
    entries = {k: entries[k] for k in sorted(entries)}
    return Imatrix(p, fmt, datasets, chunk_count, chunk_size, entries, fingerprint)


class _Truncated(Exception):
    pass


class _Buf:
    """Little-endian cursor over the file bytes; reading past the end raises _Truncated."""

    def __init__(self, raw: bytes):
        self.raw, self.pos = raw, 0

    def take(self, n: int) -> bytes:
        if n < 0 or self.pos + n > len(self.raw):
            raise _Truncated(f"needs {n} bytes at offset {self.pos}, file has {len(self.raw)}")
        b = self.raw[self.pos:self.pos + n]
        self.pos += n
        return b

    def unpack(self, fmt: str):
        return struct.unpack("<" + fmt, self.take(struct.calcsize("<" + fmt)))[0]

    def left(self) -> int:
        return len(self.raw) - self.pos


# ---- legacy .dat (save_imatrix_legacy / common_imatrix_load_legacy)
def _load_dat(p: Path, raw: bytes) -> tuple[list[str], int, dict[str, np.ndarray]]:
    b = _Buf(raw)
    try:
        n_entries = b.unpack("i")
    except _Truncated:
        raise _err(p, f"truncated or not an imatrix file ({len(raw)} bytes)") from None
    if n_entries < 1:
        raise _err(p, f"not an imatrix file: legacy header says {n_entries} entries")
    entries: dict[str, np.ndarray] = {}
    for i in range(n_entries):
        where = f"entry {i + 1} of {n_entries}"
        try:
            n = b.unpack("i")
            if n < 0 or n > b.left():
                raise _err(p, f"{where}: bad name length {n} (truncated or not an imatrix file)")
            name = b.take(n).split(b"\0", 1)[0].decode("utf-8")   # C builds the name from a C string
            ncall = b.unpack("i")
            nval = b.unpack("i")
            if nval < 1:
                raise _err(p, f"{where} ({name!r}): bad value count {nval} (corrupt or not an imatrix file)")
            if 4 * nval > b.left():
                raise _err(p, f"truncated in {where} ({name!r}): {nval} values need {4 * nval} bytes, "
                              f"{b.left()} left")
            stored = np.frombuffer(b.take(4 * nval), dtype="<f4").astype(np.float32)
        except _Truncated as exc:
            raise _err(p, f"truncated in {where} ({exc})") from None
        except UnicodeDecodeError:
            raise _err(p, f"{where}: tensor name is not UTF-8 (not an imatrix file?)") from None
        # quantize.cpp: e[i] = sums[i] / ncall (float / int64 → float), or sums when ncall <= 0
        entries[name] = stored / np.float32(ncall) if ncall > 0 else stored.copy()
    chunk_count, datasets = 0, []
    if b.left():   # optional trailer: chunk count, then the dataset name
        try:
            chunk_count = b.unpack("i")
            if b.left():
                n = b.unpack("i")
                if n > 0:
                    datasets.append(b.take(n).split(b"\0", 1)[0].decode("utf-8", "replace"))
        except _Truncated as exc:
            raise _err(p, f"truncated in the trailer after the entries ({exc})") from None
    return datasets, chunk_count, entries


# ---- GGUF (gguf.cpp layout; imatrix tensors as written by IMatrixCollector::save_imatrix)
_GGUF_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_GGUF_STRING, _GGUF_ARRAY = 8, 9
_GGUF_TYPE_NAMES = {0: "u8", 1: "i8", 2: "u16", 3: "i16", 4: "u32", 5: "i32", 6: "f32", 7: "bool",
                    8: "string", 9: "array", 10: "u64", 11: "i64", 12: "f64"}
_GGML_F32 = 0


def _gguf_value(b: _Buf, vtype: int, depth: int = 0):
    if vtype in _GGUF_SCALARS:
        return b.unpack(_GGUF_SCALARS[vtype])
    if vtype == _GGUF_STRING:
        return b.take(b.unpack("Q")).decode("utf-8", "replace")
    if vtype == _GGUF_ARRAY and depth == 0:
        sub, n = b.unpack("I"), b.unpack("Q")
        if n > b.left():   # every item takes at least one byte
            raise _Truncated(f"array of {n} items at offset {b.pos}")
        if sub in _GGUF_SCALARS:
            fmt = _GGUF_SCALARS[sub]
            return list(struct.unpack(f"<{n}{fmt}", b.take(n * struct.calcsize(fmt))))
        return (sub, [_gguf_value(b, sub, 1) for _ in range(n)])
    raise ValueError(f"invalid metadata value type {vtype}")


def _load_gguf(p: Path, raw: bytes) -> tuple[list[str], int, int, dict[str, np.ndarray]]:
    from gguf import GGML_QUANT_SIZES, GGMLQuantizationType

    b = _Buf(raw)
    try:
        b.take(4)
        version = b.unpack("I")
        if version and not version & 0xFFFF:
            raise _err(p, "big-endian GGUF is not supported (llama.cpp reads little-endian files)")
        if version not in (2, 3):
            raise _err(p, f"unsupported GGUF version {version} (llama.cpp reads 2 and 3)")
        n_tensors, n_kv = b.unpack("Q"), b.unpack("Q")
        if n_tensors > b.left() or n_kv > b.left():
            raise _err(p, f"corrupt GGUF header ({n_tensors} tensors, {n_kv} keys in {len(raw)} bytes)")
        kv: dict[str, tuple[int, object]] = {}
        for _ in range(n_kv):
            key = b.take(b.unpack("Q")).decode("utf-8")
            if not key:
                raise _err(p, "corrupt GGUF: empty metadata key")
            vtype = b.unpack("I")
            try:
                value = _gguf_value(b, vtype)
            except ValueError as exc:
                raise _err(p, f"corrupt GGUF metadata at key {key!r} ({exc})") from None
            if key in kv:
                raise _err(p, f"corrupt GGUF: duplicate key {key!r}")
            kv[key] = (vtype, value)
        infos = []
        for _ in range(n_tensors):
            name = b.take(b.unpack("Q")).decode("utf-8")
            n_dims = b.unpack("I")
            if n_dims > 4:
                raise _err(p, f"corrupt GGUF: tensor {name!r} has {n_dims} dimensions")
            ne = [b.unpack("Q") for _ in range(n_dims)]
            ttype, offset = b.unpack("I"), b.unpack("Q")
            infos.append((name, ne, ttype, offset))
        align = 32
        if "general.alignment" in kv:
            at, av = kv["general.alignment"]
            if at != 4 or av <= 0 or av & (av - 1):
                raise _err(p, f"corrupt GGUF: general.alignment must be a power of 2 (u32), got {av!r}")
            align = av
        data_start = -(-b.pos // align) * align
    except _Truncated as exc:
        raise _err(p, f"truncated GGUF header ({exc})") from None
    except UnicodeDecodeError:
        raise _err(p, "corrupt GGUF: a key or tensor name is not UTF-8") from None

    # metadata: llama-quantize requires all three imatrix keys (has_metadata)
    missing = [k for k in (KEY_DATASETS, KEY_CHUNK_COUNT, KEY_CHUNK_SIZE) if k not in kv]
    if missing:
        gtype = kv.get(KEY_TYPE, (None, None))[1]
        hint = f" (general.type is {gtype!r})" if gtype not in (None, "imatrix") else ""
        raise _err(p, f"not an imatrix: GGUF without the {', '.join(missing)} key(s){hint}")
    counts_meta = {}
    for k in (KEY_CHUNK_COUNT, KEY_CHUNK_SIZE):
        vt, v = kv[k]
        if vt != 4:
            raise _err(p, f"{k} has type {_GGUF_TYPE_NAMES.get(vt, vt)}, expected u32")
        counts_meta[k] = v
    datasets: list[str] = []
    vt, v = kv[KEY_DATASETS]
    if vt == _GGUF_ARRAY and isinstance(v, tuple) and v[0] == _GGUF_STRING:
        datasets = list(v[1])   # other types are ignored, as llama.cpp does

    # tensor infos, checked as gguf.cpp checks them: unique names shorter than GGML_MAX_NAME,
    # known types, rows a whole number of blocks, data packed in order at aligned offsets, and
    # the whole (padded) data section present
    if not infos:
        raise _err(p, "no data: GGUF without tensors")
    sums: dict[str, tuple] = {}
    counts: dict[str, tuple] = {}
    seen = set()
    expected = 0
    for name, ne, ttype, offset in infos:
        if name in seen:
            raise _err(p, f"corrupt GGUF: duplicate tensor {name!r}")
        seen.add(name)
        if len(name.encode()) >= GGML_MAX_NAME:
            raise _err(p, f"tensor name {name!r} is too long for llama.cpp ({GGML_MAX_NAME - 1} bytes at most)")
        try:
            qtype = GGMLQuantizationType(ttype)
            block, type_size = GGML_QUANT_SIZES[qtype]
        except (ValueError, KeyError):
            raise _err(p, f"corrupt GGUF: tensor {name!r} has unknown type {ttype}") from None
        nel = math.prod(ne)
        if ne and ne[0] % block:
            raise _err(p, f"corrupt GGUF: tensor {name!r} row of {ne[0]} is not a multiple of {block}")
        if offset != expected:
            raise _err(p, f"corrupt GGUF: tensor {name!r} has data offset {offset}, expected {expected}")
        nbytes = nel // block * type_size
        expected += -(-nbytes // align) * align
        for suffix, into in ((SUFFIX_SUMS, sums), (SUFFIX_COUNTS, counts)):
            if name.endswith(suffix) and len(name) > len(suffix):
                into[name[:-len(suffix)]] = (name, qtype, nel, data_start + offset)
    if data_start + expected > len(raw):
        raise _err(p, f"truncated: the tensor data needs {data_start + expected} bytes, file has {len(raw)}")
    if not sums and not counts:
        raise _err(p, "not an imatrix: no <name>.in_sum2 / <name>.counts tensors")

    entries: dict[str, np.ndarray] = {}
    for base in sorted(set(sums) | set(counts)):
        if base not in sums or base not in counts:
            raise _err(p, f"mismatched sums and counts for {base!r} (one of .in_sum2/.counts is missing)")
        (sn, st, snel, sstart), (cn, ct, cnel, cstart) = sums[base], counts[base]
        if st != GGMLQuantizationType.F32 or ct != GGMLQuantizationType.F32:
            raise _err(p, f"sums and counts for {base!r} must be F32 (got {st.name}, {ct.name})")
        if snel == 0 or cnel == 0:
            raise _err(p, f"entry {base!r} is empty ({snel} sums, {cnel} counts)")
        if snel % cnel:
            raise _err(p, f"entry {base!r}: {snel} sums are not a multiple of its {cnel} counts")
        s = np.frombuffer(raw, dtype="<f4", count=snel, offset=sstart).astype(np.float32)
        c = np.frombuffer(raw, dtype="<f4", count=cnel, offset=cstart).astype(np.float64)
        if not np.isfinite(c).all():
            raise _err(p, f"entry {base!r} has non-finite counts")
        if (c < 0).any():
            raise _err(p, f"entry {base!r} has negative counts")
        if (c >= 2.0 ** 62).any():
            raise _err(p, f"entry {base!r} has an absurd count {c.max():g}")
        # common_imatrix_load: counts[j] = lround(float); quantize.cpp: e = sums / (float) count,
        # or 1 for a matrix (expert) with count 0
        ci = np.trunc(c + 0.5).astype(np.int64)          # lround for c >= 0 (half away from 0)
        cf = ci.astype(np.float32)
        ne0 = snel // cnel
        e = np.empty(snel, np.float32)
        for j in range(cnel):
            part = slice(j * ne0, (j + 1) * ne0)
            e[part] = s[part] / cf[j] if cf[j] > 0 else np.float32(1)
        entries[base] = e
    return datasets, int(counts_meta[KEY_CHUNK_COUNT]), int(counts_meta[KEY_CHUNK_SIZE]), entries


# ------------------------------------------------------------------------------------- writing
def _normalize_stats(sums: dict, counts: dict) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """name → (in_sum2 float32[n_mat, ne0], counts int64[n_mat]), validated, sorted by name."""
    if set(sums) != set(counts):
        odd = sorted(set(sums) ^ set(counts))
        raise ValueError(f"sums and counts name different tensors: {odd[:3]}")
    out = {}
    for name in sorted(sums):
        s = np.asarray(sums[name], dtype=np.float32)
        c = np.atleast_1d(np.asarray(counts[name]))
        if c.ndim != 1:
            raise ValueError(f"{name}: counts must be a number or a 1-D array")
        if s.ndim == 1:
            s = s.reshape(1, -1)
        if s.ndim != 2 or s.shape[0] != c.size or s.size == 0:
            raise ValueError(f"{name}: sums of shape {s.shape} do not fit {c.size} counts "
                             "(expected [ne0] with one count, or [n_mat, ne0] with n_mat counts)")
        if not np.isfinite(s).all() or (s < 0).any():
            raise ValueError(f"{name}: sums must be finite and non-negative")
        if not np.isfinite(c).all() or (c < 0).any() or (c != np.round(c)).any():
            raise ValueError(f"{name}: counts must be non-negative integers")
        out[name] = (np.ascontiguousarray(s), c.astype(np.int64))
    return out


def save_gguf(path, sums: dict, counts: dict, datasets: list[str], chunk_count: int, chunk_size: int) -> Path:
    """Write an imatrix as ``llama-imatrix`` does (IMatrixCollector::save_imatrix): keys
    ``general.type = "imatrix"``, ``imatrix.datasets`` (string array), ``imatrix.chunk_count``
    and ``imatrix.chunk_size`` (u32), then for each name in sorted order ``<name>.in_sum2``
    (F32, ggml ne = [ne0, n_mat]) and ``<name>.counts`` (F32, ne = [1, n_mat]).

    ``sums[name]``: raw per-column sums of squared activations, float32[ne0] or
    float32[n_mat, ne0] (per expert); ``counts[name]``: rows summed, an int or int[n_mat].
    ``datasets`` must name at least one source (gguf-py cannot write an empty array, and
    llama-quantize refuses an imatrix without the key).
    """
    from gguf import GGUFValueType, GGUFWriter

    stats = _normalize_stats(sums, counts)
    for name in stats:
        if len((name + SUFFIX_SUMS).encode()) >= GGML_MAX_NAME:
            raise ValueError(f"{name}: '{name}{SUFFIX_SUMS}' is longer than llama.cpp's "
                             f"{GGML_MAX_NAME - 1}-byte tensor names")
    datasets = [str(d) for d in datasets]
    if not datasets:
        raise ValueError("datasets must name at least one calibration source")
    for k, v in ((KEY_CHUNK_COUNT, chunk_count), (KEY_CHUNK_SIZE, chunk_size)):
        if not 0 <= int(v) < 2 ** 32:
            raise ValueError(f"{k} must fit a u32, got {v}")
    path = Path(path)
    w = GGUFWriter(path, arch="")        # an empty arch adds no general.architecture key
    w.add_type("imatrix")
    w.add_key_value(KEY_DATASETS, datasets, GGUFValueType.ARRAY, sub_type=GGUFValueType.STRING)
    w.add_uint32(KEY_CHUNK_COUNT, int(chunk_count))
    w.add_uint32(KEY_CHUNK_SIZE, int(chunk_size))
    for name, (s, c) in stats.items():
        n_mat = s.shape[0]
        # gguf.cpp writes ggml_n_dims() dimensions: trailing 1s are dropped
        w.add_tensor(name + SUFFIX_SUMS, s.reshape(-1) if n_mat == 1 else s)
        cf = c.astype(np.float32)
        w.add_tensor(name + SUFFIX_COUNTS, cf if n_mat == 1 else cf.reshape(n_mat, 1))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    return path


def save_dat(path, sums: dict, counts: dict, datasets: list[str], chunk_count: int, chunk_size: int) -> Path:
    """Write the legacy binary imatrix as ``llama-imatrix --output-format dat`` does
    (IMatrixCollector::save_imatrix_legacy), from the same raw sums and counts as
    :func:`save_gguf`: entries with every count 0 are left out; per entry
    ``ncall = ceil(max(counts) / chunk_size)`` and the stored values are
    ``(sum / count) · ncall`` in float32 (1 · ncall for a matrix with count 0); then the chunk
    count and the last dataset name (empty when there is none).
    """
    stats = _normalize_stats(sums, counts)
    if int(chunk_size) <= 0:
        raise ValueError("chunk_size must be positive")
    chunk_size = int(chunk_size)
    keep = {k: v for k, v in stats.items() if v[1].any()}
    out = bytearray(struct.pack("<i", len(keep)))
    for name, (s, c) in keep.items():
        nb = name.encode("utf-8")
        ncall = (int(c.max()) + chunk_size - 1) // chunk_size
        nval = s.size
        if ncall >= 2 ** 31 or nval >= 2 ** 31:
            raise ValueError(f"{name}: too large for the legacy format")
        cnt = c.astype(np.float32)[:, None]
        val = s
        zero = cnt == 0
        cnt = np.where(zero, np.float32(1), cnt)
        val = np.where(zero, np.float32(1), val)
        tmp = ((val / cnt).astype(np.float32) * np.float32(ncall)).astype("<f4")
        out += struct.pack("<i", len(nb)) + nb + struct.pack("<ii", ncall, nval) + tmp.tobytes()
    ds = str(datasets[-1]).encode("utf-8") if datasets else b""
    out += struct.pack("<ii", int(chunk_count), len(ds)) + ds
    path = Path(path)
    path.write_bytes(bytes(out))
    return path


# ------------------------------------------------------------------------------------ matching
# gguf-py's HF → GGUF tensor-name tables (the ones convert_hf_to_gguf.py uses) tried by rule 3
_NAME_MAP_ARCHS = ("BERT", "LLAMA")
_MAX_MAPPED_BLOCKS = 1024


@lru_cache(maxsize=16)
def _name_maps(n_blocks: int):
    import gguf
    return [gguf.get_tensor_name_map(getattr(gguf.MODEL_ARCH, a), n_blocks) for a in _NAME_MAP_ARCHS]


def _n_blocks(names) -> int:
    ids = [int(m) for n in names for m in re.findall(r"(?:^|\.)(\d+)\.", n)]
    n = max(ids, default=0) + 1
    return 1 << (n - 1).bit_length()   # round up: few distinct cached tables


def _canonical(name: str, n_blocks: int) -> str:
    """llama.cpp's GGUF name of a tensor (``blk.0.attn_q.weight``) when gguf-py's table for one of
    _NAME_MAP_ARCHS knows it (GGUF names map to themselves), else the name; always ``.weight``."""
    base = name[:-len(".weight")] if name.endswith(".weight") else name
    if n_blocks > _MAX_MAPPED_BLOCKS:      # building the tables would take seconds: no rule 3
        return base + ".weight"
    for m in _name_maps(n_blocks):
        g = m.get_name(base)
        if g is not None:
            return g + ".weight"
    return base + ".weight"


def match(imatrix: Imatrix, tensor_name: str) -> str | None:
    """The entry name used for a model tensor (rules in :func:`weights_for`), or None."""
    entries = imatrix.entries
    if tensor_name in entries:
        return tensor_name
    alt = tensor_name[:-len(".weight")] if tensor_name.endswith(".weight") else tensor_name + ".weight"
    if alt in entries:
        return alt
    n_blocks = max(imatrix._n_blocks, _n_blocks([tensor_name]))
    return imatrix._canonical_index.get(_canonical(tensor_name, n_blocks))


def weights_for(imatrix: Imatrix, tensor_name: str, cols: int, n_mat: int = 1
                ) -> tuple[np.ndarray | None, str | None]:
    """The importance llama-quantize passes to ``ggml_quantize_chunk`` for a model tensor with
    ``cols`` columns (numpy order [rows, cols]; ggml ne[0]), or ``(None, reason)``.

    Matching, first rule that finds an entry wins:

    1. the exact tensor name (llama-quantize only ever uses this one);
    2. the name with a trailing ``.weight`` removed, or with one added;
    3. the same llama.cpp GGUF name under gguf-py's HF → GGUF tensor-name table for BERT or
       LLaMA (``encoder.layer.0.attention.self.query.weight`` ↔ ``blk.0.attn_q.weight``,
       ``model.layers.3.mlp.down_proj.weight`` ↔ ``blk.3.ffn_down.weight``), so an imatrix
       made by ``llama-imatrix`` on a GGUF conversion matches the safetensors model, and
       back.

    A tensor with no entry gets ``(None, reason)``: llama-quantize quantizes it without
    importance. An entry of the wrong length is a reason too (llama-quantize aborts there),
    not an error. ``n_mat`` > 1 asks for a 3-D tensor of ``n_mat`` expert matrices: the entry
    must then hold ``n_mat × cols`` values and comes back as float32[n_mat, cols] (expert e's
    rows use row e). The returned array is the Imatrix's own: do not modify it.
    """
    key = match(imatrix, tensor_name)
    if key is None:
        return None, f"imatrix has no entry for {tensor_name} (quantized without importance, as llama-quantize does)"
    v = imatrix.entries[key]
    want = int(cols) * int(n_mat)
    if v.size != want:
        if n_mat == 1:
            extra = f" ({v.size // cols} expert matrices of {cols})" if v.size > cols and v.size % cols == 0 else ""
            return None, f"imatrix has {v.size} columns, tensor has {cols}{extra}"
        return None, f"imatrix has {v.size} values, tensor has {n_mat} matrices × {cols} columns"
    return (v if n_mat == 1 else v.reshape(n_mat, cols)), None


# ------------------------------------------------------------- the default model's imatrix
# Calibration text for the embedded default model: plain English prose on varied subjects,
# written for the workbench (no network, no third-party data set).
CALIBRATION_TEXT = """\
The river had been rising for three days before anyone in the village took it seriously. Old
farmers watched the brown water creep over the lower pasture and muttered about the spring of
their childhood, when the bridge washed away and the school closed for a month. By the fourth
morning the council had filled sandbags along the main street, the bakery had moved its ovens
upstairs, and children were paddling through the square in borrowed boots, delighted by the
whole affair. Nobody drowned, the water drained away within a week, and the only lasting damage
was a thick layer of silt that made the gardens unusually fertile the following summer.

Photosynthesis converts light energy into chemical energy stored in sugar. Inside the
chloroplasts of a leaf, pigments such as chlorophyll absorb red and blue light, and the energy
is used to split water molecules, releasing oxygen as a by-product. The electrons freed in this
process travel along a chain of proteins embedded in a membrane, pumping protons and producing
the molecules that power the Calvin cycle, where carbon dioxide from the air is fixed into
three-carbon sugars. Almost every food chain on land depends on this reaction, and so does most
of the oxygen we breathe.

To make a simple loaf of bread you need flour, water, salt and yeast. Mix the dry ingredients,
add warm water slowly, and knead the dough for about ten minutes until it is smooth and
elastic. Let it rise in a covered bowl until it has doubled in size, then press out the air,
shape it into a loaf and leave it to rise again. Bake it in a hot oven for thirty to forty
minutes. A loaf is done when it sounds hollow if you tap the bottom, and it should cool on a
rack before you cut it, however tempting the smell may be.

A hash table stores key and value pairs in an array, using a hash function to turn each key
into an index. When two keys land on the same slot, the table resolves the collision, either by
keeping a short list at each slot or by probing for the next free position. Lookups, inserts
and deletes take constant time on average, which is why dictionaries in Python and maps in many
other languages are built this way. The table grows when it becomes too full, copying every
entry into a larger array, so an occasional insert is slow even though most are fast.

The match was decided in the final minute. After ninety minutes of cautious passing and missed
chances, the visiting team won a corner, the ball was headed back across the goal, and their
youngest player volleyed it into the roof of the net. The home supporters fell silent while a
small corner of the stadium erupted. The coach said afterwards that the result was harsh on his
opponents, who had controlled most of the game, but that football rewards the team that takes
its chances rather than the team that creates them.

Interest rates influence almost every corner of an economy. When a central bank raises its
policy rate, borrowing becomes more expensive for households and companies, mortgages cost more,
and saving becomes more attractive than spending. Over months, slower demand tends to cool
inflation, although it can also raise unemployment. Lowering rates has the opposite effect,
encouraging investment and consumption. Because these effects arrive with long and variable
delays, policy makers have to act on forecasts, and they are often criticised for moving too
late or too early.

Honeybees communicate the location of food through a waggle dance. A forager returning to the
hive runs in a straight line while shaking her body, then loops back and repeats the run. The
angle of the run relative to vertical tells the other bees the direction of the flowers
relative to the sun, and the duration of the waggle tells them the distance. Bees that follow
the dance can find a patch of flowers several kilometres away, and a colony can shift its
foraging within hours when a richer source appears.

The train left the coast before dawn and climbed slowly into the mountains. For the first hour
the windows showed only darkness and the reflection of sleeping passengers, but as the sky grew
pale the valleys opened below, filled with mist, and small stone villages appeared on the
ridges. At a station with a single platform, an old woman sold coffee and almond biscuits from
a basket. By noon the line crossed a high pass covered in snow, and the air in the carriage
turned cold enough that people pulled their coats back on.

The printing press changed Europe within a few decades. Before movable type, books were copied
by hand, and a single volume might take months to produce. Once printers could set pages from
reusable metal letters, thousands of copies of a pamphlet could be made in days, and ideas
spread faster than authorities could control them. Scholars corrected each other in print,
merchants published prices, and ordinary readers gained access to texts that had been locked in
monasteries and universities for centuries.

Regular exercise improves health in ways that go well beyond weight. Moderate activity for
thirty minutes on most days lowers blood pressure, strengthens the heart and lungs, and reduces
the risk of diabetes. It also improves sleep and mood, partly because physical effort triggers
the release of chemicals in the brain that reduce stress. The best exercise is the one a person
actually enjoys and keeps doing, whether that is walking the dog, cycling to work, swimming or
dancing in the kitchen.

Quantizing the weights of a neural network stores each number with fewer bits, trading a small
loss of accuracy for a large saving in memory and bandwidth. A block format splits every row into
short groups, keeps one scale per group, and rounds each weight to a small integer. Some weights
matter more than others, because the activations that multiply them are larger, and an
importance matrix measures exactly that: the average squared input seen by every column. A
quantizer that knows these importances can spend its limited precision where errors hurt most.

Volcanoes form where molten rock from deep inside the earth reaches the surface. Along the edges
of tectonic plates, one plate may sink beneath another and melt, feeding chains of steep,
explosive mountains. In other places, such as Hawaii and Iceland, hot plumes rising from the
mantle produce runny lava that flows for kilometres and builds broad, gentle shields. Scientists
watch for small earthquakes, swelling ground and changes in the gases escaping from vents, which
often give days or weeks of warning before an eruption.
"""
CALIBRATION_NAME = "workbench/imatrix.py:CALIBRATION_TEXT"


@njit(cache=True, nogil=True)
def _accumulate_sq(acc, x):
    """llama-imatrix's collect_imatrix for a dense matmul: for each activation row,
    ``acc[j] += x[j] * x[j]`` in float32, rows in order."""
    rows, cols = x.shape
    for r in range(rows):
        for j in range(cols):
            v = x[r, j]
            acc[j] += v * v


def compute_minilm(text: str = CALIBRATION_TEXT, chunk_tokens: int = 128, max_chunks: int | None = None,
                   model: MiniLM | None = None) -> tuple[dict[str, np.ndarray], dict[str, int], int]:
    """Raw imatrix statistics of the default model, as ``llama-imatrix`` collects them: the text
    is tokenized once and cut into chunks of ``chunk_tokens`` tokens ([CLS] + chunk_tokens − 2
    text tokens + [SEP]; a short tail is dropped, as llama-imatrix drops it); every chunk runs
    through the encoder, and for every Linear weight the float32 per-column sum of squared input
    activations is accumulated row by row (one row per token) with the count of rows.

    Returns (sums, counts, n_chunks), keyed by safetensors weight name (36 Linear weights)."""
    model = model or load_minilm()
    tok = model.tokenizer
    ids = tok.encode(text)
    body = chunk_tokens - 2
    n_chunks = len(ids) // body
    if max_chunks is not None:
        n_chunks = min(n_chunks, max_chunks)
    if n_chunks < 1:
        raise ValueError(f"calibration text has {len(ids)} tokens, fewer than one chunk of {body}")
    sums: dict[str, np.ndarray] = {}
    counts: dict[str, int] = {}

    def collect(name: str, x: np.ndarray) -> None:
        if name not in sums:
            sums[name] = np.zeros(x.shape[1], np.float32)
            counts[name] = 0
        _accumulate_sq(sums[name], np.ascontiguousarray(x, dtype=np.float32))
        if not np.isfinite(sums[name]).all():   # llama-imatrix exits on non-finite sums
            raise ValueError(f"non-finite activations entering {name}")
        counts[name] += x.shape[0]

    # all chunks in one batch (attention stays within each chunk); the activation rows reach
    # collect() chunk by chunk, token by token, the order llama-imatrix accumulates them in
    batch = np.array([[tok.cls] + ids[c * body:(c + 1) * body] + [tok.sep] for c in range(n_chunks)])
    bert_forward(model, batch, collect)
    return sums, counts, n_chunks


def write_minilm(path=DEFAULT_MINILM_IMATRIX, chunk_tokens: int = 128) -> Imatrix:
    """Compute the default model's imatrix (:func:`compute_minilm`) and save it with
    :func:`save_gguf` (chunk_size = chunk_tokens, chunk_count = chunks run)."""
    sums, counts, n_chunks = compute_minilm(chunk_tokens=chunk_tokens)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    save_gguf(path, sums, counts, [CALIBRATION_NAME], n_chunks, chunk_tokens)
    return load(path)


def main(argv: list[str] | None = None) -> int:
    """``python -m workbench.imatrix [OUT]``: regenerate the default model's imatrix."""
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] in ("-h", "--help"):
        print(main.__doc__ + f"\n(OUT defaults to {DEFAULT_MINILM_IMATRIX})")
        return 0
    out = Path(argv[0]) if argv else DEFAULT_MINILM_IMATRIX
    t0 = time.perf_counter()
    imx = write_minilm(out)
    n_tok = imx.chunk_count * (imx.chunk_size or 0)
    print(f"wrote {out}: {len(imx.entries)} entries, {imx.chunk_count} chunks × {imx.chunk_size} tokens "
          f"({n_tok} tokens), fingerprint {imx.fingerprint}, {time.perf_counter() - t0:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
