"""Benchmark: the README's main job from a cold Numba cache, beside the same job warm.

A fresh machine has no compiled kernels: ``NUMBA_CACHE_DIR`` is pointed at an empty folder, so
the first ``workbench sweep`` (default grid, default model, fresh store) compiles every kernel
it uses; then the same command runs again into another fresh store with that cache filled.
Both are whole commands (interpreter start, model open, compilation, sweep, store writes), run
one after the other in this run. ``workbench warm`` (what scripts/setup.sh runs) is timed cold
too, with a cache of its own. Targets (issue 9): cold ≤ 120 s, warm ≤ 60 s on 2 cores. Last,
``workbench sweep --time-all`` with the same warm cache: every (tensor, format) pair through the
real bytes, as sweeps did before the fused error kernel — the default sweep's gain, side by side.
"""
from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _timed(cmd: list[str], cache: Path) -> float:
    env = dict(os.environ, NUMBA_CACHE_DIR=str(cache))
    t0 = time.perf_counter()
    r = subprocess.run(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    dt = time.perf_counter() - t0
    if r.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed: {r.stderr.strip().splitlines()[-1:]}")
    return dt


def main(out: Path | None = None) -> int:
    wb = [sys.executable, "-m", "workbench"]
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        cold = _timed(wb + ["sweep", "--store", str(tmp / "s1")], tmp / "cache-sweep")
        warm = _timed(wb + ["sweep", "--store", str(tmp / "s2")], tmp / "cache-sweep")
        warm_cmd = _timed(wb + ["warm"], tmp / "cache-warm")
        after = _timed(wb + ["sweep", "--store", str(tmp / "s3")], tmp / "cache-warm")
        every = _timed(wb + ["sweep", "--time-all", "--store", str(tmp / "s4")], tmp / "cache-warm")
    cores = os.cpu_count()
    rows = [("`workbench sweep`, empty Numba cache (compiles)", cold, 120),
            ("`workbench sweep` again, cache filled", warm, 60),
            ("`workbench warm` (setup.sh's step), empty cache", warm_cmd, None),
            ("`workbench sweep` after `workbench warm`", after, 60),
            ("`workbench sweep --time-all` after `workbench warm` (every pair through the bytes)", every, None)]
    lines = [f"| command ({cores} cores, default grid × default model, fresh store) | wall s | target s |",
             "|---|---|---|"]
    lines += [f"| {name} | {s:.1f} | {'≤ ' + str(t) if t else ''} |" for name, s, t in rows]
    lines.append(f"| cold ÷ warm | {cold / warm:.2f} | |")
    lines.append(f"| `--time-all` ÷ default (the fused error kernel's gain on the whole command) | {every / after:.2f} | |")
    text = "\n".join(lines)
    print(text)
    if out:
        Path(out).write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
