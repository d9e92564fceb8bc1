"""The Pareto page without a browser: pure plot functions on hand-made frames with known
answers, link_selections filtering, and the Panel page on an empty and a real small store."""
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
    """Free link_selections' streams while Python is alive (their __del__ fails at exit)."""
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
    assert kinds == [LLAMA_CPP, "uniform f16", "uniform e4m3", "double e4m3", "uniform bf16", LLAMA_CPP]
    assert ordered_kinds(summary_like()) == [LLAMA_CPP, "uniform f16", "uniform bf16", "uniform e4m3",
                                             "double e4m3"]
    colors = kind_colors(ordered_kinds(summary_like()))
    assert len(set(colors.values())) == len(colors)
    assert kind_colors(["uniform e4m3"]) == {"uniform e4m3": colors["uniform e4m3"]}  # stable


# ------------------------------------------------------------------------------ pareto_plot
def opts_of(element, group="plot"):
    return hv.Store.lookup_options("bokeh", element, group).kwargs


def test_pareto_plot_layers():
    df = summary_like()
    plot = pareto_plot(df)
    assert isinstance(plot, hv.Overlay)
    points = [el for el in plot if isinstance(el, hv.Points) and opts_of(el, "style").get("size") != 0]
    (curve,) = [el for el in plot if isinstance(el, hv.Curve)]
    (labels,) = [el for el in plot if isinstance(el, hv.Labels)]
    assert len(points) == 1 and len(points[0]) == len(df)
    assert opts_of(points[0], "style")["color"] == "kind"
    assert {"format", "kind"} <= {d.name for d in points[0].vdims}
    assert ("format", "@format") in opts_of(points[0])["hover_tooltips"]
    assert opts_of(curve)["interpolation"] == "steps-post"
    assert curve.dimension_values("bpw").tolist() == pareto_front(df)["bpw"].tolist()
    assert sorted(labels.dimension_values("format")) == ["Q4_0", "Q8_0"]
    assert opts_of(plot)["logy"] is True
    assert opts_of(pareto_plot(df, "sqnr_db"))["logy"] is False


def test_pareto_plot_renders_without_bokeh_validation_errors():
    """A legend on the brushed points would trip bokeh's E-1006 (two data sources per item)."""
    ls = hv.link_selections.instance()
    fig = hv.render(pareto_plot(summary_like(), selection=ls), backend="bokeh")
    issues = check_integrity(fig.references())
    assert not issues.error, issues.error


def test_plottable_drops_what_a_log_axis_cannot_show():
    df = summary_like()
    df.loc[0, "nmse"] = 0.0
    df.loc[1, "nmse"] = np.nan
    assert len(plottable(df, "nmse")) == len(df) - 2
    df.loc[0, "sqnr_db"], df.loc[1, "sqnr_db"] = np.inf, np.nan
    assert len(plottable(df, "sqnr_db")) == len(df) - 2    # inf (nmse 0) and NaN


# --------------------------------------------------------------------------- link_selections
def test_link_selections_filters_the_selected_formats():
    df = with_kind(summary_like())
    ls = hv.link_selections.instance()
    ls(pareto_points(df))
    selected = ls.selection_param(df)
    assert len(selected.owner.data) == len(df)             # no selection yet: everything
    ls.selection_expr = (hv.dim("bpw") <= 4.6) & (hv.dim("nmse") < 1e-2)
    expected = ["Q4_0", "Q4s32", "Q4s16_e4m3"]
    assert formats(ls.filter(df)) == expected
    assert formats(selected.owner.data) == expected
    table = selected_table(ls.filter(df))
    assert list(table.columns) == ["format", "family", "bits", "block", "scale_dtype", "bpw", "nmse"]


# ---------------------------------------------------------------------------------- the page
@pytest.fixture(scope="session")
def small_store(tmp_path_factory):
    """The default model's layer-0 tensors × the 12 'small' formats, measured for real (the
    same folder as tests/ui's fixture, so one session builds it once)."""
    from workbench import sweep
    path = tmp_path_factory.getbasetemp() / "small-store"
    done = path / ".complete"
    if not done.exists():
        sweep.run(formats="small", tensors=r"layer\.0\.", store=path, progress=False)
        done.touch()
    return path


def test_page_on_an_empty_store(tmp_path):
    page = ParetoPage(store=tmp_path / "nothing-here")
    assert page.model is None and page.data.empty
    assert page.message.visible and EMPTY_STORE in page.message.object
    assert not page.plot.visible and not page.table.visible
    assert page.controls[0].disabled and not page.controls[4].visible
    pn.panel(page).get_root()      # builds the bokeh models without an exception


def test_page_on_an_unreadable_store(tmp_path):
    bad = tmp_path / "model=x" / "table=results"
    bad.mkdir(parents=True)
    (bad / "garbage.parquet").write_bytes(b"not parquet at all")
    page = ParetoPage(store=tmp_path)
    assert page.message.visible and page.message.alert_type == "danger"
    assert "cannot read" in page.message.object


def test_page_on_a_real_store(small_store):
    page = ParetoPage(store=small_store)
    summary = st.summary(small_store, page.model)
    assert page.model == "all-MiniLM-L6-v2"
    assert len(page.data) == len(summary) == 12
    assert page.kinds == ordered_kinds(summary) and LLAMA_CPP in page.kinds
    assert page.plot.visible and not page.message.visible
    assert page.table.value.empty and "none yet" in page.caption.object
    pn.panel(page).get_root()

    # brushing: what the box-select tool sets, the table lists
    page.selection.selection_expr = hv.dim("bpw") < 4.4
    expected = summary[summary["bpw"] < 4.4].sort_values("bpw")["format"].tolist()
    assert page.table.value["format"].tolist() == expected and expected
    assert f"Selected formats: {len(expected)} of 12" in page.caption.object

    # another metric: the axis changes, so the selection is dropped
    page.metric = "sqnr_db"
    assert page.selection.selection_expr is None and page.table.value.empty
    assert "sqnr_db" in page.table.value.columns
    assert opts_of(page.plot.object[()])["logy"] is False   # a DynamicMap (link_selections)

    # the family / encoding filter
    page.kinds = [LLAMA_CPP]
    assert set(page.data["family"]) == {"ggml"}
    page.kinds = []
    assert page.message.visible and not page.plot.visible
    page.kinds = list(page.param.kinds.objects)
    assert page.plot.visible and len(page.data) == 12


def test_page_switches_models(small_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(small_store, store)
    other = st.results(store)
    other = other[other["family"] == "ggml"].assign(model="tiny-ggml-only")
    st.write(store, "results", other)
    page = ParetoPage(store=store, model="tiny-ggml-only")
    assert page.model == "tiny-ggml-only" and page.kinds == [LLAMA_CPP]
    model_widget, kinds_widget = page.controls[0], page.controls[4]
    assert list(model_widget.options) == ["all-MiniLM-L6-v2", "tiny-ggml-only"]
    model_widget.value = "all-MiniLM-L6-v2"          # as the browser would
    assert page.model == "all-MiniLM-L6-v2" and len(page.data) == 12
    assert list(kinds_widget.options) == page.kinds and len(page.kinds) > 1
    assert kinds_widget.value == page.kinds


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
    assert list(labels.data["label"]) == ["Q4_K*", "Q8_0"]
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
