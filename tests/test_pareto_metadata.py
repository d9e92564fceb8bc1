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
    page.select(["Q4s32"])
    assert page.table.value.set_index("format").loc["Q4s32", "same_as"] == "Q4s32_rmse"
    fallback_bpw = page.data.set_index("format").loc["Q4_K", "bpw"]
    page.native_only = True
    assert page._tensors == ["wide.weight"]
    q4k = page.data.set_index("format").loc["Q4_K"]
    assert q4k["bpw"] == 4.5 and q4k["bpw"] < fallback_bpw and q4k["fallback_tensors"] == 0
    page.tensor_regex = "narrow"
    assert page.message.visible and "natively by every llama.cpp type" in page.message.object
    page.native_only = False
    assert not page.message.visible and page._tensors == ["narrow.weight"]


def test_a_tap_on_crowded_points_opens_the_top_one():
    import pandas as pd
    from workbench.views.pareto import tapped_point
    df = pd.DataFrame({"format": ["A", "B", "C", "D"], "bpw": [4.5, 4.5, 4.51, 8.5],
                       "nmse": [7.8e-3, 7.81e-3, 7.9e-3, 1e-5], "cosine": [0.99, 0.99, 0.991, 0.99999]})
    assert tapped_point(df, "nmse", [2]) == "C"                    # one point: that one
    assert tapped_point(df, "nmse", [0, 1, 2]) == "C"              # all at one spot: the top-drawn
    assert tapped_point(df, "nmse", [0, 3]) is None                # spread: a brush, nothing opened
    assert tapped_point(df, "cosine", [0, 1]) == "B"               # 1 - cosine, on a log axis
    assert tapped_point(df, "nmse", []) is None and tapped_point(df, "nmse", [9]) is None


def test_formats_compared_tensor_by_tensor(mixed_store):
    from workbench.views.pareto import compare_tensors_plot, tensor_wins
    model = st.models(mixed_store)[0]
    rows = st.tensor_results(mixed_store, model)
    wins = tensor_wins(rows, ["Q4_0", "Q4_K", "Q4a32"], "nmse").set_index("format")
    wide = rows.pivot_table(index="tensor", columns="format", values="nmse")[["Q4_0", "Q4_K", "Q4a32"]]
    for f in wins.index:
        assert wins.loc[f, "wins"] == int((wide[f] == wide.min(axis=1)).sum()) and wins.loc[f, "of"] == 2
    assert wins["wins"].sum() >= 2
    numel = rows.drop_duplicates("tensor").set_index("tensor")["numel"].reindex(wide.index)
    assert wins.loc["Q4_0", "mean"] == pytest.approx((wide["Q4_0"] * numel).sum() / numel.sum(), rel=1e-12)
    higher = tensor_wins(rows, ["Q4_0", "Q4_K"], "sqnr_db").set_index("format")      # higher is better
    lower = tensor_wins(rows, ["Q4_0", "Q4_K"], "nmse").set_index("format")
    assert higher["wins"].to_dict() == lower["wins"].to_dict()       # sqnr = -10 log10 nmse: same winners
    plot = compare_tensors_plot(rows, ["Q4_0", "Q4_K", "Q4a32"], "nmse")
    assert len(plot) == 3 and [el.label.split(" ")[0] for el in plot] == ["Q4_0", "Q4_K", "Q4a32"]
    k = [el for el in plot if el.label.startswith("Q4_K")][0]
    assert sorted(k.data["written"]) == ["as Q5_0 (fallback)", NATIVE]
    hv.renderer("bokeh").get_plot(plot)
    page = ParetoPage(store=mixed_store)
    page.select(["Q4_0", "Q4_K"])
    assert "Tensor by tensor:" in page.compare_title.object and "of 2 formats on 2 tensors" in page.compare_title.object
    assert page.compare.object is not None
    page.select(["Q4_0"])
    assert page.compare.object is None and "select 2 to 8" in page.compare_title.object


def test_shared_answers_are_keyed_by_content_and_handed_out_as_copies(mixed_store):
    """identical_groups and place_labels answer every session from one computation (pareto's
    memo): the same answer as computing afresh, a changed value is a new key, and what a caller
    does to its answer does not reach the next caller."""
    from workbench.views import pareto
    model = st.models(mixed_store)[0]
    rows = st.tensor_results(mixed_store, model)
    summ = with_kind(st.summary(mixed_store, model))
    pareto._MEMO.clear()
    first = identical_groups(rows)
    first[0].append("mutated")
    first.append(["also"])
    assert identical_groups(rows.copy()) == pareto._identical_groups(rows) == [["Q4s32", "Q4s32_rmse"]]
    placed, dropped = pareto.place_labels(summ, "nmse")
    fresh = pareto._place_labels(pareto.plottable(summ, "nmse"), "nmse", pareto.LABEL_FRAME)
    assert placed.equals(fresh[0]) and dropped == fresh[1] and len(placed)
    placed.loc[:, "label"] = "mutated"
    again, _ = pareto.place_labels(summ, "nmse")
    assert again.equals(fresh[0])
    assert len(pareto._MEMO) == 2          # one answer per question, however often asked
    moved = summ.assign(nmse=summ["nmse"] * np.where(summ["format"] == "Q4_0", 10.0, 1.0))
    assert not pareto.place_labels(moved, "nmse")[0].equals(fresh[0]) and len(pareto._MEMO) == 3
    assert pareto.content_key(rows, ["mse"]) != pareto.content_key(rows.iloc[::-1], ["mse"])   # order counts
