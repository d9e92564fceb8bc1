"""llama.cpp's own quantizer as an oracle: ``ggml_quantize_chunk`` from ``libggml-base``.

The library comes with the optional extra ``.[reference]`` (the PyPI package
``llama-cpp-python``, which builds libllama and libggml from source). Nothing else in the
workbench needs it: tests that compare against it skip with :data:`MISSING` as the reason when
it is absent, and ``workbench bench --vs llama.cpp`` says so in one line.

``ggml_quantize_chunk`` is the function ``llama-quantize`` calls (``quantize_<type>`` with or
without an importance matrix), so bytes equal to its output are the bytes a user gets from
``llama-quantize`` for the same tensor and the same imatrix.
"""
from __future__ import annotations

import ctypes
import glob
import os
from concurrent.futures import ThreadPoolExecutor
from functools import lru_cache

import numpy as np

from workbench.kernels.ggml_types import GGML_TYPES

# enum ggml_type (ggml/include/ggml.h), as gguf's GGMLQuantizationType numbers it: the types of
# the one table (kernels/ggml_types.py).
GGML_TYPE_IDS = {name: t.type_id for name, t in GGML_TYPES.items()}

MISSING = ("llama.cpp reference not installed: `pip install -e '.[reference]'` builds "
           "llama-cpp-python (libggml-base exports ggml_quantize_chunk)")


class OracleUnavailable(RuntimeError):
    pass


def _candidates() -> list[str]:
    env = os.environ.get("WORKBENCH_GGML_BASE")
    if env:
        return [env]
    try:
        import importlib.util
        spec = importlib.util.find_spec("llama_cpp")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return []
    out = []
    for root in spec.submodule_search_locations:
        out += sorted(glob.glob(os.path.join(root, "lib", "libggml-base.so*")))
        out += sorted(glob.glob(os.path.join(root, "lib", "libggml-base.dylib")))
    return out


@lru_cache(maxsize=1)
def _lib():
    paths = _candidates()
    if not paths:
        raise OracleUnavailable(MISSING)
    lib = ctypes.CDLL(paths[0])
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_int64,
                                        ctypes.c_void_p]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]
    lib.ggml_quantize_init.restype = None
    lib.ggml_quantize_init.argtypes = [ctypes.c_int]
    return lib, paths[0]


def available() -> bool:
    try:
        _lib()
    except (OracleUnavailable, OSError):
        return False
    return True


def library_path() -> str:
    return _lib()[1]


def version() -> str:
    """The llama-cpp-python version that built the library (provenance for benchmarks)."""
    try:
        from importlib.metadata import version as v
        return f"llama-cpp-python {v('llama-cpp-python')}"
    except Exception:  # noqa: BLE001 - WORKBENCH_GGML_BASE points at a library built by hand
        return os.path.basename(library_path())


def row_size(type_name: str, n_per_row: int) -> int:
    lib, _ = _lib()
    return int(lib.ggml_row_size(GGML_TYPE_IDS[type_name], n_per_row))


def quantize(type_name: str, x: np.ndarray, imatrix: np.ndarray | None = None,
             threads: int = 1) -> np.ndarray:
    """``ggml_quantize_chunk`` on a 2-D float32 array → uint8[rows, row_bytes].

    ``imatrix`` is the per-column importance (float32[cols]) llama-quantize passes for the
    tensor, or None. ``threads`` > 1 splits the rows into contiguous chunks quantized
    concurrently (ctypes releases the GIL), as llama-quantize's worker threads do.
    """
    lib, _ = _lib()
    t = GGML_TYPE_IDS[type_name]
    x = np.ascontiguousarray(x, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError("expected a 2-D array")
    rows, cols = x.shape
    rs = row_size(type_name, cols)
    out = np.empty((rows, rs), np.uint8)
    if imatrix is not None:
        imatrix = np.ascontiguousarray(imatrix, dtype=np.float32)
        if imatrix.shape != (cols,):
            raise ValueError(f"imatrix has shape {imatrix.shape}, expected ({cols},)")
    qw = None if imatrix is None else imatrix.ctypes.data
    lib.ggml_quantize_init(t)

    def chunk(r0, r1):
        n = lib.ggml_quantize_chunk(t, x.ctypes.data, out.ctypes.data, r0 * cols, r1 - r0,
                                    cols, qw)
        if n != (r1 - r0) * rs:
            raise RuntimeError(f"ggml_quantize_chunk wrote {n} bytes, expected {(r1 - r0) * rs}")

    if threads <= 1 or rows < 2:
        chunk(0, rows)
    else:
        bounds = np.linspace(0, rows, min(threads, rows) + 1).astype(int)
        with ThreadPoolExecutor(len(bounds) - 1) as pool:
            list(pool.map(lambda i: chunk(bounds[i], bounds[i + 1]), range(len(bounds) - 1)))
    return out
