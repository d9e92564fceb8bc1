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

With ``--store`` the timings are also recorded in the store's ``timings`` table (one row per
type, imatrix, implementation and thread count; :func:`timing_rows`), which the dashboard's
Throughput page draws next to the sweep's own timings.

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
from workbench.codecs import NO_IMPORTANCE, threaded_rows
from workbench.families.ggml import ggml_kernels
from workbench.formats import GGML_TYPES

TYPES = tuple(GGML_TYPES)
DEFAULT_TENSORS = r"layer\.\d+\.output\.dense\.weight$"


def default_imatrix_path() -> Path:
    return Path(__file__).resolve().parent.parent / "data" / "imatrix" / "all-MiniLM-L6-v2.imatrix.gguf"


IMPLEMENTATIONS = ("llama.cpp", "workbench-numba")   # the names recorded in the store's timings


def _importance(names: list[str], arrays: list[np.ndarray]) -> tuple[list[np.ndarray], str, str]:
    """The committed imatrix of the default model when it covers the tensors, else a synthetic
    heavy-tailed one (the speed of the imatrix path does not depend on its values). Returns the
    weights, the file name ("synthetic") and the file's fingerprint (as the store keys imatrix
    runs; "synthetic" for the made-up one)."""
    path = default_imatrix_path()
    if path.exists():
        from workbench.imatrix import load, weights_for
        imx = load(path)
        ws = [weights_for(imx, n, a.shape[1])[0] for n, a in zip(names, arrays)]
        if all(w is not None for w in ws):
            return ws, path.name, imx.fingerprint
    rng = np.random.default_rng(0)
    ws = [(rng.standard_t(3, a.shape[1]) ** 2).astype(np.float32) + 1e-3 for a in arrays]
    return ws, "synthetic", "synthetic"


def measure_vs_llamacpp(tensors: dict[str, np.ndarray], types=TYPES, threads: int | None = None,
                        repeat: int = 3, imatrix: bool = True) -> pd.DataFrame:
    """The timings, long form: one row per (type, with/without imatrix, implementation, threads)
    with ``format, imatrix ("yes"/"no"), implementation, threads, tensors, numel, nbytes,
    quant_s`` (best of ``repeat`` passes), ``repeat`` and ``identical`` (the bytes of every timed
    pass of both implementations agree). ``attrs``: imatrix file name and fingerprint, threads."""
    if not oracle.available():
        raise RuntimeError(oracle.MISSING)
    threads = threads or os.cpu_count() or 1
    names = list(tensors)
    arrays = [np.ascontiguousarray(tensors[n], np.float32) for n in names]
    n_weights = int(sum(a.size for a in arrays))
    imps, imp_name, imp_fp = _importance(names, arrays)
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
            found, identical, nbytes = [], True, 0
            for n in dict.fromkeys((1, threads)):                       # 1 and all cores, once each
                best_c = best_n = float("inf")
                for _ in range(max(1, repeat)):
                    t0 = time.perf_counter()
                    out_c = c_run(n)
                    t1 = time.perf_counter()
                    out_n = nb_run(n)
                    t2 = time.perf_counter()
                    best_c, best_n = min(best_c, t1 - t0), min(best_n, t2 - t1)
                    identical &= all(np.array_equal(p, q) for p, q in zip(out_c, out_n))
                nbytes = int(sum(o.size for o in out_c))
                found += [("llama.cpp", n, best_c), ("workbench-numba", n, best_n)]
            for impl, n, seconds in found:
                rows.append({"format": name, "imatrix": "yes" if imp is not None else "no",
                             "implementation": impl, "threads": n, "tensors": len(arrays),
                             "numel": n_weights, "nbytes": nbytes, "quant_s": seconds,
                             "repeat": max(1, repeat), "identical": identical})
    df = pd.DataFrame(rows)
    df.attrs.update(imatrix=imp_name, imatrix_fingerprint=imp_fp, threads=threads)
    return df


def wide_table(long: pd.DataFrame) -> pd.DataFrame:
    """The printed table: one row per (type, imatrix), weights per second (M) of both
    implementations at 1 thread and at the all-cores count, and the ratio llama.cpp time /
    Numba time (> 1: Numba faster)."""
    rows = []
    for (name, imp), g in long.groupby(["format", "imatrix"], sort=False):
        row = {"type": name, "imatrix": imp, "tensors": int(g["tensors"].iloc[0]),
               "weights": int(g["numel"].iloc[0])}
        for n in sorted(set(g["threads"])):
            c = g[(g["implementation"] == "llama.cpp") & (g["threads"] == n)]["quant_s"].iloc[0]
            nb = g[(g["implementation"] == "workbench-numba") & (g["threads"] == n)]["quant_s"].iloc[0]
            row[f"llama.cpp {n}T Mw/s"] = row["weights"] / c / 1e6
            row[f"numba {n}T Mw/s"] = row["weights"] / nb / 1e6
            row[f"ratio {n}T"] = c / nb
        row["identical"] = bool(g["identical"].all())
        rows.append(row)
    df = pd.DataFrame(rows)
    df.attrs.update(long.attrs)
    return df


def bench_vs_llamacpp(tensors: dict[str, np.ndarray], types=TYPES, threads: int | None = None,
                      repeat: int = 3, imatrix: bool = True) -> pd.DataFrame:
    """One row per (type, with/without imatrix): llama.cpp C vs Numba, 1 thread and ``threads``."""
    return wide_table(measure_vs_llamacpp(tensors, types, threads, repeat, imatrix))


def timing_rows(long: pd.DataFrame, model: str, run_id: str | None = None,
                reference_version: str | None = None) -> pd.DataFrame:
    """The store's ``timings`` rows (``workbench.store.TIMINGS_SCHEMA``) for a long-form result
    of :func:`measure_vs_llamacpp`: weights per second, bpw from the bytes written, the imatrix
    by fingerprint ("" without one) and this machine's provenance. ``reference_version``: the
    llama.cpp build timed (default: the installed one, ``oracle.version()``)."""
    from workbench import store as st
    prov = st.provenance(run_id or st.new_run_id(), backend="")
    with_imx = long["imatrix"] == "yes"
    out = long.assign(
        model=model, threads=long["threads"].astype("int32"),
        imatrix=np.where(with_imx, long.attrs.get("imatrix_fingerprint", "?"), ""),
        imatrix_file=np.where(with_imx, long.attrs.get("imatrix", "?"), None),
        quant_wps=long["numel"] / long["quant_s"], bpw=long["nbytes"] * 8.0 / long["numel"],
        reference_version=reference_version or oracle.version(),
        **{k: v for k, v in prov.items() if k not in ("backend",)})
    return out.drop(columns=["nbytes"])


def record(store: str | Path, long: pd.DataFrame, model: str) -> int:
    """Append the timings of one benchmark run to ``store``'s ``timings`` table; returns rows."""
    from workbench import store as st
    rows = timing_rows(long, model)
    st.write(store, "timings", rows)
    return len(rows)


def main(quick: bool = False, out: Path | None = None, threads: int | None = None,
         store: Path | None = None) -> int:
    """Run the benchmark on the default model, print the table (and write it to ``out``);
    with ``store``, also record the timings there for the dashboard's Throughput page."""
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
    long = measure_vs_llamacpp(tensors, threads=threads, repeat=2 if quick else 3)
    df = wide_table(long)
    text = (f"{head}; imatrix: {df.attrs['imatrix']}\n\n"
            "Weights per second (M), best of the passes; ratio = llama.cpp time / Numba time "
            "(> 1: Numba faster).\n\n" + markdown(df.drop(columns=["tensors", "weights"])))
    print(text)
    if out:
        out.write_text(text + "\n")
    if store is not None:
        n = record(store, long, src.model_id)
        print(f"recorded {n} timings in {store} (table timings; the dashboard's Throughput page shows them)")
    return 0 if df["identical"].all() else 1


if __name__ == "__main__":
    raise SystemExit(main())
