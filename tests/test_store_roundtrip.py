"""Property: every file the store exports imports back into an empty store unchanged, whatever
the tensors measured (tiny and huge magnitudes, zeros, subnormals, constant blocks, short row
tails, llama.cpp fallbacks), and importing it again into the store it came from adds nothing."""
from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from workbench import store as st
from workbench import sweep

FORMATS = ["Q8_0", "Q4_0", "Q4_K", "IQ4_NL", "MXFP4", "Q4s32", "Q3a16_bf16", "Q4s16_e4m3",
           "Q2a32_e8m0", "Q(4a16)xQ(6s16)_e4m3", "Q5s64_rmse"]


@hs.composite
def tensors(draw):
    out = {}
    for i in range(draw(hs.integers(1, 3))):
        rows = draw(hs.integers(1, 4))
        cols = draw(hs.sampled_from([32, 48, 64, 96, 256, 288]))
        scale = draw(hs.sampled_from([1e-38, 1e-20, 1e-3, 1.0, 1e20, 1e37]))
        seed = draw(hs.integers(0, 2**32 - 1))
        x = np.random.default_rng(seed).standard_normal((rows, cols)) * scale
        kind = draw(hs.sampled_from(["plain", "zeros", "constant", "subnormal", "one-signed"]))
        if kind == "zeros":
            x[0] = 0
        elif kind == "constant":
            x[:, :32] = scale
        elif kind == "subnormal":
            x[0, ::3] = 1e-42
        elif kind == "one-signed":
            x = np.abs(x)
        out[f"t{i}.weight"] = np.clip(x, -3e38, 3e38).astype(np.float32)
    return out


def table(path: Path):
    t = pq.read_table(path)
    return t.replace_schema_metadata(None)


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=tensors(), formats=hs.lists(hs.sampled_from(FORMATS), min_size=1, max_size=4, unique=True))
def test_export_imports_back_unchanged(data, formats):
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        np.savez(tmp / "m.npz", **data)
        mine = tmp / "mine"
        rep = sweep.run(tmp / "m.npz", ",".join(formats), store=mine, progress=False)
        assert rep.measured + len([s for s in rep.skipped if s[1]]) == len(data) * len(formats)
        first = tmp / "first.parquet"
        n = st.export(mine, first)
        assert n == rep.measured
        theirs = tmp / "theirs"
        assert st.import_file(first, theirs) == (n, 0)
        again = tmp / "again.parquet"
        assert st.export(theirs, again) == n
        assert table(again).equals(table(first))
        assert st.import_file(first, mine) == (0, n)            # nothing new where it came from
        assert st.import_file(again, theirs) == (0, n)
