"""Format spec → kernel: quantize to the real packed bytes, and decode them back.

Each family's plug-in (``workbench.families``) builds its codec on this module's ``Codec``; the
sweep, the benchmarks and the tests go through ``codec_for(spec, backend)``, where the backend
(``workbench.backends``: numba on the CPU, the reference; cupy on a GPU) says where it runs.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from workbench.formats import FormatSpec
from workbench import kernel_cache  # noqa: F401,E402 - snapshots the kernel sources this process loads

def as_kernel_input(x: np.ndarray) -> np.ndarray:
    """A writable float32 C array (a tensor mapped from its file is read-only: copy it), so the
    kernels see one array type and compile once: Numba types a read-only array apart."""
    x = np.ascontiguousarray(x, np.float32)
    return x if x.flags.writeable else x.copy()


class NonFiniteError(ValueError):
    """The tensor holds NaN/Inf; llama.cpp's quantizers are not defined for them."""


class NotOnThisBackend(ValueError):
    """This backend cannot quantize this (tensor, format) pair the way the reference does (the
    message says why, e.g. no importance path for an imatrix); the sweep skips the pair and lists
    it with that reason rather than store a row that would differ from the reference's."""


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


NO_IMPORTANCE = np.empty(0, np.float32)     # "no importance matrix", for kernels that take one


def codec_for(spec: FormatSpec, backend=None) -> Codec:
    """The codec of a spec on a backend (``workbench.backends``; None: numba, the reference,
    whose codecs are the family plug-ins' own). A backend without kernels for the spec's family
    raises ValueError saying so."""
    if backend is None:
        return spec.plugin.codec(spec)
    return backend.codec(spec)
