"""Two stores compared (notebooks/03_compare_stores.ipynb): results DataFrames in
(``workbench.store.results`` of each store), comparison tables or HoloViews out. Nothing here
touches the store or Panel.

A measurement is matched across stores by ``COMPARE_KEY`` — the store's natural key without
backend, device and workbench_version, which are exactly what may differ between two
collaborators. Within one store, repeated rows of a key (other runs, other devices) are first
reduced to one value: the mean for an error metric, the max for ``max_abs_err``, the best
(highest) for a throughput; ``n_a``/``n_b`` say how many rows were reduced.

``ratio`` is A ÷ B of the metric as stored (throughput A ÷ B > 1: A is faster), exactly 1.0
where the two values are equal (zeros and infinities included), NaN where either is NaN.
``match`` is exact equality (or ``rtol``), and two NaNs match.
"""
from __future__ import annotations

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the bokeh backend the opts below name)
import numpy as np
import pandas as pd

from workbench.metrics import REGISTRY, metrics_of
from workbench.views.pareto import METRICS
from workbench.views.ratios import axis_ticks

COMPARE_KEY = ("model", "tensor", "format", "imatrix")
# words per second, from the time columns (numel / seconds)
THROUGHPUT = {"quant_wps": "quant_s", "dequant_wps": "dequant_s"}
_COMPARED = {**METRICS, "mse": REGISTRY["mse"], **metrics_of("throughput")}
assert set(THROUGHPUT) == set(metrics_of("throughput"))
COMPARE_METRICS = {name: m.label for name, m in _COMPARED.items()}
LOG_METRICS = {name for name, m in _COMPARED.items() if m.log}
# how a metric reduces over repeated rows of one key, and over the tensors of one format
_PEAK = ("max_abs_err",)
RUN_COLUMNS = ("run_id", "host", "device", "backend", "workbench_version", "git_rev", "packages",
               "created_at", "rows", "tensors", "formats")


def _check_metric(metric: str) -> None:
    if metric not in COMPARE_METRICS:
        raise ValueError(f"unknown metric {metric!r} (one of {', '.join(COMPARE_METRICS)})")


# ------------------------------------------------------------------------------- provenance
def runs_table(df: pd.DataFrame) -> pd.DataFrame:
    """One row per run of a results frame: where and with what it was measured (host,
    device, backend, workbench_version, git_rev, packages), when it started (the earliest
    created_at), and how many rows, tensors and formats it holds; oldest first. Provenance
    columns an older file lacks come out empty."""
    if not len(df):
        return pd.DataFrame(columns=list(RUN_COLUMNS))
    if "run_id" not in df.columns:
        raise ValueError("the results have no 'run_id' column")
    data = df.copy()
    for c in RUN_COLUMNS[1:8]:
        if c not in data.columns:
            data[c] = None
    for c in ("tensor", "format"):
        if c not in data.columns:
            data[c] = None
    g = data.groupby("run_id", sort=False, dropna=False)
    first = g[list(RUN_COLUMNS[1:7])].first()
    out = first.assign(created_at=g["created_at"].min(), rows=g.size(), tensors=g["tensor"].nunique(),
                       formats=g["format"].nunique()).reset_index()
    return out[list(RUN_COLUMNS)].sort_values(["created_at", "run_id"], kind="stable").reset_index(drop=True)


# ----------------------------------------------------------------------------- comparison
def _reduce(df: pd.DataFrame, metric: str, side: str) -> pd.DataFrame:
    """One row per COMPARE_KEY: family, bpw, numel and the metric (see the module doc)."""
    cols = [*COMPARE_KEY, "family", "bpw", "numel", "value", "n"]
    if not len(df):
        return pd.DataFrame(columns=cols)
    source = THROUGHPUT.get(metric, metric)
    need = [c for c in (*COMPARE_KEY, "family", "bpw", "numel", source) if c != "imatrix"]
    missing = [c for c in need if c not in df.columns]
    if missing:
        raise ValueError(f"store {side} has no column(s) {', '.join(missing)}")
    data = df[[c for c in (*COMPARE_KEY, "family", "bpw", "numel", source) if c in df.columns]].copy()
    # "" and NULL both mean "measured without an imatrix" (as in the store)
    data["imatrix"] = data["imatrix"].fillna("").astype(object) if "imatrix" in data else ""
    value = pd.to_numeric(data[source], errors="coerce").astype(float)
    if metric in THROUGHPUT:
        with np.errstate(divide="ignore", invalid="ignore"):
            value = data["numel"].astype(float) / value
    data["value"] = value
    agg = "max" if metric in _PEAK or metric in THROUGHPUT else "mean"
    g = data.groupby(list(COMPARE_KEY), sort=False, dropna=False)
    out = g.agg(family=("family", "first"), bpw=("bpw", "first"), numel=("numel", "first"),
                value=("value", agg), n=("value", "size")).reset_index()
    return out[cols]


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        r = a / b
    return np.where(a == b, 1.0, r)        # equal values give exactly 1, even 0/0 and inf/inf


def _match(a: np.ndarray, b: np.ndarray, rtol: float) -> np.ndarray:
    both_nan = np.isnan(a) & np.isnan(b)
    same = (a == b) if rtol == 0 else np.isclose(a, b, rtol=rtol, atol=0.0)
    return same | both_nan


def compare_stores(df_a: pd.DataFrame, df_b: pd.DataFrame, metric: str = "nmse",
                   rtol: float = 0.0) -> pd.DataFrame:
    """Every (model, tensor, format, imatrix) measured in both stores, with ``metric`` from
    each: columns model, tensor, format, imatrix, family, bpw and numel (A's), ``{metric}_a``,
    ``{metric}_b``, ratio (A ÷ B), match, n_a, n_b; sorted by model, tensor, bpw, format.
    A key in one store only is left out; an empty frame on either side gives an empty table.
    ``rtol`` > 0 makes ``match`` a relative tolerance instead of exact equality."""
    _check_metric(metric)
    if not rtol >= 0:
        raise ValueError(f"rtol must be >= 0, not {rtol!r}")
    a, b = _reduce(df_a, metric, "A"), _reduce(df_b, metric, "B")
    va, vb = f"{metric}_a", f"{metric}_b"
    cols = [*COMPARE_KEY, "family", "bpw", "numel", va, vb, "ratio", "match", "n_a", "n_b"]
    if not len(a) or not len(b):
        out = pd.DataFrame(columns=cols)
        out.attrs["metric"] = metric
        return out
    key = list(COMPARE_KEY)
    a = a.astype({k: object for k in key})
    b = b.astype({k: object for k in key})
    both = a.rename(columns={"value": va, "n": "n_a"}).merge(
        b[[*key, "value", "n"]].rename(columns={"value": vb, "n": "n_b"}), on=key, how="inner")
    x, y = both[va].to_numpy(float), both[vb].to_numpy(float)
    both["ratio"] = _ratio(x, y)
    both["match"] = _match(x, y, rtol)
    both = both.sort_values(["model", "tensor", "bpw", "format"], kind="stable").reset_index(drop=True)
    out = both[cols]
    out.attrs["metric"] = metric
    return out


def _combine(values: np.ndarray, numel: np.ndarray, metric: str) -> float:
    """A format's figure over its tensors: numel-weighted mean (as ``store.summary``), max for
    a peak, total weights ÷ total seconds for a throughput, and for sqnr_db the dB of the
    weighted mean NMSE (the mean of dB values is not a ratio of errors)."""
    if metric in _PEAK:
        return float(np.max(values))
    if metric in THROUGHPUT:
        with np.errstate(divide="ignore", invalid="ignore"):
            return float(numel.sum() / (numel / values).sum())
    if metric == "sqnr_db":
        nmse = float((10.0 ** (-values / 10.0) * numel).sum() / numel.sum())
        with np.errstate(divide="ignore"):
            return float(-10.0 * np.log10(nmse))
    return float((values * numel).sum() / numel.sum())


def format_comparison(table: pd.DataFrame) -> pd.DataFrame:
    """Per (model, imatrix, format) of a ``compare_stores`` table: both stores' figure over the
    same tensors (those both measured, so a difference is never a different tensor mix), the
    ratio A ÷ B, tensors, mismatches (tensors whose values differ) and match (none do). bpw
    is the numel-weighted mean (= total stored bits ÷ total weights); sorted by bpw."""
    metric = table.attrs.get("metric")
    if metric is None:
        raise ValueError("not a compare_stores table (no metric in attrs)")
    va, vb = f"{metric}_a", f"{metric}_b"
    cols = ["model", "imatrix", "format", "family", "bpw", "tensors", "mismatches", va, vb, "ratio", "match"]
    rows = []
    for (model, imx, fmt), g in table.groupby(["model", "imatrix", "format"], sort=False):
        numel = g["numel"].to_numpy(float)
        a = _combine(g[va].to_numpy(float), numel, metric)
        b = _combine(g[vb].to_numpy(float), numel, metric)
        mism = int((~g["match"].astype(bool)).sum())
        rows.append({"model": model, "imatrix": imx, "format": fmt, "family": g["family"].iloc[0],
                     "bpw": float((g["bpw"].to_numpy(float) * numel).sum() / numel.sum()),
                     "tensors": len(g), "mismatches": mism, va: a, vb: b,
                     "ratio": float(_ratio(np.array([a]), np.array([b]))[0]), "match": mism == 0})
    out = pd.DataFrame(rows, columns=cols)
    if len(out):
        out = out.sort_values(["model", "bpw", "format"], kind="stable").reset_index(drop=True)
    out.attrs["metric"] = metric
    return out


# ---------------------------------------------------------------------------------- plots
def _agreement(table: pd.DataFrame) -> list[str]:
    return ["identical" if m else "differs" for m in table["match"].astype(bool)] if len(table) else []


def comparison_scatter(table: pd.DataFrame, metric: str = "nmse") -> hv.Overlay:
    """Store B's value against store A's, one point per row of a ``compare_stores`` or
    ``format_comparison`` table, coloured by whether the two agree, over the line B = A."""
    _check_metric(metric)
    va, vb = f"{metric}_a", f"{metric}_b"
    for c in (va, vb, "ratio", "match", "format"):
        if c not in table.columns:
            raise ValueError(f"the table has no {c!r} column (compare it with metric={metric!r})")
    log = metric in LOG_METRICS
    data = table.assign(agreement=_agreement(table))
    vals = np.concatenate([data[va].to_numpy(float), data[vb].to_numpy(float)])
    vals = vals[np.isfinite(vals) & ((vals > 0) if log else True)]
    data = data[np.isfinite(data[va].astype(float)) & np.isfinite(data[vb].astype(float))]
    if log:
        data = data[(data[va] > 0) & (data[vb] > 0)]
    label = COMPARE_METRICS[metric]
    xdim, ydim = hv.Dimension(va, label=f"A: {label}"), hv.Dimension(vb, label=f"B: {label}")
    vdims = [c for c in ("agreement", "tensor", "format", "ratio") if c in data.columns]
    hover = [(c, f"@{{{c}}}") for c in ("tensor", "format") if c in data.columns]
    hover += [("A", f"@{{{va}}}{{0.000e}}"), ("B", f"@{{{vb}}}{{0.000e}}"), ("A / B", "@ratio{0.000000}")]
    points = hv.Points(data, [xdim, ydim], vdims).opts(
        color="agreement", cmap={"identical": "#1f77b4", "differs": "#d62728"}, size=7, alpha=0.8,
        tools=["hover"], hover_tooltips=hover, show_legend=True)
    lo, hi = (float(vals.min()), float(vals.max())) if vals.size else (1.0, 10.0)
    diagonal = hv.Curve(([lo, hi], [lo, hi]), xdim, ydim, label="B = A").opts(color="#888888", line_dash="dashed")
    # log axes ticked inside the data range, in plain numbers (no e-notation)
    ticks = dict(xticks=axis_ticks(lo, hi), yticks=axis_ticks(lo, hi)) if log and vals.size else {}
    return (diagonal * points).opts(title=f"{metric}: store B against store A", logx=log, logy=log,
                                    padding=0.05, responsive=True, min_height=380,
                                    legend_position="top_left", show_grid=True, **ticks)


def ratio_plot(table: pd.DataFrame, metric: str = "nmse") -> hv.Overlay:
    """A ÷ B against bpw (log y), one point per row of a ``format_comparison`` (or
    ``compare_stores``) table, over the line ratio = 1."""
    _check_metric(metric)
    for c in ("bpw", "ratio", "format"):
        if c not in table.columns:
            raise ValueError(f"the table has no {c!r} column")
    r = table["ratio"].astype(float)
    data = table[np.isfinite(r) & (r > 0)].assign(agreement=lambda d: _agreement(d))
    ydim = hv.Dimension("ratio", label=f"A / B: {COMPARE_METRICS[metric]}")
    xdim = hv.Dimension("bpw", label="bits per weight")
    vdims = [c for c in ("format", "tensors", "agreement") if c in data.columns]
    points = hv.Points(data, [xdim, ydim], vdims).opts(
        size=8, color="#1f77b4", tools=["hover"],
        hover_tooltips=[("format", "@format"), ("bpw", "@bpw{0.0000}"), ("A / B", "@ratio{0.000000}")])
    # explicit limits: all ratios equal to 1 would leave a log axis a range of zero width
    r = data["ratio"].to_numpy(float)
    lo, hi = min(r.min(initial=1.0), 1.0), max(r.max(initial=1.0), 1.0)
    return (points * hv.HLine(1.0).opts(color="#888888", line_dash="dashed")).opts(
        title=f"{metric}: A / B per format", logy=True, ylim=(lo / 1.25, hi * 1.25), responsive=True,
        min_height=320, show_grid=True, yticks=axis_ticks(lo, hi), xformatter="%.4g")
