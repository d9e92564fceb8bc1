"""llama.cpp types in the workbench: applicability and llama-quantize's fallback rule, the codec
(threads, imatrix, NaN policy), sweeps with an imatrix, schema 2 of the store, the CLI listing,
and the --vs llama.cpp benchmark's bookkeeping (its timings are never asserted)."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute  # noqa: F401
import pyarrow.parquet as pq
import pytest

from workbench import store as st
from workbench.codecs import NonFiniteError, codec_for
from workbench.formats import GGML_TYPES, default_grid, ggml_plan, parse
from workbench.sweep import run

TYPES = list(GGML_TYPES)
NEW_TYPES = ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS", "MXFP4", "NVFP4"]
IMATRIX = "data/imatrix/all-MiniLM-L6-v2.imatrix.gguf"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args):
    return subprocess.run([sys.executable, "-m", "workbench", *map(str, args)], capture_output=True,
                          text=True, timeout=600, cwd=ROOT)


# --------------------------------------------------------------------------- applicability
@pytest.mark.parametrize("name,cols,expect", [
    ("Q4_K", 1536, "Q4_K"), ("Q4_K", 384, "Q5_0"), ("Q2_K", 384, "Q4_0"), ("Q3_K", 384, "Q4_0"),
    ("Q5_K", 384, "Q5_1"), ("Q6_K", 384, "Q8_0"), ("IQ4_XS", 384, "IQ4_NL"), ("IQ4_XS", 256, "IQ4_XS"),
    ("Q4_K", 100, "F16"), ("IQ4_XS", 100, "F16"), ("Q4_0", 100, "F16"), ("MXFP4", 48, "F16"),
    ("NVFP4", 384, "NVFP4"), ("NVFP4", 96, None), ("IQ4_NL", 384, "IQ4_NL"),
])
def test_llama_quantize_fallback_rule(name, cols, expect):
    """tensor_type_fallback in llama.cpp's src/llama-quant.cpp, case by case."""
    applied, note = ggml_plan(name, cols)
    assert applied == expect
    assert (note is None) == (expect == name)
    if note:
        assert str(cols) in note and name in note


def test_new_types_in_grids_and_bpw():
    names = {f.name for f in default_grid()}
    assert set(TYPES) <= names
    bpw = {n: parse(n).bpw() for n in NEW_TYPES}
    assert bpw == {"Q2_K": 2.625, "Q3_K": 3.4375, "Q4_K": 4.5, "Q5_K": 5.5, "Q6_K": 6.5625,
                   "IQ4_NL": 4.5, "IQ4_XS": 4.25, "MXFP4": 4.25, "NVFP4": 4.5}
    # the fallback type's bytes are what llama-quantize writes, so they are what bpw counts
    assert parse("Q4_K").nbytes((10, 384)) == parse("Q5_0").nbytes((10, 384))
    assert parse("Q4_K").bpw((10, 384)) == 5.5
    assert parse("Q4_0").nbytes((3, 100)) == 3 * 100 * 2      # F16


def test_oracle_agrees_on_row_sizes(oracle):
    for name, t in GGML_TYPES.items():
        assert oracle.row_size(name, 1536) == 1536 // t.block * t.block_bytes, name


# ------------------------------------------------------------------------------------ codec
@pytest.fixture(scope="module")
def x384():
    rng = np.random.default_rng(7)
    return (rng.standard_normal((24, 384)) * 0.05).astype(np.float32)


@pytest.mark.parametrize("name", ["Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_XS"])
def test_fallback_bytes_are_llama_cpp_fallback_type(oracle, x384, name):
    """On MiniLM-like 384-wide rows, a k-quant's bytes are those of llama.cpp's fallback type,
    with and without an importance vector; decoding goes through the fallback type too."""
    applied = ggml_plan(name, 384)[0]
    codec = codec_for(parse(name))
    w = np.linspace(0.1, 3, 384, dtype=np.float32)
    for imp in (None, w):
        packed = codec.quantize(x384, imp)
        assert np.array_equal(packed, oracle.quantize(applied, x384, imp)), (name, applied, imp is None)
        y = codec.dequantize(packed, x384.shape)
        assert y.shape == x384.shape and np.abs(y - x384).max() < 0.05


@pytest.mark.parametrize("name", TYPES)
def test_threads_give_the_same_bytes(name):
    rng = np.random.default_rng(1)
    x = rng.standard_normal((37, 512)).astype(np.float32)
    c = codec_for(parse(name))
    one = c.quantize(x)
    assert np.array_equal(one, c.quantize(x, threads=3))
    assert np.array_equal(one, c.quantize(x, threads=64))        # more threads than rows
    w = rng.uniform(0, 2, 512).astype(np.float32)
    assert np.array_equal(c.quantize(x, w), c.quantize(x, w, threads=4))


@pytest.mark.parametrize("name", NEW_TYPES)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_non_finite_refused(name, bad):
    x = np.ones((2, 256), np.float32)
    x[1, 17] = bad
    with pytest.raises(NonFiniteError, match="non-finite"):
        codec_for(parse(name)).quantize(x)


def test_importance_shape_checked():
    with pytest.raises(ValueError, match="columns"):
        codec_for(parse("Q4_K")).quantize(np.ones((2, 256), np.float32), np.ones(255, np.float32))


def test_which_types_use_importance():
    uses = {n: codec_for(parse(n)).uses_importance((4, 256)) for n in TYPES}
    assert {n for n, u in uses.items() if not u} == {"Q8_0", "MXFP4", "NVFP4"}
    # Q6_K on 384 columns is written as Q8_0, which ignores the imatrix
    assert not codec_for(parse("Q6_K")).uses_importance((4, 384))


# ------------------------------------------------------------------------ sweep + imatrix
TENSORS = r"layer\.0\.(attention\.self\.query|output\.dense)\.weight|word_embeddings"
FORMATS = "Q4_K,Q6_K,IQ4_XS,NVFP4,Q8_0,Q4s32"


@pytest.fixture(scope="module")
def imatrix_store(tmp_path_factory):
    d = tmp_path_factory.mktemp("imstore")
    plain = run(None, FORMATS, TENSORS, d, progress=False)
    weighted = run(None, FORMATS, TENSORS, d, progress=False, imatrix=os.path.join(ROOT, IMATRIX))
    return d, plain, weighted


def test_sweep_records_fallbacks(imatrix_store):
    d, plain, _ = imatrix_store
    df = st.results(d)
    df = df[df["imatrix"] == ""]
    q4k = df[df["format"] == "Q4_K"].set_index("tensor")
    dense = [t for t in q4k.index if t.endswith("output.dense.weight") and "attention" not in t]
    assert len(dense) == 1
    assert q4k.loc[dense[0], "applied_type"] == "Q4_K" and pd.isna(q4k.loc[dense[0], "fallback_note"])
    others = q4k.drop(index=dense)
    assert len(others) == 2 and (others["applied_type"] == "Q5_0").all()    # query, embeddings
    assert others["fallback_note"].str.contains("falls back to Q5_0").all()
    assert ("Q4_K" in {f for _, f, _ in plain.fallbacks})
    assert df.loc[df["family"] == "uniform", "applied_type"].isna().all()
    s = st.summary(d)
    row = s[s["format"] == "Q4_K"].iloc[0]
    assert row["label"] == "Q4_K*" and row["fallback_tensors"] == 2
    assert row["applied_types"] == "Q4_K,Q5_0"
    assert s[s["format"] == "Q8_0"].iloc[0]["label"] == "Q8_0"


def test_sweep_with_imatrix(imatrix_store):
    d, _, weighted = imatrix_store
    df = st.results(d)
    fps = sorted(df["imatrix"].unique())
    assert fps[0] == "" and len(fps) == 2 and len(fps[1]) >= 8
    w = df[df["imatrix"] == fps[1]]
    p = df[df["imatrix"] == ""]
    assert len(w) == len(p) > 0                       # both sweeps stored, side by side
    emb = w["tensor"].str.contains("word_embeddings")
    # embeddings have no imatrix entry (llama.cpp only collects matmul inputs): said, not hidden
    assert w.loc[emb, "imatrix_note"].notna().all() and w.loc[emb, "wmse"].isna().all()
    lin = w[~emb]
    assert lin["wmse"].notna().all() and (lin["wnmse"] > 0).all()
    ignores = lin["format"].isin(["Q8_0", "Q4s32", "NVFP4"]) | (lin["applied_type"] == "Q8_0")
    assert lin.loc[ignores, "imatrix_note"].str.contains("ignores the imatrix").all()
    assert lin.loc[~ignores, "imatrix_note"].isna().all()
    # formats that ignore the imatrix give the same bytes and error with and without it
    key = ["tensor", "format"]
    m = lin.merge(p, on=key, suffixes=("_w", "_p"))
    same = m["format"].isin(["Q8_0", "Q4s32", "NVFP4"])
    assert (m.loc[same, "mse_w"] == m.loc[same, "mse_p"]).all()
    # the k-quants use it: different bytes, and the weighted error improves on average
    uses = m["format"].isin(["Q4_K", "IQ4_XS"]) & m["applied_type_w"].isin(["Q4_K", "IQ4_XS"])
    assert uses.any() and (m.loc[uses, "mse_w"] != m.loc[uses, "mse_p"]).all()
    sw = st.summary(d, imatrix=fps[1]).set_index("format")
    assert sw.loc["Q4_K", "wnmse"] > 0 and np.isfinite(sw.loc["Q4s32", "wnmse"])
    assert st.imatrices(d) == {"": "none", fps[1]: "all-MiniLM-L6-v2.imatrix.gguf"}
    assert (w["imatrix_file"] == "all-MiniLM-L6-v2.imatrix.gguf").all() and p["imatrix_file"].isna().all()
    # resume is keyed by the imatrix: re-running either sweep measures nothing new
    again = run(None, FORMATS, TENSORS, d, progress=False, imatrix=os.path.join(ROOT, IMATRIX))
    assert again.measured == 0 and again.already == weighted.measured


def test_nvfp4_skip_is_listed(tmp_path):
    x = np.random.default_rng(0).standard_normal((4, 96)).astype(np.float32)
    np.save(tmp_path / "odd.npy", x)
    rep = run(tmp_path / "odd.npy", "NVFP4,Q4_K", None, tmp_path / "s", progress=False)
    assert rep.measured == 1
    assert [(f, r) for _, f, r in rep.skipped] == [
        ("NVFP4", "row length 96 is not a multiple of NVFP4's block of 64; llama-quantize has no fallback for NVFP4")]
    df = st.results(tmp_path / "s")
    assert df.iloc[0]["applied_type"] == "Q5_0"


def test_bad_imatrix_changes_nothing(tmp_path):
    bad = tmp_path / "bad.imatrix"
    bad.write_bytes(b"\x00garbage")
    r = subprocess.run([sys.executable, "-m", "workbench", "sweep", "--formats", "Q4_K", "--tensors",
                        "layer.0.output.dense", "--store", str(tmp_path / "s"), "--imatrix", str(bad)],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    assert len(r.stderr.strip().splitlines()) == 1 and "bad.imatrix" in r.stderr
    assert not (tmp_path / "s").exists()


# --------------------------------------------------------------------------- store schema
def test_schema_1_files_still_read_and_import(imatrix_store, tmp_path):
    d, _, _ = imatrix_store
    out = tmp_path / "v2.parquet"
    st.export(d, out)
    t = pq.read_table(out)
    t = t.filter(pa.compute.equal(t["imatrix"], ""))     # schema 1 had no imatrix runs
    v1 = t.drop_columns(["applied_type", "fallback_note", "imatrix", "imatrix_file", "imatrix_note",
                         "wmse", "wnmse"])
    v1 = v1.set_column(v1.schema.get_field_index("schema_version"), "schema_version",
                       pa.array([1] * v1.num_rows, pa.int32()))
    old_store = tmp_path / "old"
    folder = old_store / "model=all-MiniLM-L6-v2" / "table=results"
    folder.mkdir(parents=True)
    pq.write_table(v1.drop_columns(["model"]), folder / "old.parquet")
    df = st.results(old_store)                    # a store holding only schema-1 files
    assert len(df) == v1.num_rows and (df["imatrix"] == "").all() and df["wmse"].isna().all()
    assert len(st.summary(old_store)) > 0
    pq.write_table(v1, tmp_path / "v1.parquet")
    added, dup = st.import_file(tmp_path / "v1.parquet", tmp_path / "fresh")
    assert added == v1.num_rows and dup == 0
    # the same rows again (now as schema 1 vs stored): all duplicates on the natural key
    added, dup = st.import_file(tmp_path / "v1.parquet", tmp_path / "fresh")
    assert added == 0 and dup == v1.num_rows


# ------------------------------------------------------------------------------------ CLI
def test_formats_listing_shows_applicability():
    r = cli("formats", "ggml", "--model", "default")
    assert r.returncode == 0, r.stderr
    lines = {ln.split()[0]: ln for ln in r.stdout.splitlines() if ln.split()}
    assert "6 native, 34 as Q5_0" in lines["Q4_K"]
    assert "6 native, 34 as IQ4_NL" in lines["IQ4_XS"]
    assert "40 native" in lines["NVFP4"] and "40 native" in lines["IQ4_NL"]
    assert "falls back" in r.stdout or "fallback" in r.stdout


def test_bench_vs_llamacpp_bookkeeping(oracle, minilm_tensors):
    """The benchmark runs both implementations on the same tensors and checks the bytes; only
    its bookkeeping is tested here (speed is the benchmark's business, not a test's)."""
    from workbench.bench_llamacpp import bench_vs_llamacpp
    name = "encoder.layer.0.output.dense.weight"
    df = bench_vs_llamacpp({name: minilm_tensors[name][:16]}, types=["Q4_K", "MXFP4"], threads=2, repeat=1)
    assert list(df["type"]) == ["Q4_K", "Q4_K", "MXFP4"]          # MXFP4 ignores the imatrix
    assert list(df["imatrix"]) == ["no", "yes", "no"]
    assert df["identical"].all()
    for col in ("ratio 1T", "ratio 2T", "llama.cpp 1T Mw/s", "numba 2T Mw/s"):
        assert (df[col] > 0).all() and np.isfinite(df[col]).all()
