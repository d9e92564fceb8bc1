"""The seed experiment's two ratio analyses as pure functions: a model-level summary DataFrame
(``workbench.store.summary``) in, a ratio table or a HoloViews object out.

* :func:`single_ratio_table` pits a uniform single format with block B/2 and scale encoding A
  against the same format with block B and encoding B: is halving the block worth a cheaper
  scale?
* :func:`double_ratio_table` pits the 8×8 double format (super-scales in encoding A) against
  the 16×16 one (super-scales in encoding B).

Ratio convention: ``ratio = error(A side) / error(B side)``, so **ratio < 1 means the A side
is better** for every metric. For metrics where higher is better the ratio is taken on the
matching error:

* ``sqnr_db``: ``10 ** (-(sqnr_a - sqnr_b) / 10)``, which is exactly the NMSE ratio;
* ``cosine``: ``(1 - cos_a) / (1 - cos_b)``, the ratio of cosine distances.

Only absmax-scaled, non-naive formats are paired. Pairs need the same bits and symmetry (and,
for double formats, the same super_bits and super_symmetric); a format without its partner is
simply absent from the table. Nothing here touches the store or Panel.
"""
from __future__ import annotations

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the bokeh backend the opts below name)
import numpy as np
import pandas as pd

from workbench.kernels.encodings import ENCODINGS

LOWER_IS_BETTER = ("nmse", "mse", "rmse", "bnl", "bnl_seed", "max_abs_err", "wnmse", "wmse")
HIGHER_IS_BETTER = ("sqnr_db", "cosine")
RATIO_METRICS = LOWER_IS_BETTER + HIGHER_IS_BETTER

SINGLE_COLUMNS = ("bits", "symmetric", "block", "label", "format_a", "format_b", "metric_a",
                  "metric_b", "ratio", "log2_ratio", "bpw_a", "bpw_b", "bpw_diff", "bpw_diff_pct")
DOUBLE_COLUMNS = ("bits", "symmetric", "super_bits", "super_symmetric", "label", "format_a",
                  "format_b", "metric_a", "metric_b", "ratio", "log2_ratio", "bpw_a", "bpw_b",
                  "bpw_diff", "bpw_diff_pct")
NO_PAIR_COLOR = "#d9d9d9"
RATIO = hv.Dimension("ratio", label="error ratio A / B  (< 1: A is better)")


# ------------------------------------------------------------------------------- data
def _check_encoding(enc: str, normalizer: bool, side: str) -> None:
    if enc not in ENCODINGS:
        raise ValueError(f"unknown scale encoding {enc!r} for {side} (one of {', '.join(ENCODINGS)})")
    if not normalizer and not ENCODINGS[enc].needs_normalizer:
        raise ValueError(f"normalizer_{side}=False ('_nonorm') applies to e4m3/e5m2 only, not {enc}")


def _check_metric(df: pd.DataFrame, metric: str) -> None:
    if metric not in RATIO_METRICS:
        raise ValueError(f"unknown metric {metric!r} (one of {', '.join(RATIO_METRICS)})")
    if metric not in df.columns:
        raise ValueError(f"the summary has no {metric!r} column")


def error_ratio(a, b, metric: str):
    """error(a) / error(b) for values of ``metric``: < 1 means ``a`` is better (see module doc)."""
    a = np.asarray(a, dtype=float)
    b = np.asarray(b, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "sqnr_db":
            return 10.0 ** (-(a - b) / 10.0)
        if metric == "cosine":
            return (1.0 - a) / (1.0 - b)
        return a / b


def _candidates(df: pd.DataFrame, enc: str, normalizer: bool, double: bool) -> pd.DataFrame:
    """Uniform, absmax, non-naive rows in scale encoding ``enc``; single or double formats.
    The store's ``normalizer`` column is True only for fp8 with the per-tensor normalizer, so
    it is matched only for fp8 encodings."""
    if df.empty:
        return df
    is_double = df["super_bits"].notna() if "super_bits" in df.columns else pd.Series(False, index=df.index)
    keep = ((df["family"] == "uniform") & (df["scale_dtype"] == enc) & (df["search"] == "absmax")
            & ~df["naive"].astype(bool) & (is_double == double))
    if ENCODINGS[enc].needs_normalizer:
        keep &= df["normalizer"].astype(bool) == normalizer
    return df[keep.fillna(False).astype(bool)]


def _finish(pairs: pd.DataFrame, metric: str, columns) -> pd.DataFrame:
    pairs = pairs.copy()
    pairs["ratio"] = error_ratio(pairs["metric_a"], pairs["metric_b"], metric)
    ok = np.isfinite(pairs["ratio"]) & (pairs["ratio"] > 0)
    pairs["log2_ratio"] = np.where(ok, np.log2(pairs["ratio"].where(ok, 1.0)), np.nan)
    pairs["bpw_diff"] = pairs["bpw_a"] - pairs["bpw_b"]
    with np.errstate(divide="ignore", invalid="ignore"):
        pairs["bpw_diff_pct"] = pairs["bpw_diff"] / pairs["bpw_b"] * 100.0
    return pairs[list(columns)].reset_index(drop=True)


def _side(rows: pd.DataFrame, keys: list[str], metric: str, tag: str) -> pd.DataFrame:
    out = rows[keys + ["format", "bpw", metric]].rename(
        columns={"format": f"format_{tag}", "bpw": f"bpw_{tag}", metric: f"metric_{tag}"})
    return out.astype({k: "int64" for k in keys if k in ("bits", "block", "super_bits")})


def single_ratio_table(df: pd.DataFrame, enc_a: str, enc_b: str, metric: str = "nmse",
                       normalizer_a: bool = True, normalizer_b: bool = True) -> pd.DataFrame:
    """Block B/2 in encoding ``enc_a`` vs block B in ``enc_b``, for every (bits, symmetric, B)
    the summary has both of (uniform single formats, absmax, not naive).

    Columns: bits, symmetric, block (= B, the B side's block), label ('s × 32'), format_a,
    format_b, metric_a, metric_b, ratio (error ratio, < 1: A is better; see the module doc for
    sqnr_db and cosine), log2_ratio, bpw_a, bpw_b, bpw_diff (bpw_a − bpw_b) and bpw_diff_pct.
    ``normalizer_*=False`` selects the ``_nonorm`` variants (fp8 encodings only)."""
    _check_encoding(enc_a, normalizer_a, "a")
    _check_encoding(enc_b, normalizer_b, "b")
    _check_metric(df, metric)
    keys = ["bits", "symmetric", "block"]
    a = _side(_candidates(df, enc_a, normalizer_a, double=False), keys, metric, "a")
    b = _side(_candidates(df, enc_b, normalizer_b, double=False), keys, metric, "b")
    a["block"] = a["block"] * 2                                  # A's B/2 pairs with B's B
    pairs = a.merge(b, on=keys, how="inner").sort_values(["symmetric", "block", "bits"],
                                                          ascending=[False, True, True])
    pairs["label"] = [f"{'s' if s else 'a'} × {blk}" for s, blk in zip(pairs["symmetric"], pairs["block"])]
    return _finish(pairs, metric, SINGLE_COLUMNS)


def double_ratio_table(df: pd.DataFrame, enc_a: str, enc_b: str, metric: str = "nmse",
                       super_bits: int | None = None, normalizer_a: bool = True,
                       normalizer_b: bool = True, *, small: tuple[int, int] = (8, 8),
                       large: tuple[int, int] = (16, 16)) -> pd.DataFrame:
    """The ``small`` (block, blocks per super-block) double format with super-scales in
    ``enc_a`` vs the ``large`` one with ``enc_b``, for every (bits, symmetric, super_bits,
    super_symmetric) the summary has both of (absmax, not naive); ``super_bits`` keeps only
    that many super-scale bits.

    Columns: bits, symmetric, super_bits, super_symmetric, label ('s × Q6s'), format_a,
    format_b, metric_a, metric_b, ratio (< 1: A is better), log2_ratio, bpw_a, bpw_b,
    bpw_diff (bpw_a − bpw_b) and bpw_diff_pct ((bpw_a − bpw_b) / bpw_b · 100)."""
    _check_encoding(enc_a, normalizer_a, "a")
    _check_encoding(enc_b, normalizer_b, "b")
    _check_metric(df, metric)
    keys = ["bits", "symmetric", "super_bits", "super_symmetric"]

    def side(enc, norm, shape, tag):
        rows = _candidates(df, enc, norm, double=True)
        rows = rows[(rows["block"] == shape[0]) & (rows["super_block"] == shape[1])]
        if super_bits is not None:
            rows = rows[rows["super_bits"] == super_bits]
        out = _side(rows, keys, metric, tag)
        return out.astype({"symmetric": bool, "super_symmetric": bool})

    pairs = side(enc_a, normalizer_a, small, "a").merge(side(enc_b, normalizer_b, large, "b"),
                                                        on=keys, how="inner")
    pairs = pairs.sort_values(["symmetric", "super_bits", "super_symmetric", "bits"],
                              ascending=[False, True, False, True])
    pairs["label"] = [f"{'s' if s else 'a'} × Q{sb}{'s' if ss else 'a'}"
                      for s, sb, ss in zip(pairs["symmetric"], pairs["super_bits"], pairs["super_symmetric"])]
    return _finish(pairs, metric, DOUBLE_COLUMNS)


# ------------------------------------------------------------------- choices and captions
def encoding_key(enc: str, normalizer: bool = True) -> str:
    """The name of a scale-encoding choice as its format suffix says it: 'e4m3' (with the
    per-tensor normalizer), 'e4m3_nonorm' (without), 'f16', ..."""
    return enc if normalizer or not ENCODINGS[enc].needs_normalizer else f"{enc}_nonorm"


def parse_encoding(key: str) -> tuple[str, bool]:
    """'e4m3_nonorm' → ('e4m3', False); 'f16' → ('f16', True); raises ValueError (one line)."""
    enc, _, option = key.partition("_")
    if enc not in ENCODINGS or option not in ("", "nonorm"):
        raise ValueError(f"unknown scale encoding {key!r} (one of {', '.join(ENCODINGS)}, fp8 ones "
                         f"also with '_nonorm')")
    _check_encoding(enc, option != "nonorm", "choice")
    return enc, option != "nonorm"


def encoding_label(key: str) -> str:
    """How a choice reads in the UI: 'e4m3 (normalizer)', 'e4m3 (no normalizer)', 'f16'."""
    enc, norm = parse_encoding(key)
    if not ENCODINGS[enc].needs_normalizer:
        return enc
    return f"{enc} (normalizer)" if norm else f"{enc} (no normalizer)"


def encodings_present(df: pd.DataFrame) -> list[str]:
    """The encoding choices (see ``encoding_key``) of the formats the ratio tables can pair
    (uniform, absmax, not naive), in ENCODINGS order, the normalizer variant first."""
    need = {"family", "scale_dtype", "search", "naive", "normalizer"}
    if df.empty or not need <= set(df.columns):
        return []
    rows = df[(df["family"] == "uniform") & (df["search"] == "absmax")
              & ~df["naive"].astype("boolean").fillna(False).astype(bool)]
    keys = {encoding_key(e, bool(n)) for e, n in zip(rows["scale_dtype"], rows["normalizer"].fillna(True))
            if e in ENCODINGS}
    order = [encoding_key(e, n) for e in ENCODINGS for n in (True, False)]
    return [k for k in dict.fromkeys(order) if k in keys]


def super_bits_present(df: pd.DataFrame) -> list[int]:
    """The super-scale bit widths of the double formats in ``df``, ascending."""
    if df.empty or "super_bits" not in df.columns:
        return []
    return sorted(int(b) for b in df.loc[df["family"] == "uniform", "super_bits"].dropna().unique())


def _blocks(rows: pd.DataFrame, double: bool) -> str:
    if double:
        shapes = sorted({(int(b), int(s)) for b, s in zip(rows["block"], rows["super_block"])})
        return ", ".join(f"{b}×{s}" for b, s in shapes)
    return ", ".join(str(b) for b in sorted({int(b) for b in rows["block"]}))


def missing_pairs(df: pd.DataFrame, key_a: str, key_b: str, double: bool,
                  super_bits: int | None = None, *, small: tuple[int, int] = (8, 8),
                  large: tuple[int, int] = (16, 16)) -> str:
    """One line saying why a ratio table for these choices is empty: which side has no formats
    in the summary, or that both exist but never share bits, symmetry and block sizes."""
    enc_a, norm_a = parse_encoding(key_a)
    enc_b, norm_b = parse_encoding(key_b)
    kind = "double" if double else "single"
    a = _candidates(df, enc_a, norm_a, double) if not df.empty else df
    b = _candidates(df, enc_b, norm_b, double) if not df.empty else df
    if double and super_bits is not None:
        a, b = a[a["super_bits"] == super_bits], b[b["super_bits"] == super_bits]
    bits = f" with {super_bits}-bit super-scales" if double and super_bits is not None else ""
    for rows, key in ((a, key_a), (b, key_b)):
        if rows.empty:
            return f"missing: the store has no {kind} formats with {encoding_label(key)} scales{bits}"
    if double:
        for rows, key, shape in ((a, key_a, small), (b, key_b, large)):
            fit = rows[(rows["block"] == shape[0]) & (rows["super_block"] == shape[1])]
            if fit.empty:
                return (f"missing: no {shape[0]}×{shape[1]} double formats with {encoding_label(key)} "
                        f"scales{bits} (the store has {_blocks(rows, True)})")
        return (f"missing: the {small[0]}×{small[1]} {encoding_label(key_a)} and {large[0]}×{large[1]} "
                f"{encoding_label(key_b)} double formats{bits} never share bits and symmetry")
    return (f"missing: no {encoding_label(key_a)} format at block B/2 has a {encoding_label(key_b)} "
            f"partner at block B with the same bits and symmetry ({encoding_label(key_a)} blocks: "
            f"{_blocks(a, False)}; {encoding_label(key_b)} blocks: {_blocks(b, False)})")


def gain_summary(table: pd.DataFrame, key_a: str, key_b: str, double: bool) -> str:
    """'A at B/2 beats B at B in n of m pairs (median ratio x)' (8×8 vs 16×16 for double)."""
    a, b = encoding_label(key_a), encoding_label(key_b)
    ratio = pd.to_numeric(table["ratio"], errors="coerce") if len(table) else pd.Series(dtype=float)
    ok = ratio[np.isfinite(ratio) & (ratio > 0)]
    wins, total = int((ok < 1).sum()), len(table)
    median = f"{ok.median():.3g}" if len(ok) else "n/a"
    head = f"8×8 with {a} beats 16×16 with {b}" if double else f"{a} at B/2 beats {b} at B"
    return f"{head} in {wins} of {total} pairs (median ratio {median})"


GAIN_STYLE = "background-color: #d6e9f8; font-weight: 600"


def gain_row_styles(row: pd.Series) -> list[str]:
    """CSS per cell of a ratio-table row (for a pandas Styler / Tabulator): the whole row
    highlighted when its ratio is a net gain for the A side (< 1)."""
    r = pd.to_numeric(pd.Series([row.get("ratio")]), errors="coerce").iloc[0]
    gain = bool(np.isfinite(r) and 0 < r < 1)
    return [GAIN_STYLE if gain else ""] * len(row)


# ------------------------------------------------------------------------------ plots
_HOVER = [("A", "@format_a"), ("B", "@format_b"), ("ratio A/B", "@ratio{0.000}"),
          ("bpw A − B", "@bpw_diff{+0.000}"), ("bpw A − B (%)", "@bpw_diff_pct{+0.00}%")]


def ratio_heatmap(table: pd.DataFrame, title: str = "") -> hv.HeatMap:
    """x: bits, y: the row label ('s × 32', …), colour: log2(ratio) on a diverging colormap
    centred at 0, so blue cells (ratio < 1) are net gains of the A side, grey cells have no
    pair (white would read as ratio 1); hover shows both formats, the ratio and the bpw
    difference."""
    vdims = ["log2_ratio", "ratio", "format_a", "format_b", "bpw_diff", "bpw_diff_pct"]
    # HeatMap's aggregation reshapes every column; Arrow-backed strings (pandas 3) cannot be
    data = table.astype({c: object for c in ("label", "format_a", "format_b")})
    finite = np.abs(pd.to_numeric(data["log2_ratio"], errors="coerce").to_numpy(float)) if len(data) else np.array([])
    finite = finite[np.isfinite(finite)]
    lim = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    return hv.HeatMap(data[["bits", "label", *vdims]],
                      kdims=[hv.Dimension("bits", label="bits"), hv.Dimension("label", label="s/a × B")],
                      vdims=[hv.Dimension("log2_ratio", label="log2 ratio A/B"), *vdims[1:]]).opts(
        cmap="RdBu_r", clim=(-lim, lim), clipping_colors={"NaN": NO_PAIR_COLOR}, colorbar=True,
        tools=["hover"], hover_tooltips=_HOVER,
        title=title, responsive=True, min_height=320, xlabel="bits", ylabel="s/a × B")


def ratio_scatter(table: pd.DataFrame, x: str = "bpw_diff") -> hv.Overlay:
    """bpw difference (``x``: 'bpw_diff' in bits or 'bpw_diff_pct') vs ratio, one point per
    pair, with a line at ratio 1: points below it that sit left of 0 are gains for free."""
    ok = np.isfinite(pd.to_numeric(table["ratio"], errors="coerce").to_numpy(float)) & (table["ratio"] > 0)
    data = table[ok]
    xlabel = "bpw A − B (%)" if x == "bpw_diff_pct" else "bpw A − B"
    vdims = [c for c in ("label", "bits", "format_a", "format_b", "bpw_diff", "bpw_diff_pct")
             if c != x]
    points = hv.Points(data[[x, "ratio", *vdims]], kdims=[hv.Dimension(x, label=xlabel), RATIO],
                       vdims=vdims).opts(size=9, color="#1f77b4", alpha=0.85, line_color="white",
                                         tools=["hover"], hover_tooltips=_HOVER + [("pair", "@label")])
    one = hv.HLine(1.0).opts(color="#555555", line_dash="dashed", line_width=1.5)
    # the line at 1 always in view (an HLine does not widen the range), and a one-point log
    # axis gets a multiplicative margin instead of a linear one that would cross zero
    ratios = data["ratio"].to_numpy(float)
    lo, hi = min(ratios.min(initial=1.0), 1.0), max(ratios.max(initial=1.0), 1.0)
    return (points * one).opts(logy=True, show_grid=True, responsive=True, min_height=320,
                               ylim=(lo / 1.25, hi * 1.25))
