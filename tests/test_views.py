"""The Pareto page without a browser: pure plot functions on hand-made frames with known
answers, brushing (Selection1D positions), and the Panel page on an empty and a real small store."""
from __future__ import annotations

import gc
import itertools
import shutil

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import pytest
from bokeh.core.validation import check_integrity

from workbench import store as st
from workbench.views.pareto_page import EMPTY_STORE, ParetoPage
from workbench.views.pareto import (LLAMA_CPP, METRICS, kind_colors, ordered_kinds, pareto_front,
                                    pareto_plot, pareto_points, plottable, selected_table, with_kind)


@pytest.fixture(autouse=True, scope="module")
def _collect_streams():
    """Free HoloViews' streams while Python is alive (their __del__ fails at exit)."""
    yield
    gc.collect()


def frame(points, **cols) -> pd.DataFrame:
    """Formats f0, f1, ... at the given (bpw, nmse) points."""
    df = pd.DataFrame(points, columns=["bpw", "nmse"])
    df.insert(0, "format", [f"f{i}" for i in range(len(df))])
    return df.assign(**cols)


def formats(df) -> list[str]:
    return list(df["format"])


# ------------------------------------------------------------------------------ pareto_front
def test_front_drops_dominated_points_and_sorts_by_bpw():
    df = frame([(5, 0.2), (1, 0.5), (2, 0.3), (3, 0.1), (2.5, 0.4)])
    # f0 (5, .2) is beaten by f3 (3, .1); f4 (2.5, .4) by f2 (2, .3)
    assert formats(pareto_front(df)) == ["f1", "f2", "f3"]


def test_front_ties():
    df = frame([(2, 0.3), (2, 0.4),      # same bpw: the worse one is dominated
                (3, 0.3),                # same error for more bits: dominated
                (4, 0.1), (4, 0.1),      # exact duplicates: neither dominates the other
                (1, 0.9)])
    assert formats(pareto_front(df)) == ["f5", "f0", "f3", "f4"]


def test_front_higher_is_better_metric():
    df = frame([(1, 0.5), (2, 0.3), (3, 0.1)]).assign(sqnr_db=[10.0, 20.0, 15.0], cosine=[0.9, 0.95, 0.99])
    assert formats(pareto_front(df, y="sqnr_db", lower_is_better=False)) == ["f0", "f1"]
    assert formats(pareto_front(df, y="sqnr_db")) == ["f0", "f1"]        # default from METRICS
    assert formats(pareto_front(df, y="cosine")) == ["f0", "f1", "f2"]
    assert formats(pareto_front(df, y="sqnr_db", lower_is_better=True)) == ["f0"]


def test_front_skips_missing_values_and_keeps_the_index():
    df = frame([(1, np.nan), (2, 0.5), (np.inf, 0.0), (3, 0.4)]).set_index(pd.Index([10, 11, 12, 13]))
    front = pareto_front(df)
    assert list(front.index) == [11, 13]
    assert pareto_front(df.iloc[:0]).empty


def test_front_matches_the_definition_on_random_points():
    rng = np.random.default_rng(0)
    for _ in range(30):
        n = int(rng.integers(1, 40))
        df = frame(np.column_stack([rng.integers(1, 8, n) / 2, rng.integers(1, 6, n) / 10]))
        dominated = {a for a, b in itertools.permutations(range(n), 2)
                     if df.bpw[b] <= df.bpw[a] and df.nmse[b] <= df.nmse[a]
                     and (df.bpw[b] < df.bpw[a] or df.nmse[b] < df.nmse[a])}
        front = pareto_front(df)
        assert set(front.index) == set(range(n)) - dominated
        assert front["bpw"].is_monotonic_increasing
        assert front["nmse"].is_monotonic_decreasing


# ------------------------------------------------------------------------------------ kinds
def summary_like() -> pd.DataFrame:
    return pd.DataFrame({
        "format": ["Q4_0", "Q4s32", "Q4s16_e4m3", "Q(4a16)xQ(6s16)_e4m3", "Q3a64_bf16", "Q8_0"],
        "family": ["ggml", "uniform", "uniform", "uniform", "uniform", "ggml"],
        "bits": [4, 4, 4, 4, 3, 8], "block": [32, 32, 16, 16, 64, 32],
        "scale_dtype": ["f16", "f16", "e4m3", "e4m3", "bf16", "f16"],
        "super_bits": pd.array([None, None, None, 6, None, None], dtype="Int16"),
        "bpw": [4.5, 4.5, 4.5001, 4.83, 3.5, 8.5],
        "nmse": [7.9e-3, 7.9e-3, 6.2e-3, 4.7e-3, 3.9e-2, 3.3e-5],
    }).assign(sqnr_db=lambda d: -10 * np.log10(d["nmse"]), bnl=0.1, max_abs_err=0.1, cosine=0.99)


def test_kind_is_family_and_scale_encoding():
    kinds = with_kind(summary_like())["kind"].tolist()
    assert kinds == [LLAMA_CPP, "single f16", "single e4m3", "double e4m3", "single bf16", LLAMA_CPP]
    assert ordered_kinds(summary_like()) == [LLAMA_CPP, "single f16", "single bf16", "single e4m3",
                                             "double e4m3"]
    colors = kind_colors(ordered_kinds(summary_like()))
    assert len(set(colors.values())) == len(colors)
    assert kind_colors(["single e4m3"]) == {"single e4m3": colors["single e4m3"]}  # stable


# ------------------------------------------------------------------------------ pareto_plot
def opts_of(element, group="plot"):
    return hv.Store.lookup_options("bokeh", element, group).kwargs


def test_pareto_plot_layers():
    df = summary_like()
    plot = pareto_plot(df)
    assert isinstance(plot, hv.Overlay)
    points = [el for el in plot if isinstance(el, hv.Points) and opts_of(el, "style").get("size") != 0]
    (curve,) = [el for el in plot if isinstance(el, hv.Curve)]
    labels = [el for el in plot if isinstance(el, hv.Labels)]
    assert len(points) == 1 and len(points[0]) == len(df)
    assert opts_of(points[0], "style")["color"] == "kind"
    assert {"format", "kind"} <= {d.name for d in points[0].vdims}
    assert ("format", "@format") in opts_of(points[0])["hover_tooltips"]
    assert opts_of(curve)["interpolation"] == "steps-post"
    assert curve.dimension_values("bpw").tolist() == pareto_front(df)["bpw"].tolist()
    assert sorted(v for el in labels for v in el.dimension_values("label")) == ["Q4_0", "Q8_0"]
    assert opts_of(plot)["logy"] is True
    assert opts_of(pareto_plot(df, "sqnr_db"))["logy"] is False


def test_pareto_plot_renders_without_bokeh_validation_errors():
    fig = hv.render(pareto_plot(summary_like()), backend="bokeh")
    issues = check_integrity(fig.references())
    assert not issues.error, issues.error


def test_plottable_drops_what_a_log_axis_cannot_show():
    df = summary_like()
    df.loc[0, "nmse"] = 0.0
    df.loc[1, "nmse"] = np.nan
    assert len(plottable(df, "nmse")) == len(df) - 2
    df.loc[0, "sqnr_db"], df.loc[1, "sqnr_db"] = np.inf, np.nan
    assert len(plottable(df, "sqnr_db")) == len(df) - 2    # inf (nmse 0) and NaN


# ------------------------------------------------------------------------------- brushing
def test_a_brush_selects_rows_of_the_points_data():
    """Selection1D reports positions in the drawn points' data, whose order (llama.cpp last) is
    not the frame's: the positions map back through ``points.data``."""
    df = with_kind(summary_like())
    points = pareto_points(df)
    assert list(points.data["kind"]).index(LLAMA_CPP) == len(df) - 2      # drawn last
    brush = hv.streams.Selection1D(source=points)
    picked = [i for i, (b, y) in enumerate(zip(points.data["bpw"], points.data["nmse"])) if b <= 4.6 and y < 1e-2]
    brush.event(index=picked)
    assert sorted(points.data.iloc[brush.index]["format"]) == sorted(["Q4_0", "Q4s32", "Q4s16_e4m3"])
    table = selected_table(points.data.iloc[brush.index])
    assert list(table.columns) == ["format", "family", "bits", "block", "scale_dtype", "bpw", "nmse"]
    opts = opts_of(points, "style")
    assert opts["nonselection_alpha"] < 0.5      # the browser fades what the brush left out
    tools = hv.render(points).tools
    kinds = {type(t).__name__: t for t in tools}
    assert {"BoxSelectTool", "LassoSelectTool", "TapTool"} <= set(kinds)
    # the lasso reports its selection once, on release: not a server round trip per mouse move
    assert kinds["LassoSelectTool"].continuous is False and kinds["BoxSelectTool"].continuous is False


# ---------------------------------------------------------------------------------- the page
def test_page_on_an_empty_store(tmp_path):
    page = ParetoPage(store=tmp_path / "nothing-here")
    assert page.model is None and page.data.empty
    assert page.message.visible and EMPTY_STORE in page.message.object
    assert not page.results.visible and not page.message.object.startswith("Selected")
    assert page.controls[0].disabled and not page.controls[4].visible and not page.controls[3].visible
    pn.panel(page).get_root()      # builds the bokeh models without an exception


def test_page_on_an_unreadable_store(tmp_path):
    bad = tmp_path / "model=x" / "table=results"
    bad.mkdir(parents=True)
    (bad / "garbage.parquet").write_bytes(b"not parquet at all")
    page = ParetoPage(store=tmp_path)
    assert page.message.visible and page.message.alert_type == "danger"
    assert "cannot be read: model=x/table=results/garbage.parquet" in page.message.object


def test_page_on_a_real_store(small_store):
    page = ParetoPage(store=small_store)
    summary = st.summary(small_store, page.model)
    assert page.model == "all-MiniLM-L6-v2"
    assert len(page.data) == len(summary) == 12
    assert page.family == ["ggml", "uniform"] and page.bits == sorted(set(summary["bits"]))
    assert page.results.visible and not page.message.visible
    assert page.table.value.empty and "none yet" in page.caption.object
    pn.panel(page).get_root()

    # brushing: what the box-select tool sets, the table lists, with the distance to the frontier
    expected = summary[summary["bpw"] < 4.4].sort_values("bpw")["format"].tolist()
    page.select(expected)
    assert sorted(page.points.data.iloc[page.brush.index]["format"]) == sorted(expected)
    assert page.table.value["format"].tolist() == expected and expected
    assert f"Selected formats: {len(expected)} of 12" in page.caption.object
    gap = page.table.value.set_index("format")["vs_frontier"]
    front = set(pareto_front(summary)["format"])
    assert all(gap[f] == 1.0 for f in expected if f in front)
    assert all(gap[f] > 1.0 for f in expected if f not in front)

    # a click on a listed format: its error on each tensor of the model
    page._clicked(type("Click", (), {"row": 0})())
    first = expected[0]
    assert page.focus == first and page.detail.object is not None
    per_tensor = page.detail.object.data
    assert len(per_tensor) == summary.set_index("format").loc[first, "tensors"] == 6
    assert first in page.detail_title.object

    # a tap on one point (a one-point selection) opens its per-tensor errors straight away
    page.select([expected[-1]])
    assert page.focus == expected[-1] and len(page.table.value) == 1

    # another metric: the axis changes, so the selection and the drill-down are dropped
    page.metric = "sqnr_db"
    assert page.brush.index == [] and page.table.value.empty
    assert page.detail.object is None and page.focus == "" and "click a format" in page.detail_title.object
    assert "sqnr_db" in page.table.value.columns
    assert opts_of(page.plot.object)["logy"] is False

    # the format filters
    page.family = ["ggml"]
    assert set(page.data["family"]) == {"ggml"}
    page.family = []
    assert page.message.visible and not page.results.visible
    assert "nothing chosen in Family" in page.message.object and page.caption.object == ""
    page.family = list(page.param.family.objects)
    page.bits = [4]
    assert set(page.data["bits"]) == {4} and page.results.visible
    page.structure = ["double"]
    assert page.data.empty or set(page.data["super_bits"].notna()) == {True}

    # the tensor filter: new model-level figures over the chosen tensors only; narrowed format
    # filters stay narrowed
    page.structure = list(page.param.structure.objects)
    page.tensor_kinds = ["feed-forward"]
    assert page._tensors == [t for t in st.tensor_names(small_store, page.model) if "dense" in t
                             and "attention" not in t]
    ff = st.summary(small_store, page.model, tensors=page._tensors)
    assert page.bits == [4]
    assert np.allclose(page.data.set_index("format")["sqnr_db"],
                       ff.set_index("format").loc[page.data["format"], "sqnr_db"])
    page.tensor_regex = "("
    assert page.message.alert_type == "danger" and "tensor regex '('" in page.message.object
    page.tensor_regex = "no-such-tensor"
    assert page.message.visible and "no tensor matches" in page.message.object
    page.tensor_regex = "("
    page.metric = "bnl"             # no figures of the previous tensors come back under the message
    assert page.message.visible and not page.results.visible and "tensor regex" in page.message.object
    page.tensor_regex = ""
    assert page.results.visible and not page.message.visible
    page.metric = "sqnr_db"

    # every (tensor, format) point under the formats
    page.show_tensors = True
    overlay = page.plot.object
    assert len(page.data) * 2 == len(st.tensor_results(small_store, page.model, formats=list(page.data["format"]),
                                                       tensors=page._tensors))
    pn.panel(page).get_root()


def test_page_switches_models(small_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    other = st.results(store)
    other = other[other["family"] == "ggml"].assign(model="tiny-ggml-only")
    st.write(store, "results", other)
    page = ParetoPage(store=store, model="tiny-ggml-only")
    assert page.model == "tiny-ggml-only" and page.family == ["ggml"]
    model_widget = page.controls[0]
    assert list(model_widget.options) == ["all-MiniLM-L6-v2", "tiny-ggml-only"]
    model_widget.value = "all-MiniLM-L6-v2"          # as the browser would
    assert page.model == "all-MiniLM-L6-v2" and len(page.data) == 12
    assert page.family == ["ggml", "uniform"]   # it allowed everything, so it still does


def test_page_reload_sees_new_results(small_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    page = ParetoPage(store=store)
    more = st.results(store)
    st.write(store, "results", more.assign(model="copy"))
    assert page.param.model.objects == ["all-MiniLM-L6-v2"]
    page.reload()
    assert page.param.model.objects == ["all-MiniLM-L6-v2", "copy"] and page.model == "all-MiniLM-L6-v2"
    assert len(page.data) == 12


def test_llama_cpp_fallbacks_are_marked_and_explained():
    """A llama.cpp type written in its fallback type on some tensors is labelled with '*', and
    the hover says which types were written for how many tensors."""
    from workbench.views.pareto import _written_as, llama_cpp_labels
    df = pd.DataFrame({
        "format": ["Q4_K", "Q8_0", "Q4s32"], "label": ["Q4_K*", "Q8_0", "Q4s32"],
        "family": ["ggml", "ggml", "uniform"], "bpw": [5.34, 8.5, 4.5], "nmse": [2e-3, 3e-5, 8e-3],
        "applied_types": ["Q4_K,Q5_0", "Q8_0", None], "fallback_tensors": [34, 0, 0],
        "tensors": [40, 40, 40]})
    labels = llama_cpp_labels(df, "nmse")
    assert sorted(labels.data["label"]) == ["Q4_K*", "Q8_0"]
    assert _written_as(df) == ["Q4_K,Q5_0 (34 of 40 tensors by fallback)", "Q8_0", "Q4s32"]


def test_page_offers_weighted_metrics_only_with_an_imatrix(tmp_path):
    """The importance-matrix selector lists the runs; wmse/wnmse appear only with an imatrix."""
    from workbench.sweep import run
    imx = "data/imatrix/all-MiniLM-L6-v2.imatrix.gguf"
    root = __import__("pathlib").Path(__file__).resolve().parents[1]
    run(None, "Q4_K,Q4s32", r"layer\.0\.output\.dense", tmp_path, progress=False)
    run(None, "Q4_K,Q4s32", r"layer\.0\.output\.dense", tmp_path, progress=False, imatrix=root / imx)
    page = ParetoPage(store=tmp_path)
    names = st.imatrices(tmp_path)
    fps = list(names)
    assert list(page.param.imatrix.objects) == fps and fps[0] == "" and page.imatrix == ""
    assert list(page.param.imatrix.names)[1].startswith("all-MiniLM-L6-v2.imatrix.gguf (")
    assert "wnmse" not in page.param.metric.objects
    page.imatrix = fps[1]
    assert "wnmse" in page.param.metric.objects
    page.metric = "wnmse"
    assert len(page.data) == 2 and (page.data["wnmse"] > 0).all()
    page.imatrix = ""
    assert page.metric == "nmse" and len(page.data) == 2


# ----------------------------------------------------------------------- filters and gaps
def described(points, **cols) -> pd.DataFrame:
    return frame(points, family="uniform", bits=4, block=32, symmetric=True, scale_dtype="f16",
                 super_bits=pd.NA, **cols)


def test_filter_formats_by_each_filter():
    from workbench.views.pareto import filter_formats, filter_values
    df = described([(4.5, 1e-2), (4.25, 2e-2), (5.5, 5e-3), (4.5, 8e-3)])
    df["family"] = ["uniform", "uniform", "uniform", "ggml"]
    df["bits"] = [4, 4, 5, 4]
    df["block"] = [32, 64, 32, 32]
    df["symmetric"] = [True, False, True, True]
    df["scale_dtype"] = ["f16", "e4m3", "f16", "f16"]
    df["super_bits"] = pd.array([pd.NA, 6, pd.NA, pd.NA], dtype="Int16")
    values = filter_values(df)
    assert values == {"family": ["ggml", "uniform"], "structure": ["single", "double"],
                      "scale_encoding": ["f16", "e4m3"], "bits": [4, 5], "block": [32, 64],
                      "symmetry": ["asymmetric", "symmetric"]}
    assert formats(filter_formats(df)) == ["f0", "f1", "f2", "f3"]                 # no filter
    assert formats(filter_formats(df, **values)) == ["f0", "f1", "f2", "f3"]       # all allowed
    assert formats(filter_formats(df, family=["ggml"])) == ["f3"]
    assert formats(filter_formats(df, structure=["double"])) == ["f1"]
    assert formats(filter_formats(df, structure=["single"], bits=[4])) == ["f0", "f3"]
    assert formats(filter_formats(df, block=[64])) == ["f1"]
    assert formats(filter_formats(df, symmetry=["asymmetric"])) == ["f1"]
    assert formats(filter_formats(df, scale_encoding=["f16"], family=["uniform"])) == ["f0", "f2"]
    assert filter_formats(df, bits=[]).empty
    with pytest.raises(ValueError, match="unknown format filter"):
        filter_formats(df, colour=["red"])
    assert filter_values(df.iloc[:0]) == {k: [] for k in values}


def test_frontier_gap_is_one_on_the_frontier_and_the_ratio_elsewhere():
    from workbench.views.pareto import frontier_at, frontier_gap
    df = frame([(2, 0.4), (3, 0.1), (4, 0.2), (4, 0.05), (3.5, 0.3)])
    df["sqnr_db"] = -10 * np.log10(df["nmse"])
    # the frontier is the step function 0.4 on [2, 3), 0.1 on [3, 4), 0.05 from 4
    assert np.allclose(frontier_at(df, [1.9, 2, 2.9, 3, 3.99, 4, 9], "nmse"),
                       [np.nan, 0.4, 0.4, 0.1, 0.1, 0.05, 0.05], equal_nan=True)
    assert np.allclose(frontier_gap(df, "nmse"), [1, 1, 4, 1, 3])
    # a linear metric: the difference towards worse, in its unit (dB of SQNR lost)
    assert np.allclose(frontier_gap(df, "sqnr_db"), [0, 0, 10 * np.log10(4), 0, 10 * np.log10(3)])
    assert frontier_gap(df.iloc[:0], "nmse").size == 0


def test_tensors_matching_by_regex_and_kind():
    from workbench.views.pareto import tensors_matching
    names = ["embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight",
             "encoder.layer.0.attention.output.dense.weight", "encoder.layer.0.intermediate.dense.weight",
             "encoder.layer.0.output.dense.weight", "encoder.layer.1.output.dense.weight", "pooler.dense.weight"]
    assert tensors_matching(names) == names
    assert tensors_matching(names, kinds=["feed-forward"]) == names[3:6]
    assert tensors_matching(names, kinds=["attention"]) == names[1:3]
    assert tensors_matching(names, kinds=["embedding", "other"]) == [names[0], names[6]]
    assert tensors_matching(names, r"layer\.0\.", ["feed-forward"]) == names[3:5]
    assert tensors_matching(names, "nothing") == []
    with pytest.raises(ValueError, match="^tensor regex '\\[': "):
        tensors_matching(names, "[")


def test_tensor_cloud_draws_points_or_a_log_binned_density():
    from workbench.views.pareto import tensor_cloud
    rng = np.random.default_rng(0)
    n = 5000
    rows = pd.DataFrame({"tensor": [f"t{i % 40}" for i in range(n)], "format": [f"f{i // 40}" for i in range(n)],
                         "bpw": rng.uniform(2, 9, n), "nmse": 10 ** rng.uniform(-6, -1, n)})
    points = tensor_cloud(rows, "nmse", max_points=n)
    assert isinstance(points, hv.Points) and len(points) == n
    dense = tensor_cloud(rows, "nmse", max_points=n - 1, bins=(50, 20))
    assert isinstance(dense, hv.QuadMesh)
    xs, ys, counts = (dense.dimension_values(i, flat=False) for i in range(3))
    assert np.nansum(counts) == n                      # every point counted once
    # cells are uniform in log10(nmse): the edges are a geometric progression
    y_edges = np.asarray(dense.data[dense.kdims[1].name])
    assert len(y_edges) == 21 and np.allclose(np.diff(np.log10(y_edges)), np.diff(np.log10(y_edges))[0])
    lin = tensor_cloud(rows.assign(sqnr_db=-10 * np.log10(rows["nmse"])), "sqnr_db", max_points=10, bins=(10, 10))
    assert np.nansum(lin.dimension_values(2)) == n
    hv.renderer("bokeh").get_plot(dense * pareto_points(described([(4.5, 1e-3)]).pipe(with_kind)))


def test_per_tensor_errors_lists_each_tensor_worst_first(small_store):
    from workbench.views.pareto import per_tensor_errors
    rows = st.tensor_results(small_store, "all-MiniLM-L6-v2", formats=["Q4_0"])
    assert len(rows) == 6 and set(rows["format"]) == {"Q4_0"}
    plot = per_tensor_errors(rows, "nmse")
    assert list(plot.data["nmse"]) == sorted(rows["nmse"])      # drawn bottom-up: worst at the top
    hv.renderer("bokeh").get_plot(plot)
    up = per_tensor_errors(rows, "sqnr_db")
    assert list(up.data["sqnr_db"]) == sorted(rows["sqnr_db"], reverse=True)


def test_store_tensor_results_and_summary_over_a_tensor_subset(small_store):
    names = st.tensor_names(small_store, "all-MiniLM-L6-v2")
    assert len(names) == 6 and names == sorted(names)
    rows = st.tensor_results(small_store, "all-MiniLM-L6-v2")
    assert len(rows) == 6 * 12 and not rows.duplicated(["tensor", "format"]).any()
    raw = st.results(small_store, "all-MiniLM-L6-v2")
    one = rows[(rows["tensor"] == names[0]) & (rows["format"] == "Q4_0")].iloc[0]
    ref = raw[(raw["tensor"] == names[0]) & (raw["format"] == "Q4_0")].iloc[0]
    assert one["nmse"] == ref["nmse"] and one["bpw"] == ref["nbytes"] * 8 / ref["numel"]
    sub = st.summary(small_store, "all-MiniLM-L6-v2", tensors=names[:2])
    assert (sub["tensors"] == 2).all()
    pooled = rows[rows["tensor"].isin(names[:2])].groupby("format").apply(
        lambda g: np.average(g["nmse"], weights=g["numel"]), include_groups=False)
    assert np.allclose(sub.set_index("format")["nmse"], pooled.loc[sub["format"]])
    assert st.tensor_results(small_store, "all-MiniLM-L6-v2", formats=["Q4_0"], tensors=names[:1]).shape[0] == 1


# ------------------------------------------------------------------------ readable numbers
SUPERSCRIPTS = str.maketrans("⁰¹²³⁴⁵⁶⁷⁸⁹⁻", "0123456789-")


def parse_readable(text: str) -> float:
    """The number a ``readable`` text stands for (``m×10ⁿ`` or a plain decimal)."""
    mantissa, _, power = text.partition("×10")
    return float(mantissa) * (10.0 ** int(power.translate(SUPERSCRIPTS)) if power else 1.0)


def test_readable_numbers_keep_four_significant_digits_without_e_notation():
    from workbench.views.pareto import BPW_SIG, readable
    assert readable(1.5229e-5) == "1.523×10⁻⁵"          # not 0.0000
    assert readable(0.007799) == "0.007799" and readable(0.006) == "0.006000"
    assert readable(4.4375, BPW_SIG) == "4.4375" and readable(4.5, BPW_SIG) == "4.5000"
    assert readable(22.18) == "22.18" and readable(123456.7) == "123457"
    assert readable(float("nan")) == "NaN" and readable(0.0) == "0" and readable(-2.5e-8) == "-2.500×10⁻⁸"
    # the default grid's four best formats at 4.42-4.5 bpw lie within 3% in nmse: four texts
    near = [0.006052, 0.006082, 0.006125, 0.006217]
    assert len({readable(v) for v in near}) == 4
    rng = np.random.default_rng(1)
    for x in 10 ** rng.uniform(-12, 8, 500) * rng.choice([-1, 1], 500):
        text = readable(x)
        assert "e" not in text, text
        assert abs(parse_readable(text) - x) <= 5e-4 * abs(x), (x, text)


def test_log_ticks_label_every_data_range():
    from workbench.views.pareto import log_ticks, tick_labels
    rng = np.random.default_rng(2)
    cases = [(0.6, 5.0), (1e8, 5e8), (5.3e-6, 1.58), (0.0061, 0.0064), (0.6, 25)]   # the issue's ranges
    cases += [(lo, lo * 10 ** span) for lo, span in zip(10 ** rng.uniform(-10, 6, 300), 10 ** rng.uniform(-2, 1.2, 300))]
    for lo, hi in cases:
        major, minor = log_ticks(lo, hi)
        assert 2 <= len(major) <= 12, (lo, hi, major)
        assert all(lo * (1 - 1e-9) <= t <= hi * (1 + 1e-9) for t in major + minor), (lo, hi)
        assert major == sorted(set(major)) and not set(major) & set(minor)
        labels = tick_labels(major)
        assert len(set(labels)) == len(labels) and not any("e" in label for label in labels), labels
        assert all(abs(parse_readable(label) - t) <= 1e-9 * t for label, t in zip(labels, major))
    assert tick_labels(log_ticks(0.6, 5.0)[0]) == ["0.7", "1", "2", "3", "5"]
    assert len(log_ticks(1e8, 5e8)[0]) >= 3            # labels where the points are, not from 5e8 on


def _hover_of(fig, field_name):
    from bokeh.models import HoverTool
    return next(t for t in fig.tools if isinstance(t, HoverTool) and t.tooltips
                and any(field_name in v for _, v in t.tooltips))


def test_rendered_pareto_plot_has_readable_ticks_hover_and_cosine_as_a_distance():
    from bokeh.models import CustomJSHover, CustomJSTicker, CustomJSTickFormatter, LinearAxis, LogAxis
    df = summary_like().assign(cosine=lambda d: 1 - d["nmse"] / 2)
    fig = hv.render(pareto_plot(df), backend="bokeh")
    (y,), (x,) = fig.left, fig.below
    assert isinstance(y, LogAxis) and isinstance(y.ticker, CustomJSTicker)
    assert isinstance(y.formatter, CustomJSTickFormatter) and isinstance(x.formatter, CustomJSTickFormatter)
    assert "log_ticks(cb_data.start, cb_data.end)" in y.ticker.major_code
    hover = _hover_of(fig, "@{format}")
    tips = dict(hover.tooltips)
    assert tips["nmse"] == "@{nmse}{custom}" and tips["bpw"] == "@{bpw}{custom}"
    assert isinstance(hover.formatters["@{nmse}"], CustomJSHover) and "readable(value, 4)" in hover.formatters["@{nmse}"].code
    assert "readable(value, 5)" in hover.formatters["@{bpw}"].code

    fig = hv.render(pareto_plot(df, "cosine"), backend="bokeh")
    (y,) = fig.left
    assert isinstance(y, LogAxis) and y.axis_label.startswith("1 − cosine")
    source = next(r.data_source for r in fig.renderers if "format" in r.data_source.data and "kind" in r.data_source.data)
    frame = df.set_index("format")
    assert np.allclose(source.data["cosine_distance"], 1 - frame.loc[source.data["format"], "cosine"])
    assert isinstance(hv.render(pareto_plot(df, "sqnr_db"), backend="bokeh").left[0], LinearAxis)


def test_marker_shapes_and_legend_names_of_kinds():
    from workbench.views.pareto import kind_label, kind_marker
    fig = hv.render(pareto_plot(summary_like()), backend="bokeh")
    (legend,) = fig.legend
    (grouped,) = [item for item in legend.items if getattr(item.label, "field", None)]   # one entry per value
    data = grouped.renderers[0].data_source.data
    names = list(dict.fromkeys(data[grouped.label.field]))
    assert names == ["llama.cpp", "single f16", "single bf16", "single e4m3", "double e4m3"]
    shapes = dict(zip(data[grouped.label.field], data["marker"]))
    assert shapes == {"llama.cpp": "triangle", "single f16": "circle", "single bf16": "circle",
                      "single e4m3": "circle", "double e4m3": "square"}     # as drawn on the points
    assert not any(n.startswith("uniform") for n in names)     # 'uniform' is the family (both)
    source = next(r for r in fig.renderers if "format" in r.data_source.data and "kind" in r.data_source.data)
    marker = dict(zip(source.data_source.data["format"], source.data_source.data["marker"]))
    assert marker == {"Q4_0": "triangle", "Q8_0": "triangle", "Q4s32": "circle", "Q4s16_e4m3": "circle",
                      "Q3a64_bf16": "circle", "Q(4a16)xQ(6s16)_e4m3": "square"}
    assert source.glyph.marker == {"field": "marker"} or getattr(source.glyph.marker, "field", None) == "marker"
    assert [kind_marker(k) for k in ("llama.cpp", "single f16", "double e8m0")] == ["triangle", "circle", "square"]
    assert kind_label("single e4m3") == "single e4m3" and kind_label("double f16") == "double f16"


# ------------------------------------------------------------------------- label placement
@pytest.fixture(scope="module")
def default_grid_summary(tmp_path_factory):
    """The default grid (462 formats, llama.cpp's types among them) over the layer-0 tensors of
    the default model, measured once: a real summary as crowded as a full sweep's."""
    from workbench import sweep
    store = tmp_path_factory.mktemp("default-grid") / "store"
    sweep.run(formats="default", tensors=r"layer\.0\.", store=store, progress=False)
    return with_kind(st.summary(store, st.models(store)[0]))


def _overlap(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


@pytest.mark.parametrize("metric,frame", [("nmse", None), ("cosine", None), ("max_abs_err", (480, 300)),
                                          ("sqnr_db", (1100, 420))])
def test_llama_cpp_labels_do_not_overlap_each_other_or_labelled_points(default_grid_summary, metric, frame):
    from workbench.views.pareto import (LABEL_FRAME, LABEL_RADII, MARKER_PX, _screen, llama_cpp_labels,
                                        place_labels, plotted)
    frame = frame or LABEL_FRAME
    df = default_grid_summary
    placed, dropped = place_labels(df, metric, frame)
    boxes = placed[["x0", "y0", "x1", "y1"]].to_numpy(float)
    assert len(boxes) and all(b[0] >= 0 and b[1] >= 0 and b[2] <= frame[0] and b[3] <= frame[1] for b in boxes)
    for i, j in itertools.combinations(range(len(boxes)), 2):
        assert not _overlap(boxes[i], boxes[j]), (placed.iloc[i]["label"], placed.iloc[j]["label"])
    col = plotted(metric)
    sx, sy = _screen(plottable(df, col), col, frame, METRICS[metric].log or metric == "cosine")
    ggml = (plottable(df, col)["family"] == "ggml").to_numpy()
    marks = [(x - MARKER_PX, y - MARKER_PX, x + MARKER_PX, y + MARKER_PX) for x, y in zip(sx[ggml], sy[ggml])]
    assert not [(label, m) for label, b in zip(placed["label"], boxes) for m in marks if _overlap(b, m)]
    # every llama.cpp type is named once (types at the same point share a label), or left to the hover
    names = sorted(n for text in [*placed["label"], *dropped] for n in text.split("/"))
    assert names == sorted(df.loc[df["family"] == "ggml", "label"])
    assert len(dropped) <= len(placed) // 3
    # each label stays beside its point: its anchor at most the largest radius away (diagonals: ×1.07)
    assert (np.hypot(placed["dx"], placed["dy"]) <= 1.07 * max(LABEL_RADII)).all()
    assert (np.hypot(placed["dx"], placed["dy"]) <= 1.07 * min(LABEL_RADII)).mean() >= 0.5   # mostly nearest
    labels = llama_cpp_labels(df, metric, frame)
    assert sorted(labels.data["label"]) == sorted(placed["label"])
    fig = hv.render(labels, backend="bokeh")
    (glyph,) = [r.glyph for r in fig.renderers]
    assert glyph.x_offset.field == "dx" and glyph.text_align.field == "align"


def test_the_old_alternating_labels_overlapped_on_the_same_summary(default_grid_summary):
    """The placement test above can fail: on this summary, labels alternated above-right and
    below-left in bpw order (the previous layout) overlap."""
    from workbench.views.pareto import LABEL_CHAR_PX, LABEL_FRAME, LABEL_HEIGHT_PX, _screen
    df = plottable(default_grid_summary, "nmse")
    sx, sy = _screen(df, "nmse", LABEL_FRAME, True)
    ggml = df.assign(sx=sx, sy=sy)[df["family"] == "ggml"].sort_values(["bpw", "nmse"])
    boxes = []
    for k, (x, y, text) in enumerate(zip(ggml["sx"], ggml["sy"], ggml["label"])):
        w = LABEL_CHAR_PX * len(text)
        boxes.append((x + 4, y - LABEL_HEIGHT_PX, x + 4 + w, y) if k % 2 == 0 else (x - 4 - w, y, x - 4, y + LABEL_HEIGHT_PX))
    assert any(_overlap(a, b) for a, b in itertools.combinations(boxes, 2))


# ------------------------------------------------------------------------ best at a budget
def test_best_at_budget_names_the_best_the_runner_up_and_the_nearest_llama_cpp_type():
    from workbench.views.pareto import best_at_budget, budget_readout
    df = with_kind(summary_like())
    r = best_at_budget(df, "nmse", 4.5)
    # Q4_0 and Q4s32: 7.9e-3 at 4.5 bpw (the same numbers); Q4s16_e4m3 is 4.5001 bpw, over
    assert r["best"]["format"] == "Q4_0" and r["same"] == ["Q4s32"] and r["within"] == 3
    assert r["runner_up"]["format"] == "Q3a64_bf16" and r["llama_cpp"]["format"] == "Q4_0"
    text = budget_readout(r)
    assert "Best at ≤ 4.5 bpw by nmse: `Q4_0` (4.5000 bpw, nmse 0.007900)" in text
    assert "same numbers as `Q4s32`" in text and "Runner-up: `Q3a64_bf16` (3.5000 bpw, nmse 0.03900), 4.937×" in text
    assert "is the best itself" in text

    r = best_at_budget(df, "nmse", 7)
    assert r["best"]["format"] == "Q(4a16)xQ(6s16)_e4m3" and r["runner_up"]["format"] == "Q4s16_e4m3"
    assert r["llama_cpp"]["format"] == "Q8_0"             # 1.5 bpw away, against Q4_0's 2.5
    assert "Nearest llama.cpp type in bpw: `Q8_0` (8.5000 bpw, nmse 3.300×10⁻⁵) (over the budget)" in budget_readout(r)

    r = best_at_budget(df, "sqnr_db", 4.6)                # higher is better: a difference in dB
    assert r["best"]["format"] == "Q4s16_e4m3" and "dB worse than the best" in budget_readout(r)
    assert best_at_budget(df, "cosine", 4.6)["metric"] == "cosine_distance"

    r = best_at_budget(df, "nmse", 3)
    assert r["best"] is None and "the cheapest is `Q3a64_bf16`" in budget_readout(r)


def test_page_budget_readout_cosine_and_family_names(small_store):
    from workbench.views.pareto import best_at_budget, budget_readout
    page = ParetoPage(store=small_store)
    assert page.param.family.names == {"llama.cpp": "ggml", "uniform grid": "uniform"}
    assert page.readout.object == budget_readout(best_at_budget(page.data, "nmse", page.budget))
    assert "Best at ≤ 4.5 bpw by nmse" in page.readout.object
    chosen = list(page.data.sort_values("bpw")["format"][:3])
    page.select(chosen)
    brush, plot = page.brush, page.plot.object
    page.budget = 8.5                       # the readout follows; the plot and the brush stay
    assert page.brush is brush and page.plot.object is plot and sorted(page.selected()["format"]) == sorted(chosen)
    best = best_at_budget(page.data, "nmse", 8.5)
    assert f"`{best['best']['format']}`" in page.readout.object and "8.5 bpw" in page.readout.object

    page.metric = "cosine"                  # 1 − cosine: plotted, tabled and named as such
    assert "1 − cosine" in page.readout.object and "cosine_distance" in page.data.columns
    assert np.allclose(page.data["cosine_distance"], 1 - page.data["cosine"])
    assert page.table.titles.get("cosine_distance") == "1 − cosine"
    page.family = []
    assert page.readout.object == "" and not page.results.visible


def test_page_reads_the_url_as_location_sync_writes_it(small_store):
    """``location.sync`` writes a change as JSON, and re-encodes the keys it did not change as
    Python literals (['ggml'], True); both read back (the served round trip is a UI test)."""
    page = ParetoPage(store=small_store)
    assert page._from_url("family", '["ggml"]') == page._from_url("family", "['ggml']") == ["ggml"]
    assert page._from_url("bits", "[4, 8]") == [4, 8] and page._from_url("selection", "[]") == []
    assert page._from_url("show_tensors", "True") is True and page._from_url("show_tensors", "false") is False
    assert page._from_url("budget", "5.25") == 5.25 and page._from_url("tensor_regex", "1.50") == "1.50"
    with pytest.raises(ValueError):
        page._from_url("bits", "[4, 8")
    page.select(list(page.data["format"][:2]))           # the selection is a parameter (in the URL)
    assert sorted(page.selection) == sorted(page.data["format"][:2])
    page.metric = "bnl"                                   # a redraw drops it
    assert page.selection == []
