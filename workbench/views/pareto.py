"""The Pareto page's pure plot functions: a model-level summary DataFrame in, HoloViews out.

Nothing here touches the store or Panel, so all of it is tested without a browser; the
Panel class that wires widgets to these functions is ``workbench.views.pareto_page.ParetoPage``.
"""
from __future__ import annotations

from dataclasses import dataclass

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the bokeh backend the opts below name)
import numpy as np
import pandas as pd
from bokeh.palettes import Category20

LLAMA_CPP = "llama.cpp"


@dataclass(frozen=True)
class Metric:
    name: str
    label: str
    lower_is_better: bool
    log: bool


METRICS = {m.name: m for m in (
    Metric("nmse", "NMSE  Σ(x−y)²/Σx²", True, True),
    Metric("sqnr_db", "SQNR (dB)", False, False),
    Metric("bnl", "BNL (block-normalized L1)", True, True),
    Metric("max_abs_err", "max |x−y|", True, True),
    Metric("cosine", "cosine similarity", False, False),
    # with an importance matrix only (NaN otherwise, so plottable() drops the rows)
    Metric("wnmse", "importance-weighted NMSE  Σw(x−y)²/Σwx²", True, True),
    Metric("wmse", "importance-weighted MSE  Σw(x−y)²/Σw", True, True),
)}
WEIGHTED = ("wnmse", "wmse")

# Scale encodings in a fixed order, so each keeps its colour whatever a filter leaves.
ENCODING_ORDER = ("f16", "bf16", "f32", "e4m3", "e5m2", "e8m0")
TABLE_COLUMNS = ("format", "family", "bits", "block", "scale_dtype", "bpw", "applied_types")
BPW = hv.Dimension("bpw", label="bits per weight")


# ------------------------------------------------------------------------------- data
def kind_of(family: str, scale_dtype: str | None, double: bool) -> str:
    """The legend group of a format: llama.cpp's own types, else family (or 'double') + scale."""
    if family == "ggml":
        return LLAMA_CPP
    return f"{'double' if double else family} {scale_dtype or '?'}"


def with_kind(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` with a 'kind' column (see ``kind_of``); kept if already there."""
    if "kind" in df.columns:
        return df
    out = df.copy()
    double = out["super_bits"].notna() if "super_bits" in out.columns else pd.Series(False, index=out.index)
    scale = out["scale_dtype"] if "scale_dtype" in out.columns else pd.Series(None, index=out.index)
    out["kind"] = [kind_of(f, s if isinstance(s, str) else None, bool(d))
                   for f, s, d in zip(out["family"], scale, double)]
    return out


def _kind_key(kind: str) -> tuple:
    if kind == LLAMA_CPP:
        return (0, 0, "")
    group, _, enc = kind.partition(" ")
    rank = ENCODING_ORDER.index(enc) if enc in ENCODING_ORDER else len(ENCODING_ORDER)
    return (1 + (group == "double") + 2 * (group not in ("uniform", "double")), rank, kind)


def ordered_kinds(df: pd.DataFrame) -> list[str]:
    """The kinds present, llama.cpp first, then uniform and double by scale encoding."""
    return sorted(set(with_kind(df)["kind"]), key=_kind_key) if len(df) else []


def kind_colors(kinds) -> dict[str, str]:
    """A stable colour per kind: one hue per scale encoding, dark for single, light for double."""
    colors, spare = {}, iter(Category20[20][2 * len(ENCODING_ORDER):])
    for kind in kinds:
        if kind == LLAMA_CPP:
            colors[kind] = "#222222"
            continue
        group, _, enc = kind.partition(" ")
        if enc in ENCODING_ORDER and group in ("uniform", "double"):
            colors[kind] = Category20[20][2 * ENCODING_ORDER.index(enc) + (group == "double")]
        else:
            colors[kind] = next(spare, "#7f7f7f")
    return colors


def plottable(df: pd.DataFrame, metric: str = "nmse") -> pd.DataFrame:
    """Rows that can be drawn: finite bpw and metric, and > 0 where the axis is logarithmic."""
    m = METRICS[metric]
    x = pd.to_numeric(df["bpw"], errors="coerce").to_numpy(float)
    y = pd.to_numeric(df[metric], errors="coerce").to_numpy(float)
    ok = np.isfinite(x) & np.isfinite(y)
    if m.log:
        ok &= y > 0
    return df[ok]


def pareto_front(df: pd.DataFrame, x: str = "bpw", y: str = "nmse",
                 lower_is_better: bool | None = None) -> pd.DataFrame:
    """The rows no other row dominates (x <= and y at least as good, strictly better in one),
    sorted by x. Exact duplicates do not dominate each other, so both are kept. Rows with a
    non-finite x or y are left out. ``lower_is_better`` defaults from METRICS (else True)."""
    if lower_is_better is None:
        lower_is_better = METRICS[y].lower_is_better if y in METRICS else True
    xs = pd.to_numeric(df[x], errors="coerce").to_numpy(float)
    ys = pd.to_numeric(df[y], errors="coerce").to_numpy(float)
    cost = ys if lower_is_better else -ys
    ok = np.flatnonzero(np.isfinite(xs) & np.isfinite(ys))
    order = ok[np.lexsort((cost[ok], xs[ok]))]     # by x, then best first
    keep, best, i = [], np.inf, 0
    while i < len(order):                          # one group of equal x at a time
        j = i
        while j < len(order) and xs[order[j]] == xs[order[i]]:
            j += 1
        group = order[i:j]
        if cost[group[0]] < best:                  # beats everything with a smaller x
            keep += [k for k in group if cost[k] == cost[group[0]]]
            best = cost[group[0]]
        i = j
    return df.iloc[keep]


# ------------------------------------------------------------------------------ plots
def _by_kind(data: pd.DataFrame, llama_cpp_last: bool) -> pd.DataFrame:
    rank = {k: i for i, k in enumerate(ordered_kinds(data))}
    if llama_cpp_last:
        rank[LLAMA_CPP] = len(rank)
    return data.iloc[np.argsort([rank[k] for k in data["kind"]], kind="stable")]


def pareto_points(df: pd.DataFrame, metric: str = "nmse", colors: dict[str, str] | None = None) -> hv.Points:
    """One point per format, coloured by kind, with box/lasso select and a hover. llama.cpp's
    types are drawn last: they often sit exactly on a uniform format with the same bytes."""
    m = METRICS[metric]
    data = _by_kind(with_kind(df), llama_cpp_last=True)
    colors = colors or kind_colors(ordered_kinds(data))
    fmt = "{0.000e}" if m.log else "{0.000}"
    data = data.assign(written_as=_written_as(data))
    vdims = [c for c in ("kind", "format", "family", "bits", "block", "scale_dtype", "written_as")
             if c in data.columns]
    return hv.Points(data, kdims=[BPW, hv.Dimension(metric, label=m.label)], vdims=vdims).opts(
        color="kind", cmap=colors, size=9, alpha=0.85, line_color="white", logy=m.log,
        tools=["hover", "box_select", "lasso_select"], active_tools=["box_select", "wheel_zoom"],
        hover_tooltips=[("format", "@format"), ("kind", "@kind"), ("bpw", "@bpw{0.000}"),
                        (metric, "@{%s}%s" % (metric, fmt)), ("written as", "@written_as")],
        show_legend=False)


def _written_as(df: pd.DataFrame) -> list[str]:
    """Hover text: the llama.cpp types actually written (a k-quant on rows its block does not
    divide is written in llama-quantize's fallback type), else the format itself."""
    if "applied_types" not in df.columns:
        return list(df["format"])
    fb = df["fallback_tensors"] if "fallback_tensors" in df.columns else pd.Series(0, index=df.index)
    out = []
    for f, a, n, t in zip(df["format"], df["applied_types"], fb, df.get("tensors", fb)):
        out.append(f"{a} ({n} of {t} tensors by fallback)" if isinstance(a, str) and n else f)
    return out


def kind_legend(df: pd.DataFrame, metric: str = "nmse", colors: dict[str, str] | None = None) -> hv.Points:
    """The legend of kinds as its own layer of zero-size markers. link_selections draws the
    brushed points as two layers, and bokeh refuses a legend item whose renderers have
    different data sources (E-1006), so the brushed points carry no legend."""
    data = _by_kind(with_kind(df), llama_cpp_last=False)
    colors = colors or kind_colors(ordered_kinds(data))
    return hv.Points(data[["bpw", metric, "kind"]], kdims=[BPW, hv.Dimension(metric, label=METRICS[metric].label)],
                     vdims=["kind"]).opts(color="kind", cmap=colors, size=0, tools=[], show_legend=True,
                                          logy=METRICS[metric].log)


def pareto_frontier(df: pd.DataFrame, metric: str = "nmse") -> hv.Curve:
    """The Pareto frontier as a step line: the best value reachable at or below each bpw."""
    m = METRICS[metric]
    front = pareto_front(df, "bpw", metric, m.lower_is_better)
    return hv.Curve(front[["bpw", metric]], BPW, hv.Dimension(metric, label=m.label),
                    label="Pareto frontier").opts(
        interpolation="steps-post", color="#555555", line_width=2, alpha=0.9, logy=m.log)


def llama_cpp_labels(df: pd.DataFrame, metric: str = "nmse") -> hv.Labels:
    """The names of llama.cpp's own types (family 'ggml') next to their points; a ``*`` marks a
    type that some tensors were written in llama.cpp's fallback type for (hover tells which)."""
    m = METRICS[metric]
    col = "label" if "label" in df.columns else "format"
    ggml = df[df["family"] == "ggml"][["bpw", metric, col]]
    return hv.Labels(ggml, [BPW, hv.Dimension(metric, label=m.label)], col).opts(
        text_font_size="8pt", text_align="left", text_baseline="bottom", xoffset=0.04,
        text_color="#222222", logy=m.log)


def pareto_plot(df: pd.DataFrame, metric: str = "nmse", *, selection: hv.link_selections | None = None,
                colors: dict[str, str] | None = None) -> hv.Overlay:
    """bpw vs ``metric`` for every format, the Pareto frontier and llama.cpp's types labelled.
    ``selection`` (a link_selections instance) is applied to the points only, so the frontier
    and labels stay as drawn while the points are brushed; the result is then a DynamicMap."""
    m = METRICS[metric]
    data = with_kind(plottable(df, metric))
    colors = colors or kind_colors(ordered_kinds(data))
    points = pareto_points(data, metric, colors)
    if selection is not None:
        points = selection(points)
    title = f"{metric}: {'lower' if m.lower_is_better else 'higher'} is better"
    layers = kind_legend(data, metric, colors) * points * pareto_frontier(data, metric)
    return (layers * llama_cpp_labels(data, metric)).opts(
        title=title, legend_position="right", responsive=True, min_height=480, show_grid=True,
        logy=m.log)


def selected_table(df: pd.DataFrame, metric: str = "nmse") -> pd.DataFrame:
    """The selection table's rows: a format's description and the metric, by bpw."""
    cols = [c for c in TABLE_COLUMNS if c in df.columns] + [metric]
    return df[cols].sort_values(["bpw", metric]).reset_index(drop=True)
