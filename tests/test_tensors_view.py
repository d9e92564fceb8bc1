"""The Tensors page's browser-free core (workbench.views.tensors)."""
from __future__ import annotations

import math
import warnings

import holoviews as hv
import numpy as np
import pandas as pd
import pytest

from workbench.views.tensors import (DEFAULT_BLOCK, DEFAULT_FORMAT_KINDS, LOWER_IS_BETTER,
                                     default_error_format, error_heatmap, error_histogram,
                                     format_catalog, frame_height, pick_formats, pick_tensors,
                                     reconstruct, relative_error_table, stats_plot, tensor_stats,
                                     tensor_stats_table, weight_histogram)


# ------------------------------------------------------------------------------ statistics
def _reference(x: np.ndarray) -> dict:
    """Plain float64 formulas (population moments, Fisher kurtosis)."""
    v = np.asarray(x, np.float64).ravel()
    d = v - v.mean()
    m2, m4 = (d ** 2).mean(), (d ** 4).mean()
    std = math.sqrt(m2)
    return dict(numel=v.size, std=std, absmax=np.abs(v).max(), absmax_over_std=np.abs(v).max() / std,
                excess_kurtosis=m4 / m2 ** 2 - 3, zero_fraction=(v == 0).mean())


def test_stats_small_known_arrays():
    s = tensor_stats(np.array([1, -1, 1, -1], np.float32))
    assert s == dict(numel=4, std=1.0, absmax=1.0, absmax_over_std=1.0, excess_kurtosis=-2.0,
                     zero_fraction=0.0)
    # mean 0.5, m2 = 0.75, m4 = 1.3125 -> kurtosis 1.3125 / 0.5625 - 3 = -2/3
    s = tensor_stats(np.array([[0, 0], [0, 2]], np.float32))
    assert s["numel"] == 4 and s["zero_fraction"] == 0.75 and s["absmax"] == 2.0
    assert s["std"] == pytest.approx(math.sqrt(0.75), rel=1e-12)
    assert s["absmax_over_std"] == pytest.approx(2 / math.sqrt(0.75), rel=1e-12)
    assert s["excess_kurtosis"] == pytest.approx(-2 / 3, rel=1e-12)


def test_stats_normal_and_laplace_match_reference_across_chunks():
    rng = np.random.default_rng(1)
    normal = rng.standard_normal((1000, 2000)).astype(np.float32)   # 2M elements: 2 chunks
    s = tensor_stats(normal)
    for k, v in _reference(normal).items():
        assert s[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
    assert abs(s["excess_kurtosis"]) < 0.05
    assert s["std"] == pytest.approx(1.0, abs=0.01)

    laplace = rng.laplace(0.0, 1.0, size=(1000, 1000)).astype(np.float32)
    s = tensor_stats(laplace)
    for k, v in _reference(laplace).items():
        assert s[k] == pytest.approx(v, rel=1e-9, abs=1e-12), k
    assert s["excess_kurtosis"] == pytest.approx(3.0, abs=0.3)


def test_stats_offset_uses_float64_accumulation():
    # a large mean with a small spread: float32 accumulation would lose the variance
    x = (np.float32(1000.0) + np.tile(np.array([-1, 1], np.float32), 500_000)).reshape(1000, 1000)
    s = tensor_stats(x)
    assert s["std"] == pytest.approx(1.0, rel=1e-12)
    assert s["excess_kurtosis"] == pytest.approx(-2.0, rel=1e-9)


@pytest.mark.parametrize("value", [0.0, 3.5])
def test_stats_constant_tensor_is_defined(value):
    with warnings.catch_warnings():
        warnings.simplefilter("error")          # no divide-by-zero RuntimeWarning either
        s = tensor_stats(np.full((4, 8), value, np.float32))
    assert s["std"] == 0.0 and s["absmax"] == abs(value)
    assert s["absmax_over_std"] == 0.0 and s["excess_kurtosis"] == 0.0
    assert s["zero_fraction"] == (1.0 if value == 0 else 0.0)
    assert all(np.isfinite(v) for v in s.values())


def test_stats_table_on_default_model(minilm):
    df = tensor_stats_table(minilm, r"layer\.0\.")
    assert len(df) == 6
    assert df["name"].str.contains(r"layer\.0\.").all()
    assert list(df.columns[:4]) == ["name", "shape", "rows", "cols"]
    assert (df["numel"] == df["rows"] * df["cols"]).all()
    stats = df[["std", "absmax", "absmax_over_std", "excess_kurtosis", "zero_fraction"]].to_numpy(float)
    assert np.isfinite(stats).all()
    assert (df["std"] > 0).all() and (df["absmax_over_std"] > 1).all()
    # the table's stats are tensor_stats of the loaded tensor
    t = minilm.weights(r"layer\.0\.")[0]
    assert df.iloc[0]["excess_kurtosis"] == pytest.approx(tensor_stats(t.load())["excess_kurtosis"])


# ------------------------------------------------------------------ error relative to best
def _results() -> pd.DataFrame:
    rows = [  # tensor, format, bpw, nmse
        ("t", "A", 4.0, 0.02),    # B (4.2) is exactly at the +5% edge of 4.0: included
        ("t", "B", 4.2, 0.01),
        ("t", "C", 4.5, 0.005),   # 0.3 from B > 0.05 * 4.5: alone
        ("t", "D", 8.0, 0.001),   # D and E tie
        ("t", "E", 8.0, 0.001),
        ("t", "F", 8.4, 0.002),   # at the edge of 8.0 (0.4): best is D (tie D/E, same bpw: name)
        ("u", "A", 4.0, 0.03),    # another tensor: compared only with its own formats
        ("u", "B", 4.2, 0.06),
        ("v", "G", 4.0, 0.02),    # 4.21 is outside 4.0's ±0.2 ...
        ("v", "H", 4.21, 0.04),   # ... but 4.0 is inside 4.21's ±0.2105: relative to own bpw
    ]
    return pd.DataFrame(rows, columns=["tensor", "format", "bpw", "nmse"])


def test_relative_table_exact_ratios_ties_and_edges():
    rel = relative_error_table(_results(), "nmse", 0.05)
    assert list(rel.columns) == ["tensor", "format", "bpw", "metric", "best_format", "best_metric", "ratio"]
    assert rel.attrs["metric"] == "nmse"
    got = {(t, f): (b, r) for t, f, b, r in zip(rel["tensor"], rel["format"], rel["best_format"], rel["ratio"])}
    assert got == {
        ("t", "A"): ("B", 2.0), ("t", "B"): ("B", 1.0), ("t", "C"): ("C", 1.0),
        ("t", "D"): ("D", 1.0), ("t", "E"): ("E", 1.0), ("t", "F"): ("D", 2.0),
        ("u", "A"): ("A", 1.0), ("u", "B"): ("A", 2.0),
        ("v", "G"): ("G", 1.0), ("v", "H"): ("G", 2.0),
    }
    assert rel.loc[(rel.tensor == "t") & (rel.format == "A"), "metric"].item() == 0.02
    assert (rel["ratio"] >= 1.0).all()


def test_relative_table_tolerance_zero_and_wide():
    rel = relative_error_table(_results(), "nmse", 0.0)
    assert (rel["ratio"] == 1.0).all()
    assert (rel["best_format"] == rel["format"]).where(rel["format"] != "E", True).all()
    wide = relative_error_table(_results(), "nmse", 10.0)   # everything compares with everything
    t = wide[wide.tensor == "t"].set_index("format")
    assert set(t["best_format"]) == {"D", "E"}               # D/E tie: each names itself
    assert t.loc["A", "best_format"] == "D" and t.loc["A", "ratio"] == pytest.approx(20.0)


def test_relative_table_zero_nan_and_duplicates():
    df = pd.DataFrame([
        ("m", "t", "X", 8.0, 0.0), ("m", "t", "Y", 8.0, 1e-3), ("m", "t", "Z", 8.0, np.nan),
        ("m", "t", "X", 8.0, 5.0),            # a repeated measurement: the first row counts
        ("n", "t", "X", 8.0, 2e-3), ("n", "t", "Y", 8.0, 1e-3),   # another model
    ], columns=["model", "tensor", "format", "bpw", "mse"])
    rel = relative_error_table(df, "mse").set_index(["model", "format"])
    assert len(rel) == 5
    assert rel.loc[("m", "X"), "ratio"] == 1.0 and rel.loc[("m", "X"), "metric"] == 0.0
    assert rel.loc[("m", "Y"), "ratio"] == np.inf and rel.loc[("m", "Y"), "best_format"] == "X"
    assert np.isnan(rel.loc[("m", "Z"), "ratio"]) and pd.isna(rel.loc[("m", "Z"), "best_format"])
    assert rel.loc[("n", "X"), "ratio"] == pytest.approx(2.0) and rel.loc[("n", "X"), "best_format"] == "Y"


@pytest.mark.parametrize("metric", ["sqnr_db", "cosine", "bogus"])
def test_relative_table_rejects_other_metrics(metric):
    df = _results().rename(columns={"nmse": metric})
    with pytest.raises(ValueError) as e:
        relative_error_table(df, metric)
    assert "\n" not in str(e.value) and metric in str(e.value)


def test_relative_table_accepts_every_lower_is_better_metric():
    base = _results()
    for m in LOWER_IS_BETTER:
        rel = relative_error_table(base.rename(columns={"nmse": m}), m)
        assert rel.attrs["metric"] == m and len(rel) == len(base)


# ---------------------------------------------------------------------------------- plots
def test_error_heatmap_dims_order_tools_and_render():
    df = pd.DataFrame([  # names deliberately not in bpw order
        ("w1", "zz2", 2.0, 0.5), ("w1", "aa8", 8.0, 0.01), ("w1", "mm4", 4.0, 0.1), ("w1", "mm4b", 4.1, 0.3),
        ("w0", "zz2", 2.0, 0.4), ("w0", "aa8", 8.0, 0.02), ("w0", "mm4", 4.0, 0.2), ("w0", "mm4b", 4.1, 0.1),
    ], columns=["tensor", "format", "bpw", "nmse"])
    rel = relative_error_table(df)
    hm = error_heatmap(rel)
    assert isinstance(hm, hv.HeatMap)
    assert [d.name for d in hm.kdims] == ["format", "row"]
    assert [d.name for d in hm.vdims] == ["log10_ratio", "tensor", "bpw", "metric", "best_format", "ratio"]
    assert np.nanmin(hm.dimension_values("log10_ratio")) == 0.0
    assert hm.dimension_values("log10_ratio").max() == pytest.approx(math.log10(3.0))
    plot = hv.render(hm, backend="bokeh")
    assert list(plot.x_range.factors) == ["zz2", "mm4", "mm4b", "aa8"]
    assert list(plot.y_range.factors) == ["w0", "w1"]      # inverted: w1 (first row) on top
    tools = {type(t).__name__ for t in plot.tools}
    assert {"TapTool", "HoverTool"} <= tools
    hover = next(t for t in plot.tools if type(t).__name__ == "HoverTool")
    fields = " ".join(v for _, v in hover.tooltips).replace("{", "").replace("}", "")
    for f in ("@tensor", "@format", "@bpw", "@metric", "@best_format", "@ratio"):
        assert f in fields


@pytest.mark.parametrize("n_formats", [12, 70])
def test_error_heatmap_stays_readable_with_many_columns(n_formats):
    """Up to FIT_COLUMNS formats the heatmap stretches to the page; beyond, every column gets
    COLUMN_PX pixels (the page scrolls it sideways), at least a 7-point label's height, so the
    upright format labels cannot overlap whatever the number of formats."""
    from workbench.views.tensors import COLUMN_PX, FIT_COLUMNS
    rng = np.random.default_rng(3)
    df = pd.DataFrame([(f"w{t}", f"F{i:02d}", 2 + i * 0.1, float(rng.uniform(0.01, 0.5)))
                       for t in range(3) for i in range(n_formats)], columns=["tensor", "format", "bpw", "nmse"])
    plot = hv.render(error_heatmap(relative_error_table(df), row_height=22), backend="bokeh")
    assert len(plot.x_range.factors) == n_formats
    if n_formats > FIT_COLUMNS:
        assert plot.frame_width == COLUMN_PX * n_formats and plot.sizing_mode in (None, "fixed")
        assert plot.frame_width / n_formats >= 7 * 96 / 72 + 2      # a 7-pt line plus a gap, in px
    else:
        assert plot.sizing_mode in ("stretch_width", "stretch_both", "scale_width")
    assert plot.xaxis[0].major_label_orientation == pytest.approx(math.pi / 2)


def test_error_heatmap_inf_ratio_and_several_models_render():
    df = pd.DataFrame([("m", "t", "X", 8.0, 0.0), ("m", "t", "Y", 8.0, 1e-3),
                       ("n", "t", "X", 8.0, 2e-3), ("n", "t", "Y", 8.0, 1e-3)],
                      columns=["model", "tensor", "format", "bpw", "nmse"])
    hm = error_heatmap(relative_error_table(df))
    plot = hv.render(hm, backend="bokeh")
    assert list(plot.y_range.factors) == ["n · t", "m · t"]


def test_histograms():
    rng = np.random.default_rng(2)
    x = rng.standard_normal((16, 64)).astype(np.float32)
    h = weight_histogram(x, bins=50)
    assert isinstance(h, hv.Histogram)
    assert h.kdims[0].name == "weight" and h.vdims[0].name == "count"
    assert len(h.dimension_values("count")) == 50 and h.dimension_values("count").sum() == x.size
    hv.render(h, backend="bokeh")

    y = reconstruct(x, "Q4_0")
    e = error_histogram(x, y)
    assert isinstance(e, hv.Histogram) and e.kdims[0].name == "error"
    assert "y − x" in e.kdims[0].label
    assert e.dimension_values("count").sum() == x.size
    edges = e.edges
    assert edges[0] == pytest.approx(float((y.astype(np.float64) - x).min()))
    hv.render(e, backend="bokeh")
    hv.render(error_histogram(x, x.copy()), backend="bokeh")    # zero error: one spike
    with pytest.raises(ValueError):
        error_histogram(x, y[:, :32])


@pytest.mark.parametrize("fmt", ["Q4_0", "Q4s32"])
@pytest.mark.parametrize("shape", [(8, 64), (2, 4, 64)])
def test_reconstruct_round_trip(fmt, shape):
    x = np.random.default_rng(3).standard_normal(shape).astype(np.float32)
    y = reconstruct(x, fmt)
    assert y.shape == x.shape and y.dtype == np.float32
    nmse = float(((y.astype(np.float64) - x) ** 2).sum() / (x.astype(np.float64) ** 2).sum())
    assert 0 < nmse < 0.02
    np.testing.assert_array_equal(reconstruct(x, fmt), y)    # deterministic


def test_reconstruct_rejects_unknown_format():
    with pytest.raises(ValueError):
        reconstruct(np.ones((2, 32), np.float32), "not-a-format")


# ------------------------------------------------------- vectorized vs a straightforward loop
def _reference_relative(df: pd.DataFrame, metric: str, tolerance: float) -> dict:
    """The definition, one row at a time: {(tensor, format): (best_format, best_metric, ratio)}."""
    out = {}
    for t, g in df.groupby("tensor", sort=False):
        recs = list(zip(g["format"], g["bpw"].astype(float), g[metric].astype(float)))
        for f, b, v in recs:
            if not (np.isfinite(v) and np.isfinite(b)):
                out[t, f] = (None, np.nan, np.nan)
                continue
            lim = tolerance * abs(b) * (1 + 1e-9) + 1e-12
            cand = sorted((bj, fj, vj) for fj, bj, vj in recs
                          if np.isfinite(vj) and np.isfinite(bj) and abs(bj - b) <= lim)
            best = min(vj for _, _, vj in cand)
            winner = f if v == best else next(fj for _, fj, vj in cand if vj == best)
            ratio = 1.0 if v == best else (v / best if best > 0 else np.inf)
            out[t, f] = (winner, best, ratio)
    return out


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("tolerance", [0.0, 0.02, 0.05, 0.3])
def test_relative_table_matches_the_reference_on_random_data(seed, tolerance):
    rng = np.random.default_rng(seed)
    n_tensors, n_formats = 7, 60
    bpw_levels = rng.uniform(2.0, 9.0, 25).round(3)      # shared levels: exact bpw ties
    rows = []
    for t in range(n_tensors):
        for f in rng.permutation(n_formats):                # input order differs per tensor
            v = float(rng.lognormal(-5, 2))
            if rng.random() < 0.3:                          # zeros and repeated values: ties
                v = float(rng.choice([v, 0.0, 1e-3]))
            if rng.random() < 0.05:
                v = np.nan
            b = float(rng.choice(bpw_levels)) + (float(rng.normal(0, 0.05)) if rng.random() < 0.5 else 0.0)
            rows.append((f"t{t}", f"F{f:02d}", b, v))
    df = pd.DataFrame(rows, columns=["tensor", "format", "bpw", "nmse"])
    df.loc[rng.choice(len(df), 5, replace=False), "bpw"] = np.nan
    rel = relative_error_table(df, "nmse", tolerance)
    ref = _reference_relative(df, "nmse", tolerance)
    assert len(rel) == len(df) == len(ref)
    # row order: tensors in order of first appearance, rows in input order within a tensor
    assert list(zip(rel["tensor"], rel["format"])) == list(zip(df["tensor"], df["format"]))
    for t, f, b, m, r in zip(rel["tensor"], rel["format"], rel["best_format"], rel["best_metric"], rel["ratio"]):
        want = ref[t, f]
        assert (b if isinstance(b, str) else None) == want[0], (t, f)
        np.testing.assert_equal([m, r], [want[1], want[2]])


def test_relative_table_full_sweep_shape_is_fast():
    """A frame the size of a full sweep (40 tensors × 462 formats) in well under a second
    (the row-by-row loop it replaced took ~2 s)."""
    import time
    rng = np.random.default_rng(5)
    bpw = rng.uniform(2, 9, 462)
    df = pd.DataFrame({"model": "m", "imatrix": "", "tensor": np.repeat([f"t{i}" for i in range(40)], 462),
                       "format": np.tile([f"F{j}" for j in range(462)], 40), "bpw": np.tile(bpw, 40),
                       "nmse": rng.lognormal(-6, 1, 40 * 462)})
    t0 = time.perf_counter()
    rel = relative_error_table(df)
    assert time.perf_counter() - t0 < 0.5
    assert len(rel) == len(df) and (rel["ratio"] >= 1).all()


def test_relative_table_empty_one_row_missing_columns_and_nan_bpw():
    empty = relative_error_table(pd.DataFrame(columns=["tensor", "format", "bpw", "nmse"]))
    assert empty.empty and list(empty.columns) == ["tensor", "format", "bpw", "metric", "best_format",
                                                   "best_metric", "ratio"]
    one = relative_error_table(pd.DataFrame([("t", "Q4_0", 4.5, 0.01)], columns=["tensor", "format", "bpw", "nmse"]))
    assert one[["best_format", "best_metric", "ratio"]].iloc[0].tolist() == ["Q4_0", 0.01, 1.0]
    with pytest.raises(ValueError, match="bpw"):
        relative_error_table(pd.DataFrame(columns=["tensor", "format", "nmse"]))
    # a row without a bpw is compared with nothing and never wins
    nan_bpw = relative_error_table(pd.DataFrame([("t", "A", np.nan, 1e-9), ("t", "B", 4.0, 0.01)],
                                                columns=["tensor", "format", "bpw", "nmse"])).set_index("format")
    assert pd.isna(nan_bpw.loc["A", "best_format"]) and np.isnan(nan_bpw.loc["A", "ratio"])
    assert nan_bpw.loc["B", "best_format"] == "B" and nan_bpw.loc["B", "ratio"] == 1.0


# ------------------------------------------------------------------ what the page shows
def _catalog_input() -> pd.DataFrame:
    rows = [  # format, family, block, scale_dtype, super_bits, bpw (two tensors: median)
        ("Q4_0", "ggml", 32, "f16", None, 4.5), ("Q4_K", "ggml", 256, "f16", None, 4.5),
        ("Q4s32", "uniform", 32, "f16", None, 4.5), ("Q4s64", "uniform", 64, "f16", None, 4.25),
        ("Q4s32_e4m3", "uniform", 32, "e4m3", None, 4.26),
        ("Q(4s8)xQ(6s8)", "uniform", 8, "f16", 6, 4.9),
    ]
    df = pd.DataFrame(rows, columns=["format", "family", "block", "scale_dtype", "super_bits", "bpw"])
    second = df.assign(bpw=df["bpw"] + 0.5)
    second.loc[second["format"] == "Q4_K", "bpw"] = 5.5      # a fallback on one tensor: median 5.0
    return pd.concat([df.assign(tensor="a"), second.assign(tensor="b")], ignore_index=True)


def test_format_catalog_kinds_and_bpw_order():
    cat = format_catalog(_catalog_input())
    assert list(cat.columns) == ["format", "kind", "family", "block", "bpw"]
    assert list(cat["format"]) == ["Q4s64", "Q4s32_e4m3", "Q4_0", "Q4s32", "Q4_K", "Q(4s8)xQ(6s8)"]
    kinds = dict(zip(cat["format"], cat["kind"]))
    assert kinds == {"Q4_0": "llama.cpp", "Q4_K": "llama.cpp", "Q4s32": "single f16", "Q4s64": "single f16",
                     "Q4s32_e4m3": "single e4m3", "Q(4s8)xQ(6s8)": "double f16"}
    assert cat.set_index("format").loc["Q4_K", "bpw"] == pytest.approx(5.0)
    assert format_catalog(_catalog_input().iloc[:0]).empty


def test_pick_formats_by_kind_block_and_regex():
    cat = format_catalog(_catalog_input())
    assert pick_formats(cat, DEFAULT_FORMAT_KINDS, DEFAULT_BLOCK) == ["Q4_0", "Q4s32", "Q4_K"]
    assert pick_formats(cat, DEFAULT_FORMAT_KINDS) == ["Q4s64", "Q4_0", "Q4s32", "Q4_K"]
    assert pick_formats(cat, ["single e4m3", "double f16"], 8) == ["Q(4s8)xQ(6s8)"]
    assert pick_formats(cat, cat["kind"].unique(), None, r"_K$|e4m3") == ["Q4s32_e4m3", "Q4_K"]
    assert pick_formats(cat, [], None) == []
    assert pick_formats(cat, DEFAULT_FORMAT_KINDS, None, "^nothing") == []
    with pytest.raises(ValueError) as e:
        pick_formats(cat, DEFAULT_FORMAT_KINDS, None, "Q4(")
    assert "format regex" in str(e.value) and "\n" not in str(e.value)


def test_pick_tensors_by_kind_and_regex():
    names = ["embeddings.word_embeddings.weight", "encoder.layer.0.attention.self.query.weight",
             "encoder.layer.0.intermediate.dense.weight", "encoder.layer.0.output.dense.weight",
             "pooler.dense.weight"]
    assert pick_tensors(names) == names
    assert pick_tensors(names, ["feed-forward"]) == names[2:4]
    assert pick_tensors(names, ["attention", "other"]) == [names[1], names[4]]
    assert pick_tensors(names, None, r"dense") == names[2:]
    assert pick_tensors(names, ["embedding"], r"dense") == []
    with pytest.raises(ValueError, match="tensor regex"):
        pick_tensors(names, None, "[")


def test_default_error_format_prefers_the_best_ranked_llama_cpp_type():
    cat = format_catalog(_catalog_input())
    rel = pd.DataFrame([("a", "Q4_0", 4.5, 1.30), ("a", "Q4_K", 4.5, 1.10), ("a", "Q4s32", 4.5, 1.0),
                        ("b", "Q4s64", 4.75, 1.2), ("b", "Q4s32", 5.0, 1.0)],
                       columns=["tensor", "format", "bpw", "ratio"])
    assert default_error_format(rel, "a", cat) == "Q4_K"          # lowest ratio among llama.cpp's
    assert default_error_format(rel, "b", cat) == "Q4s64"         # none: the first by bpw
    assert default_error_format(rel, "c", cat) is None
    tie = rel.assign(ratio=1.0)
    assert default_error_format(tie, "a", cat) == "Q4_0"          # tie: lower bpw, then name


def test_stats_plot_rows_values_and_alignment_with_the_heatmap():
    stats = pd.DataFrame([dict(name="w1", std=0.5, absmax=4.0, absmax_over_std=8.0, excess_kurtosis=3.25),
                          dict(name="w0", std=0.25, absmax=1.0, absmax_over_std=4.0, excess_kurtosis=-0.5)])
    rows = ["w1", "w0", "w9"]                                    # w9: no statistics (shown as a dash)
    sp = stats_plot(stats, rows, row_height=20)
    cells, labels = sp.get(0), sp.get(1)
    assert isinstance(cells, hv.HeatMap) and isinstance(labels, hv.Labels)
    assert [d.name for d in cells.kdims] == ["stat", "row"]
    text = {(s, r): t for s, r, t in zip(labels.dimension_values("stat"), labels.dimension_values("row"),
                                         labels.dimension_values("text"))}
    assert text[("std", "w1")] == "0.5" and text[("absmax/std", "w0")] == "4"
    assert text[("excess kurtosis", "w0")] == "-0.5" and text[("std", "w9")] == "–"
    shade = {(s, r): v for s, r, v in zip(cells.dimension_values("stat"), cells.dimension_values("row"),
                                          cells.dimension_values("shade"))}
    assert shade[("std", "w1")] > shade[("std", "w0")] and np.isnan(shade[("std", "w9")])

    rel = relative_error_table(pd.DataFrame([(r, f, b, v) for r in rows for f, b, v in
                                             (("X", 4.0, 0.1), ("Y", 4.1, 0.2))],
                                            columns=["tensor", "format", "bpw", "nmse"]))
    hm = error_heatmap(rel, row_height=20)
    a, b = hv.render(sp, backend="bokeh"), hv.render(hm, backend="bokeh")
    assert a.frame_height == b.frame_height == frame_height(3, 20) == 180      # 3 rows: the minimum
    assert frame_height(40, 20) == 800
    assert list(a.y_range.factors) == list(b.y_range.factors)
    assert a.title.text == "tensor statistics"
    for plot in (a, b):   # no zoom or pan: they would move one plot's rows and not the other's
        tools = {type(t).__name__ for t in plot.tools}
        assert "TapTool" in tools and not tools & {"WheelZoomTool", "BoxZoomTool", "PanTool"}
    assert hv.render(stats_plot(stats.iloc[:0], ["w0"]), backend="bokeh").frame_height == 180


def test_histogram_titles():
    x = np.random.default_rng(4).standard_normal((4, 32)).astype(np.float32)
    assert weight_histogram(x, title="w0: weights").opts.get().kwargs["title"] == "w0: weights"
    assert error_histogram(x, x, title="w0: error of Q4_0").opts.get().kwargs["title"] == "w0: error of Q4_0"
    assert weight_histogram(x).opts.get().kwargs["title"] == "weight distribution"
