"""Benchmark: the fused error kernel against the real path, side by side in one run
(`workbench bench --fused`). Not a test.

Every uniform format of the default grid over a set of the default model's real tensors
(layer 0's six matrices by default; ``--all`` for every tensor), one thread, each format timed
both ways on the same tensors in turn (real, fused, real, fused …, best of ``repeat``):

* real: quantize → packed bytes → dequantize → ``error_sums_given`` (what a sweep did for every
  pair before, and still does on its timing tensor);
* fused: ``UniformCodec.error_sums`` (one pass, no bytes), the error columns of every other row.

Reported per structure (single / double) and in all: weight-formats per second each way, the
ratio, and the fraction of one core's memory bandwidth the fused kernel reaches — bytes it must
read (4 per weight per format) over the time, against a large ``numpy.copyto`` measured in the
same run (read + write, counted as 2 × 4 bytes per float32).
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np


def copy_bandwidth(mb: int = 256, repeat: int = 5) -> float:
    """Bytes per second one core moves in a numpy copy of ``mb`` MB (read + write)."""
    a = np.ones(mb * 2**20 // 4, np.float32)
    b = np.empty_like(a)
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        np.copyto(b, a)
        best = min(best, time.perf_counter() - t0)
    return 2 * a.nbytes / best


def measure(tensors: dict[str, np.ndarray], formats, repeat: int = 3) -> list[dict]:
    from workbench.codecs import codec_for
    from workbench.kernels.metrics import error_sums_given
    from workbench.metrics import signal_sums
    stats = {n: signal_sums(x) for n, x in tensors.items()}
    rows = []
    for spec in formats:
        codec = codec_for(spec)
        xs = [(x, stats[n]) for n, x in tensors.items() if not spec.applies_to(x.shape)]
        if not xs:
            continue
        numel = sum(x.size for x, _ in xs)

        def real():
            for x, s in xs:
                error_sums_given(x, codec.dequantize(codec.quantize(x), x.shape), *s)

        def fused():
            for x, s in xs:
                codec.error_sums(x, s)
        real(), fused()            # compiled and cached before timing
        tr = tf = float("inf")
        for _ in range(repeat):
            t0 = time.perf_counter()
            real()
            t1 = time.perf_counter()
            fused()
            t2 = time.perf_counter()
            tr, tf = min(tr, t1 - t0), min(tf, t2 - t1)
        same = all(np.array_equal(error_sums_given(x, codec.dequantize(codec.quantize(x), x.shape), *s),
                                  codec.error_sums(x, s), equal_nan=True) for x, s in xs)
        rows.append({"format": spec.name, "structure": "double" if spec.super_bits else "single",
                     "numel": numel, "real_s": tr, "fused_s": tf, "identical": same})
    return rows


def table(rows: list[dict], bandwidth: float) -> str:
    import pandas as pd
    df = pd.DataFrame(rows)
    out = ["| formats | pairs' weights (G) | real Mw-f/s | fused Mw-f/s | fused ÷ real | fused: read bandwidth, % of copy | identical |",
           "|---|---|---|---|---|---|---|"]
    for label, g in [*df.groupby("structure"), ("all", df)]:
        n, tr, tf = g["numel"].sum(), g["real_s"].sum(), g["fused_s"].sum()
        bw = 4 * n / tf / bandwidth * 100
        out.append(f"| {label} ({len(g)}) | {n / 1e9:.2f} | {n / tr / 1e6:,.0f} | {n / tf / 1e6:,.0f} | "
                   f"{tr / tf:.2f}× | {bw:.1f} % | {bool(g['identical'].all())} |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="workbench bench --fused", description=__doc__.split("\n\n")[0])
    ap.add_argument("--all", action="store_true", help="every tensor of the default model (default: layer 0)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--out", type=Path)
    a = ap.parse_args(argv)
    from workbench.codecs import as_kernel_input, codec_for
    from workbench.formats import resolve
    from workbench.sources import open_model
    src = open_model(None)
    tensors = {t.name: as_kernel_input(t.load()) for t in src.weights()
               if a.all or ".layer.0." in t.name}
    formats = [f for f in resolve("default") if hasattr(codec_for(f), "error_sums")]   # the fused path
    bandwidth = copy_bandwidth()
    rows = measure(tensors, formats, a.repeat)
    text = table(rows, bandwidth)
    head = (f"{len(formats)} uniform formats of the default grid × {len(tensors)} tensors of "
            f"{src.model_id} ({sum(x.size for x in tensors.values()) / 1e6:.2f} M weights), one thread, "
            f"best of {a.repeat}; one core's numpy copy: {bandwidth / 1e9:.1f} GB/s (read + write)")
    print(head)
    print(text)
    if a.out:
        a.out.write_text(f"# Fused error kernel vs quantize → bytes → dequantize → metrics\n\n"
                         f"`workbench bench --fused`, {time.strftime('%Y-%m-%d')}: {head}\n\n{text}\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
