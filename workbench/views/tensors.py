"""The Tensors page's browser-free core: per-tensor statistics, error relative to the best
format at the same bpw, and the HoloViews plots built from them.

House style as in ``pareto.py``: pure functions, DataFrame (or array) in, DataFrame or
HoloViews out; nothing here touches the store or Panel. ``tensor_stats_table`` and
``reconstruct`` take a model source / format name, not a store.
"""
from __future__ import annotations

import math
import re

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the bokeh backend the opts below name)
import numpy as np
import pandas as pd

from workbench.codecs import as_kernel_input, codec_for
from workbench.formats import parse
from workbench.metrics import lower_is_better
from workbench.sources import tensor_kind
from workbench.views.pareto import LLAMA_CPP, llama_cpp, with_kind

# Metrics where a smaller value is better: the only ones a ratio "to the best" makes sense for.
LOWER_IS_BETTER = lower_is_better("weight", "weighted")     # workbench.metrics.REGISTRY
STAT_COLUMNS = ("numel", "std", "absmax", "absmax_over_std", "excess_kurtosis", "zero_fraction")
REL_COLUMNS = ("tensor", "format", "bpw", "metric", "best_format", "best_metric", "ratio")
_GROUP_KEYS = ("model", "imatrix")   # kept (and grouped by) when the results carry them
_CHUNK = 1 << 20                      # elements per float64 pass, so big tensors stay cheap


# ------------------------------------------------------------------------------ statistics
def tensor_stats(x: np.ndarray) -> dict:
    """Distribution statistics of a tensor (all elements, any shape).

    ``std`` is the population standard deviation (ddof=0); ``excess_kurtosis`` is Fisher's
    (m4/m2² − 3, population moments: 0 for a normal, 3 for a Laplace distribution);
    ``zero_fraction`` counts exact zeros. Moments accumulate in float64, in chunks, so a
    large float32 tensor is never copied whole.

    Degenerate cases are defined rather than NaN: a constant tensor (std 0) has
    ``absmax_over_std`` 0.0 and ``excess_kurtosis`` 0.0 (no spread, so no outliers and no
    tails); an empty tensor has every statistic 0.0. Non-finite inputs give non-finite stats.
    """
    flat = np.asarray(x).reshape(-1)
    n = int(flat.size)
    if n == 0:
        return dict(numel=0, std=0.0, absmax=0.0, absmax_over_std=0.0, excess_kurtosis=0.0,
                    zero_fraction=0.0)
    chunks = [flat[i:i + _CHUNK] for i in range(0, n, _CHUNK)]
    total, absmax, zeros = 0.0, 0.0, 0
    for c in chunks:
        total += float(np.sum(c, dtype=np.float64))
        absmax = max(absmax, float(np.max(np.abs(c))))
        zeros += int(np.count_nonzero(c == 0))
    mean = total / n
    m2 = m4 = 0.0
    for c in chunks:
        d = c.astype(np.float64) - mean
        d2 = d * d
        m2 += float(d2.sum())
        m4 += float((d2 * d2).sum())
    m2, m4 = m2 / n, m4 / n
    std = math.sqrt(m2) if m2 > 0 else (0.0 if m2 == 0 else float("nan"))
    if std > 0:
        ratio, kurt = absmax / std, m4 / (m2 * m2) - 3.0
    elif std == 0:
        ratio, kurt = 0.0, 0.0
    else:  # NaN from non-finite input
        ratio = kurt = float("nan")
    return dict(numel=n, std=std, absmax=absmax, absmax_over_std=ratio, excess_kurtosis=kurt,
                zero_fraction=zeros / n)


def tensor_stats_table(model_source, pattern: str | None = None) -> pd.DataFrame:
    """One row per weight tensor of ``model_source`` (a ``workbench.sources.ModelSource``)
    whose name matches ``pattern`` (regex, searched): name, shape, rows, cols and the
    ``tensor_stats`` columns. Tensors are loaded and released one at a time."""
    rows = []
    for t in model_source.weights(pattern):
        x = t.load()
        rows.append(dict(name=t.name, shape=tuple(int(s) for s in t.shape),
                         rows=int(x.shape[0]), cols=int(x.shape[1]), **tensor_stats(x)))
        del x
    return pd.DataFrame(rows, columns=["name", "shape", "rows", "cols", *STAT_COLUMNS])


# ------------------------------------------------------------------ error relative to best
def relative_error_table(results_df: pd.DataFrame, metric: str = "nmse",
                         bpw_tolerance: float = 0.05) -> pd.DataFrame:
    """Per (tensor, format): ``metric`` divided by the best (lowest) ``metric`` among that
    tensor's formats whose bpw lies within ±``bpw_tolerance`` (relative to this format's bpw)
    — 1.0 means best at its bpw.

    Columns: tensor, format, bpw, metric (this format's value), best_format, best_metric,
    ratio; plus model / imatrix when ``results_df`` has them (comparisons stay within one
    model and one imatrix). Repeated measurements of a key keep the first row. Ties: a format
    tied for best names itself; otherwise the lowest bpw, then the format name, wins. A zero
    best gives ratio 1.0 for a zero metric and inf otherwise; a non-finite metric or bpw gives
    NaN ratio and a missing best_format (and never wins). Rows come out grouped by (model,
    imatrix, tensor) in order of first appearance, in input order within a group. Higher-is-
    better metrics raise ValueError. Vectorized (no per-tensor Python loop): a full sweep's
    18,480 rows take ~30 ms.
    """
    if metric not in LOWER_IS_BETTER:
        raise ValueError(f"relative error needs a lower-is-better metric ({', '.join(LOWER_IS_BETTER)}), not {metric!r}")
    missing = [c for c in ("tensor", "format", "bpw", metric) if c not in results_df.columns]
    if missing:
        raise ValueError(f"results have no column(s) {', '.join(missing)}")
    if not bpw_tolerance >= 0:
        raise ValueError(f"bpw_tolerance must be >= 0, not {bpw_tolerance!r}")
    groups = [k for k in _GROUP_KEYS if k in results_df.columns]
    df = results_df[[*groups, "tensor", "format", "bpw", metric]].copy()
    for k in groups:  # NULL imatrix and "" mean the same (measured without one)
        df[k] = df[k].fillna("").astype(object)
    df = df.drop_duplicates([*groups, "tensor", "format"], keep="first")
    df = df.rename(columns={metric: "metric"}).astype({"tensor": object, "format": object})
    df["bpw"] = pd.to_numeric(df["bpw"], errors="coerce").astype(float)
    df["metric"] = pd.to_numeric(df["metric"], errors="coerce").astype(float)
    cols = [*groups, *REL_COLUMNS]
    if df.empty:
        out = pd.DataFrame({c: pd.Series(dtype=float if c in ("bpw", "metric", "best_metric", "ratio")
                                         else object) for c in cols})
        out.attrs["metric"] = metric
        return out

    # rows grouped (groups in order of first appearance, rows in input order within a group)
    gid = df.groupby([*groups, "tensor"], sort=False, dropna=False).ngroup().to_numpy()
    df = df.iloc[np.argsort(gid, kind="stable")].reset_index(drop=True)
    gid = np.sort(gid, kind="stable")
    best_pos, best_val = _best_in_window(gid, df["bpw"].to_numpy(float), df["metric"].to_numpy(float),
                                         df["format"].astype(str).to_numpy(), float(bpw_tolerance))
    val = df["metric"].to_numpy(float)
    found = best_pos >= 0
    is_best = found & (val == best_val)
    fmt = df["format"].to_numpy(object)
    best_fmt = np.where(is_best, fmt, fmt[np.maximum(best_pos, 0)])
    best_fmt[~found] = None
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(is_best, 1.0, np.where(best_val > 0, val / best_val, np.inf))
    ratio[~found] = np.nan
    df["best_format"], df["best_metric"], df["ratio"] = best_fmt, best_val, ratio
    out = df[cols]
    out.attrs["metric"] = metric
    return out


def _best_in_window(gid: np.ndarray, bpw: np.ndarray, val: np.ndarray, name: np.ndarray,
                    tolerance: float) -> tuple[np.ndarray, np.ndarray]:
    """For each row i: the position of the best (lowest) finite ``val`` among the rows of its
    group whose bpw lies in bpw_i ± lim_i, ties to the lowest bpw then name, and that value;
    (-1, NaN) where val_i or bpw_i is not finite. Vectorized: rows sorted by (group, bpw, name)
    make every window a contiguous slice, answered by a sparse-table range-minimum query."""
    n = len(gid)
    ok = np.isfinite(val) & np.isfinite(bpw)
    _, name_rank = np.unique(name, return_inverse=True)       # code-point order, as str <
    order = np.lexsort((name_rank, np.where(np.isfinite(bpw), bpw, np.inf), gid))
    s_gid, s_bpw = gid[order], bpw[order]
    s_val = np.where(ok, val, np.inf)[order]                  # excluded rows never win

    # exact window bounds: searchsorted on integer keys (group, rank of bpw among all bpws)
    uniq = np.unique(s_bpw[np.isfinite(s_bpw)])
    stride = len(uniq) + 2
    key = s_gid * stride + np.searchsorted(uniq, s_bpw, "left")
    lim = tolerance * np.abs(bpw) * (1 + 1e-9) + 1e-12       # slack: bpw from byte counts is inexact
    with np.errstate(invalid="ignore"):
        lo_key = gid * stride + np.searchsorted(uniq, bpw - lim, "left")
        hi_key = gid * stride + np.searchsorted(uniq, bpw + lim, "right")
    lo = np.searchsorted(key, lo_key, "left")
    hi = np.searchsorted(key, hi_key, "left")

    # sparse table: table[k][p] = position (leftmost on ties) of the minimum of s_val[p:p+2^k]
    table = [np.arange(n)]
    span = 1
    while 2 * span <= n:
        prev = table[-1]
        a, b = prev[:n - 2 * span + 1], prev[span:n - span + 1]
        table.append(np.where(s_val[a] <= s_val[b], a, b))
        span *= 2
    width = np.where(ok, hi - lo, 1)                          # rows not compared: any valid slice
    lo = np.where(ok, lo, 0)
    k = np.frexp(width.astype(float))[1] - 1                  # floor(log2(width)), exact
    a = np.empty(n, int)
    b = np.empty(n, int)
    for level in np.unique(k):                                # a handful of levels, not n rows
        sel = k == level
        a[sel] = table[level][lo[sel]]
        b[sel] = table[level][lo[sel] + width[sel] - (1 << level)]
    winner = np.where(s_val[a] <= s_val[b], a, b)
    pos = np.where(ok, order[winner], -1)
    return pos, np.where(ok, val[pos], np.nan)


# ------------------------------------------------------------------ what the page shows
# The default columns: llama.cpp's types and the f16-scale uniform singles at llama.cpp's
# block size, so the heatmap stays readable (a full sweep has 462 formats).
DEFAULT_FORMAT_KINDS = (LLAMA_CPP, "single f16")
DEFAULT_BLOCK = 32
STATS_SHOWN = (("std", "std"), ("absmax_over_std", "absmax/std"), ("excess_kurtosis", "excess kurtosis"))


def _compiled(pattern: str | None, what: str) -> re.Pattern | None:
    if not pattern:
        return None
    try:
        return re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"{what} {pattern!r} is not a valid regular expression ({exc})") from None


def format_catalog(results_df: pd.DataFrame) -> pd.DataFrame:
    """One row per format: format, kind (``pareto.kind_of``: 'llama.cpp', 'single f16',
    'double e4m3' …), family, block and bpw (median over tensors), ordered by bpw then name."""
    cols = ["format", "kind", "family", "block", "bpw"]
    if results_df.empty:
        return pd.DataFrame(columns=cols)
    keep = [c for c in ("family", "block", "scale_dtype", "super_scale_dtype", "super_bits")
            if c in results_df.columns]
    first = with_kind(results_df.drop_duplicates("format")[["format", *keep]])
    bpw = pd.to_numeric(results_df["bpw"], errors="coerce").groupby(results_df["format"]).median()
    out = first.assign(bpw=first["format"].map(bpw).astype(float))
    out = out.reindex(columns=cols)
    return out.sort_values(["bpw", "format"], kind="stable", na_position="last").reset_index(drop=True)


def pick_formats(catalog: pd.DataFrame, kinds, block: int | None = None, pattern: str = "") -> list[str]:
    """Formats of ``catalog`` (``format_catalog``) in bpw order whose kind is in ``kinds``, whose
    block is ``block`` (None: any; llama.cpp's types always pass, their block is the type's)
    and whose name matches ``pattern`` (a regex, searched). ValueError for an invalid regex."""
    rx = _compiled(pattern, "format regex")
    ok = catalog["kind"].isin(list(kinds))
    if block is not None:
        ok &= llama_cpp(catalog["family"]) | (pd.to_numeric(catalog["block"], errors="coerce") == block)
    names = catalog.loc[ok, "format"].astype(str)
    return [f for f in names if rx is None or rx.search(f)]


def pick_tensors(names, kinds=None, pattern: str = "") -> list[str]:
    """``names`` (order kept) whose ``sources.tensor_kind`` is in ``kinds`` (None: any) and that
    match ``pattern`` (a regex, searched). ValueError for an invalid regex."""
    rx = _compiled(pattern, "tensor regex")
    return [n for n in names if (kinds is None or tensor_kind(n) in kinds) and (rx is None or rx.search(n))]


def default_error_format(rel_df: pd.DataFrame, tensor: str, catalog: pd.DataFrame) -> str | None:
    """The format a tensor's error histogram starts with: among the formats ``rel_df`` holds
    for ``tensor``, the llama.cpp type ranked best (lowest ratio to the best at its bpw; ties:
    lower bpw, then name), else the first format by bpw; None when the tensor has no rows."""
    rows = rel_df[rel_df["tensor"] == tensor]
    if rows.empty:
        return None
    ggml = set(catalog.loc[catalog["kind"] == LLAMA_CPP, "format"])
    rows = rows.assign(_r=pd.to_numeric(rows["ratio"], errors="coerce"))
    ranked = rows[rows["format"].isin(ggml)].sort_values(["_r", "bpw", "format"], na_position="last",
                                                         kind="stable")
    if len(ranked):
        return str(ranked["format"].iloc[0])
    return str(rows.sort_values(["bpw", "format"], kind="stable")["format"].iloc[0])


# ---------------------------------------------------------------------------------- plots
def _format_order(rel_df: pd.DataFrame) -> list[str]:
    """Formats by (median bpw over tensors, name): one column order for every tensor."""
    if not len(rel_df):
        return []
    med = rel_df.groupby("format", sort=False)["bpw"].median()
    return sorted(med.index, key=lambda f: (float(med[f]), str(f)))


# a tapped cell is outlined; the others stay readable (bokeh's default fades them to 0.2)
_TAPPED = dict(nonselection_alpha=0.85, selection_line_color="#d62728", selection_line_width=2)


def frame_height(n_rows: int, row_height: int) -> int:
    """The frame height of ``n_rows`` rows; at least 180 px, so the colorbar has room."""
    return max(row_height * max(n_rows, 1), 180)


def error_heatmap(rel_df: pd.DataFrame, row_height: int | None = None) -> hv.HeatMap:
    """Tensor (y, in the table's order, first at the top) × format (x, by bpw); colour is
    log10(ratio) on a sequential colormap, 0 (ratio 1) = best at its bpw. Hover shows tensor,
    format, bpw, metric, best_format and ratio; the tap tool is on, so a page can follow
    clicks (e.g. with ``hv.streams.Tap`` or ``Selection1D`` on this element).

    When ``rel_df`` holds several models or imatrices, the row label is prefixed with them.
    ``row_height`` (pixels) fixes the plot frame's height (``frame_height``) and leaves out
    zoom and pan, so a plot beside it with the same rows (``stats_plot``) lines up with it;
    the width still stretches."""
    metric = rel_df.attrs.get("metric", "metric")
    data = rel_df.copy()
    ratio = pd.to_numeric(data["ratio"], errors="coerce").to_numpy(float)
    with np.errstate(divide="ignore", invalid="ignore"):
        log = np.log10(ratio)
    data["log10_ratio"] = np.where(np.isfinite(log), log, np.nan)
    prefix = [k for k in _GROUP_KEYS if k in data.columns and data[k].nunique(dropna=False) > 1]
    data["row"] = [" · ".join(str(v) for v in vals)
                   for vals in zip(*(data[k] for k in (*prefix, "tensor")))] if len(data) else []
    order = {f: i for i, f in enumerate(_format_order(data))}
    data["_x"] = data["format"].map(order)
    rows = list(dict.fromkeys(data["row"]))
    data["_y"] = data["row"].map({r: i for i, r in enumerate(rows)})
    data = data.sort_values(["_y", "_x"], kind="stable")
    # HeatMap's aggregation reshapes every column; Arrow-backed strings (pandas 3) cannot be
    data = data.astype({c: object for c in ("row", "tensor", "format", "best_format")})
    finite = data["log10_ratio"].to_numpy(float)
    finite = finite[np.isfinite(finite)]
    hi = float(finite.max()) if finite.size and finite.max() > 0 else 1.0
    vdims = [hv.Dimension("log10_ratio", label=f"log10({metric} / best)"),
             "tensor", "bpw", "metric", "best_format", "ratio"]
    hover = [("tensor", "@tensor"), ("format", "@format"), ("bpw", "@bpw{0.000}"),
             (metric, "@metric{0.000e}"), ("best at this bpw", "@best_format"),
             ("ratio", "@ratio{0.000}")]
    n_rows = max(len(rows), 1)
    n_cols = len(order)
    # aligned: no zoom or pan, which would move one plot's rows and not the other's; the
    # colorbar below, so the columns get the width
    size = (dict(frame_height=frame_height(n_rows, row_height), default_tools=["save"],
                 colorbar_position="bottom", xrotation=90, fontsize={"xticks": "7pt"}) if row_height
            else dict(min_height=max(320, 14 * n_rows), xrotation=60))
    responsive = True
    if n_cols > FIT_COLUMNS:     # too many to label in the page's width: a fixed column width
        size.update(frame_width=COLUMN_PX * n_cols)   # (the page scrolls the plot sideways)
        responsive = False
    return hv.HeatMap(data[["format", "row", "log10_ratio", "tensor", "bpw", "metric",
                            "best_format", "ratio"]],
                      kdims=[hv.Dimension("format", label="format (by bpw)"),
                             hv.Dimension("row", label="tensor row")],
                      vdims=vdims).opts(
        cmap="viridis", clim=(0.0, hi), colorbar=True, tools=["hover", "tap"], **_TAPPED,
        hover_tooltips=hover, invert_yaxis=True, responsive=responsive,
        xlabel="format (by bpw)", ylabel="tensor", **size,
        title=f"{metric} relative to the best format at the same bpw")


# Beyond FIT_COLUMNS formats the heatmap stops stretching to the page and gives each column
# COLUMN_PX pixels, enough for its 7-point label turned upright, so no two labels overlap.
FIT_COLUMNS = 40
COLUMN_PX = 16


def stats_plot(stats_df: pd.DataFrame, rows: list[str], row_height: int = 22) -> hv.Overlay:
    """The statistics of ``rows`` (tensor names, top to bottom: the heatmap's rows) as a
    table-like plot: one column per statistic (std, absmax/std, excess kurtosis), the value
    written in each cell and the cell shaded by its rank within the column (darker: larger).
    Its y dimension is the heatmap's ``row`` and its frame is ``frame_height`` high, so beside
    ``error_heatmap(..., row_height)`` the rows line up (both titled, toolbars on the right:
    the frames start at the same height). Tensors missing from ``stats_df`` (name +
    ``STAT_COLUMNS``) show a dash. The tap tool is on, as on the heatmap."""
    s = stats_df.drop_duplicates("name").set_index("name").reindex(list(rows)) if len(stats_df) \
        else pd.DataFrame(index=list(rows), columns=[c for c, _ in STATS_SHOWN])
    parts = []
    for col, label in STATS_SHOWN:
        v = pd.to_numeric(s[col], errors="coerce").astype(float)
        parts.append(pd.DataFrame({
            "stat": label, "row": list(rows), "tensor": list(rows), "value": v.to_numpy(),
            "shade": v.rank(pct=True).to_numpy(),
            "text": ["–" if not np.isfinite(x) else f"{x:.3g}" for x in v.to_numpy()]}))
    data = pd.concat(parts, ignore_index=True).astype({"stat": object, "row": object,
                                                       "tensor": object, "text": object})
    kdims = [hv.Dimension("stat", label="statistic"), hv.Dimension("row", label="tensor row")]
    # the names (~6.5 px a character), 72 px a column, the toolbar; pinned by min = max width
    # (stretch_width within bounds: bokeh's fixed mode would want a height besides frame_height)
    width = int(6.5 * max((len(str(r)) for r in rows), default=10)) + 3 * 72 + 50
    cells = hv.HeatMap(data, kdims, ["shade", "tensor", "value", "text"]).opts(
        # clim to 1.6: the darkest cell stays light enough for its text
        cmap="Blues", clim=(0.0, 1.6), colorbar=False, tools=["hover", "tap"], **_TAPPED,
        hover_tooltips=[("tensor", "@tensor"), ("statistic", "@stat"), ("value", "@value{0.0000}")],
        invert_yaxis=True, frame_height=frame_height(len(rows), row_height), responsive=True,
        min_width=width, max_width=width, default_tools=["save"], xlabel="", ylabel="",
        title="tensor statistics")
    labels = hv.Labels(data, kdims, ["text"]).opts(text_font_size="8pt", text_color="#111111",
                                                   default_tools=["save"])
    return (cells * labels).opts(invert_yaxis=True)


def _histogram(values: np.ndarray, bins: int, dim: hv.Dimension, title: str) -> hv.Histogram:
    v = np.asarray(values, np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    counts, edges = np.histogram(v, bins=bins) if v.size else (np.zeros(bins), np.linspace(-1, 1, bins + 1))
    return hv.Histogram((edges, counts), kdims=[dim], vdims=[hv.Dimension("count", label="count")]).opts(
        title=title, responsive=True, min_height=260, line_width=0, color="#1f77b4", tools=["hover"],
        fontsize={"title": "9pt"})   # titles name the tensor: long


def weight_histogram(x: np.ndarray, bins: int = 200, title: str = "weight distribution") -> hv.Histogram:
    """Histogram of a tensor's (finite) values."""
    return _histogram(x, bins, hv.Dimension("weight", label="weight value"), title)


def error_histogram(x: np.ndarray, y: np.ndarray, bins: int = 200,
                    title: str = "reconstruction error") -> hv.Histogram:
    """Histogram of the reconstruction error y − x (``y`` the dequantized ``x``)."""
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape:
        raise ValueError(f"x has shape {x.shape}, y has shape {y.shape}")
    err = y.astype(np.float64) - x.astype(np.float64)
    return _histogram(err, bins, hv.Dimension("error", label="error  y − x"), title)


# --------------------------------------------------------------------------- reconstruct
def reconstruct(x: np.ndarray, format_name: str) -> np.ndarray:
    """``x`` quantized to ``format_name`` and dequantized (float32, ``x``'s shape). Leading
    axes are folded into rows, as the sweep does; ValueError if the format cannot encode it."""
    x = np.asarray(x)
    if x.ndim == 0 or x.size == 0:
        raise ValueError(f"cannot quantize a tensor of shape {x.shape}")
    m = as_kernel_input(x.reshape(-1, x.shape[-1]))   # the array kind the kernels were warmed on
    spec = parse(format_name)
    why = spec.applies_to(m.shape)
    if why is not None:
        raise ValueError(f"{format_name}: {why}")
    codec = codec_for(spec)
    y = codec.dequantize(codec.quantize(m), m.shape)
    return np.asarray(y, np.float32).reshape(x.shape)
