"""The Pareto page's format metadata: formats with identical results drawn once with both
names, the native-tensors switch for llama.cpp's types, fallback tensors marked per tensor, and
the Scale-encoding / Single-double filters filing two-level types by their layout."""
from __future__ import annotations

import uuid

import holoviews as hv
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from workbench import store as st
from workbench import sweep
from workbench.views.pareto import (NATIVE, filter_formats, identical_groups, merge_identical,
                                    native_tensors, per_tensor_errors, structure_of, with_kind,
                                    written_as)
from workbench.views.pareto_page import ParetoPage

FORMATS = "Q4_0,Q4_K,Q6_K,NVFP4,Q4s32,Q4a32,Q(4a16)xQ(6s16)_e4m3"


@pytest.fixture(scope="module")
def mixed_store(tmp_path_factory):
    """Two tensors: 512 wide (every llama.cpp type native) and 384 wide (the k-quants fall back),
    plus Q4s32's rows stored a second time under the name Q4s32_rmse (same bytes per tensor:
    the identical-results case)."""
    tmp = tmp_path_factory.mktemp("meta")
    rng = np.random.default_rng(11)
    np.savez(tmp / "m.npz", **{"wide.weight": rng.standard_normal((8, 512)).astype(np.float32),
                              "narrow.weight": rng.standard_normal((8, 384)).astype(np.float32)})
    store = tmp / "store"
    sweep.run(tmp / "m.npz", FORMATS, store=store, progress=False)
    src = next(p for p in store.rglob("*.parquet") if "table=results" in str(p))
    t = pq.read_table(src)
    df = t.to_pandas()
    twin = df[df["format"] == "Q4s32"].assign(format="Q4s32_rmse", search="rmse", run_id=str(uuid.uuid4()))
    out = src.with_name(f"twin-{uuid.uuid4().hex}.parquet")
    pq.write_table(pa.Table.from_pandas(twin, schema=t.schema, preserve_index=False), out)
    return store


def test_identical_formats_are_found_and_drawn_once(mixed_store):
    model = st.models(mixed_store)[0]
    rows = st.tensor_results(mixed_store, model)
    assert identical_groups(rows) == [["Q4s32", "Q4s32_rmse"]]
    # a single tensor that differs breaks the group
    changed = rows.copy()
    at = (changed["format"] == "Q4s32_rmse") & (changed["tensor"] == "wide.weight")
    changed.loc[at, "mse"] = changed.loc[at, "mse"] * (1 + 1e-15) + 1e-30
    assert identical_groups(changed) == []
    summ = with_kind(st.summary(mixed_store, model))
    merged = merge_identical(summ, identical_groups(rows))
    assert "Q4s32_rmse" not in set(merged["format"]) and len(merged) == len(summ) - 1
    row = merged.set_index("format").loc["Q4s32"]
    assert row["same_as"] == "Q4s32_rmse" and row["label"] == "Q4s32 = Q4s32_rmse"
    # filtered to the twin alone, it is drawn under its own name
    alone = merge_identical(summ[summ["format"] == "Q4s32_rmse"], identical_groups(rows))
    assert list(alone["format"]) == ["Q4s32_rmse"] and list(alone["same_as"]) == [""]


def test_native_tensors_and_fallback_marks(mixed_store):
    model = st.models(mixed_store)[0]
    rows = st.tensor_results(mixed_store, model)
    assert native_tensors(rows) == ["wide.weight"]
    assert native_tensors(rows, skipped={"wide.weight"}) == []
    assert native_tensors(rows[rows["family"] != "ggml"]) == ["narrow.weight", "wide.weight"]
    q4k = rows[rows["format"] == "Q4_K"].sort_values("tensor")
    assert written_as(q4k) == ["as Q5_0 (fallback)", NATIVE]
    plot = per_tensor_errors(q4k, "nmse")
    assert sorted(plot.data["written"]) == sorted(["as Q5_0 (fallback)", NATIVE])
    hv.renderer("bokeh").get_plot(plot)


def test_two_level_types_file_under_their_layout(mixed_store):
    model = st.models(mixed_store)[0]
    summ = with_kind(st.summary(mixed_store, model)).set_index("format")
    assert dict(zip(summ.index, structure_of(summ.reset_index()))) == {
        "Q4_0": "single", "Q4_K": "double", "Q6_K": "double", "NVFP4": "single", "Q4s32": "single",
        "Q4s32_rmse": "single", "Q4a32": "single", "Q(4a16)xQ(6s16)_e4m3": "double"}
    assert summ.loc["Q4_K", "block"] == 32 and summ.loc["Q6_K", "block"] == 16 and summ.loc["NVFP4", "block"] == 16
    df = summ.reset_index()
    assert set(filter_formats(df, block=[16])["format"]) == {"Q6_K", "NVFP4", "Q(4a16)xQ(6s16)_e4m3"}
    assert set(filter_formats(df, scale_encoding=["e4m3"])["format"]) == {"Q(4a16)xQ(6s16)_e4m3"}
    assert set(filter_formats(df, scale_encoding=["ue4m3"])["format"]) == {"NVFP4"}
    assert summ.loc["Q(4a16)xQ(6s16)_e4m3", "kind"] == "double e4m3" and summ.loc["Q4s32", "kind"] == "single f16"


def test_page_native_switch_and_merged_point(mixed_store):
    page = ParetoPage(store=mixed_store)
    assert set(page.data["format"]) == {"Q4_0", "Q4_K", "Q6_K", "NVFP4", "Q4s32", "Q4a32", "Q(4a16)xQ(6s16)_e4m3"}
    assert page.data.set_index("format").loc["Q4s32", "same_as"] == "Q4s32_rmse"
    fallback_bpw = page.data.set_index("format").loc["Q4_K", "bpw"]
    page.native_only = True
    assert page._tensors == ["wide.weight"]
    q4k = page.data.set_index("format").loc["Q4_K"]
    assert q4k["bpw"] == 4.5 and q4k["bpw"] < fallback_bpw and q4k["fallback_tensors"] == 0
    page.tensor_regex = "narrow"
    assert page.message.visible and "natively by every llama.cpp type" in page.message.object
    page.native_only = False
    assert not page.message.visible and page._tensors == ["narrow.weight"]
