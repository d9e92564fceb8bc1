"""warm_up leaves nothing to compile for the timed region: after it, measuring real tensors
as the sweep hands them to the kernels (writable copies of the read-only arrays mapped from the
model file) adds no new Numba specialisation. Checked by counting compiled signatures, not by timing (speed is for benchmarks)."""
from __future__ import annotations

import importlib
import pkgutil

import numba
import numpy as np
import pytest

import workbench.kernels
from workbench import sweep
from workbench.formats import resolve


def compiled_signatures() -> dict[str, int]:
    counts = {}
    for mod in pkgutil.iter_modules(workbench.kernels.__path__):
        m = importlib.import_module(f"workbench.kernels.{mod.name}")
        for name, obj in vars(m).items():
            if isinstance(obj, numba.core.registry.CPUDispatcher):
                counts[f"{mod.name}.{name}"] = len(obj.signatures)
    return counts


@pytest.mark.parametrize("grid", ["small", "ggml"])
def test_measuring_real_tensors_after_warm_up_compiles_nothing(grid, minilm):
    specs = resolve(grid)
    sweep.warm_up(specs)
    before = compiled_signatures()
    assert sum(before.values()) > 0
    for t in minilm.weights(r"layer\.0\.(attention\.self\.query|intermediate)"):
        raw = t.load()
        assert not raw.flags.writeable        # mapped from the file: Numba types it apart ...
        x = sweep.as_kernel_input(raw)        # ... so the sweep hands kernels a writable copy
        assert x.flags.writeable and np.array_equal(x, raw)
        for f in specs:
            if not f.applies_to(x.shape):
                sweep.measure(f, x)
    after = compiled_signatures()
    assert after == before, {k: (before.get(k), v) for k, v in after.items() if before.get(k) != v}
