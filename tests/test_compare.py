"""Two stores compared (workbench.views.compare): pure functions, no store, no browser."""
from __future__ import annotations

import holoviews as hv
import numpy as np
import pandas as pd
import pytest

from workbench.views.compare import (COMPARE_KEY, COMPARE_METRICS, RUN_COLUMNS, compare_stores,
                                     comparison_scatter, format_comparison, ratio_plot, runs_table)

FORMATS = {"Q4s32": ("uniform", 4.5), "Q4_0": ("ggml", 4.5), "Q8s32": ("uniform", 8.5)}
TENSORS = {"t.a": 1000, "t.b": 3000, "t.c": 500}


def rows(tensors=TENSORS, formats=FORMATS, scale=1.0, run="r1", device="cpu-a", **extra) -> pd.DataFrame:
    """A results-like frame: every tensor × format, with errors that differ per (tensor, format)."""
    out = []
    for i, (t, numel) in enumerate(tensors.items()):
        for j, (f, (family, bpw)) in enumerate(formats.items()):
            nmse = 1e-3 * (1 + i) / (1 + 4 * j)
            out.append(dict(model="m", tensor=t, format=f, imatrix="", family=family, bpw=bpw, numel=numel,
                            nmse=nmse, mse=nmse * 0.01, sqnr_db=-10 * np.log10(nmse), bnl=nmse * 3, bnl_seed=nmse * 3.2,
                            cosine=1 - nmse / 2, max_abs_err=0.1 * (1 + i + j), wnmse=np.nan, wmse=np.nan,
                            quant_s=scale * numel * 1e-8 * (1 + j), dequant_s=scale * numel * 1e-9 * (1 + j),
                            run_id=run, host="h", device=device, backend="numba-cpu",
                            workbench_version="0.1.0", git_rev="abc", packages="{}",
                            created_at=pd.Timestamp("2026-01-01", tz="UTC"), **extra))
    return pd.DataFrame(out)


# ----------------------------------------------------------------------------- compare_stores
@pytest.mark.parametrize("metric", list(COMPARE_METRICS))
def test_identical_stores_give_ratio_one_exactly(metric):
    a = rows()
    t = compare_stores(a, a.copy(), metric)
    assert len(t) == len(TENSORS) * len(FORMATS)
    finite = np.isfinite(t[f"{metric}_a"].astype(float))
    assert (t.loc[finite, "ratio"] == 1.0).all()
    assert t["match"].all()                     # NaN (no imatrix: wnmse) matches NaN
    assert (t["n_a"] == 1).all() and (t["n_b"] == 1).all()
    f = format_comparison(t)
    assert len(f) == len(FORMATS) and f["match"].all() and (f["mismatches"] == 0).all()
    assert (f.loc[np.isfinite(f[f"{metric}_a"].astype(float)), "ratio"] == 1.0).all()


def test_equal_zeros_and_infinities_give_ratio_one():
    a = rows()
    a.loc[0, "nmse"] = 0.0
    a.loc[1, "nmse"] = np.inf
    t = compare_stores(a, a.copy(), "nmse").set_index(["tensor", "format"])
    assert t.loc[(a.tensor[0], a.format[0]), "ratio"] == 1.0
    assert t.loc[(a.tensor[1], a.format[1]), "ratio"] == 1.0
    b = a.copy()
    b.loc[0, "nmse"] = 1e-3                      # 0 vs nonzero: ratio 0, a mismatch
    t = compare_stores(a, b, "nmse").set_index(["tensor", "format"])
    assert t.loc[(a.tensor[0], a.format[0]), "ratio"] == 0.0
    assert not t.loc[(a.tensor[0], a.format[0]), "match"]


def test_disjoint_stores_give_an_empty_table():
    a = rows(tensors={"t.a": 10})
    b = rows(tensors={"t.z": 10})
    t = compare_stores(a, b)
    assert t.empty and list(t.columns[:4]) == list(COMPARE_KEY)
    assert {"nmse_a", "nmse_b", "ratio", "match"} <= set(t.columns)
    f = format_comparison(t)
    assert f.empty and "ratio" in f.columns
    hv.render(comparison_scatter(t))
    hv.render(ratio_plot(f))
    # same tensors, no shared format
    assert compare_stores(rows(formats={"Q4s32": ("uniform", 4.5)}), rows(formats={"Q4_0": ("ggml", 4.5)})).empty


@pytest.mark.parametrize("empty", [pd.DataFrame(), rows().iloc[:0]])
def test_one_empty_store(empty):
    for a, b in ((rows(), empty), (empty, rows()), (empty, empty)):
        t = compare_stores(a, b, "quant_wps")
        assert t.empty and "quant_wps_a" in t.columns and t.attrs["metric"] == "quant_wps"
        assert format_comparison(t).empty


def test_one_row_each():
    a = rows(tensors={"t.a": 10}, formats={"Q4_0": ("ggml", 4.5)})
    b = a.copy()
    b["nmse"] = a["nmse"] * 2
    t = compare_stores(a, b)
    assert len(t) == 1 and t["ratio"].iloc[0] == 0.5 and not t["match"].iloc[0]
    f = format_comparison(t)
    assert len(f) == 1 and f["ratio"].iloc[0] == 0.5 and f["mismatches"].iloc[0] == 1


def test_a_one_ulp_difference_is_a_mismatch_unless_rtol():
    a = rows()
    b = a.copy()
    b.loc[4, "nmse"] = np.nextafter(b.loc[4, "nmse"], 1.0)
    t = compare_stores(a, b).set_index(["tensor", "format"])
    bad = t[~t["match"]]
    assert list(bad.index) == [(a.tensor[4], a.format[4])]
    assert bad["ratio"].iloc[0] == a.nmse[4] / b.nmse[4] and bad["ratio"].iloc[0] != 1.0
    assert compare_stores(a, b, rtol=1e-12)["match"].all()
    f = format_comparison(compare_stores(a, b)).set_index("format")
    assert f.loc[a.format[4], "mismatches"] == 1 and f["mismatches"].sum() == 1
    with pytest.raises(ValueError, match="rtol"):
        compare_stores(a, b, rtol=-1)


def test_repeated_rows_reduce_mean_for_errors_best_for_throughput():
    a = rows(tensors={"t.a": 1000}, formats={"Q4_0": ("ggml", 4.5)})
    other = a.copy()
    other["nmse"] = a["nmse"] * 3
    other["quant_s"] = a["quant_s"] / 2            # a faster second run
    other["device"] = "cpu-b"
    a2 = pd.concat([a, other], ignore_index=True)
    t = compare_stores(a2, a, "nmse")
    assert t["n_a"].iloc[0] == 2 and t["n_b"].iloc[0] == 1
    assert t["nmse_a"].iloc[0] == pytest.approx(a["nmse"].iloc[0] * 2, rel=1e-15)
    q = compare_stores(a2, a, "quant_wps")
    assert q["quant_wps_a"].iloc[0] == 1000 / other["quant_s"].iloc[0]
    assert q["ratio"].iloc[0] == pytest.approx(2.0, rel=1e-12)   # A's best run is twice as fast


def test_throughput_ratio_direction_and_format_aggregate():
    a = rows(scale=0.5)                            # A takes half the time: twice the throughput
    b = rows(scale=1.0)
    t = compare_stores(a, b, "quant_wps")
    assert np.allclose(t["ratio"], 2.0, rtol=1e-12)
    f = format_comparison(t).set_index("format")
    for fmt in FORMATS:
        ra, rb = a[a.format == fmt], b[b.format == fmt]
        assert f.loc[fmt, "quant_wps_a"] == pytest.approx(ra.numel.sum() / ra.quant_s.sum(), rel=1e-12)
        assert f.loc[fmt, "quant_wps_b"] == pytest.approx(rb.numel.sum() / rb.quant_s.sum(), rel=1e-12)
        assert f.loc[fmt, "ratio"] == pytest.approx(2.0, rel=1e-12)


def test_format_aggregates_use_only_tensors_both_measured():
    a = rows()
    b = rows(tensors={"t.a": 1000, "t.b": 3000})  # B lacks t.c
    b["nmse"] *= 2
    f = format_comparison(compare_stores(a, b)).set_index("format")
    assert (f["tensors"] == 2).all()
    for fmt in FORMATS:
        ra = a[(a.format == fmt) & (a.tensor != "t.c")]
        want = (ra.nmse * ra.numel).sum() / ra.numel.sum()
        assert f.loc[fmt, "nmse_a"] == pytest.approx(want, rel=1e-12)
        assert f.loc[fmt, "ratio"] == pytest.approx(0.5, rel=1e-12)


def test_sqnr_and_peak_aggregates():
    a = rows()
    f = format_comparison(compare_stores(a, a, "sqnr_db")).set_index("format")
    m = format_comparison(compare_stores(a, a, "max_abs_err")).set_index("format")
    for fmt in FORMATS:
        ra = a[a.format == fmt]
        nmse = (ra.nmse * ra.numel).sum() / ra.numel.sum()
        assert f.loc[fmt, "sqnr_db_a"] == pytest.approx(-10 * np.log10(nmse), rel=1e-12)
        assert m.loc[fmt, "max_abs_err_a"] == ra.max_abs_err.max()


def test_null_imatrix_matches_empty_string():
    a = rows()
    b = a.copy()
    b["imatrix"] = None
    assert len(compare_stores(a, b)) == len(a)
    c = a.copy()
    c["imatrix"] = "fp123"                          # another importance matrix: another key
    assert compare_stores(a, c).empty


def test_bad_input_raises_one_line():
    with pytest.raises(ValueError, match="unknown metric"):
        compare_stores(rows(), rows(), "speed")
    with pytest.raises(ValueError, match="store B has no column.*numel"):
        compare_stores(rows(), rows().drop(columns="numel"))
    with pytest.raises(ValueError, match="store A has no column.*quant_s"):
        compare_stores(rows().drop(columns="quant_s"), rows(), "quant_wps")
    with pytest.raises(ValueError, match="not a compare_stores table"):
        format_comparison(pd.DataFrame({"x": [1]}))


# -------------------------------------------------------------------------------- provenance
def test_runs_table():
    early = rows(run="r1", device="cpu-a")
    late = rows(tensors={"t.a": 1000}, run="r2", device="gpu-b")
    late["created_at"] = pd.Timestamp("2026-02-01", tz="UTC")
    early.loc[0, "created_at"] = pd.Timestamp("2025-12-31", tz="UTC")
    runs = runs_table(pd.concat([late, early], ignore_index=True))
    assert list(runs.columns) == list(RUN_COLUMNS)
    assert list(runs.run_id) == ["r1", "r2"]       # oldest first
    assert list(runs.device) == ["cpu-a", "gpu-b"]
    assert list(runs.rows) == [len(early), len(late)]
    assert list(runs.tensors) == [3, 1] and list(runs.formats) == [3, 3]
    assert runs.created_at.iloc[0] == pd.Timestamp("2025-12-31", tz="UTC")


def test_runs_table_old_file_and_empty():
    old = rows().drop(columns=["git_rev", "packages", "host"])
    runs = runs_table(old)
    assert len(runs) == 1 and runs.git_rev.isna().all() and runs.host.isna().all()
    assert list(runs_table(pd.DataFrame()).columns) == list(RUN_COLUMNS)
    with pytest.raises(ValueError, match="run_id"):
        runs_table(rows().drop(columns="run_id"))


# ------------------------------------------------------------------------------------- plots
def test_comparison_scatter_marks_mismatches_and_draws_the_diagonal():
    a = rows()
    b = a.copy()
    b.loc[2, "nmse"] *= 1.5
    t = compare_stores(a, b)
    ov = comparison_scatter(t, "nmse")
    points = next(e for e in ov if isinstance(e, hv.Points))
    assert sorted(set(points.dimension_values("agreement"))) == ["differs", "identical"]
    assert list(points.dimension_values("agreement")).count("differs") == 1
    diag = next(e for e in ov if isinstance(e, hv.Curve))
    xs, ys = diag.dimension_values(0), diag.dimension_values(1)
    assert list(xs) == list(ys)
    vals = np.concatenate([t.nmse_a, t.nmse_b])
    assert xs.min() == vals.min() and xs.max() == vals.max()
    fig = hv.render(ov)
    assert type(fig.x_scale).__name__ == "LogScale"
    fig = hv.render(comparison_scatter(format_comparison(t), "nmse"))   # per-format table too
    with pytest.raises(ValueError, match="quant_wps_a"):
        comparison_scatter(t, "quant_wps")


def test_ratio_plot_keeps_one_in_range():
    a = rows()
    f = format_comparison(compare_stores(a, a, "dequant_wps"))
    ov = ratio_plot(f, "dequant_wps")
    lo, hi = ov.opts.get().kwargs["ylim"]
    assert lo < 1.0 < hi
    assert len(next(e for e in ov if isinstance(e, hv.Points))) == len(FORMATS)
    hv.render(ov)
    with pytest.raises(ValueError, match="bpw"):
        ratio_plot(f.drop(columns="bpw"), "dequant_wps")


def test_log_axes_label_their_data_range_without_e_notation():
    """Ratios between 0.6 and 5, and nmse values at 1e-4..1e-2: the ticks sit inside the data,
    written as plain numbers; the hover reads at least 4 significant digits."""
    a = rows()
    b = a.copy()
    b["nmse"] = a["nmse"] / np.linspace(0.6, 5.0, len(a))
    t = compare_stores(a, b)
    f = format_comparison(t)
    fig = hv.render(ratio_plot(t, "nmse"))
    ticks = fig.yaxis[0].ticker.ticks
    assert len([v for v in ticks if 0.6 <= v <= 5.0]) >= 3
    assert all("e" not in fig.yaxis[0].major_label_overrides[v] for v in ticks)
    hover = next(tool for tool in fig.tools if type(tool).__name__ == "HoverTool")
    assert dict(hover.tooltips)["A / B"].endswith("{0.000000}")          # 1.0000xx: 7 significant digits
    fig = hv.render(comparison_scatter(t, "nmse"))
    vals = np.concatenate([t.nmse_a, t.nmse_b])
    for axis in (fig.xaxis[0], fig.yaxis[0]):
        inside = [v for v in axis.ticker.ticks if vals.min() <= v <= vals.max()]
        assert len(inside) >= 3 and all("e" not in axis.major_label_overrides[v] for v in axis.ticker.ticks)
    assert len(f) == len(FORMATS)
