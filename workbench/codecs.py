"""Format spec → kernel: quantize to the real packed bytes, and decode them back.

This is the only module that knows which kernel implements which family; the sweep, the
benchmarks and the tests go through ``codec_for(spec)``.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np

from workbench.formats import GGML_TYPES, SEARCHES, FormatSpec
from workbench.kernels import uniform as U
from workbench.kernels.scales import ENCODINGS
from workbench import kernel_cache  # noqa: F401,E402 - snapshots the kernel sources this process loads

BACKEND = "numba-cpu"


def as_kernel_input(x: np.ndarray) -> np.ndarray:
    """A writable float32 C array (a tensor mapped from its file is read-only: copy it), so the
    kernels see one array type and compile once: Numba types a read-only array apart."""
    x = np.ascontiguousarray(x, np.float32)
    return x if x.flags.writeable else x.copy()


class NonFiniteError(ValueError):
    """The tensor holds NaN/Inf; llama.cpp's quantizers are not defined for them."""


@dataclass(frozen=True)
class Codec:
    spec: FormatSpec

    def quantize(self, x: np.ndarray, importance: np.ndarray | None = None,
                 threads: int = 1) -> np.ndarray:
        """Packed bytes of a 2-D float32 tensor. ``importance`` (float32[cols], an imatrix
        entry) is used by the formats that use one, as llama.cpp does, and ignored by the rest;
        ``threads`` > 1 quantizes contiguous row ranges concurrently (same bytes)."""
        raise NotImplementedError

    def dequantize(self, packed: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        raise NotImplementedError

    def uses_importance(self, shape: tuple[int, int]) -> bool:
        return False


def _row_chunks(rows: int, threads: int) -> list[tuple[int, int]]:
    n = max(1, min(threads, rows))
    b = [rows * i // n for i in range(n + 1)]
    return [(b[i], b[i + 1]) for i in range(n)]


def threaded_rows(fn, x: np.ndarray, threads: int, *args) -> np.ndarray:
    """fn(x[r0:r1], *args) -> uint8[r1-r0, row_bytes] on row ranges, in a thread pool (the
    kernels release the GIL); the chunks are joined in order."""
    if threads <= 1 or x.shape[0] < 2:
        return fn(x, *args)
    from concurrent.futures import ThreadPoolExecutor
    chunks = _row_chunks(x.shape[0], threads)
    with ThreadPoolExecutor(len(chunks)) as pool:
        parts = list(pool.map(lambda c: fn(x[c[0]:c[1]], *args), chunks))
    return np.concatenate(parts)


class UniformCodec(Codec):
    def _args(self):
        s = self.spec
        return (s.bits, s.symmetric, s.block, ENCODINGS[s.scale].id,
                s.super_bits or 0, bool(s.super_symmetric), s.super_block or 0)

    def quantize(self, x: np.ndarray, importance: np.ndarray | None = None,
                 threads: int = 1) -> np.ndarray:
        s = self.spec
        bits, sym, block, enc, sbits, ssym, sblock = self._args()
        norms = self._norms(x)
        packed = np.empty(s.nbytes(x.shape), np.uint8)
        assert norms.nbytes == s.header_bytes, (s.name, norms.nbytes, s.header_bytes)
        packed[:norms.nbytes] = norms.view(np.uint8)
        used = U.quantize(x, bits, sym, block, enc, sbits, ssym, sblock, self._search(), s.naive, norms, packed)
        if used != packed.size:  # the layout and the closed form must agree, byte for byte
            raise AssertionError(f"{s.name}: wrote {used} bytes, closed form says {packed.size}")
        return packed

    def _search(self) -> int:
        return SEARCHES.index(self.spec.search)     # kernels.uniform: ABSMAX, RMSE, HQQ

    def _norms(self, x: np.ndarray) -> np.ndarray:
        s = self.spec
        if not s.uses_normalizer:
            return np.empty(0, np.float32)
        bits, sym, block, enc, sbits, ssym, sblock = self._args()
        return U.normalizers(x, bits, sym, block, enc, sbits, ssym, sblock, self._search())

    def error_sums(self, x: np.ndarray, stats) -> np.ndarray:
        """The fused path: ``kernels.metrics.error_sums_given(x, dequantize(quantize(x)),
        *stats)``, bit for bit, in one pass without the bytes (``kernels.uniform.error_sums``).
        ``stats``: ``metrics.signal_sums(x)``."""
        s = self.spec
        bits, sym, block, enc, sbits, ssym, sblock = self._args()
        return U.error_sums(x, *stats, bits, sym, block, enc, sbits, ssym, sblock,
                            self._search(), s.naive, self._norms(x))

    def dequantize(self, packed: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        bits, sym, block, enc, sbits, ssym, sblock = self._args()
        y = np.empty(shape, np.float32)
        U.dequantize(packed, shape[0], shape[1], bits, sym, block, enc, sbits, ssym, sblock,
                     self.spec.header_bytes // 4, y)
        return y


# ------------------------------------------------------------------------ llama.cpp types
NO_IMPORTANCE = np.empty(0, np.float32)


def _f16_quantize(x, qw):
    with np.errstate(over="ignore"):    # |x| > 65504 becomes inf, as in ggml: the sweep lists it
        return np.ascontiguousarray(x, np.float32).astype(np.float16).view(np.uint8)


def _f16_dequantize(packed, cols):
    return packed.view(np.float16).astype(np.float32)


def _legacy_entry(q, q_imatrix):
    def quantize(x, qw):
        return q(x) if q_imatrix is None or qw.size == 0 else q_imatrix(x, qw)
    return quantize


@functools.cache
def ggml_kernels() -> dict[str, tuple]:
    """llama.cpp type → (quantize(x, qw), dequantize(packed, cols)); qw = float32[cols]
    importance, or an empty array for none. Every entry reproduces ggml_quantize_chunk."""
    from workbench.kernels import kquant_type0, kquant_type1, nonlinear
    from workbench.kernels.legacy import LEGACY
    imat = {**kquant_type0.IMATRIX_LEGACY, **kquant_type1.IMATRIX_LEGACY}
    out = {name: (_legacy_entry(q, imat.get(name)), dq) for name, (q, dq, *_r) in LEGACY.items()}
    for mod in (kquant_type0, kquant_type1, nonlinear):
        out.update({name: (q, dq) for name, (q, dq, *_r) in mod.KERNELS.items()})
    out["F16"] = (_f16_quantize, _f16_dequantize)
    return out


class GgmlCodec(Codec):
    """A llama.cpp type, as llama-quantize writes it: rows its block does not divide are
    written in llama.cpp's fallback type (``spec.plan``)."""

    def applied(self, shape: tuple[int, int]) -> str:
        applied, note = self.spec.plan(shape)
        if applied is None:
            raise ValueError(note)
        return applied

    def uses_importance(self, shape: tuple[int, int]) -> bool:
        applied = self.applied(shape)
        return applied != "F16" and GGML_TYPES[applied].uses_imatrix

    def quantize(self, x: np.ndarray, importance: np.ndarray | None = None,
                 threads: int = 1) -> np.ndarray:
        from workbench.kernels.legacy import check_finite
        if check_finite(x):
            raise NonFiniteError(f"{self.spec.name}: tensor has non-finite values (NaN/Inf); "
                                 "llama.cpp's quantizers are not defined for them")
        qw = NO_IMPORTANCE
        if importance is not None:
            qw = np.ascontiguousarray(importance, np.float32)
            if qw.shape != (x.shape[1],):
                raise ValueError(f"importance has shape {qw.shape}, tensor rows have {x.shape[1]} columns")
        q = ggml_kernels()[self.applied(x.shape)][0]
        return threaded_rows(q, np.ascontiguousarray(x, np.float32), threads, qw)

    def dequantize(self, packed: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
        return ggml_kernels()[self.applied(shape)][1](packed, shape[1]).reshape(shape)


_CODECS = {"uniform": UniformCodec, "ggml": GgmlCodec}


def codec_for(spec: FormatSpec) -> Codec:
    if spec.family in _CODECS:
        return _CODECS[spec.family](spec)
    from workbench.families import plugin
    return plugin(spec.family).codec(spec)
