"""The Tensors page's browser-free core: per-tensor statistics, error relative to the best
format at the same bpw, and the HoloViews plots built from them.

House style as in ``pareto.py``: pure functions, DataFrame (or array) in, DataFrame or
HoloViews out; nothing here touches the store or Panel. ``tensor_stats_table`` and
``reconstruct`` take a model source / format name, not a store.
"""
from __future__ import annotations

import math

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the bokeh backend the opts below name)
import numpy as np
import pandas as pd

from workbench.codecs import codec_for
from workbench.formats import parse

# Metrics where a smaller value is better: the only ones a ratio "to the best" makes sense for.
LOWER_IS_BETTER = ("nmse", "mse", "bnl", "max_abs_err", "wmse", "wnmse")
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
    best gives ratio 1.0 for a zero metric and inf otherwise; a NaN metric gives NaN ratio and
    a missing best_format. Higher-is-better metrics raise ValueError.
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
    df["bpw"] = df["bpw"].astype(float)
    df["metric"] = pd.to_numeric(df["metric"], errors="coerce").astype(float)

    parts = []
    for _, g in df.groupby([*groups, "tensor"], sort=False, dropna=False):
        parts.append(_relative_group(g, float(bpw_tolerance)))
    cols = [*groups, *REL_COLUMNS]
    out = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=cols)
    out = out[cols]
    out.attrs["metric"] = metric
    return out


def _relative_group(g: pd.DataFrame, tolerance: float) -> pd.DataFrame:
    bpw = g["bpw"].to_numpy(float)
    val = g["metric"].to_numpy(float)
    fmt = g["format"].to_numpy(object)
    n = len(g)
    best_fmt = np.empty(n, object)
    best_val = np.full(n, np.nan)
    ratio = np.full(n, np.nan)
    # candidate order for ties: lowest bpw, then name
    order = sorted(range(n), key=lambda j: (bpw[j], str(fmt[j])))
    for i in range(n):
        if not np.isfinite(val[i]):
            best_fmt[i] = None
            continue
        lim = tolerance * abs(bpw[i]) * (1 + 1e-9) + 1e-12
        cand = [j for j in order if abs(bpw[j] - bpw[i]) <= lim and np.isfinite(val[j])]
        best = min(val[j] for j in cand)  # cand holds i itself
        winner = i if val[i] == best else next(j for j in cand if val[j] == best)
        best_fmt[i], best_val[i] = fmt[winner], best
        ratio[i] = 1.0 if val[i] == best else (val[i] / best if best > 0 else np.inf)
    out = g.copy()
    out["best_format"], out["best_metric"], out["ratio"] = best_fmt, best_val, ratio
    return out


# ---------------------------------------------------------------------------------- plots
def _format_order(rel_df: pd.DataFrame) -> list[str]:
    """Formats by (median bpw over tensors, name): one column order for every tensor."""
    if not len(rel_df):
        return []
    med = rel_df.groupby("format", sort=False)["bpw"].median()
    return sorted(med.index, key=lambda f: (float(med[f]), str(f)))


def error_heatmap(rel_df: pd.DataFrame) -> hv.HeatMap:
    """Tensor (y, in the table's order, first at the top) × format (x, by bpw); colour is
    log10(ratio) on a sequential colormap, 0 (ratio 1) = best at its bpw. Hover shows tensor,
    format, bpw, metric, best_format and ratio; the tap tool is on, so a page can follow
    clicks (e.g. with ``hv.streams.Tap`` or ``Selection1D`` on this element).

    When ``rel_df`` holds several models or imatrices, the row label is prefixed with them."""
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
    vdims = [hv.Dimension("log10_ratio", label=f"log10({metric} / best at same bpw)"),
             "tensor", "bpw", "metric", "best_format", "ratio"]
    hover = [("tensor", "@tensor"), ("format", "@format"), ("bpw", "@bpw{0.000}"),
             (metric, "@metric{0.000e}"), ("best at this bpw", "@best_format"),
             ("ratio", "@ratio{0.000}")]
    n_rows = max(len(rows), 1)
    return hv.HeatMap(data[["format", "row", "log10_ratio", "tensor", "bpw", "metric",
                            "best_format", "ratio"]],
                      kdims=[hv.Dimension("format", label="format (by bpw)"),
                             hv.Dimension("row", label="tensor row")],
                      vdims=vdims).opts(
        cmap="viridis", clim=(0.0, hi), colorbar=True, tools=["hover", "tap"],
        hover_tooltips=hover, xrotation=60, invert_yaxis=True, responsive=True,
        min_height=max(320, 14 * n_rows), xlabel="format (by bpw)", ylabel="tensor",
        title=f"{metric} relative to the best format at the same bpw")


def _histogram(values: np.ndarray, bins: int, dim: hv.Dimension, title: str) -> hv.Histogram:
    v = np.asarray(values, np.float64).reshape(-1)
    v = v[np.isfinite(v)]
    counts, edges = np.histogram(v, bins=bins) if v.size else (np.zeros(bins), np.linspace(-1, 1, bins + 1))
    return hv.Histogram((edges, counts), kdims=[dim], vdims=[hv.Dimension("count", label="count")]).opts(
        title=title, responsive=True, min_height=260, line_width=0, color="#1f77b4", tools=["hover"])


def weight_histogram(x: np.ndarray, bins: int = 200) -> hv.Histogram:
    """Histogram of a tensor's (finite) values."""
    return _histogram(x, bins, hv.Dimension("weight", label="weight value"), "weight distribution")


def error_histogram(x: np.ndarray, y: np.ndarray, bins: int = 200) -> hv.Histogram:
    """Histogram of the reconstruction error y − x (``y`` the dequantized ``x``)."""
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape:
        raise ValueError(f"x has shape {x.shape}, y has shape {y.shape}")
    err = y.astype(np.float64) - x.astype(np.float64)
    return _histogram(err, bins, hv.Dimension("error", label="error  y − x"), "reconstruction error")


# --------------------------------------------------------------------------- reconstruct
def reconstruct(x: np.ndarray, format_name: str) -> np.ndarray:
    """``x`` quantized to ``format_name`` and dequantized (float32, ``x``'s shape). Leading
    axes are folded into rows, as the sweep does; ValueError if the format cannot encode it."""
    x = np.asarray(x)
    if x.ndim == 0 or x.size == 0:
        raise ValueError(f"cannot quantize a tensor of shape {x.shape}")
    m = np.ascontiguousarray(x.reshape(-1, x.shape[-1]), np.float32)
    spec = parse(format_name)
    why = spec.applies_to(m.shape)
    if why is not None:
        raise ValueError(f"{format_name}: {why}")
    codec = codec_for(spec)
    y = codec.dequantize(codec.quantize(m), m.shape)
    return np.asarray(y, np.float32).reshape(x.shape)
