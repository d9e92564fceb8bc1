"""The ratio analyses (workbench.views.ratios) on hand-made summaries with known metric values,
and once on a real small sweep."""
from __future__ import annotations

import math

import holoviews as hv
import numpy as np
import pandas as pd
import pytest

from workbench import store as st
from workbench.formats import parse
from workbench.sweep import spec_columns
from workbench.views.ratios import (BPW_TOL, GAIN_STYLE, MAX_CLIP, MIN_CLIP, NO_PAIR_COLOR, OUT_OF_RANGE,
                                    bpw_diff_label, clip_limit, curve_at, double_ratio_table, encoding_key,
                                    encoding_label, encodings_present, error_curve, error_ratio,
                                    gain_row_styles, gain_summary, log_ticks, missing_pairs, paired_summary,
                                    parse_encoding, plain, ratio_heatmap, ratio_scatter, sig,
                                    single_ratio_table, super_bits_present, with_texts)


def summary(rows: dict[str, dict]) -> pd.DataFrame:
    """A summary-like frame: spec columns as the store writes them (``spec_columns(parse(name))``)
    plus the given metrics; bpw defaults to the format's nominal bpw."""
    out = []
    for name, metrics in rows.items():
        spec = parse(name)
        row = spec_columns(spec) | {"bpw": spec.bpw()} | metrics
        out.append(row)
    df = pd.DataFrame(out)
    df["super_bits"] = df["super_bits"].astype("Int16")
    df["super_block"] = df["super_block"].astype("Int32")
    df["super_symmetric"] = df["super_symmetric"].astype("boolean")
    return df


def pairs(table) -> list[tuple[str, str]]:
    return list(zip(table["format_a"], table["format_b"]))


# ------------------------------------------------------------------------------ single
SINGLE = {
    "Q4s16_e4m3": {"nmse": 0.002, "bpw": 4.5},
    "Q4s32": {"nmse": 0.004, "bpw": 4.5},
    "Q4s32_e4m3": {"nmse": 0.003},            # B/2 = 32 pairs with Q4s64 (present below)
    "Q4s64": {"nmse": 0.012},
    "Q4a16_e4m3": {"nmse": 0.003},
    "Q4a32": {"nmse": 0.002},
    "Q3s16_e4m3": {"nmse": 0.010},            # no Q3s32: absent
    "Q5s32": {"nmse": 0.001},                 # no Q5s16_e4m3: absent
    "Q4s16_e4m3_nonorm": {"nmse": 0.100},     # only with normalizer_a=False
    "Q4s16_e4m3_rmse": {"nmse": 0.0001},      # not absmax: never paired
    "Q4s16_e4m3_naive": {"nmse": 0.0002},     # naive: never paired
    "Q4s16_bf16": {"nmse": 0.5},              # another encoding
    "Q4_0": {"nmse": 0.9},                    # llama.cpp type: never paired
}


def test_single_pairs_and_exact_ratios():
    t = single_ratio_table(summary(SINGLE), "e4m3", "f16")
    assert pairs(t) == [("Q4s16_e4m3", "Q4s32"), ("Q4s32_e4m3", "Q4s64"), ("Q4a16_e4m3", "Q4a32")]
    assert list(t["block"]) == [32, 64, 32]
    assert list(t["label"]) == ["s × 32", "s × 64", "a × 32"]
    assert t["ratio"].tolist() == pytest.approx([0.5, 0.25, 1.5], rel=1e-12)
    assert t["log2_ratio"].tolist() == pytest.approx([-1.0, -2.0, math.log2(1.5)], rel=1e-12)
    assert t.loc[0, "bpw_diff"] == 0.0
    assert t.loc[0, "bpw_a"] == 4.5 and t.loc[0, "bpw_b"] == 4.5
    s32e, s64 = parse("Q4s32_e4m3").bpw(), parse("Q4s64").bpw()
    assert t.loc[1, "bpw_diff"] == pytest.approx(s32e - s64)
    assert t.loc[1, "bpw_diff_pct"] == pytest.approx((s32e - s64) / s64 * 100)


def test_single_no_pairing_across_bits_symmetry_or_normalizer():
    df = summary({"Q4s16_e4m3": {"nmse": 1.0}, "Q5s32": {"nmse": 1.0}, "Q4a32": {"nmse": 1.0},
                  "Q4s16_e4m3_nonorm": {"nmse": 1.0}})
    assert single_ratio_table(df, "e4m3", "f16").empty
    df = summary({"Q4s16_e4m3_nonorm": {"nmse": 0.2}, "Q4s16_e4m3": {"nmse": 0.1},
                  "Q4s32": {"nmse": 0.4}, "Q4s32_e4m3": {"nmse": 0.8}})
    # normalizer_a selects the variant on the A side only
    assert pairs(single_ratio_table(df, "e4m3", "f16", normalizer_a=False)) == [("Q4s16_e4m3_nonorm", "Q4s32")]
    assert single_ratio_table(df, "e4m3", "f16", normalizer_a=False)["ratio"].tolist() == [0.5]
    assert pairs(single_ratio_table(df, "e4m3", "f16")) == [("Q4s16_e4m3", "Q4s32")]
    # ... and on the B side: the nonorm Q4s32_e4m3 is absent, so no pair
    assert single_ratio_table(df, "e4m3", "e4m3", normalizer_b=False).empty
    assert pairs(single_ratio_table(df, "e4m3", "e4m3")) == [("Q4s16_e4m3", "Q4s32_e4m3")]


def test_single_same_encoding_and_other_encodings():
    df = summary({"Q4s16_e8m0": {"nmse": 0.3}, "Q4s32_e5m2": {"nmse": 0.6}, "Q4s16_bf16": {"nmse": 0.1},
                  "Q4s32_bf16": {"nmse": 0.4}, "Q4s32_e8m0": {"nmse": 0.9}})
    t = single_ratio_table(df, "e8m0", "e5m2")
    assert pairs(t) == [("Q4s16_e8m0", "Q4s32_e5m2")] and t["ratio"].tolist() == [0.5]
    assert single_ratio_table(df, "bf16", "bf16")["ratio"].tolist() == [0.25]
    assert single_ratio_table(df, "bf16", "f16").empty


def test_higher_is_better_metrics_keep_below_one_means_a_better():
    df = summary({"Q4s16_e4m3": {"nmse": 0.001, "sqnr_db": 30.0, "cosine": 0.999},
                  "Q4s32": {"nmse": 0.01, "sqnr_db": 20.0, "cosine": 0.99}})
    assert single_ratio_table(df, "e4m3", "f16", "sqnr_db")["ratio"].tolist() == pytest.approx([0.1], rel=1e-12)
    assert single_ratio_table(df, "e4m3", "f16", "cosine")["ratio"].tolist() == pytest.approx([0.1], rel=1e-9)
    assert single_ratio_table(df, "e4m3", "f16", "nmse")["ratio"].tolist() == pytest.approx([0.1], rel=1e-12)
    # sqnr ratio is the nmse ratio when sqnr = -10 log10 nmse
    a, b = np.array([0.003, 0.5]), np.array([0.007, 0.25])
    assert error_ratio(-10 * np.log10(a), -10 * np.log10(b), "sqnr_db") == pytest.approx(a / b, rel=1e-12)
    # the metric values themselves are kept as they are
    t = single_ratio_table(df, "e4m3", "f16", "sqnr_db")
    assert (t.loc[0, "metric_a"], t.loc[0, "metric_b"]) == (30.0, 20.0)


@pytest.mark.parametrize("call, needle", [
    (lambda df: single_ratio_table(df, "fp16", "f16"), "unknown scale encoding 'fp16'"),
    (lambda df: single_ratio_table(df, "e4m3", "nope"), "unknown scale encoding 'nope'"),
    (lambda df: single_ratio_table(df, "f16", "f16", normalizer_a=False), "e4m3/e5m2 only, not f16"),
    (lambda df: single_ratio_table(df, "e4m3", "e8m0", normalizer_b=False), "e4m3/e5m2 only, not e8m0"),
    (lambda df: double_ratio_table(df, "bf16", "f16", normalizer_a=False), "e4m3/e5m2 only, not bf16"),
    (lambda df: double_ratio_table(df, "x", "f16"), "unknown scale encoding 'x'"),
    (lambda df: single_ratio_table(df, "e4m3", "f16", metric="quant_wps"), "unknown metric"),
])
def test_bad_arguments_raise_one_line(call, needle):
    df = summary({"Q4s16_e4m3": {"nmse": 0.1}, "Q4s32": {"nmse": 0.2}})
    with pytest.raises(ValueError) as e:
        call(df)
    assert needle in str(e.value) and "\n" not in str(e.value)


# ------------------------------------------------------------------------------ double
DOUBLE = {
    "Q(4s8)xQ(6s8)_e4m3": {"nmse": 0.002},
    "Q(4s16)xQ(6s16)": {"nmse": 0.008},
    "Q(4a8)xQ(6s8)_e4m3": {"nmse": 0.003},
    "Q(4a16)xQ(6s16)": {"nmse": 0.002},
    "Q(4s8)xQ(8s8)_e4m3": {"nmse": 0.001},      # super_bits 8: partner below
    "Q(4s16)xQ(8s16)": {"nmse": 0.004},
    "Q(4s8)xQ(6a8)_e4m3": {"nmse": 0.001},      # super asymmetric: no partner
    "Q(5s16)xQ(6s16)": {"nmse": 0.001},         # 5 bits: no partner
    "Q(4s8)xQ(6s16)_e4m3": {"nmse": 0.0001},    # 8 blocks of 16 is not 8×8
    "Q(4s16)xQ(6s8)": {"nmse": 0.0001},         # nor 16 blocks of 8 16×16
    "Q4s16_e4m3": {"nmse": 0.1}, "Q4s32": {"nmse": 0.1},   # single formats never count
}


def test_double_pairs_ratios_and_percent():
    df = summary(DOUBLE)
    t = double_ratio_table(df, "e4m3", "f16")
    assert pairs(t) == [("Q(4s8)xQ(6s8)_e4m3", "Q(4s16)xQ(6s16)"), ("Q(4s8)xQ(8s8)_e4m3", "Q(4s16)xQ(8s16)"),
                        ("Q(4a8)xQ(6s8)_e4m3", "Q(4a16)xQ(6s16)")]
    assert t["ratio"].tolist() == pytest.approx([0.25, 0.25, 1.5], rel=1e-12)
    assert list(t["label"]) == ["s × Q6s", "s × Q8s", "a × Q6s"]
    a, b = parse("Q(4s8)xQ(6s8)_e4m3").bpw(), parse("Q(4s16)xQ(6s16)").bpw()
    assert t.loc[0, "bpw_diff_pct"] == pytest.approx((a - b) / b * 100)
    assert t.loc[0, "bpw_diff"] == pytest.approx(a - b)
    assert pairs(double_ratio_table(df, "e4m3", "f16", super_bits=8)) == [("Q(4s8)xQ(8s8)_e4m3", "Q(4s16)xQ(8s16)")]
    assert double_ratio_table(df, "e4m3", "f16", super_bits=7).empty
    assert double_ratio_table(df, "f16", "f16").empty
    assert double_ratio_table(df, "e4m3", "f16", normalizer_a=False).empty


# ------------------------------------------------------------------------------ plots
def _render(obj):
    fig = hv.render(obj, backend="bokeh")
    assert fig is not None
    return fig


def _heat(overlay) -> hv.HeatMap:
    return next(el for el in overlay if isinstance(el, hv.HeatMap))


def _opts(el) -> dict:
    return hv.Store.lookup_options("bokeh", el, "plot").kwargs | hv.Store.lookup_options("bokeh", el, "style").kwargs


def test_heatmap_dimensions_colours_and_render():
    t = single_ratio_table(summary(SINGLE), "e4m3", "f16")
    ov = ratio_heatmap(t, "e4m3 B/2 vs f16 B")
    hm = _heat(ov)
    assert [d.name for d in hm.kdims] == ["bits", "label"]
    assert hm.vdims[0].name == "eq_log2_ratio"               # equal bpw by default
    assert {"format_a", "format_b", "eq_text", "ratio_text", "bpw_label"} <= {d.name for d in hm.vdims}
    assert _heat(ratio_heatmap(t, value="paired")).vdims[0].name == "log2_ratio"
    opts = _opts(hm)
    lo, hi = opts["clim"]
    assert lo == -hi and hi == clip_limit(t["eq_log2_ratio"])  # centred at ratio 1
    assert opts["cmap"] == "RdBu_r"
    _render(ov)
    # 3-bit s × 32 and 4-bit a × 32 only: the two grid cells without a pair are grey, not white
    # (white would read as ratio 1)
    two = single_ratio_table(summary({"Q3s16_e4m3": {"nmse": 0.1}, "Q3s32": {"nmse": 0.2},
                                      "Q4a16_e4m3": {"nmse": 0.1}, "Q4a32": {"nmse": 0.2}}), "e4m3", "f16")
    fig = _render(ratio_heatmap(two))
    assert fig.renderers[0].glyph.fill_color.transform.nan_color == NO_PAIR_COLOR
    cells = fig.renderers[0].data_source.data
    assert len(cells["format_a"]) == 4 and list(cells["format_a"]).count("-") == 2
    assert np.isnan(np.asarray(cells["zvalues"], float)).sum() == 2
    # an empty table still plots
    empty = single_ratio_table(summary({"Q4s32": {"nmse": 1.0}}), "e4m3", "f16")
    _render(ratio_heatmap(empty, "nothing"))


def _ratios_table(ratios) -> pd.DataFrame:
    """A single ratio table whose pairs (one per bits, s × 32, at equal bpw) have these ratios."""
    rows = {}
    for bits, r in zip(range(2, 2 + len(ratios)), ratios):
        rows[f"Q{bits}s16_e4m3"] = {"nmse": 0.01 * r, "bpw": bits + 0.5}
        rows[f"Q{bits}s32"] = {"nmse": 0.01, "bpw": bits + 0.5}
    return single_ratio_table(summary(rows), "e4m3", "f16")


def test_heatmap_clips_outliers_and_colours_real_wins():
    """Wins of 0.7–0.9 next to a 22× outlier: the colour range is clipped (robust quantile),
    so the outlier saturates and the wins get a visible share of the scale."""
    t = _ratios_table([0.7, 0.8, 0.9, 0.85, 1.1, 1.2, 22.0])
    assert t["eq_ratio"].tolist() == pytest.approx([0.7, 0.8, 0.9, 0.85, 1.1, 1.2, 22.0])
    lim = clip_limit(t["eq_log2_ratio"])
    assert MIN_CLIP <= lim <= MAX_CLIP and lim < math.log2(22.0)            # the outlier saturates
    assert abs(math.log2(0.8)) / lim > 0.3                                  # a win is clearly coloured
    ov = ratio_heatmap(t)
    assert _opts(_heat(ov))["clim"] == (-lim, lim)
    fig = _render(ov)
    mapper = fig.renderers[0].glyph.fill_color.transform
    assert (mapper.low, mapper.high) == (-lim, lim)
    # the colour bar is labelled in ratios inside its range, without e-notation
    bar = fig.right[0]
    ticks, labels = bar.ticker.ticks, bar.major_label_overrides
    assert len(ticks) >= 3 and all(-lim - 1e-9 <= v <= lim + 1e-9 for v in ticks)
    assert [labels[v] for v in ticks] == [plain(2.0 ** v) for v in ticks]
    assert all("e" not in label for label in labels.values()) and "1" in labels.values()
    # each cell carries its ratio, 3 significant digits, dark cells in white
    texts = {}
    for r in fig.renderers[1:]:
        d = r.data_source.data
        for text in d["text"]:
            texts[text] = r.glyph.text_color
    assert set(texts) == {"0.700", "0.800", "0.900", "0.850", "1.10", "1.20", "22.0"}
    assert texts["22.0"] == "white" and texts["0.900"] == "#222222"
    # hover: both ratios, the bpw difference and both errors, 4 significant digits
    hover = [t for t in fig.tools if type(t).__name__ == "HoverTool"][0]
    names = [name for name, _ in hover.tooltips]
    assert names == ["A", "B", "ratio at equal bpw", "nmse of B's curve at bpw A", "paired ratio A/B", "bpw A − B",
                     "bpw A", "bpw B", "nmse A", "nmse B"]
    cells = fig.renderers[0].data_source.data
    i = list(cells["format_a"]).index("Q3s16_e4m3")
    assert cells["eq_text"][i] == "0.8000" and cells["bpw_label"][i] == "±0 bpw (±0 %)"
    assert cells["metric_a_text"][i] == "0.008000"


def test_scatter_dimensions_and_render():
    t = double_ratio_table(summary(DOUBLE), "e4m3", "f16")
    sc = ratio_scatter(t)
    assert isinstance(sc, hv.Overlay)
    points = [el for el in sc if isinstance(el, hv.Points) and el.label == "paired (seed)"][0]
    assert [d.name for d in points.kdims] == ["bpw_diff", "ratio"]
    assert len(points) == 3
    hline = [el for el in sc if isinstance(el, hv.HLine)]
    assert len(hline) == 1 and hline[0].data == 1.0
    _render(sc)
    assert [d.name for d in ratio_scatter(t, x="bpw_diff_pct").get(1).kdims] == ["bpw_diff_pct", "ratio"]


def test_scatter_range_keeps_the_line_at_one_and_stays_positive():
    """One point at 0.25: a linear margin would cross zero on the log axis; the line at 1, which
    does not widen the range itself, must stay in view."""
    t = double_ratio_table(summary(DOUBLE), "e4m3", "f16", super_bits=8)
    assert t["ratio"].tolist() == pytest.approx([0.25])
    lo, hi = hv.Store.lookup_options("bokeh", ratio_scatter(t), "plot").kwargs["ylim"]
    assert 0 < lo < 0.25 and hi > 1
    fig = _render(ratio_scatter(t))
    assert 0 < fig.y_range.start < 0.25 and fig.y_range.end > 1
    lo, hi = hv.Store.lookup_options("bokeh", ratio_scatter(t.iloc[:0]), "plot").kwargs["ylim"]
    assert 0 < lo < 1 < hi


# ------------------------------------------------------------------- choices and captions
def test_encoding_keys_round_trip_and_labels():
    assert encoding_key("e4m3") == "e4m3" and encoding_key("e4m3", False) == "e4m3_nonorm"
    assert encoding_key("f16", False) == "f16"            # no normalizer to drop: the same format
    for key, parsed, label in (("e4m3", ("e4m3", True), "e4m3 (normalizer)"),
                               ("e5m2_nonorm", ("e5m2", False), "e5m2 (no normalizer)"),
                               ("bf16", ("bf16", True), "bf16"), ("e8m0", ("e8m0", True), "e8m0")):
        assert parse_encoding(key) == parsed and encoding_label(key) == label
        assert encoding_key(*parsed) == key
    for bad, needle in (("fp16", "unknown scale encoding 'fp16'"), ("e4m3_rmse", "unknown scale encoding"),
                        ("f16_nonorm", "e4m3/e5m2 only, not f16")):
        with pytest.raises(ValueError, match=needle):
            parse_encoding(bad)


def test_encodings_and_super_bits_present():
    df = summary(SINGLE | DOUBLE | {"Q4s32_e5m2_nonorm": {"nmse": 0.1}, "Q4s32_e8m0_naive": {"nmse": 0.1}})
    # naive, rmse-search and llama.cpp rows never pair, so their encodings are not offered
    assert encodings_present(df) == ["f16", "bf16", "e4m3", "e4m3_nonorm", "e5m2_nonorm"]
    assert super_bits_present(df) == [6, 8]
    assert super_bits_present(summary(SINGLE)) == []
    one = summary({"Q4s32": {"nmse": 0.1}})
    assert encodings_present(one) == ["f16"] and super_bits_present(one) == []
    assert encodings_present(one.iloc[:0]) == [] and super_bits_present(one.iloc[:0]) == []
    assert encodings_present(one.drop(columns="search")) == []


def test_missing_pairs_names_the_missing_side():
    df = summary(SINGLE | DOUBLE)
    assert missing_pairs(df, "e8m0", "f16", False) == (
        "missing: the store has no single formats with e8m0 scales")
    assert missing_pairs(df, "e4m3", "e5m2", True) == (
        "missing: the store has no double formats with e5m2 (normalizer) scales")
    assert missing_pairs(df, "e4m3_nonorm", "f16", True) == (
        "missing: the store has no double formats with e4m3 (no normalizer) scales")
    # both sides exist, but e4m3 has no 16×16 and f16 no 8×8: the shapes present are listed
    assert missing_pairs(df, "f16", "e4m3", True) == (
        "missing: no 8×8 double formats with f16 scales (the store has 16×8, 16×16)")
    msg = missing_pairs(df, "e4m3", "f16", True, super_bits=7)
    assert msg == "missing: the store has no double formats with e4m3 (normalizer) scales with 7-bit super-scales"
    # single: both encodings present but no (bits, symmetry) at B/2 vs B
    two = summary({"Q3s16_e4m3": {"nmse": 0.1}, "Q5s32": {"nmse": 0.1}})
    assert single_ratio_table(two, "e4m3", "f16").empty
    assert missing_pairs(two, "e4m3", "f16", False) == (
        "missing: no e4m3 (normalizer) format at block B/2 has a f16 partner at block B with the same "
        "bits and symmetry (e4m3 (normalizer) blocks: 16; f16 blocks: 32)")
    # double: both shapes present, never the same bits
    three = summary({"Q(4s8)xQ(6s8)_e4m3": {"nmse": 0.1}, "Q(5s16)xQ(6s16)": {"nmse": 0.1}})
    assert missing_pairs(three, "e4m3", "f16", True) == (
        "missing: the 8×8 e4m3 (normalizer) and 16×16 f16 double formats never share bits and symmetry")
    assert missing_pairs(two.iloc[:0], "e4m3", "f16", False).startswith("missing: the store has no single")
    assert "\n" not in msg


def test_gain_summary_counts_and_median():
    t = single_ratio_table(summary(SINGLE), "e4m3", "f16")        # ratios 0.5, 0.25, 1.5 at equal bpw
    assert gain_summary(t, "e4m3", "f16", False) == (
        "At equal bpw: e4m3 (normalizer) at B/2 beats the f16 curve in 2 of 3 pairs (median ratio 0.500)")
    assert paired_summary(t, "e4m3", "f16", False) == (
        "Paired as in the seed, at ±0 bpw: e4m3 (normalizer) at B/2 has a lower error than f16 at B in "
        "2 of 3 pairs (median ratio 0.500), 2 of them at equal or lower bpw.")
    d = double_ratio_table(summary(DOUBLE), "e4m3", "f16")       # paired 0.25, 0.25, 1.5 at +bpw
    assert gain_summary(d, "e4m3", "f16", True) == (
        "At equal bpw: 8×8 with e4m3 (normalizer) beats the curve of f16 double formats in 0 of 3 pairs "
        "(median ratio 15.0; 1 out of the curve's bpw range)")
    assert paired_summary(d, "e4m3", "f16", True) == (
        "Paired as in the seed, at +0.4375 to +0.875 bpw: 8×8 with e4m3 (normalizer) has a lower error than "
        "16×16 with f16 in 2 of 3 pairs (median ratio 0.250), 0 of them at equal or lower bpw.")
    assert gain_summary(t.iloc[:1], "e4m3", "f16", False).endswith("in 1 of 1 pairs (median ratio 0.500)")
    assert gain_summary(t.iloc[:0], "e4m3", "f16", False).endswith("in 0 of 0 pairs (median ratio n/a)")
    # a ratio that is not a number (0/0) is no gain and no median
    nan = t.iloc[:2].assign(eq_ratio=[np.nan, 2.0])
    assert gain_summary(nan, "e4m3", "f16", False).endswith(
        "in 0 of 2 pairs (median ratio 2.00; 1 out of the curve's bpw range)")


def test_gain_rows_are_highlighted():
    t = single_ratio_table(summary(SINGLE), "e4m3", "f16")
    styles = t.apply(gain_row_styles, axis=1, result_type="expand")
    assert styles.shape == t.shape
    assert [set(row) for row in styles.to_numpy()] == [{GAIN_STYLE}, {GAIN_STYLE}, {""}]
    # the pandas Styler path Tabulator takes
    styler = t.style.apply(gain_row_styles, axis=1)
    styler._compute()           # what Panel's Tabulator does to send cell styles
    lit = {cell for cell, css in styler.ctx.items() if ("background-color", "#d6e9f8") in css}
    assert lit == {(r, c) for r in (0, 1) for c in range(t.shape[1])}
    assert gain_row_styles(pd.Series({"ratio": np.nan, "x": 1})) == ["", ""]
    assert gain_row_styles(pd.Series({"ratio": 1.0})) == [""]
    # without a gain column: a paired ratio < 1 is a gain only at equal or lower bpw
    assert gain_row_styles(pd.Series({"ratio": 0.5, "bpw_diff": 0.25})) == ["", ""]
    assert gain_row_styles(pd.Series({"ratio": 0.5, "bpw_diff": BPW_TOL / 2})) == [GAIN_STYLE] * 2
    assert gain_row_styles(pd.Series({"ratio": 0.5, "bpw_diff": 0.25, "eq_ratio": 0.9})) == [GAIN_STYLE] * 3


# ------------------------------------------------------------------------------ equal bpw
def test_error_curve_is_the_lower_envelope():
    df = summary({"Q4s32": {"nmse": 0.010, "bpw": 4.0}, "Q4a32": {"nmse": 0.020, "bpw": 4.5},   # dominated
                  "Q5s32": {"nmse": 0.001, "bpw": 5.0}, "Q5a32": {"nmse": 0.004, "bpw": 6.0},   # dominated
                  "Q3s32": {"nmse": 0.100, "bpw": 4.0}})                                        # same bpw, worse
    curve = error_curve(df, "nmse")
    assert curve["format"].tolist() == ["Q4s32", "Q5s32"] and curve["error"].tolist() == [0.010, 0.001]
    assert curve.attrs["max_bpw"] == 6.0
    at = curve_at(curve, [4.0, 4.5, 4.75, 5.0, 5.5, 6.0, 3.9, 6.1, 4.0 + BPW_TOL / 2, 6.0 + BPW_TOL / 2])
    # log-linear between frontier points: 4.5 is the geometric mean of 0.01 and 0.001
    assert at[:6] == pytest.approx([0.01, math.sqrt(1e-5), 10 ** -2.75, 0.001, 0.001, 0.001], rel=1e-12)
    assert np.isnan(at[6]) and np.isnan(at[7])               # no extrapolation either side
    assert at[8] == 0.01 and at[9] == 0.001                  # within BPW_TOL: the same bits
    # higher-is-better metrics go through their error (sqnr → nmse, cosine → 1 − cos)
    sq = summary({"Q4s32": {"sqnr_db": 20.0, "bpw": 4.0}, "Q5s32": {"sqnr_db": 30.0, "bpw": 5.0}})
    assert curve_at(error_curve(sq, "sqnr_db"), 4.5)[0] == pytest.approx(10 ** -2.5, rel=1e-12)
    assert error_curve(sq.iloc[:0], "sqnr_db").empty and np.isnan(curve_at(error_curve(sq.iloc[:0], "nmse"), 4)).all()


def test_equal_bpw_ratio_against_the_other_curve():
    """Q4s16_bf16 (5.0 bpw) against the f16 curve between Q4s32 (4.5) and Q5s32 (5.5): the
    curve at 5.0 is the geometric mean; the paired partner Q4s32 costs 0.5 bpw less."""
    df = summary({"Q4s16_bf16": {"nmse": 0.001, "bpw": 5.0}, "Q4s32": {"nmse": 0.004, "bpw": 4.5},
                  "Q5s32": {"nmse": 0.0004, "bpw": 5.5}, "Q2s16_bf16": {"nmse": 0.5, "bpw": 3.0},
                  "Q2s32": {"nmse": 0.6, "bpw": 2.5}, "Q8s16_bf16": {"nmse": 1e-6, "bpw": 10.0},
                  "Q8s32": {"nmse": 2e-6, "bpw": 8.5}})
    t = single_ratio_table(df, "bf16", "f16").set_index("format_a")
    curve = math.sqrt(0.004 * 0.0004)                   # 0.00126
    assert t.loc["Q4s16_bf16", "curve_b"] == pytest.approx(curve, rel=1e-12)
    assert t.loc["Q4s16_bf16", "eq_ratio"] == pytest.approx(0.001 / curve, rel=1e-12)
    assert t.loc["Q4s16_bf16", "ratio"] == pytest.approx(0.25)        # the seed's view stays
    assert t.loc["Q4s16_bf16", "bpw_label"] == "+0.5 bpw (+11 %)"
    # 0.79 of what f16 reaches at the same 5.0 bpw: a gain at equal bpw (not for its paired +0.5 bpw)
    assert t.loc["Q4s16_bf16", "eq_status"] == "in range" and t.loc["Q4s16_bf16", "gain"]
    # 10 bpw is past every f16 format (8.5 at most): out of range, not extrapolated, no gain
    assert np.isnan(t.loc["Q8s16_bf16", "eq_ratio"]) and t.loc["Q8s16_bf16", "eq_status"] == OUT_OF_RANGE
    assert t.loc["Q8s16_bf16", "ratio"] == pytest.approx(0.5) and not t.loc["Q8s16_bf16", "gain"]
    assert t.loc["Q2s16_bf16", "eq_ratio"] == pytest.approx(0.5 / 10 ** (math.log10(0.6) + (math.log10(0.004) - math.log10(0.6)) / 4))
    # no curve at all on the B side
    assert (single_ratio_table(df, "bf16", "e4m3")).empty


def test_a_equals_b_reports_no_gain():
    """f16 against f16: the paired view finds every B/2 format better (at +bpw), but none is a
    gain, and every equal-bpw ratio is 1 or more — exactly, at frontier points too."""
    rows = {f"Q{b}{s}{blk}": {"nmse": 2.0 ** (-2 * b) * (1 + blk / 256) * (1.3 if s == "a" else 1.0)}
            for b in (2, 3, 4, 8) for s in "sa" for blk in (16, 32, 64, 128)}
    t = single_ratio_table(summary(rows), "f16", "f16")
    assert len(t) == 24 and (t["ratio"] < 1).all() and (t["bpw_diff"] > 0).all()
    assert (t["eq_ratio"] >= 1).all() and (t["eq_ratio"] == 1).any() and not t["gain"].any()
    assert gain_summary(t, "f16", "f16", False).startswith("At equal bpw: f16 at B/2 beats the f16 curve in 0 of 24")
    assert paired_summary(t, "f16", "f16", False).endswith("0 of them at equal or lower bpw.")
    styles = t.apply(gain_row_styles, axis=1, result_type="expand")
    assert (styles.to_numpy() == "").all()
    d = double_ratio_table(summary(DOUBLE | {"Q(4s8)xQ(6s8)": {"nmse": 0.001}}), "f16", "f16")
    assert len(d) == 1 and d["ratio"].iloc[0] < 1 and not d["gain"].any() and d["eq_ratio"].iloc[0] >= 1


# ------------------------------------------------------------------------------ numbers
def test_number_texts_have_significant_digits_and_no_e_notation():
    assert [sig(v) for v in (0.0077991, 22.5123, 1.0, 0.88312, 669.4, 1234.6, 1.234e-6, 0.0)] == [
        "0.007799", "22.51", "1.000", "0.8831", "669.4", "1235", "0.000001234", "0"]
    assert sig(math.nan) == "n/a" and sig(0.88312, 3) == "0.883"
    assert [plain(v) for v in (0.7, 1.0, 1.5, 20.0, 0.005, 0.30000000000000004)] == ["0.7", "1", "1.5", "20", "0.005", "0.3"]
    assert bpw_diff_label(0.25, 5.56) == "+0.25 bpw (+5.6 %)"
    assert bpw_diff_label(-0.0351, -0.99) == "-0.0351 bpw (-0.99 %)"
    assert bpw_diff_label(0.00002, 0.0004) == "+0.000020 bpw (+0.00040 %)"
    assert bpw_diff_label(0.0, 0.0) == "±0 bpw (±0 %)"


@pytest.mark.parametrize("lo, hi", [(0.6, 5.0), (0.7, 0.95), (0.25, 22.5), (1e-3, 1e3), (0.98, 1.02), (1.0, 1.0)])
def test_log_ticks_label_the_data_range(lo, hi):
    ticks = log_ticks(lo, hi)
    assert all(lo - 1e-12 <= t <= hi + 1e-12 for t in ticks) and len(ticks) <= 10
    assert len(ticks) >= (1 if lo == hi else 3)
    assert all("e" not in plain(t) for t in ticks) and ticks == sorted(ticks)


def test_scatter_ticks_tooltips_and_equal_bpw_points():
    """Ratios at 0.6–5 (the real fp8 scatter): the log axis is ticked inside that range, in
    plain numbers; the hover reads 4 significant digits."""
    t = double_ratio_table(summary(DOUBLE), "e4m3", "f16").assign(ratio=[0.6, 2.0, 5.0])
    fig = _render(ratio_scatter(t))
    axis = fig.yaxis[0]
    ticks = axis.ticker.ticks
    inside = [v for v in ticks if 0.6 <= v <= 5.0]
    assert len(inside) >= 3
    assert all("e" not in axis.major_label_overrides[v] for v in ticks)
    assert type(fig.xaxis[0].formatter).__name__ == "PrintfTickFormatter"
    texts = with_texts(t)
    assert texts["ratio_text"].tolist() == ["0.6000", "2.000", "5.000"]
    assert texts.loc[2, "eq_text"] == OUT_OF_RANGE and texts.loc[2, "curve_text"] == OUT_OF_RANGE
    hover = next(tool for tool in fig.tools if type(tool).__name__ == "HoverTool")
    assert ("paired ratio A/B", "@{ratio_text}") in hover.tooltips and ("ratio at equal bpw", "@{eq_text}") in hover.tooltips
    # the equal-bpw points sit at 0, one per pair in range, each linked to its paired point
    sc = ratio_scatter(t)
    equal = [el for el in sc if isinstance(el, hv.Points) and el.label == "at equal bpw"][0]
    assert equal.dimension_values(0).tolist() == [0.0, 0.0]
    assert equal.dimension_values(1).tolist() == pytest.approx(t["eq_ratio"].iloc[:2].tolist())
    assert len([el for el in sc if isinstance(el, hv.Segments)][0]) == 2


# ------------------------------------------------------------------------------ real sweep
def test_real_small_sweep(tmp_path):
    from workbench.sweep import run
    run(None, "Q4s16_e4m3,Q4s32,Q4a16_e4m3,Q4a32,Q(4s8)xQ(6s8)_e4m3,Q(4s16)xQ(6s16)",
        r"layer\.0\.output\.dense", tmp_path, progress=False)
    df = st.summary(tmp_path)
    single = single_ratio_table(df, "e4m3", "f16")
    assert pairs(single) == [("Q4s16_e4m3", "Q4s32"), ("Q4a16_e4m3", "Q4a32")]
    assert list(single["block"]) == [32, 32] and list(single["symmetric"]) == [True, False]
    double = double_ratio_table(df, "e4m3", "f16")
    assert pairs(double) == [("Q(4s8)xQ(6s8)_e4m3", "Q(4s16)xQ(6s16)")]
    for t in (single, double):
        assert np.isfinite(t["ratio"]).all() and (t["ratio"] > 0).all()
        assert np.isfinite(t["bpw_diff"]).all()
    for metric in ("sqnr_db", "cosine", "bnl"):
        assert (single_ratio_table(df, "e4m3", "f16", metric)["ratio"] > 0).all()
    # sqnr_db is -10 log10(nmse) in the store, so its ratio is the nmse ratio
    assert single_ratio_table(df, "e4m3", "f16", "sqnr_db")["ratio"].tolist() == pytest.approx(
        single["ratio"].tolist(), rel=1e-9)
    _render(ratio_heatmap(single, "real"))
    _render(ratio_scatter(double, x="bpw_diff_pct"))
    # equal bpw on real rows: the e4m3 pairs cost the same bits (within the normalizer); the
    # f16-against-f16 view has no gain
    assert (single["bpw_diff"].abs() <= BPW_TOL).all() and (single["eq_status"] == "in range").all()
    same = single_ratio_table(df, "f16", "f16")
    assert not same["gain"].any() and (same["eq_ratio"].dropna() >= 1).all()
