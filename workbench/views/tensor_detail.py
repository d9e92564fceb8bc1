"""One tensor in depth (notebooks/02_one_tensor.ipynb): where its block scales sit, which rows
carry its outliers, where a format's reconstruction error lands, and how the llama.cpp types
compare with the best uniform format at no more bits.

House style as in ``pareto.py`` and ``tensors.py``: pure functions, array or DataFrame in,
DataFrame or HoloViews out; nothing here touches the store, a model file or Panel. Blocks run
along rows (the last axis), as in the sweep; a row that is not a whole number of blocks ends
with a short block.
"""
from __future__ import annotations

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the bokeh backend the opts below name)
import ml_dtypes
import numpy as np
import pandas as pd

from workbench.views.pareto import METRICS, llama_cpp
from workbench.views.ratios import error_ratio

# fp8 scale encodings whose range the scale histogram marks (ml_dtypes is the reference for
# their limits; tests check it agrees with workbench.kernels.scales.ENCODINGS)
FP8 = {"e4m3": ml_dtypes.float8_e4m3fn, "e5m2": ml_dtypes.float8_e5m2}
MAGNITUDE_COLUMNS = ("abs_lo", "abs_hi", "abs_mid", "count", "rms_error", "share_of_sse")
VERSUS_COLUMNS = ("format", "bpw", "metric", "best_single", "single_bpw", "single_metric",
                  "single_ratio", "best_double", "double_bpw", "double_metric", "double_ratio")
_PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


def _matrix(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim == 0 or x.size == 0:
        raise ValueError(f"need a non-empty tensor, not shape {x.shape}")
    return x.reshape(-1, x.shape[-1])


def _pair(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(x), np.asarray(y)
    if x.shape != y.shape:
        raise ValueError(f"x has shape {x.shape}, y has shape {y.shape}")
    return _matrix(x), _matrix(y)


def _blocks(m: np.ndarray, block: int) -> np.ndarray:
    """A non-negative [rows, cols] float64 matrix as [rows, blocks, block], the short last
    block padded with zeros (which change neither a max nor a sum of non-negative values)."""
    if block < 1:
        raise ValueError(f"block must be >= 1, not {block}")
    rows, cols = m.shape
    nb = -(-cols // block)
    padded = np.zeros((rows, nb * block))
    padded[:, :cols] = m
    return padded.reshape(rows, nb, block)


# ------------------------------------------------------------------------------ block scales
def block_absmax(x: np.ndarray, block: int) -> np.ndarray:
    """|x| maximum of every block of ``block`` consecutive elements along each row:
    float64 [rows, ceil(cols / block)]; the last block of a row may be short."""
    return _blocks(np.abs(_matrix(x).astype(np.float64)), block).max(axis=2)


def fp8_scale_floor(encoding: str) -> tuple[float, float]:
    """log2 of (smallest normal, smallest subnormal) ÷ largest finite value of an fp8 encoding:
    how far below the largest block scale (which the per-tensor normalizer puts on the
    encoding's max) a scale can sit and still keep every mantissa bit, resp. not round to 0."""
    if encoding not in FP8:
        raise ValueError(f"unknown fp8 encoding {encoding!r} (one of {', '.join(FP8)})")
    fi = ml_dtypes.finfo(FP8[encoding])
    top = float(fi.max)
    return float(np.log2(float(fi.smallest_normal) / top)), float(np.log2(float(fi.smallest_subnormal) / top))


def scale_range_histogram(x: np.ndarray, block: int = 32, encodings=("e4m3",),
                          bins: int = 120) -> hv.Overlay:
    """Histogram of log2(block absmax ÷ the tensor's largest block absmax) — for an absmax,
    symmetric format, each block scale relative to the largest one — with each fp8
    encoding's normal (dashed) and subnormal (dotted) floor drawn as a labelled vertical line;
    the x range always includes the floors. All-zero blocks (no scale to encode) are left out."""
    amax = block_absmax(x, block).reshape(-1)
    amax = amax[amax > 0]
    if amax.size:
        rel = np.log2(amax / amax.max())
        counts, edges = np.histogram(rel, bins=bins)
    else:
        counts, edges = np.zeros(bins), np.linspace(-1, 0, bins + 1)
    dim = hv.Dimension("log2_rel_scale", label=f"log2(block absmax / largest), B = {block}")
    count = hv.Dimension("count", label="blocks")
    hist = hv.Histogram((edges, counts), kdims=[dim], vdims=[count]).opts(
        line_width=0, color="#1f77b4", tools=["hover"])
    layers, lo, top = [hist], float(edges[0]), max(float(counts.max()), 1.0)
    for i, enc in enumerate(encodings):
        color = _PALETTE[(i + 1) % len(_PALETTE)]
        # a vertical Curve rather than a VLine: it gets a legend entry and widens the x range
        for value, what, dash in zip(fp8_scale_floor(enc), ("smallest normal", "smallest subnormal"),
                                     ("dashed", "dotted")):
            layers.append(hv.Curve(([value, value], [0, top]), dim, count, label=f"{enc} {what}").opts(
                color=color, line_dash=dash, line_width=2))
            lo = min(lo, value)
    return hv.Overlay(layers).opts(title=f"block scales relative to the largest ({amax.size} blocks)",
                                   xlim=(lo - 1, 0.5), responsive=True, min_height=300,
                                   legend_position="top_left")


def row_spread(x: np.ndarray) -> pd.DataFrame:
    """Per row: absmax, rms and absmax ÷ rms (0 for an all-zero row). A per-row scale is set
    by absmax, so rows whose ratio stands out are the ones a per-row or large-block format
    quantizes coarsely."""
    m = _matrix(x).astype(np.float64)
    absmax = np.abs(m).max(axis=1)
    rms = np.sqrt(np.mean(m * m, axis=1))
    with np.errstate(divide="ignore", invalid="ignore"):
        ratio = np.where(rms > 0, absmax / np.where(rms > 0, rms, 1.0), 0.0)
    return pd.DataFrame({"row": np.arange(m.shape[0]), "absmax": absmax, "rms": rms,
                         "absmax_over_rms": ratio})


def row_spread_plot(rows: pd.DataFrame) -> hv.Overlay:
    """Each row's absmax and rms against its index (log y): outlier channels stand out as
    absmax spikes over a flat rms."""
    row = hv.Dimension("row", label="row")
    val = hv.Dimension("value", label="|x|")
    data = rows[(rows["absmax"] > 0)]
    absmax = hv.Curve((data["row"], data["absmax"]), row, val, label="row absmax").opts(color="#d62728")
    rms = hv.Curve((data["row"], data["rms"]), row, val, label="row rms").opts(color="#1f77b4")
    return (absmax * rms).opts(title="per-row spread", logy=True, responsive=True, min_height=300,
                               legend_position="top_right", show_grid=True)


# ------------------------------------------------------------------------ where error lands
def error_by_magnitude(x: np.ndarray, y: np.ndarray, bins: int = 32) -> pd.DataFrame:
    """Reconstruction error y − x binned by |x| on log-spaced bins up to absmax: per bin the
    element count, rms error and the bin's share of the total squared error. The first bin
    starts at 0 and holds every |x| below its upper edge (zeros included); the bottom of the
    log range is the smallest nonzero |x|, but no lower than absmax · 2⁻²⁴. Empty bins are
    left out; an all-zero x gives one bin."""
    x, y = _pair(x, y)
    a = np.abs(x.astype(np.float64)).reshape(-1)
    e2 = ((y.astype(np.float64) - x.astype(np.float64)) ** 2).reshape(-1)
    top = float(a.max())
    if top == 0:
        edges = np.array([0.0, 1.0])
    else:
        nz = a[a > 0]
        lo = max(float(nz.min()), top * 2.0 ** -24)
        edges = np.geomspace(lo, top, bins + 1) if lo < top else np.array([lo, top])
        edges[0] = 0.0
    idx = np.clip(np.searchsorted(edges, a, side="right") - 1, 0, len(edges) - 2)
    count = np.bincount(idx, minlength=len(edges) - 1)
    sse = np.bincount(idx, weights=e2, minlength=len(edges) - 1)
    total = float(sse.sum())
    keep = count > 0
    lo_e, hi_e = edges[:-1][keep], edges[1:][keep]
    mid = np.where(lo_e > 0, np.sqrt(lo_e * hi_e), hi_e / 2)
    return pd.DataFrame({"abs_lo": lo_e, "abs_hi": hi_e, "abs_mid": mid, "count": count[keep],
                         "rms_error": np.sqrt(sse[keep] / count[keep]),
                         "share_of_sse": sse[keep] / total if total > 0 else np.zeros(keep.sum())})


def error_by_magnitude_plot(tables: dict[str, pd.DataFrame]) -> hv.Overlay:
    """rms error against |x| (log–log), one line per format (``tables``: format → the
    ``error_by_magnitude`` frame)."""
    xdim = hv.Dimension("abs_mid", label="|x| (bin centre)")
    ydim = hv.Dimension("rms_error", label="rms error in bin")
    curves = [hv.Curve(t[t["rms_error"] > 0], xdim, [ydim, "count", "share_of_sse"], label=name).opts(
        color=_PALETTE[i % len(_PALETTE)], tools=["hover"])
        for i, (name, t) in enumerate(tables.items())]
    return hv.Overlay(curves or [hv.Curve([], xdim, ydim)]).opts(
        title="error by weight magnitude", logx=True, logy=True, responsive=True, min_height=320,
        legend_position="top_left", show_grid=True)


def block_error_share(x: np.ndarray, y: np.ndarray, block: int = 32, points: int = 200) -> pd.DataFrame:
    """How concentrated the squared error is: blocks sorted by their squared error, worst
    first; at up to ``points`` log-spaced block counts k, ``fraction_of_blocks`` = k / blocks
    and ``share_of_sse`` = the k worst blocks' share of the total (exact at each k; 1.0 at k
    = all). A zero total error gives a share of 0 everywhere."""
    x, y = _pair(x, y)
    e2 = (y.astype(np.float64) - x.astype(np.float64)) ** 2
    per_block = np.sort(_blocks(e2, block).sum(axis=2).reshape(-1))[::-1]
    n = per_block.size
    k = np.unique(np.round(np.geomspace(1, n, max(2, points))).astype(np.int64))
    cum = np.cumsum(per_block)
    total = cum[-1]
    share = cum[k - 1] / total if total > 0 else np.zeros(k.size)
    return pd.DataFrame({"blocks": k, "fraction_of_blocks": k / n, "share_of_sse": share})


def share_in_worst(share: pd.DataFrame, fraction: float) -> float:
    """The worst blocks' share of the squared error at the largest measured fraction of
    blocks ≤ ``fraction`` (``share``: a ``block_error_share`` frame); NaN when none is."""
    rows = share[share["fraction_of_blocks"] <= fraction * (1 + 1e-12)]
    return float(rows["share_of_sse"].iloc[-1]) if len(rows) else float("nan")


def error_share_plot(tables: dict[str, pd.DataFrame]) -> hv.Overlay:
    """Share of the squared error in the worst fraction of blocks (log x), one line per
    format, with the line an evenly spread error would follow."""
    xdim = hv.Dimension("fraction_of_blocks", label="worst fraction of blocks")
    ydim = hv.Dimension("share_of_sse", label="share of Σ(y−x)²")
    curves = [hv.Curve(t, xdim, [ydim, "blocks"], label=name).opts(
        color=_PALETTE[i % len(_PALETTE)], tools=["hover"]) for i, (name, t) in enumerate(tables.items())]
    lo = min((float(t["fraction_of_blocks"].min()) for t in tables.values() if len(t)), default=1e-3)
    even = np.geomspace(lo, 1.0, 50)
    ref = hv.Curve((even, even), xdim, ydim, label="even spread").opts(color="#888888", line_dash="dashed")
    return hv.Overlay([*curves, ref]).opts(title="how concentrated the error is", logx=True,
                                           responsive=True, min_height=320, legend_position="top_left",
                                           show_grid=True)


# --------------------------------------------------------------------------- versus llama.cpp
def versus_llama_cpp(df: pd.DataFrame, metric: str = "nmse", slack: float = 1e-9) -> pd.DataFrame:
    """For every llama.cpp type (family 'ggml') in ``df`` (one row per format: a summary, or
    one tensor's rows): the best uniform single and the best uniform double format at no more
    bits (bpw ≤ the type's bpw + ``slack``), their bpw and ``metric``, and ratio = candidate ÷
    type (< 1: the uniform format is better; for higher-is-better metrics the ratio is taken
    on the matching error, as in ``ratios.error_ratio``). Ties go to the lower bpw, then the
    name. No candidate: a missing name (NA) and NaN values."""
    need = ["format", "family", "bpw", "super_bits", metric]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"the table has no column(s) {', '.join(missing)}")
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r} (one of {', '.join(METRICS)})")
    if df["format"].duplicated().any():
        raise ValueError("one row per format expected (several rows share a format)")
    better = METRICS[metric].lower_is_better
    data = df[need].copy()
    data["bpw"] = pd.to_numeric(data["bpw"], errors="coerce").astype(float)
    data["value"] = pd.to_numeric(data[metric], errors="coerce").astype(float)
    data = data[np.isfinite(data["bpw"]) & np.isfinite(data["value"])]
    uniform = data[data["family"] == "uniform"]
    pools = {"single": uniform[uniform["super_bits"].isna()], "double": uniform[uniform["super_bits"].notna()]}
    out = []
    for _, t in data[llama_cpp(data["family"])].sort_values(["bpw", "format"]).iterrows():
        row = {"format": t["format"], "bpw": t["bpw"], "metric": t["value"]}
        for side, pool in pools.items():
            cand = pool[pool["bpw"] <= t["bpw"] + slack]
            if len(cand):
                key = cand["value"] if better else -cand["value"]
                best = cand.assign(_k=key).sort_values(["_k", "bpw", "format"]).iloc[0]
                row.update({f"best_{side}": best["format"], f"{side}_bpw": best["bpw"],
                            f"{side}_metric": best["value"],
                            f"{side}_ratio": float(error_ratio(best["value"], t["value"], metric))})
            else:
                row.update({f"best_{side}": None, f"{side}_bpw": np.nan, f"{side}_metric": np.nan,
                            f"{side}_ratio": np.nan})
        out.append(row)
    table = pd.DataFrame(out, columns=list(VERSUS_COLUMNS))
    table.attrs["metric"] = metric
    return table
