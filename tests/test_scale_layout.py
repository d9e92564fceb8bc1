"""Scale granularity as users know it (formats.scale_layout, the store's block / scale_dtype /
super_block_weights / super_scale_dtype since schema 4), checked against the byte layout of
each llama.cpp struct, and older stores migrated on read."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workbench import store as st
from workbench import sweep
from workbench.formats import GGML_TYPES, legacy_spec_columns, parse, scale_layout, spec_columns
from workbench.store_import import validate_import

# (block, scale_dtype, super_block_weights, super_scale_dtype) as ggml-common.h lays them out
EXPECTED = {
    "Q4_0": (32, "f16", None, None), "Q4_1": (32, "f16", None, None), "Q5_0": (32, "f16", None, None),
    "Q5_1": (32, "f16", None, None), "Q8_0": (32, "f16", None, None), "IQ4_NL": (32, "f16", None, None),
    "MXFP4": (32, "e8m0", None, None), "NVFP4": (16, "ue4m3", None, None),
    "Q2_K": (16, "int4", 256, "f16"), "Q3_K": (16, "int6", 256, "f16"), "Q4_K": (32, "int6", 256, "f16"),
    "Q5_K": (32, "int6", 256, "f16"), "Q6_K": (16, "int8", 256, "f16"), "IQ4_XS": (32, "int6", 256, "f16"),
}
FLOAT_BYTES = {"f16": 2, "e8m0": 1, "ue4m3": 1}


def test_every_llama_cpp_type_is_described():
    assert set(EXPECTED) == set(GGML_TYPES)
    for name, want in EXPECTED.items():
        lay = scale_layout(parse(name))
        assert (lay["block"], lay["scale_dtype"], lay["super_block_weights"], lay["super_scale_dtype"]) == want, name


@pytest.mark.parametrize("name", sorted(GGML_TYPES))
def test_declared_granularity_adds_up_to_the_struct_size(name):
    """Scales + super-scales + codes = the struct's bytes: an independent check of the granularity
    (a type with mins — not symmetric — stores a min beside every scale)."""
    t = GGML_TYPES[name]
    lay = scale_layout(parse(name))
    per_scale = 1 if t.symmetric else 2
    n_scales = t.block // lay["block"]
    if lay["super_scale_dtype"]:
        scale_bits = int(lay["scale_dtype"].removeprefix("int"))
        scales = n_scales * scale_bits * per_scale // 8 + FLOAT_BYTES[lay["super_scale_dtype"]] * per_scale
    else:
        scales = n_scales * FLOAT_BYTES[lay["scale_dtype"]] * per_scale
    assert scales + t.block * t.bits // 8 == t.block_bytes


@pytest.mark.parametrize("name,want", [
    ("Q4s32", (32, "f16", None, None)), ("Q4a64_bf16", (64, "bf16", None, None)),
    ("Q4s16_e4m3", (16, "e4m3", None, None)),
    ("Q(4a16)xQ(6s16)_e4m3", (16, "int6", 256, "e4m3")), ("Q(3s8)xQ(8s32)", (8, "int8", 256, "f16")),
])
def test_uniform_layout(name, want):
    lay = scale_layout(parse(name))
    assert (lay["block"], lay["scale_dtype"], lay["super_block_weights"], lay["super_scale_dtype"]) == want
    assert lay["scale_encoding"] == (want[3] or want[1])


def _legacy_file(path):
    """Rewrite a store file as schema 3 wrote it: unit block, float encoding, no new columns."""
    t = pq.read_table(path)
    meta = t.schema.metadata
    df = t.to_pandas()
    for i, name in enumerate(df["format"]):
        old = legacy_spec_columns(parse(name))
        df.loc[i, "block"], df.loc[i, "scale_dtype"] = old["block"], old["scale_dtype"]
    df["schema_version"] = 3
    df = df.drop(columns=["super_block_weights", "super_scale_dtype"])
    schema = pa.schema([f for f in st.RESULTS_SCHEMA if f.name in df.columns])
    old_t = pa.Table.from_pandas(df, schema=schema, preserve_index=False).replace_schema_metadata(meta)
    pq.write_table(old_t, path)


FORMATS = "Q4_0,Q4_K,Q6_K,NVFP4,IQ4_XS,Q4s32,Q(4a16)xQ(6s16)_e4m3"


@pytest.fixture()
def two_stores(tmp_path):
    x = np.random.default_rng(3).standard_normal((4, 512)).astype(np.float32)
    np.savez(tmp_path / "m.npz", **{"a.weight": x, "b.weight": x[:, :384] * 2})
    new, old = tmp_path / "new", tmp_path / "old"
    for s in (new, old):
        sweep.run(tmp_path / "m.npz", FORMATS, store=s, progress=False)
    for f in old.rglob("*.parquet"):
        _legacy_file(f)
    return new, old


def test_older_store_is_migrated_on_read(two_stores):
    new, old = two_stores
    raw = pq.read_table(next(old.rglob("*.parquet"))).to_pandas()
    assert set(raw.loc[raw["format"] == "Q4_K", "block"]) == {256}          # as schema 3 stored it
    cols = ["tensor", "format", *st.LAYOUT_COLS]
    a = st.results(new)[cols].sort_values(["tensor", "format"]).reset_index(drop=True)
    b = st.results(old)[cols].sort_values(["tensor", "format"]).reset_index(drop=True)
    assert a.equals(b)
    q4k = b[b["format"] == "Q4_K"].iloc[0]
    assert (q4k["block"], q4k["scale_dtype"], q4k["super_block_weights"], q4k["super_scale_dtype"]) == (32, "int6", 256, "f16")
    summ = st.summary(old).set_index("format")
    assert summ.loc["NVFP4", "block"] == 16 and summ.loc["NVFP4", "scale_dtype"] == "ue4m3"


def test_mixed_store_reads_one_layout(two_stores, tmp_path):
    """Schema-3 files beside schema-4 files (other tensors) in one store: one layout throughout,
    what each name implies; and an export of it imports back unchanged."""
    import shutil
    new, _ = two_stores
    x = np.random.default_rng(5).standard_normal((2, 256)).astype(np.float32)
    np.savez(tmp_path / "m.npz", **{"c.weight": x})
    other = tmp_path / "other"
    sweep.run(tmp_path / "m.npz", FORMATS, store=other, progress=False)
    mixed = tmp_path / "mixed"
    shutil.copytree(new, mixed)
    for f in other.rglob("*.parquet"):
        _legacy_file(f)
        dest = mixed / f.relative_to(other)
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(f, dest)
    got = st.results(mixed)
    assert set(got["schema_version"]) == {3, 4} and set(got["tensor"]) == {"a.weight", "b.weight", "c.weight"}
    for c in st.LAYOUT_COLS:
        have = [None if pd.isna(v) else v for v in got[c]]
        assert have == [spec_columns(parse(f))[c] for f in got["format"]], c
    out = tmp_path / "mixed.parquet"
    n = st.export(mixed, out)
    assert st.import_file(out, tmp_path / "again") == (n, 0)
    back = st.results(tmp_path / "again")
    assert back[["tensor", "format", *st.LAYOUT_COLS]].equals(got[["tensor", "format", *st.LAYOUT_COLS]])


def test_import_accepts_schema_3_files_and_refuses_a_wrong_layout(two_stores, tmp_path):
    new, old = two_stores
    legacy = next(old.rglob("*.parquet"))            # a raw schema-3 file, legacy columns
    validate_import(legacy)
    assert st.import_file(legacy, tmp_path / "fresh")[0] > 0
    # a schema-4 file with the old (unit) block for Q4_K is a contradiction: refused, one line
    t = pq.read_table(next(new.rglob("*.parquet")))
    df = t.to_pandas()
    df.loc[df["format"] == "Q4_K", "block"] = 256
    bad = tmp_path / "bad.parquet"
    pq.write_table(pa.Table.from_pandas(df, schema=t.schema, preserve_index=False), bad)
    with pytest.raises(st.StoreError, match="Q4_K: column block is 256, the name implies 32"):
        validate_import(bad)
