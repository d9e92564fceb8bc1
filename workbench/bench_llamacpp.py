"""Benchmark: our Numba llama.cpp quantizers against llama.cpp's own C ``ggml_quantize_chunk``.

Not a test. ``workbench bench --vs llama.cpp`` (or ``python -m workbench.bench_llamacpp``) times
both on the same tensors in one run, one thread and then all cores, with and without an
importance matrix, and prints one row per (type, imatrix) with weights per second and the
ratio Numba / llama.cpp (> 1: we are faster). Each timing is the best of ``repeat`` passes over
the tensors, the two implementations alternating pass by pass so that machine noise hits both;
the bytes of the timed passes are compared (``identical``). Both sides are the quantizer alone:
``ggml_quantize_chunk`` against the kernel ``codec.quantize`` dispatches to (the codec's NaN/Inf
scan before it, one extra read of the tensor, is not timed, as llama.cpp has none).

Multi-core: llama-quantize splits a tensor into row chunks quantized by worker threads; we do
the same for both (``oracle.quantize(threads=n)``, ``codec.quantize(threads=n)``), so the
all-cores columns compare like with like.

Tensors: by default the six 384×1536 ``output.dense`` matrices of the default model (3.5 M
weights), the only ones every type (block 256 included) encodes natively; ``--quick`` takes
two of them.
"""
from __future__ import annotations

import os
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

from workbench import oracle
from workbench.codecs import NO_IMPORTANCE, threaded_rows, ggml_kernels
from workbench.formats import GGML_TYPES

TYPES = tuple(GGML_TYPES)
DEFAULT_TENSORS = r"layer\.\d+\.output\.dense\.weight$"


def default_imatrix_path() -> Path:
    return Path(__file__).resolve().parent.parent / "data" / "imatrix" / "all-MiniLM-L6-v2.imatrix.gguf"


def _importance(names: list[str], arrays: list[np.ndarray]) -> tuple[list[np.ndarray], str]:
    """The committed imatrix of the default model when it covers the tensors, else a synthetic
    heavy-tailed one (the speed of the imatrix path does not depend on its values)."""
    path = default_imatrix_path()
    if path.exists():
        from workbench.imatrix import load, weights_for
        imx = load(path)
        ws = [weights_for(imx, n, a.shape[1])[0] for n, a in zip(names, arrays)]
        if all(w is not None for w in ws):
            return ws, path.name
    rng = np.random.default_rng(0)
    return [(rng.standard_t(3, a.shape[1]) ** 2).astype(np.float32) + 1e-3 for a in arrays], "synthetic"


def bench_vs_llamacpp(tensors: dict[str, np.ndarray], types=TYPES, threads: int | None = None,
                      repeat: int = 3, imatrix: bool = True) -> pd.DataFrame:
    """One row per (type, with/without imatrix): llama.cpp C vs Numba, 1 thread and ``threads``."""
    if not oracle.available():
        raise RuntimeError(oracle.MISSING)
    threads = threads or os.cpu_count() or 1
    names = list(tensors)
    arrays = [np.ascontiguousarray(tensors[n], np.float32) for n in names]
    n_weights = int(sum(a.size for a in arrays))
    imps, imp_name = _importance(names, arrays)
    rows = []
    for name in types:
        t = GGML_TYPES[name]
        use = [a for a in arrays if a.shape[1] % t.block == 0]
        if len(use) != len(arrays):
            raise ValueError(f"{name}: every benchmark tensor must have rows that are a multiple of {t.block}")
        # the quantizer itself, as ggml_quantize_chunk is (codec.quantize adds one NaN/Inf scan)
        kernel = ggml_kernels()[name][0]
        variants = [None, imps] if (imatrix and t.uses_imatrix) else [None]
        for imp in variants:
            def c_run(n, imp=imp):
                return [oracle.quantize(name, a, None if imp is None else imp[i], threads=n)
                        for i, a in enumerate(arrays)]

            def nb_run(n, imp=imp):
                return [threaded_rows(kernel, a, n, NO_IMPORTANCE if imp is None else imp[i])
                        for i, a in enumerate(arrays)]

            nb_run(1)                                                   # JIT warm-up, not timed
            row = {"type": name, "imatrix": "yes" if imp is not None else "no",
                   "tensors": len(arrays), "weights": n_weights}
            identical = True
            for n, label in ((1, "1T"), (threads, f"{threads}T")):
                best_c = best_n = float("inf")
                for _ in range(max(1, repeat)):
                    t0 = time.perf_counter()
                    out_c = c_run(n)
                    t1 = time.perf_counter()
                    out_n = nb_run(n)
                    t2 = time.perf_counter()
                    best_c, best_n = min(best_c, t1 - t0), min(best_n, t2 - t1)
                    identical &= all(np.array_equal(p, q) for p, q in zip(out_c, out_n))
                row[f"llama.cpp {label} Mw/s"] = n_weights / best_c / 1e6
                row[f"numba {label} Mw/s"] = n_weights / best_n / 1e6
                row[f"ratio {label}"] = best_c / best_n
            row["identical"] = identical
            rows.append(row)
    df = pd.DataFrame(rows)
    df.attrs["imatrix"] = imp_name
    df.attrs["threads"] = threads
    return df


def main(quick: bool = False, out: Path | None = None, threads: int | None = None) -> int:
    from workbench.bench import markdown
    from workbench.sources import open_model
    from workbench.store import device_name
    if not oracle.available():
        raise RuntimeError(oracle.MISSING)
    src = open_model(None)
    weights = src.weights(DEFAULT_TENSORS)[: 2 if quick else None]
    tensors = {t.name: t.load() for t in weights}
    head = (f"device: {device_name()} ({os.cpu_count()} cores), python {platform.python_version()}, "
            f"{oracle.version()}; {src.model_id}: {len(tensors)} tensors "
            f"({sum(a.size for a in tensors.values()):,} weights)")
    print(head)
    df = bench_vs_llamacpp(tensors, threads=threads, repeat=2 if quick else 3)
    text = (f"{head}; imatrix: {df.attrs['imatrix']}\n\n"
            "Weights per second (M), best of the passes; ratio = llama.cpp time / Numba time "
            "(> 1: Numba faster).\n\n" + markdown(df.drop(columns=["tensors", "weights"])))
    print(text)
    if out:
        out.write_text(text + "\n")
    return 0 if df["identical"].all() else 1


if __name__ == "__main__":
    raise SystemExit(main())
