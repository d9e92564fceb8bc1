"""The Tensors page's browser-free core (workbench.views.tensors)."""
from __future__ import annotations

import math
import warnings

import holoviews as hv
import numpy as np
import pandas as pd
import pytest

from workbench.views.tensors import (LOWER_IS_BETTER, error_heatmap, error_histogram,
                                     reconstruct, relative_error_table, tensor_stats,
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
