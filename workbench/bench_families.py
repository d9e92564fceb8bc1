"""`workbench bench --families`: sweep throughput per format family, side by side in one run.

Each group of formats is swept over the same tensors (the whole default model; ``--quick``:
layer 0) into a fresh store, every core, after an untimed sweep of one tensor that compiles or
loads its kernels; the table gives wall seconds, pairs, weight-formats per second and the
seconds per format per million weights, and each group's per-format cost as a ratio to the
uniform grid's, measured in the same run (machines here are noisy; ratios are not). The uniform
grid's errors come from the fused kernel (the sweep's default: every format is timed through
its bytes on one tensor only); the other families go through their bytes on every tensor.
"""
from __future__ import annotations

import os
import platform
import tempfile
import time
from pathlib import Path

import pandas as pd

from workbench.bench import markdown
from workbench.formats import FormatSpec, GRIDS, default_grid
from workbench.sources import open_model
from workbench.store import device_name

WARM_TENSOR = r"encoder\.layer\.0\.output\.dense\.weight"     # 1536 wide: every type native


def groups() -> list[tuple[str, list[FormatSpec]]]:
    cb = GRIDS["codebooks"]()
    tables = [s for s in cb if s.code in ("NF4", "FP4", "AF4", "LM4") and not s.double]
    return [("uniform grid (default grid's)", [s for s in default_grid() if s.family == "uniform"]),
            ("llama.cpp types", GRIDS["ggml"]()),
            ("codebook tables NF4/FP4/AF4/LM4", tables),
            ("codebook FIT4 (fitted per tensor)", [s for s in cb if s.code == "FIT4" and not s.double]),
            ("codebook MX/NVFP4 element types", [s for s in cb if s.code not in
                                                 ("NF4", "FP4", "AF4", "LM4", "FIT4") and not s.double]),
            ("codebook double quantization (dq)", [s for s in cb if s.double]),
            ("codebook smax/minmax/hqq normalizations", GRIDS["codebook-norms"]()),
            ("ik_llama.cpp IQ4_KS/KSS", GRIDS["iqk"]()),
            ("uniform asymmetric, rmse search", [s for s in GRIDS["searches"]() if s.search == "rmse"]),
            ("uniform asymmetric, hqq search", [s for s in GRIDS["searches"]() if s.search == "hqq"]),
            *_other_families()]


GROUPED = ("uniform", "ggml", "codebook", "iqk")      # the families split into the groups above


def _other_families() -> list[tuple[str, list[FormatSpec]]]:
    """One group per other registered family (a new plug-in is benchmarked with no change here):
    every format of its grids."""
    from workbench.families import PLUGINS, plugin, trait
    out = []
    for family in PLUGINS:
        if family in GROUPED:
            continue
        specs = {s.name: s for grid in plugin(family).GRIDS.values() for s in grid()}
        out.append((f"{trait(family, 'LABEL', family)} (its grids)", list(specs.values())))
    return out


def bench_families(quick: bool = False) -> pd.DataFrame:
    from workbench.sweep import run
    tensors = r"layer\.0\." if quick else None
    src = open_model(None)
    numel = sum(t.numel for t in src.weights(tensors))
    rows = []
    for label, specs in groups():
        with tempfile.TemporaryDirectory() as d:
            run(None, specs, WARM_TENSOR, d, progress=False)          # compile / load, untimed
        with tempfile.TemporaryDirectory() as d:
            t0 = time.perf_counter()
            rep = run(None, specs, tensors, d, progress=False)
            wall = time.perf_counter() - t0
        rows.append({"family": label, "formats": len(specs), "pairs": rep.measured, "wall_s": round(wall, 1),
                     "M weight-formats/s": round(numel * len(specs) / wall / 1e6, 1),
                     "s per format per M weights": wall / len(specs) / (numel / 1e6)})
    df = pd.DataFrame(rows)
    df["÷ uniform grid"] = (df["s per format per M weights"] / df["s per format per M weights"].iloc[0]).round(2)
    df["s per format per M weights"] = df["s per format per M weights"].map(lambda v: float(f"{v:.3g}"))
    return df


def main(quick: bool = False, out: Path | None = None) -> int:
    head = (f"`workbench bench --families{' --quick' if quick else ''}` on {device_name()} "
            f"({os.cpu_count()} cores), python {platform.python_version()}, {time.strftime('%Y-%m-%d')}")
    df = bench_families(quick)
    text = f"# Sweep throughput per family\n\n{head}\n\n{markdown(df)}\n"
    print(text)
    if out:
        Path(out).write_text(text)
    return 0
