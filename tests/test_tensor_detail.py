"""One tensor in depth (workbench.views.tensor_detail): pure functions, no store, no browser."""
from __future__ import annotations

import math

import holoviews as hv
import numpy as np
import pandas as pd
import pytest

from workbench.kernels.scales import ENCODINGS
from workbench.views.tensor_detail import (MAGNITUDE_COLUMNS, VERSUS_COLUMNS, block_absmax,
                                           block_error_share, error_by_magnitude,
                                           error_by_magnitude_plot, error_share_plot,
                                           fp8_scale_floor, row_spread, row_spread_plot,
                                           scale_range_histogram, share_in_worst, versus_llama_cpp)
from workbench.views.tensors import reconstruct


# ------------------------------------------------------------------------------ block scales
def test_block_absmax_with_a_short_tail_block():
    x = np.array([[1, -5, 2, 0, 0, -3, 7],
                  [0, 0, 0, 0, 0, 0, -1]], np.float32)
    assert block_absmax(x, 3).tolist() == [[5, 3, 7], [0, 0, 1]]
    assert block_absmax(x, 7).tolist() == [[7], [1]]
    assert block_absmax(x, 100).tolist() == [[7], [1]]
    assert np.array_equal(block_absmax(x, 1), np.abs(x))
    assert block_absmax(x[0], 2).tolist() == [[5, 2, 3, 7]]      # 1-D: one row
    with pytest.raises(ValueError, match="block"):
        block_absmax(x, 0)
    with pytest.raises(ValueError, match="non-empty"):
        block_absmax(np.zeros((0, 4)), 2)


@pytest.mark.parametrize("enc", ["e4m3", "e5m2"])
def test_fp8_floor_agrees_with_the_kernels_table(enc):
    normal, sub = fp8_scale_floor(enc)
    e = ENCODINGS[enc]
    assert sub == math.log2(e.min_subnormal / e.max_finite)
    mbits = {"e4m3": 3, "e5m2": 2}[enc]           # subnormals: mantissa bits below the smallest normal
    assert normal - sub == pytest.approx(mbits, abs=1e-12)


def test_fp8_floor_values_and_bad_name():
    assert fp8_scale_floor("e4m3") == (math.log2(2**-6 / 448), math.log2(2**-9 / 448))
    with pytest.raises(ValueError, match="e4m3"):
        fp8_scale_floor("f16")


def test_scale_range_histogram_counts_nonzero_blocks_and_marks_floors():
    x = np.zeros((4, 64), np.float32)
    x[0, :32] = 1.0                     # the largest block: log2 ratio 0
    x[1, 32:] = 2.0 ** -10              # ten binades below it
    ov = scale_range_histogram(x, 32, encodings=("e4m3",), bins=20)
    hist = next(e for e in ov if isinstance(e, hv.Histogram))
    counts = hist.dimension_values(1)
    edges = hist.interface.coords(hist, hist.kdims[0], edges=True)
    assert counts.sum() == 2                       # six all-zero blocks carry no scale
    assert edges[0] == -10 and edges[-1] == 0
    lines = sorted(float(e.dimension_values(0)[0]) for e in ov if isinstance(e, hv.Curve))
    assert lines == sorted(fp8_scale_floor("e4m3"))
    assert ov.opts.get().kwargs["xlim"][0] < min(lines)           # the floors are in view
    hv.render(ov)
    empty = scale_range_histogram(np.zeros((2, 8)), 4)   # no block has a scale
    assert next(e for e in empty if isinstance(e, hv.Histogram)).dimension_values(1).sum() == 0


def test_row_spread():
    x = np.array([[3, -4, 0, 0], [0, 0, 0, 0], [1, 1, 1, -1]], np.float32)
    r = row_spread(x)
    assert r["absmax"].tolist() == [4, 0, 1]
    assert r["rms"].tolist() == pytest.approx([math.sqrt(25 / 4), 0, 1])
    assert r["absmax_over_rms"].tolist() == pytest.approx([4 / 2.5, 0, 1])
    assert list(r["row"]) == [0, 1, 2]
    fig = hv.render(row_spread_plot(r))
    assert type(fig.y_scale).__name__ == "LogScale"


# ------------------------------------------------------------------------ where error lands
def test_error_by_magnitude_bins_every_element_once():
    rng = np.random.default_rng(3)
    x = rng.laplace(0, 0.05, (64, 96)).astype(np.float32)
    x[0, :5] = 0.0
    y = (x + rng.normal(0, 0.01, x.shape)).astype(np.float32)
    t = error_by_magnitude(x, y, bins=16)
    assert list(t.columns) == list(MAGNITUDE_COLUMNS)
    assert t["count"].sum() == x.size
    assert t["share_of_sse"].sum() == pytest.approx(1.0, rel=1e-12)
    assert t["abs_lo"].iloc[0] == 0.0 and t["abs_hi"].iloc[-1] == pytest.approx(np.abs(x).max(), rel=1e-12)
    # each bin's rms error, recomputed from its edges (the last bin includes absmax)
    a, e2 = np.abs(x.astype(np.float64)), (y.astype(np.float64) - x) ** 2
    for row in t.itertuples():
        inside = (a >= row.abs_lo) & ((a < row.abs_hi) | (row.abs_hi == t["abs_hi"].iloc[-1]))
        assert inside.sum() == row.count
        assert row.rms_error == pytest.approx(math.sqrt(e2[inside].mean()), rel=1e-12)


def test_error_by_magnitude_edge_cases():
    x = np.ones((2, 4), np.float32)
    t = error_by_magnitude(x, x)                   # one magnitude, no error
    assert t["count"].sum() == 8 and (t["rms_error"] == 0).all() and (t["share_of_sse"] == 0).all()
    z = error_by_magnitude(np.zeros((2, 3)), np.full((2, 3), 0.5))
    assert len(z) == 1 and z["count"].iloc[0] == 6 and z["rms_error"].iloc[0] == 0.5
    one = error_by_magnitude(np.array([[2.0]]), np.array([[1.5]]))
    assert one["count"].tolist() == [1] and one["rms_error"].tolist() == [0.5]
    with pytest.raises(ValueError, match="shape"):
        error_by_magnitude(np.zeros((2, 3)), np.zeros((3, 2)))


def test_block_error_share():
    x = np.zeros((2, 8), np.float32)
    y = x.copy()
    y[1, 5] = 3.0                                   # all the error in one block of four
    s = block_error_share(x, y, block=4)
    assert s["blocks"].tolist()[0] == 1 and s["blocks"].tolist()[-1] == 4
    assert (s["share_of_sse"] == 1.0).all()
    assert share_in_worst(s, 0.25) == 1.0
    even = block_error_share(x, x + 1.0, block=4)   # every block the same error
    assert np.allclose(even["share_of_sse"], even["fraction_of_blocks"], rtol=1e-12)
    none = block_error_share(x, x, block=4)
    assert (none["share_of_sse"] == 0).all()
    assert math.isnan(share_in_worst(even, 0.1))    # no measured fraction that small
    with pytest.raises(ValueError, match="block"):
        block_error_share(x, y, block=0)


def test_block_error_share_is_monotone_and_ends_at_one():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((50, 100)).astype(np.float32)
    y = (x + rng.standard_normal(x.shape) * rng.random((50, 1))).astype(np.float32)
    s = block_error_share(x, y, block=32, points=40)  # 100 columns: a short fourth block per row
    assert len(s) <= 40 and s["blocks"].iloc[-1] == 50 * 4
    assert (np.diff(s["share_of_sse"]) >= 0).all() and s["share_of_sse"].iloc[-1] == pytest.approx(1.0)
    assert (s["share_of_sse"] >= s["fraction_of_blocks"] - 1e-12).all()   # worst first


def test_plots_render_and_accept_empty_input():
    x = np.linspace(-1, 1, 256, dtype=np.float32).reshape(4, 64)
    y = np.round(x * 7) / 7
    tables = {"a": error_by_magnitude(x, y), "b": error_by_magnitude(x, y * 1.01)}
    hv.render(error_by_magnitude_plot(tables))
    hv.render(error_share_plot({"a": block_error_share(x, y)}))
    hv.render(error_by_magnitude_plot({}))
    hv.render(error_share_plot({}))


def test_on_the_real_tensor(minilm):
    x = next(t for t in minilm.weights() if t.name == "encoder.layer.0.output.dense.weight").load()
    y = reconstruct(x, "Q4s32")
    t = error_by_magnitude(x, y)
    assert t["count"].sum() == x.size and t["share_of_sse"].sum() == pytest.approx(1.0, rel=1e-9)
    s = block_error_share(x, y, 32)
    assert s["blocks"].iloc[-1] == x.size // 32 and s["share_of_sse"].iloc[-1] == pytest.approx(1.0)
    # symmetric absmax: a block's largest |x| is its scale's anchor, reconstructed almost exactly
    amax = block_absmax(x, 32)
    assert block_absmax(y, 32) == pytest.approx(amax, rel=1e-2)


# --------------------------------------------------------------------------- versus llama.cpp
def table(*rows) -> pd.DataFrame:
    return pd.DataFrame([dict(format=f, family=fam, bpw=b, super_bits=sb, nmse=e, sqnr_db=-10 * math.log10(e))
                         for f, fam, b, sb, e in rows])


def test_versus_llama_cpp_picks_the_best_at_no_more_bits():
    df = table(("Q4_0", "ggml", 4.5, None, 0.008), ("Q4_K", "ggml", 4.5, None, 0.005),
               ("Q4s32", "uniform", 4.5, None, 0.008), ("Q4s16_e4m3", "uniform", 4.5, None, 0.006),
               ("Q4s16", "uniform", 5.0, None, 0.001),                 # better, but more bits
               ("Q(4s8)xQ(6s8)_e4m3", "uniform", 5.0, 6, 0.004),
               ("Q(4s16)xQ(6s16)", "uniform", 4.4375, 6, 0.007),
               ("Q2_K", "ggml", 2.625, None, 0.1))
    v = versus_llama_cpp(df).set_index("format")
    assert list(versus_llama_cpp(df).columns) == list(VERSUS_COLUMNS)
    assert list(v.index) == ["Q2_K", "Q4_0", "Q4_K"]                    # by bpw, then name
    assert v.loc["Q4_0", "best_single"] == "Q4s16_e4m3" and v.loc["Q4_0", "single_ratio"] == 0.006 / 0.008
    assert v.loc["Q4_K", "best_double"] == "Q(4s16)xQ(6s16)" and v.loc["Q4_K", "double_ratio"] == 0.007 / 0.005
    assert pd.isna(v.loc["Q2_K", "best_single"]) and math.isnan(v.loc["Q2_K", "single_ratio"])
    # higher-is-better: the ratio is the matching error ratio
    s = versus_llama_cpp(df, "sqnr_db").set_index("format")
    assert s.loc["Q4_0", "best_single"] == "Q4s16_e4m3"
    assert s.loc["Q4_0", "single_ratio"] == pytest.approx(0.006 / 0.008, rel=1e-12)


def test_versus_llama_cpp_ties_go_to_fewer_bits_then_name():
    df = table(("Q4_0", "ggml", 4.5, None, 0.008), ("Zs", "uniform", 4.25, None, 0.006),
               ("As", "uniform", 4.5, None, 0.006), ("Bs", "uniform", 4.25, None, 0.006))
    v = versus_llama_cpp(df)
    assert v["best_single"].tolist() == ["Bs"] and pd.isna(v["best_double"].iloc[0])


def test_versus_llama_cpp_edge_cases():
    one = table(("Q4_0", "ggml", 4.5, None, 0.008))
    v = versus_llama_cpp(one)
    assert len(v) == 1 and pd.isna(v["best_single"].iloc[0])
    assert versus_llama_cpp(table(("Q4s32", "uniform", 4.5, None, 0.008))).empty
    assert versus_llama_cpp(one.iloc[:0]).empty
    with pytest.raises(ValueError, match="super_bits"):
        versus_llama_cpp(one.drop(columns="super_bits"))
    with pytest.raises(ValueError, match="one row per format"):
        versus_llama_cpp(pd.concat([one, one]))
    with pytest.raises(ValueError, match="unknown metric"):
        versus_llama_cpp(one.assign(speed=1.0), "speed")
