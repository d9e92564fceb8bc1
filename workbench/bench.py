"""Benchmarks (never timed tests): run with ``workbench bench``.

1. The default grid over the default model, end to end (quantize → bytes → dequantize →
   metrics → store), on every core: wall time and weight-formats per second.
2. The Numba llama.cpp legacy quantizers against gguf's numpy reference on the same tensors,
   side by side in one run, single-threaded, as ratios (machines here are noisy; ratios are not).
"""
from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd

from workbench.formats import default_grid
from workbench.sources import open_model
from workbench.store import device_name


def markdown(df: pd.DataFrame) -> str:
    """A Markdown table (no tabulate dependency)."""
    def fmt(v):
        return f"{v:.3g}" if isinstance(v, float) else str(v)
    lines = ["| " + " | ".join(map(str, df.columns)) + " |", "|" + "---|" * len(df.columns)]
    lines += ["| " + " | ".join(fmt(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)


def bench_grid(quick: bool = False, backend=None) -> pd.DataFrame:
    """The default grid over the default model on ``backend`` (None: numba); with a backend that
    lacks some families' kernels, the pairs and the rate count only what it measured."""
    from workbench.sweep import run
    tensors = r"layer\.0\." if quick else None
    with tempfile.TemporaryDirectory() as d:
        t0 = time.perf_counter()
        rep = run(None, "default", tensors, d, progress=True, backend=backend)
        wall = time.perf_counter() - t0
    src = open_model(None)
    numel = sum(t.numel for t in src.weights(tensors))
    ran = [f for f in default_grid() if backend is None or backend.supports(f) is None]
    return pd.DataFrame([{
        "model": src.model_id, "backend": getattr(backend, "name", "numba-cpu"),
        "tensors": len(src.weights(tensors)), "weights": numel, "formats": len(ran),
        "pairs": rep.measured, "wall_s": round(wall, 1), "cores": os.cpu_count(),
        "M weight-formats/s": round(numel * len(ran) / wall / 1e6, 1)}])


def main(quick: bool = False, out: Path | None = None, backend=None) -> int:
    from workbench.bench_legacy import bench_legacy
    print(f"device: {device_name()} ({os.cpu_count()} cores), python {platform.python_version()}")
    grid = bench_grid(quick, backend)
    print("\n## Default grid over the default model\n")
    print(markdown(grid))
    src = open_model(None)
    weights = src.weights(r"layer\.0\." if quick else None)
    tensors = {t.name: t.load() for t in weights}
    legacy = bench_legacy(tensors)
    print("\n## llama.cpp legacy types: Numba vs gguf (numpy), single thread, same tensors\n")
    print(markdown(legacy))
    if out:
        out.write_text("## Default grid over the default model\n\n" + markdown(grid)
                       + "\n\n## Legacy types: Numba vs gguf numpy (single thread)\n\n"
                       + markdown(legacy) + "\n")
    return 0
