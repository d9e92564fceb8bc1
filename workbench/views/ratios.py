"""The seed experiment's two ratio analyses as pure functions: a model-level summary DataFrame
(``workbench.store.summary``) in, a ratio table or a HoloViews object out.

* :func:`single_ratio_table` pits a uniform single format with block B/2 and scale encoding A
  against the same format with block B and encoding B: is halving the block worth a cheaper
  scale?
* :func:`double_ratio_table` pits the 8×8 double format (super-scales in encoding A) against
  the 16×16 one (super-scales in encoding B).
* :func:`codebook_ratio_table` pits a codebook format (NF4, AF4, E2M1 …) with scales in
  encoding A against the same code and block with encoding B: does a cheaper block scale
  cost a codebook what it costs the uniform grid?

Ratio convention: ``ratio = error(A side) / error(B side)``, so **ratio < 1 means the A side
is better** for every metric. For metrics where higher is better the ratio is taken on the
matching error:

* ``sqnr_db``: ``10 ** (-(sqnr_a - sqnr_b) / 10)``, which is exactly the NMSE ratio;
* ``cosine``: ``(1 - cos_a) / (1 - cos_b)``, the ratio of cosine distances.

Only absmax-scaled, non-naive formats are paired. Pairs need the same bits and symmetry (and,
for double formats, the same super_bits and super_symmetric); a format without its partner is
simply absent from the table. Nothing here touches the store or Panel.

**Equal cost.** A pair rarely costs the same bits (B/2 pays for twice the scales), so every row
also carries ``eq_ratio``: the A format's error over **encoding B's error curve** at the A
format's bpw — the lower envelope (frontier) of every format of the same kind (single, or
double with the chosen super-scale bits) in encoding B, interpolated linearly in bpw and
logarithmically in error between its frontier points, flat after the last one. Outside the
curve's bpw range (± ``BPW_TOL``) nothing is extrapolated: ``eq_ratio`` is NaN and
``eq_status`` says 'out of range'. Only the A side is put against a curve: a B format off its
own frontier would otherwise read as A's gain (with A = B, every A format is on or above its
own curve, so ``eq_ratio`` >= 1 exactly and nothing is a gain).

A **gain** (``gain``) is a lower error at equal or lower bpw, and nothing else: ``eq_ratio`` < 1,
or a paired ``ratio`` < 1 with ``bpw_diff`` <= ``BPW_TOL``. ``BPW_TOL`` (0.001 bpw) is below
any format step and above the fp8 normalizer's 32 bits per tensor, so ``Q4s16_e4m3`` and
``Q4s32`` count as the same bits.
"""
from __future__ import annotations

import math

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the bokeh backend the opts below name)
import numpy as np
import pandas as pd

from workbench.kernels.encodings import ENCODINGS
from workbench.metrics import higher_is_better, lower_is_better
from workbench.views.pareto import scale_encoding_of

LOWER_IS_BETTER = lower_is_better("weight", "weighted")     # workbench.metrics.REGISTRY
HIGHER_IS_BETTER = higher_is_better("weight", "weighted")
RATIO_METRICS = LOWER_IS_BETTER + HIGHER_IS_BETTER

EQUAL_COLUMNS = ("bpw_label", "curve_b", "eq_ratio", "eq_log2_ratio", "eq_status", "gain")
SINGLE_COLUMNS = ("bits", "symmetric", "block", "label", "format_a", "format_b", "metric_a",
                  "metric_b", "ratio", "log2_ratio", "bpw_a", "bpw_b", "bpw_diff", "bpw_diff_pct",
                  *EQUAL_COLUMNS)
DOUBLE_COLUMNS = ("bits", "symmetric", "super_bits", "super_symmetric", "label", "format_a",
                  "format_b", "metric_a", "metric_b", "ratio", "log2_ratio", "bpw_a", "bpw_b",
                  "bpw_diff", "bpw_diff_pct", *EQUAL_COLUMNS)
BPW_TOL = 1e-3            # bpw: "the same bits" (see the module doc)
IN_RANGE, OUT_OF_RANGE, NO_CURVE = "in range", "out of range", "no curve"
NO_PAIR_COLOR = "#d9d9d9"
RATIO = hv.Dimension("ratio", label="error ratio A / B  (< 1: A is better)")
CLIP_QUANTILE = 0.75      # the heatmap's colours saturate beyond this quantile of |log2 ratio|
MIN_CLIP, MAX_CLIP = math.log2(1.25), 2.0     # ... clipped to 0.8–1.25 at least, 0.25–4 at most


# ----------------------------------------------------------------------------- numbers
def sig(x, digits: int = 4) -> str:
    """``x`` with ``digits`` significant digits and never in e-notation ('0.007799', '22.51',
    '1.000'); 'n/a' for NaN or infinity."""
    x = float(x)
    if not math.isfinite(x):
        return "n/a"
    if x == 0:
        return "0"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(x))))
    return f"{x:.{decimals}f}"


def plain(x: float) -> str:
    """A tick value as written by hand: '0.7', '1', '1.5', '20', '0.005' (no e-notation)."""
    text = f"{float(x):.10f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def bpw_diff_label(diff: float, pct: float) -> str:
    """A bpw difference as the tables and tooltips write it: '+0.25 bpw (+5.6 %)',
    '+0.0002 bpw (+0.0049 %)', '±0 bpw'."""
    if not math.isfinite(diff):
        return "n/a"
    if diff == 0:
        return "±0 bpw (±0 %)"
    text = f"{diff:+.4f}".rstrip("0").rstrip(".")
    if float(text) == 0:                         # below 0.00005: two significant digits
        text = ("+" if diff > 0 else "-") + sig(abs(diff), 2)
    share = (("+" if pct > 0 else "-") + sig(abs(pct), 2)) if math.isfinite(pct) else "n/a"
    return f"{text} bpw ({share} %)"


_MANTISSAS = ((1,), (1, 2, 5), (1, 2, 3, 5, 7), (1, 1.5, 2, 3, 4, 5, 6, 7, 8, 9))


def log_ticks(lo: float, hi: float, min_ticks: int = 3, max_ticks: int = 10) -> list[float]:
    """Tick values for a log axis over [lo, hi] that label the range itself: the coarsest of
    1 / 1-2-5 / 1-2-3-5-7 / every digit per decade giving at least ``min_ticks`` inside it,
    thinned to ``max_ticks``; for a range too narrow for that, evenly spaced round values."""
    lo, hi = float(lo), float(hi)
    if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
        return [1.0]
    decades = range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
    for mantissas in _MANTISSAS:
        ticks = [v for e in decades for m in mantissas if lo <= (v := float(f"{m}e{e}")) <= hi]
        if len(ticks) >= min_ticks:
            step = math.ceil(len(ticks) / max_ticks)
            return ticks[::step]
    if hi == lo:
        return [lo]
    raw = (hi - lo) / (min_ticks + 1)
    step = min((m * 10.0 ** math.floor(math.log10(raw)) for m in (1, 2, 5, 10)),
               key=lambda v: abs(v - raw))
    first = math.ceil(lo / step) * step
    return [float(f"{v:.12g}") for v in np.arange(first, hi + step * 1e-9, step)]


def axis_ticks(lo: float, hi: float, **kw) -> list[tuple[float, str]]:
    """``log_ticks`` with their labels, as HoloViews' ``xticks``/``yticks`` take them."""
    return [(t, plain(t)) for t in log_ticks(lo, hi, **kw)]


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
    keep = ((df["family"] == "uniform") & (scale_encoding_of(df) == enc) & (df["search"] == "absmax")
            & ~df["naive"].astype(bool) & (is_double == double))
    if ENCODINGS[enc].needs_normalizer:
        keep &= df["normalizer"].astype(bool) == normalizer
    return df[keep.fillna(False).astype(bool)]


def _codebook_candidates(df: pd.DataFrame, enc: str, normalizer: bool) -> pd.DataFrame:
    """Single-level codebook rows (absmax scale rule, no double quantization) in ``enc``."""
    if df.empty or "family" not in df.columns:
        return df.iloc[0:0]
    is_double = df["super_bits"].notna() if "super_bits" in df.columns else pd.Series(False, index=df.index)
    keep = ((df["family"] == "codebook") & (scale_encoding_of(df) == enc) & (df["search"] == "absmax")
            & ~is_double)
    if ENCODINGS[enc].needs_normalizer:
        keep &= df["normalizer"].astype(bool) == normalizer
    return df[keep.fillna(False).astype(bool)]


def to_error(values, metric: str) -> np.ndarray:
    """Metric values as the error they measure (lower is better): nmse for sqnr_db, the cosine
    distance 1 − cos for cosine, the value itself otherwise."""
    v = np.asarray(values, dtype=float)
    if metric == "sqnr_db":
        return 10.0 ** (-v / 10.0)
    if metric == "cosine":
        return 1.0 - v
    return v


def from_error(errors, metric: str) -> np.ndarray:
    """The inverse of ``to_error``: an error back in the metric's own units."""
    e = np.asarray(errors, dtype=float)
    with np.errstate(divide="ignore", invalid="ignore"):
        if metric == "sqnr_db":
            return -10.0 * np.log10(e)
        if metric == "cosine":
            return 1.0 - e
    return e


def error_curve(rows: pd.DataFrame, metric: str) -> pd.DataFrame:
    """The lower envelope of ``rows`` (bpw, metric) as an error curve: its frontier points
    (each strictly lower in error than every format at the same or fewer bpw), sorted by
    bpw, with columns bpw, error (see ``to_error``) and format; ``attrs['max_bpw']`` is the
    largest bpw of the rows (the curve is flat from its last point to there). Rows without a
    finite positive error are left out."""
    err = to_error(rows[metric], metric) if len(rows) else np.array([])
    data = pd.DataFrame({"bpw": rows["bpw"].to_numpy(float) if len(rows) else [], "error": err,
                         "format": rows["format"].to_numpy(object) if len(rows) else []})
    data = data[np.isfinite(data["bpw"]) & np.isfinite(data["error"]) & (data["error"] > 0)]
    data = data.sort_values(["bpw", "error"], kind="stable")
    best = data["error"].cummin().shift(fill_value=np.inf)
    front = data[data["error"] < best].reset_index(drop=True)
    front.attrs["max_bpw"] = float(data["bpw"].max()) if len(data) else math.nan
    return front


def curve_at(curve: pd.DataFrame, bpw) -> np.ndarray:
    """``error_curve`` at each ``bpw``: log-linear between frontier points, never above the
    frontier point at or left of it (so a format of the curve's own set is never below it,
    whatever the rounding), the frontier point's own error within ``BPW_TOL`` of its bpw, NaN
    outside [first bpw − BPW_TOL, max_bpw + BPW_TOL] (nothing is extrapolated)."""
    x = np.atleast_1d(np.asarray(bpw, dtype=float))
    out = np.full(x.shape, np.nan)
    if not len(curve):
        return out
    xs, es = curve["bpw"].to_numpy(float), curve["error"].to_numpy(float)
    top = max(curve.attrs.get("max_bpw", xs[-1]), xs[-1])
    inside = np.isfinite(x) & (x >= xs[0] - BPW_TOL) & (x <= top + BPW_TOL)
    for i in np.flatnonzero(inside):
        near = np.flatnonzero(np.abs(xs - x[i]) <= BPW_TOL)
        if near.size:                                     # the same bits: that point's error
            out[i] = es[near].min()
            continue
        left = np.searchsorted(xs, x[i], side="right") - 1
        if left >= len(xs) - 1:                          # past the last frontier point: flat
            out[i] = es[-1]
            continue
        t = (x[i] - xs[left]) / (xs[left + 1] - xs[left])
        value = math.exp(math.log(es[left]) + t * (math.log(es[left + 1]) - math.log(es[left])))
        out[i] = min(max(value, es[left + 1]), es[left])
    return out


def is_gain(ratio, bpw_diff, eq_ratio) -> np.ndarray:
    """A lower error at equal or lower bpw: ``eq_ratio`` < 1, or a paired ``ratio`` < 1 at
    ``bpw_diff`` <= BPW_TOL. NaN is never a gain."""
    r, d, q = (np.asarray(v, dtype=float) for v in (ratio, bpw_diff, eq_ratio))
    with np.errstate(invalid="ignore"):
        return (q < 1) | ((r < 1) & (d <= BPW_TOL))


def _finish(pairs: pd.DataFrame, metric: str, columns, curve: pd.DataFrame) -> pd.DataFrame:
    pairs = pairs.copy()
    pairs["ratio"] = error_ratio(pairs["metric_a"], pairs["metric_b"], metric)
    pairs["log2_ratio"] = _log2(pairs["ratio"])
    pairs["bpw_diff"] = pairs["bpw_a"] - pairs["bpw_b"]
    with np.errstate(divide="ignore", invalid="ignore"):
        pairs["bpw_diff_pct"] = pairs["bpw_diff"] / pairs["bpw_b"] * 100.0
    pairs["bpw_label"] = [bpw_diff_label(d, p) for d, p in zip(pairs["bpw_diff"], pairs["bpw_diff_pct"])]
    at = curve_at(curve, pairs["bpw_a"]) if len(pairs) else np.array([])
    pairs["curve_b"] = from_error(at, metric)
    with np.errstate(divide="ignore", invalid="ignore"):
        pairs["eq_ratio"] = to_error(pairs["metric_a"], metric) / at if len(pairs) else []
    pairs["eq_log2_ratio"] = _log2(pairs["eq_ratio"])
    pairs["eq_status"] = NO_CURVE if not len(curve) else np.where(np.isfinite(at), IN_RANGE, OUT_OF_RANGE)
    pairs["gain"] = is_gain(pairs["ratio"], pairs["bpw_diff"], pairs["eq_ratio"])
    out = pairs[list(columns)].reset_index(drop=True)
    out.attrs["metric"] = metric            # the tooltips name it
    return out


def _log2(ratio) -> np.ndarray:
    r = pd.to_numeric(pd.Series(ratio), errors="coerce").to_numpy(float)
    ok = np.isfinite(r) & (r > 0)
    return np.where(ok, np.log2(np.where(ok, r, 1.0)), np.nan)


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
    sqnr_db and cosine), log2_ratio, bpw_a, bpw_b, bpw_diff (bpw_a − bpw_b), bpw_diff_pct,
    bpw_label ('+0.25 bpw (+5.6 %)'), and at equal bpw (module doc): curve_b (encoding B's
    single-format curve at bpw_a, in the metric's units), eq_ratio, eq_log2_ratio, eq_status
    and gain. ``normalizer_*=False`` selects the ``_nonorm`` variants (fp8 encodings only)."""
    _check_encoding(enc_a, normalizer_a, "a")
    _check_encoding(enc_b, normalizer_b, "b")
    _check_metric(df, metric)
    keys = ["bits", "symmetric", "block"]
    b_rows = _candidates(df, enc_b, normalizer_b, double=False)
    a = _side(_candidates(df, enc_a, normalizer_a, double=False), keys, metric, "a")
    b = _side(b_rows, keys, metric, "b")
    a["block"] = a["block"] * 2                                  # A's B/2 pairs with B's B
    pairs = a.merge(b, on=keys, how="inner").sort_values(["symmetric", "block", "bits"],
                                                          ascending=[False, True, True])
    pairs["label"] = [f"{'s' if s else 'a'} × {blk}" for s, blk in zip(pairs["symmetric"], pairs["block"])]
    return _finish(pairs, metric, SINGLE_COLUMNS, error_curve(b_rows, metric))


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
    bpw_diff (bpw_a − bpw_b), bpw_diff_pct ((bpw_a − bpw_b) / bpw_b · 100), bpw_label, and
    at equal bpw curve_b, eq_ratio, eq_log2_ratio, eq_status and gain, against the curve of
    every double format in ``enc_b`` (all shapes; only ``super_bits`` ones if given)."""
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
    curve_rows = _candidates(df, enc_b, normalizer_b, double=True)    # every double shape of B
    if super_bits is not None and len(curve_rows):
        curve_rows = curve_rows[curve_rows["super_bits"] == super_bits]
    return _finish(pairs, metric, DOUBLE_COLUMNS, error_curve(curve_rows, metric))


# ------------------------------------------------------------------- choices and captions
CODEBOOK_COLUMNS = ("code", "bits", "block", "label", "format_a", "format_b", "metric_a", "metric_b",
                    "ratio", "log2_ratio", "bpw_a", "bpw_b", "bpw_diff", "bpw_diff_pct", *EQUAL_COLUMNS)


def codebook_ratio_table(df: pd.DataFrame, enc_a: str, enc_b: str, metric: str = "nmse",
                         normalizer_a: bool = True, normalizer_b: bool = True) -> pd.DataFrame:
    """A codebook format with scales in ``enc_a`` vs the same code and block with ``enc_b``
    (single-level, absmax scale rule), and at equal bpw against the curve of every such
    codebook format in ``enc_b`` (all codes and blocks).

    Columns as :func:`single_ratio_table`, with ``code`` (NF4, E2M1 …); ``bits`` holds the code
    (the heatmap's x) and ``label`` the block ('× 64')."""
    from workbench.formats import parse
    _check_encoding(enc_a, normalizer_a, "a")
    _check_encoding(enc_b, normalizer_b, "b")
    _check_metric(df, metric)

    def side(enc, norm, tag):
        rows = _codebook_candidates(df, enc, norm)
        out = rows[["format", "block", "bpw", metric]].rename(
            columns={"format": f"format_{tag}", "bpw": f"bpw_{tag}", metric: f"metric_{tag}"})
        out["code"] = [parse(f).code for f in rows["format"]]
        return out.astype({"block": "int64"})

    b_rows = _codebook_candidates(df, enc_b, normalizer_b)
    pairs = side(enc_a, normalizer_a, "a").merge(side(enc_b, normalizer_b, "b"), on=["code", "block"], how="inner")
    pairs = pairs.sort_values(["code", "block"]).assign(bits=lambda t: t["code"])
    pairs["label"] = [f"× {b}" for b in pairs["block"]]
    return _finish(pairs, metric, CODEBOOK_COLUMNS, error_curve(b_rows, metric))


def codebook_missing(df: pd.DataFrame, key_a: str, key_b: str) -> str:
    """Why the codebook table is empty, in one line."""
    enc_a, norm_a = parse_encoding(key_a)
    enc_b, norm_b = parse_encoding(key_b)
    for key, enc, norm in ((key_a, enc_a, norm_a), (key_b, enc_b, norm_b)):
        if _codebook_candidates(df, enc, norm).empty:
            return (f"missing: the store has no codebook formats with {encoding_label(key)} scales "
                    f"(sweep the `codebooks` grid)")
    return f"missing: no codebook format with {encoding_label(key_a)} scales has a {encoding_label(key_b)} twin"


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
    (uniform and codebook, absmax, not naive), in ENCODINGS order, the normalizer variant first."""
    need = {"family", "scale_dtype", "search", "naive", "normalizer"}
    if df.empty or not need <= set(df.columns):
        return []
    rows = df[df["family"].isin(["uniform", "codebook"]) & (df["search"] == "absmax")
              & ~df["naive"].astype("boolean").fillna(False).astype(bool)]
    keys = {encoding_key(e, bool(n)) for e, n in zip(scale_encoding_of(rows), rows["normalizer"].fillna(True))
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


def _kinds(key_a: str, key_b: str, double) -> tuple[str, str]:
    """The two sides in words; ``double``: False, True, or "codebook"."""
    a, b = encoding_label(key_a), encoding_label(key_b)
    if double == "codebook":
        return f"a codebook with {a} scales", f"the same code and block with {b}"
    return (f"8×8 with {a}", f"16×16 with {b}") if double else (f"{a} at B/2", f"{b} at B")


def gain_summary(table: pd.DataFrame, key_a: str, key_b: str, double: bool) -> str:
    """The headline at equal cost: 'At equal bpw: A at B/2 beats the B curve in n of m pairs
    (median ratio x; k out of the curve's bpw range)' (8×8 against B's double formats for
    double); n counts ``eq_ratio`` < 1, the median is over the pairs in range."""
    a, b = encoding_label(key_a), encoding_label(key_b)
    eq = pd.to_numeric(table["eq_ratio"], errors="coerce") if len(table) else pd.Series(dtype=float)
    ok = eq[np.isfinite(eq) & (eq > 0)]
    outside = len(table) - len(ok)
    median = sig(ok.median(), 3) if len(ok) else "n/a"
    curve = (f"the curve of {b} codebook formats" if double == "codebook" else
             f"the curve of {b} double formats" if double else f"the {b} curve")
    head = f"At equal bpw: {_kinds(key_a, key_b, double)[0]} beats {curve}"
    tail = f"; {outside} out of the curve's bpw range" if outside else ""
    return f"{head} in {int((ok < 1).sum())} of {len(table)} pairs (median ratio {median}{tail})"


def paired_summary(table: pd.DataFrame, key_a: str, key_b: str, double: bool) -> str:
    """The seed's own pairing, with its cost: 'Paired as in the seed, at +0.0002 to +0.5 bpw:
    A at B/2 has a lower error than B at B in n of m pairs (median ratio x), k of them at
    equal or lower bpw.'"""
    side_a, side_b = _kinds(key_a, key_b, double)
    ratio = pd.to_numeric(table["ratio"], errors="coerce") if len(table) else pd.Series(dtype=float)
    ok = ratio[np.isfinite(ratio) & (ratio > 0)]
    diff = pd.to_numeric(table["bpw_diff"], errors="coerce") if len(table) else pd.Series(dtype=float)
    lower = int(((ratio < 1) & (diff <= BPW_TOL)).sum())
    span = ""
    if len(diff.dropna()):
        lo, hi = (bpw_diff_label(v, math.nan).split(" bpw")[0] for v in (diff.min(), diff.max()))
        span = f", at {lo} bpw" if lo == hi else f", at {lo} to {hi} bpw"
    median = sig(ok.median(), 3) if len(ok) else "n/a"
    return (f"Paired as in the seed{span}: {side_a} has a lower error than {side_b} in "
            f"{int((ok < 1).sum())} of {len(table)} pairs (median ratio {median}), {lower} of them at "
            f"equal or lower bpw.")


GAIN_STYLE = "background-color: #d6e9f8; font-weight: 600"


def gain_row_styles(row: pd.Series) -> list[str]:
    """CSS per cell of a ratio-table row (for a pandas Styler / Tabulator): the whole row
    highlighted when it is a gain (a lower error at equal or lower bpw: its ``gain`` column,
    else ``is_gain`` of what the row has), nothing else."""
    if "gain" in row.index:
        gain = bool(row["gain"]) if pd.notna(row["gain"]) else False
    else:
        num = lambda k: pd.to_numeric(pd.Series([row.get(k, np.nan)]), errors="coerce").iloc[0]  # noqa: E731
        gain = bool(is_gain(num("ratio"), num("bpw_diff"), num("eq_ratio")))
    return [GAIN_STYLE if gain else ""] * len(row)


# ------------------------------------------------------------------------------ plots
VALUES = {"eq": ("eq_ratio", "eq_log2_ratio", "ratio at equal bpw"),
          "paired": ("ratio", "log2_ratio", "paired ratio (seed)")}
def _hover(table: pd.DataFrame) -> list[tuple[str, str]]:
    m = table.attrs.get("metric", "error")
    return [("A", "@format_a"), ("B", "@format_b"), ("ratio at equal bpw", "@eq_text"),
            (f"{m} of B's curve at bpw A", "@curve_text"), ("paired ratio A/B", "@ratio_text"),
            ("bpw A − B", "@bpw_label"), ("bpw A", "@bpw_a_text"), ("bpw B", "@bpw_b_text"),
            (f"{m} A", "@metric_a_text"), (f"{m} B", "@metric_b_text")]



TEXT_COLUMNS = ("eq_text", "curve_text", "ratio_text", "bpw_a_text", "bpw_b_text", "metric_a_text",
                "metric_b_text")


def with_texts(table: pd.DataFrame) -> pd.DataFrame:
    """The table with the tooltips' text columns (4 significant digits, no e-notation; the
    equal-bpw ratio says 'out of range' where there is none)."""
    out = table.copy()
    status = out["eq_status"] if "eq_status" in out else pd.Series(OUT_OF_RANGE, index=out.index)
    out["eq_text"] = [sig(v) if np.isfinite(v) else st for v, st in zip(out["eq_ratio"].astype(float), status)]
    out["curve_text"] = [sig(v) if np.isfinite(v) else st for v, st in zip(out["curve_b"].astype(float), status)]
    for col, src in (("ratio_text", "ratio"), ("bpw_a_text", "bpw_a"), ("bpw_b_text", "bpw_b"),
                     ("metric_a_text", "metric_a"), ("metric_b_text", "metric_b")):
        out[col] = [sig(v, 5 if src.startswith("bpw") else 4) for v in out[src].astype(float)]
    return out


def clip_limit(log2_values) -> float:
    """The heatmap's colour limit (log2): the ``CLIP_QUANTILE`` quantile of |log2 ratio|,
    within [MIN_CLIP, MAX_CLIP], so a few 22× outliers saturate instead of washing out the
    0.7–0.9 wins."""
    v = np.abs(np.asarray(log2_values, dtype=float))
    v = v[np.isfinite(v)]
    q = float(np.quantile(v, CLIP_QUANTILE)) if v.size else 0.0
    return min(max(q, MIN_CLIP), MAX_CLIP)


def ratio_heatmap(table: pd.DataFrame, title: str = "", value: str = "eq", xlabel: str = "bits",
                  ylabel: str = "s/a × B") -> hv.Overlay:
    """x: bits, y: the row label ('s × 32', …), colour: log2 of the ratio at equal bpw
    (``value='eq'``) or of the seed's paired ratio (``'paired'``) on a diverging colormap
    centred at ratio 1 and clipped to ±``clip_limit`` (the colour bar is labelled in ratios),
    each cell carrying its ratio (3 significant digits; '–': out of the curve's bpw range).
    Grey cells have no pair (white would read as ratio 1); hover shows both formats, both
    ratios, the bpw difference and both errors."""
    column, log_column, label = VALUES[value]
    vdims = [log_column, "format_a", "format_b", *TEXT_COLUMNS, "bpw_label"]
    # HeatMap's aggregation reshapes every column; Arrow-backed strings (pandas 3) cannot be
    data = with_texts(table) if len(table) else table.assign(**{c: [] for c in TEXT_COLUMNS})
    data = data.astype({c: object for c in ("label", "format_a", "format_b", "bpw_label", *TEXT_COLUMNS)})
    lim = clip_limit(data[log_column]) if len(data) else MIN_CLIP
    ticks = [t for t in log_ticks(2 ** -lim, 2 ** lim, min_ticks=5) if 2 ** -lim <= t <= 2 ** lim]
    kdims = [hv.Dimension("bits", label=xlabel), hv.Dimension("label", label=ylabel)]
    heat = hv.HeatMap(data[["bits", "label", *vdims]], kdims=kdims,
                      vdims=[hv.Dimension(log_column, label=f"{label}, log colours"), *vdims[1:]]).opts(
        cmap="RdBu_r", clim=(-lim, lim), clipping_colors={"NaN": NO_PAIR_COLOR}, colorbar=True,
        cticks=[(math.log2(t), plain(t)) for t in ticks],
        tools=["hover"], hover_tooltips=_hover(table), line_color="white", line_width=1)
    cells = data.assign(text=[sig(v, 3) if np.isfinite(v) else "–" for v in data[column].astype(float)],
                        dark=np.abs(data[log_column].astype(float).fillna(0)) > 0.6 * lim)
    labels = [hv.Labels(cells[cells["dark"] == dark][["bits", "label", "text"]], kdims=kdims, vdims="text").opts(
        text_color=color, text_font_size="8pt") for dark, color in ((False, "#222222"), (True, "white"))]
    return (heat * labels[0] * labels[1]).opts(title=title, responsive=True, min_height=320,
                                               xlabel=xlabel, ylabel=ylabel)


def ratio_scatter(table: pd.DataFrame, x: str = "bpw_diff") -> hv.Overlay:
    """The cost of each pair: bpw difference (``x``: 'bpw_diff' in bits or 'bpw_diff_pct') vs
    the seed's paired ratio (blue circles), each linked to the A format's ratio at equal bpw
    (orange diamonds at 0), with a line at ratio 1: what is below it at or left of 0 is a
    gain. Log y axis ticked inside the data range, no e-notation."""
    data = with_texts(table) if len(table) else table.assign(**{c: [] for c in TEXT_COLUMNS})
    xlabel = "bpw A − B (%)" if x == "bpw_diff_pct" else "bpw A − B"
    vdims = ["label", "bits", "format_a", "format_b", "bpw_label", *TEXT_COLUMNS]
    hover = _hover(table) + [("pair", "@label")]

    def finite(col):
        r = pd.to_numeric(data[col], errors="coerce").to_numpy(float) if len(data) else np.array([])
        return np.isfinite(r) & (r > 0)

    paired, eq = data[finite("ratio")], data[finite("eq_ratio")].assign(at_zero=0.0)
    xdim = hv.Dimension(x, label=xlabel)
    points = hv.Points(paired[[x, "ratio", *vdims]], kdims=[xdim, RATIO], vdims=vdims,
                       label="paired (seed)").opts(
        size=9, color="#1f77b4", alpha=0.85, line_color="white", tools=["hover"], hover_tooltips=hover)
    equal = hv.Points(eq[["at_zero", "eq_ratio", *vdims]].rename(columns={"at_zero": x, "eq_ratio": "ratio"}),
                      kdims=[xdim, RATIO], vdims=vdims, label="at equal bpw").opts(
        size=10, marker="diamond", color="#ff7f0e", alpha=0.85, line_color="white", tools=["hover"],
        hover_tooltips=hover)
    both = paired[np.isfinite(paired["eq_ratio"].astype(float))]
    links = hv.Segments((both[x].to_numpy(float), both["ratio"].to_numpy(float), np.zeros(len(both)),
                         both["eq_ratio"].to_numpy(float)), kdims=[xdim, RATIO, f"{x}_0", "ratio_0"]).opts(
        color="#bbbbbb", line_width=1)
    one = hv.HLine(1.0).opts(color="#555555", line_dash="dashed", line_width=1.5)
    # the line at 1 always in view (an HLine does not widen the range), and a one-point log
    # axis gets a multiplicative margin instead of a linear one that would cross zero
    ratios = np.concatenate([paired["ratio"].to_numpy(float), eq["eq_ratio"].to_numpy(float)])
    lo, hi = min(ratios.min(initial=1.0), 1.0), max(ratios.max(initial=1.0), 1.0)
    return (links * points * equal * one).opts(
        logy=True, show_grid=True, responsive=True, min_height=320, ylim=(lo / 1.25, hi * 1.25),
        yticks=axis_ticks(lo, hi), xformatter="%.4g", legend_position="top_left")
