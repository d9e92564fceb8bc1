"""A store written before the families became plug-ins reads the same with this code.

``tests/data/store-30ed046`` is a real store written by commit 30ed046 (stop 20, the last code
with uniform and llama.cpp's types built into formats/codecs): the default model's layer-0
tensors × the 'small' grid plus codebook, ik_llama, k-quant, NVFP4 and HQQ formats, 126 rows. It was
written with ``workbench sweep --formats "small,NF4b64_f32,NF4b64_dq,E2M1b32_e8m0,E2M1b16_e4m3,
AF4b64_e4m3,IQ4_KS,Q4_K,NVFP4,Q4a32_hqq" --tensors 'layer\\.0\\.'`` run from a worktree of that
commit."""
from __future__ import annotations

import math
import shutil
from pathlib import Path

import pandas as pd
import pytest

from workbench import store as st
from workbench.formats import SPEC_COLUMNS, parse, spec_columns

OLD = Path(__file__).parent / "data" / "store-30ed046"
MEASURED = ("bpw", "nbytes", "numel", "rows", "cols", "row_tail", "applied_type", "fallback_note", "mse",
            "rmse", "nmse", "sqnr_db", "max_abs_err", "cosine", "bnl", "bnl_seed")


@pytest.fixture(scope="module")
def stores(tmp_path_factory):
    root = tmp_path_factory.mktemp("compat")
    old = root / "old"
    shutil.copytree(OLD, old)
    from workbench import sweep
    formats = sorted(st.query(old, "SELECT DISTINCT format FROM results")["format"])
    new = root / "new"
    sweep.run(formats=",".join(formats), store=new, tensors=r"layer\.0\.", workers=1, progress=False)
    return old, new


def _same(a, b) -> bool:
    if a is None or (isinstance(a, float) and math.isnan(a)):
        return b is None or (isinstance(b, float) and math.isnan(b))
    return a == b


def test_the_old_rows_are_what_their_names_say_today(stores):
    old, _ = stores
    df = st.query(old, "SELECT * FROM results")
    assert len(df) == 126 and set(df["git_rev"]) == {"30ed046d6e06"}
    for name, rows in df.groupby("format"):
        want = spec_columns(parse(name))
        for col in SPEC_COLUMNS:
            got = rows[col].iloc[0]
            assert _same(None if pd.isna(got) else got, want[col]), (name, col, got, want[col])


def test_the_old_values_equal_a_sweep_by_this_code(stores):
    old, new = stores
    a = st.query(old, "SELECT * FROM results").set_index(["tensor", "format"]).sort_index()
    b = st.query(new, "SELECT * FROM results").set_index(["tensor", "format"]).sort_index()
    assert list(a.index) == list(b.index)
    for col in MEASURED:
        x, y = a[col], b[col]
        same = (x == y) | (x.isna() & y.isna())
        assert same.all(), (col, a.index[~same.to_numpy()][:5].tolist())
    sa = st.summary(old, "all-MiniLM-L6-v2").set_index("format").sort_index()
    sb = st.summary(new, "all-MiniLM-L6-v2").set_index("format").sort_index()
    for col in ("family", "block", "scale_dtype", "super_block_weights"):
        x, y = sa[col], sb[col]
        assert ((x == y) | (x.isna() & y.isna())).all(), col
    # whole-model figures are DuckDB float sums over the rows, in the order the files hold them
    # (the old store was written by 2 workers, the new by 1): equal to rounding, the rows exactly
    for col in ("bpw", "nmse", "bnl", "max_abs_err"):
        assert ((sa[col] - sb[col]).abs() <= 1e-12 * sb[col].abs()).all(), col


def test_a_sweep_resumes_the_old_store(stores):
    old, _ = stores
    from workbench import sweep
    formats = sorted(st.query(old, "SELECT DISTINCT format FROM results")["format"])
    rep = sweep.run(formats=",".join(formats), store=old, tensors=r"layer\.0\.", workers=1, progress=False)
    assert rep.measured == 0 and len(st.query(old, "SELECT * FROM results")) == 126
