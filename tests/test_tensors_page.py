"""The Tensors page without a browser: built on a real small store, clicks simulated through
its Tap streams (workbench.views.tensors_page)."""
from __future__ import annotations

import shutil

import holoviews as hv
import numpy as np
import pandas as pd
import panel as pn
import pytest

from workbench import store as st
from workbench.sources import SourceError, open_model, tensor_kind
from workbench.views import tensors_page as tp
from workbench.views.tensors import (format_catalog, pick_formats, reconstruct, relative_error_table,
                                     tensor_stats)
from workbench.views.tensors_page import EMPTY_STORE, NEEDS_MODEL, NO_TENSOR, TensorsPage, cached_stats

MODEL = "all-MiniLM-L6-v2"


@pytest.fixture(scope="module")
def weights(minilm):
    return {t.name: t.load() for t in minilm.weights(r"layer\.0\.")}


def _titles(pane) -> str:
    return pane.object.opts.get().kwargs["title"] if pane.object is not None else ""


def _tap(page, which: int, row: str):
    """What a click does in the browser: the plot's Tap stream fires with the cell's factors."""
    tap = page._taps[which]
    x = page.shown["format"].iloc[0] if which == 0 else "std"
    tap.event(x=x, y=row)


# ------------------------------------------------------------------------- no results
def test_empty_store(tmp_path):
    page = TensorsPage(store=tmp_path / "nothing-here")
    assert page.model is None and page.shown.empty
    assert page.message.visible and EMPTY_STORE in page.message.object
    assert not page.overview.visible and not page.detail.visible
    assert all(w.disabled for w in page.controls if isinstance(w, pn.widgets.Widget))
    pn.panel(page).get_root()


def test_unreadable_store(tmp_path):
    bad = tmp_path / "model=x" / "table=results"
    bad.mkdir(parents=True)
    (bad / "garbage.parquet").write_bytes(b"not parquet at all")
    page = TensorsPage(store=tmp_path)
    assert page.message.visible and page.message.alert_type == "danger"
    assert "cannot be read: model=x/table=results/garbage.parquet" in page.message.object
    assert "\n" not in page.message.object


# --------------------------------------------------------------------------- the store
def test_heatmap_and_statistics_on_a_real_store(small_store, weights):
    page = TensorsPage(store=small_store)
    results = st.results(small_store, MODEL)
    assert page.model == MODEL and not page.message.visible and not page.note.visible
    # default columns: llama.cpp's types and the f16 uniform singles at block 32
    cat = format_catalog(results)
    expected = pick_formats(cat, ["llama.cpp", "single f16"], 32)
    assert page.format_kinds == ["llama.cpp", "single f16"] and page.block == 32
    assert set(page.shown["format"]) == set(expected) and "Q4s16_e4m3" not in expected
    # rows: every measured tensor, and the ratios are those of all measured formats
    assert sorted(page.rows()) == sorted(weights) and len(page.rows()) == 6
    rel = relative_error_table(results[results["imatrix"] == ""], "nmse").set_index(["tensor", "format"])
    got = page.shown.set_index(["tensor", "format"])
    assert np.allclose(got["ratio"], rel.loc[got.index, "ratio"])
    assert (got["best_format"] == rel.loc[got.index, "best_format"]).all()

    heatmap, stats = page.heatmap_pane.object, page.stats_pane.object
    assert isinstance(heatmap, hv.HeatMap) and page.stats_pane.visible
    assert list(dict.fromkeys(heatmap.dimension_values("row"))) == page.rows()
    # the statistics are those of the loaded weights, row for row
    labels = stats.get(1)
    text = {(s, r): t for s, r, t in zip(labels.dimension_values("stat"), labels.dimension_values("row"),
                                         labels.dimension_values("text"))}
    for name in page.rows():
        s = tensor_stats(weights[name])
        assert text[("std", name)] == f"{s['std']:.3g}"
        assert text[("excess kurtosis", name)] == f"{s['excess_kurtosis']:.3g}"
    pn.panel(page).get_root()      # builds the bokeh models without an exception


def test_a_tap_shows_the_tensors_histograms(small_store, weights):
    page = TensorsPage(store=small_store)
    assert not page.detail.visible and page.tensor == NO_TENSOR
    row = page.rows()[2]
    _tap(page, 0, row)                                   # a heatmap cell
    assert page.tensor == row and page.detail.visible
    x = weights[row]
    # default format: the llama.cpp type ranked best for this tensor (lowest ratio)
    cells = page.shown[(page.shown["tensor"] == row) & page.shown["format"].isin(["Q4_0", "Q4_1", "Q8_0"])]
    best = cells.sort_values(["ratio", "bpw"]).iloc[0]["format"]
    assert page.error_format == best
    w = page.weights_plot.object
    assert isinstance(w, hv.Histogram) and row in _titles(page.weights_plot)
    assert w.dimension_values("count").sum() == x.size
    assert w.edges[0] == pytest.approx(float(x.min())) and w.edges[-1] == pytest.approx(float(x.max()))
    e = page.error_plot.object
    assert row in _titles(page.error_plot) and best in _titles(page.error_plot)
    err = reconstruct(x, best).astype(np.float64) - x
    assert e.edges[0] == pytest.approx(err.min()) and e.edges[-1] == pytest.approx(err.max())
    assert row in page.caption.object and f"{x.size:,} weights" in page.caption.object

    # another format: the error histogram follows
    page.error_format = "Q8s32"
    err8 = reconstruct(x, "Q8s32").astype(np.float64) - x
    assert "Q8s32" in _titles(page.error_plot)
    assert page.error_plot.object.edges[-1] == pytest.approx(err8.max())

    # a click on the statistics of another tensor; the chosen format stays
    other = page.rows()[4]
    _tap(page, 1, other)
    assert page.tensor == other and page.error_format == "Q8s32"
    assert other in _titles(page.weights_plot)
    assert page.weights_plot.object.edges[0] == pytest.approx(float(weights[other].min()))

    _tap(page, 0, "not-a-row")                           # a click outside the rows: no change
    assert page.tensor == other


def test_filters_change_rows_and_columns(small_store):
    page = TensorsPage(store=small_store)
    all_rows = page.rows()
    _tap(page, 0, all_rows[0])
    page.tensor_kinds = ["feed-forward"]
    assert page.rows() and all(tensor_kind(r) == "feed-forward" for r in page.rows())
    assert len(page.rows()) == 2
    assert page.tensor == NO_TENSOR and not page.detail.visible    # the selected row went away

    page.tensor_kinds = list(page.param.tensor_kinds.objects)
    page.tensor_regex = r"query"
    assert page.rows() == [r for r in all_rows if "query" in r]

    page.tensor_regex = "^nothing"
    assert page.message.visible and page.message.alert_type == "warning"
    assert "no tensor" in page.message.object and not page.overview.visible

    page.tensor_regex = "layer.0.(attention"                      # invalid: one line, nothing drawn
    assert page.message.visible and "not a valid regular expression" in page.message.object
    assert "\n" not in page.message.object and not page.overview.visible

    page.tensor_regex = ""
    assert not page.message.visible and page.rows() == all_rows

    page.format_kinds = list(page.param.format_kinds.objects)
    page.block = tp.ANY_BLOCK
    assert set(page.shown["format"]) == set(st.results(small_store, MODEL)["format"])  # all 12
    page.format_regex = "^Q8"
    assert set(page.shown["format"]) == {"Q8_0", "Q8s32"}
    page.format_regex = "Q8("
    assert "format regex" in page.message.object and not page.overview.visible
    page.format_regex = ""
    page.format_kinds = []
    assert "no format" in page.message.object

    page.format_kinds = ["llama.cpp"]
    page.metric = "max_abs_err"
    assert page.shown.attrs["metric"] == "max_abs_err" and set(page.shown["format"]) == {"Q4_0", "Q4_1", "Q8_0"}
    assert "max_abs_err" in page.heatmap_pane.object.opts.get().kwargs["title"]


def test_model_file_missing_shows_the_heatmap_and_one_line(small_store, monkeypatch):
    monkeypatch.setattr(tp, "find_model", lambda model_id: None)
    page = TensorsPage(store=small_store)
    assert page.note.visible and NEEDS_MODEL in page.note.object and "\n" not in page.note.object
    assert page.heatmap_pane.object is not None and page.overview.visible and not page.stats_pane.visible
    row = page.rows()[0]
    _tap(page, 0, row)
    assert page.detail.visible and row in page.caption.object
    assert page.weights_plot.object is None and page.error_plot.object is None
    assert page.detail_message.visible and NEEDS_MODEL in page.detail_message.object


def test_unreadable_model_file_is_one_line(small_store, monkeypatch):
    def broken(model_id):
        raise SourceError("/data/model.safetensors: truncated or not a safetensors file")
    monkeypatch.setattr(tp, "find_model", broken)
    page = TensorsPage(store=small_store)
    assert page.note.visible and "truncated" in page.note.object and page.overview.visible


def test_model_without_results_for_a_metric_and_reload(small_store, tmp_path):
    store = tmp_path / "store"
    shutil.copytree(small_store, store, ignore=shutil.ignore_patterns(".complete"))
    page = TensorsPage(store=store)
    assert page.param.model.objects == [MODEL]
    # another model lands in the store (an import): its bnl was never measured, its file is not here
    other = st.results(store, MODEL).assign(model="other-model", bnl=np.nan)
    st.write(store, "results", other)
    page.reload()
    assert page.param.model.objects == [MODEL, "other-model"] and page.model == MODEL
    page.model = "other-model"
    assert page.rows() and page.note.visible and NEEDS_MODEL in page.note.object
    page.metric = "bnl"
    assert page.message.visible and "no bnl results" in page.message.object
    assert not page.overview.visible
    page.metric = "nmse"
    assert not page.message.visible and page.overview.visible
    page.model = MODEL
    assert not page.note.visible and page.stats_pane.visible


def test_stats_are_computed_once_per_model_file(minilm):
    loads = []

    class Counting:
        """The default model, counting the tensors it loads."""
        path, fingerprint = minilm.path, minilm.fingerprint + "-counting"

        def weights(self, pattern=None):
            out = []
            for t in minilm.weights(pattern):
                clone = type(t)(t.name, t.shape, t.dtype, t.source_quantized, t.skip_reason,
                                lambda t=t: (loads.append(t.name), t._load())[1])
                out.append(clone)
            return out

    src = Counting()
    names = [t.name for t in minilm.weights(r"layer\.1\.")]
    first = cached_stats(src, names[:2])
    assert len(loads) == 2 and list(first["name"]) == names[:2]
    again = cached_stats(src, names)
    assert len(loads) == len(names)                  # only the two new ones were loaded
    pd.testing.assert_frame_equal(again.iloc[:2], first)
    assert cached_stats(src, ["not-a-tensor"]).empty
    first_tensor = open_model(None).weights(r"layer\.1\.")[0].load()
    assert again.iloc[0]["std"] == pytest.approx(tensor_stats(first_tensor)["std"])
