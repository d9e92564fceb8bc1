"""Benchmark: gguf's numpy legacy quantizers vs ours (``workbench.kernels.legacy``), side by side.

Not a test. ``python -m workbench.bench_legacy`` times both over every weight matrix of the
default model and prints one row per type. Everything runs on one thread: gguf's numpy code is
single-threaded, and our kernels are plain ``@njit`` loops (no ``prange``).
"""
from __future__ import annotations

import time

import numpy as np
import pandas as pd
from gguf import GGMLQuantizationType
from gguf.quants import dequantize as gguf_dequantize
from gguf.quants import quantize as gguf_quantize

from workbench.kernels.legacy import LEGACY

DEFAULT_TYPES = ("Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0")


def _best_of(fn, repeat: int) -> tuple[float, list]:
    best, out = float("inf"), None
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


def bench_legacy(tensors: dict[str, np.ndarray], types=DEFAULT_TYPES, repeat: int = 3) -> pd.DataFrame:
    """Time gguf.quants vs our Numba kernels (quantize and dequantize) on the same tensors.

    Each timing is one pass over all ``tensors``, best of ``repeat`` (``time.perf_counter``);
    the JIT is warmed up first (not timed). Returns one row per type with seconds, weights/s
    and the speedup ratio numba/gguf (in weights/s), plus whether the bytes and the decoded
    values were identical in the timed runs.
    """
    # every legacy type has 32-weight blocks along the rows; other tensors cannot be quantized
    arrays = [np.ascontiguousarray(a, dtype=np.float32) for a in tensors.values()
              if a.ndim == 2 and a.shape[1] % 32 == 0 and a.size > 0]
    if not arrays:
        raise ValueError("no 2-D tensor with a row length that is a multiple of 32")
    n_weights = int(sum(a.size for a in arrays))
    rows = []
    for name in types:
        quant, dequant, qk, nbytes = LEGACY[name]
        gt = GGMLQuantizationType[name]
        small = arrays[0][:2]
        with np.errstate(all="ignore"):                 # warm-up: JIT compile / cache load
            dequant(quant(small), small.shape[1])
            gguf_dequantize(gguf_quantize(small, gt), gt)

            tq_g, packed_g = _best_of(lambda: [gguf_quantize(a, gt) for a in arrays], repeat)
            tq_n, packed_n = _best_of(lambda: [quant(a) for a in arrays], repeat)
            td_g, y_g = _best_of(lambda: [gguf_dequantize(p, gt) for p in packed_g], repeat)
            td_n, y_n = _best_of(lambda: [dequant(p, a.shape[1]) for p, a in zip(packed_g, arrays)], repeat)
        rows.append({
            "type": name,
            "tensors": len(arrays),
            "weights": n_weights,
            "gguf_quant_s": tq_g,
            "numba_quant_s": tq_n,
            "gguf_quant_Mw/s": n_weights / tq_g / 1e6,
            "numba_quant_Mw/s": n_weights / tq_n / 1e6,
            "quant_speedup": tq_g / tq_n,
            "gguf_dequant_s": td_g,
            "numba_dequant_s": td_n,
            "gguf_dequant_Mw/s": n_weights / td_g / 1e6,
            "numba_dequant_Mw/s": n_weights / td_n / 1e6,
            "dequant_speedup": td_g / td_n,
            "bytes_identical": all(np.array_equal(a, b) for a, b in zip(packed_g, packed_n)),
            "decode_identical": all(np.array_equal(a.view(np.uint32), b.view(np.uint32))
                                    for a, b in zip(y_g, y_n)),
        })
    return pd.DataFrame(rows)


if __name__ == "__main__":
    from workbench.sources import open_model

    m = open_model()
    tensors = {t.name: t.load() for t in m.weights()}
    print(f"{m.model_id}: {len(tensors)} tensors, {sum(a.size for a in tensors.values()):,} weights")
    df = bench_legacy(tensors)
    with pd.option_context("display.width", 250, "display.max_columns", 30,
                           "display.float_format", "{:.3f}".format):
        print(df.to_string(index=False))
