"""The Pareto page's pure plot functions: a model-level summary DataFrame in, HoloViews out.

Nothing here touches the store or Panel, so all of it is tested without a browser; the
Panel class that wires widgets to these functions is ``workbench.views.pareto_page.ParetoPage``.
"""
from __future__ import annotations

import re
from dataclasses import dataclass

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the bokeh backend the opts below name)
import numpy as np
import pandas as pd
from bokeh.palettes import Category20

from workbench.formats import FormatError, parse, spec_columns

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
    Metric("bnl_seed", "BNL as the seed computes it (strided lanes)", True, True),
    Metric("max_abs_err", "max |x−y|", True, True),
    Metric("cosine", "cosine similarity", False, False),
    # with an importance matrix only (NaN otherwise, so plottable() drops the rows)
    Metric("wnmse", "importance-weighted NMSE  Σw(x−y)²/Σwx²", True, True),
    Metric("wmse", "importance-weighted MSE  Σw(x−y)²/Σw", True, True),
)}
WEIGHTED = ("wnmse", "wmse")
# What a format does to the model's outputs (``model_eval``, whole-model evaluations): offered for
# the formats evaluated with ``workbench eval``. rank/top-1 agreement are linear (often 1).
MODEL_METRICS = {m.name: m for m in (
    Metric("drift", "embedding drift  1 − mean cosine", True, True),
    Metric("rank_agreement", "retrieval rank agreement (Spearman)", False, False),
    Metric("top1_agreement", "retrieval top-1 agreement", False, False),
    Metric("kld_mean", "mean KLD to the reference logits", True, True),
    Metric("kld_p99", "99th percentile KLD", True, True),
    Metric("dppl", "ΔPPL (perplexity − reference)", True, False),
    Metric("top1", "top-1 agreement with the reference model", False, False),
)}
ALL_METRICS = {**METRICS, **MODEL_METRICS}
WEIGHT_ERROR = "w_nmse"     # the weight-error frontier beside a model-level one: same formats, same tensors
WEIGHT_COLOR = "#000000"    # hollow diamonds, dashed: no kind's colour (Category20 holds red, grey)

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
    m = ALL_METRICS[metric]
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
        lower_is_better = ALL_METRICS[y].lower_is_better if y in ALL_METRICS else True
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
    types are drawn last: they often sit exactly on a uniform format with the same bytes. A
    selection (``Selection1D`` indices are positions in ``.data``) is shown by the browser
    itself: the rest fade, so brushing costs no redraw on the server."""
    m = ALL_METRICS[metric]
    data = _by_kind(with_kind(df), llama_cpp_last=True).reset_index(drop=True)
    colors = colors or kind_colors(ordered_kinds(data))
    fmt = "{0.000e}" if m.log else "{0.000}"
    data = data.assign(written_as=_written_as(data))
    vdims = [c for c in ("kind", "format", "family", "bits", "block", "scale_dtype", "written_as")
             if c in data.columns]
    return hv.Points(data, kdims=[BPW, hv.Dimension(metric, label=m.label)], vdims=vdims).opts(
        color="kind", cmap=colors, size=9, alpha=0.85, line_color="white", logy=m.log,
        nonselection_alpha=0.12, selection_alpha=1.0, selection_line_color="#222222",
        tools=["hover", "box_select", "lasso_select", "tap"], active_tools=["box_select", "wheel_zoom"],
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
    """The legend of kinds as its own layer of zero-size markers, so the selectable points carry
    no legend and a legend click cannot hide part of what a brush selects."""
    data = _by_kind(with_kind(df), llama_cpp_last=False)
    colors = colors or kind_colors(ordered_kinds(data))
    return hv.Points(data[["bpw", metric, "kind"]], kdims=[BPW, hv.Dimension(metric, label=ALL_METRICS[metric].label)],
                     vdims=["kind"]).opts(color="kind", cmap=colors, size=0, tools=[], show_legend=True,
                                          logy=ALL_METRICS[metric].log)


def pareto_frontier(df: pd.DataFrame, metric: str = "nmse", label: str = "Pareto frontier") -> hv.Curve:
    """The Pareto frontier as a step line: the best value reachable at or below each bpw."""
    m = ALL_METRICS[metric]
    front = pareto_front(df, "bpw", metric, m.lower_is_better)
    return hv.Curve(front[["bpw", metric]], BPW, hv.Dimension(metric, label=m.label),
                    label=label).opts(
        interpolation="steps-post", color="#555555", line_width=2, alpha=0.9, logy=m.log)


def llama_cpp_labels(df: pd.DataFrame, metric: str = "nmse") -> hv.Overlay:
    """The names of llama.cpp's own types (family 'ggml') next to their points; a ``*`` marks a
    type that some tensors were written in llama.cpp's fallback type for (hover tells which).
    Many types sit within a few tenths of a bit of each other (4.25-4.5 bpw), so neighbours in
    bpw order alternate between a label above-right and one below-left of the point."""
    m = ALL_METRICS[metric]
    col = "label" if "label" in df.columns else "format"
    ggml = df[df["family"] == "ggml"][["bpw", metric, col]].sort_values(["bpw", metric])
    dims = [BPW, hv.Dimension(metric, label=m.label)]
    common = dict(text_font_size="8pt", text_color="#222222", logy=m.log)
    above = hv.Labels(ggml.iloc[0::2], dims, col).opts(
        text_align="left", text_baseline="bottom", xoffset=0.04, **common)
    below = hv.Labels(ggml.iloc[1::2], dims, col).opts(
        text_align="right", text_baseline="top", xoffset=-0.04, **common)
    return above * below


def pareto_plot(df: pd.DataFrame, metric: str = "nmse", *, points: hv.Points | None = None,
                colors: dict[str, str] | None = None, underlay: hv.Element | None = None) -> hv.Overlay:
    """bpw vs ``metric`` for every format, the Pareto frontier and llama.cpp's types labelled.
    ``points``: the format layer to use (``pareto_points`` of the same rows), when the caller
    attaches a selection stream to it. ``underlay`` (e.g. ``tensor_cloud``) is drawn beneath."""
    m = ALL_METRICS[metric]
    data = with_kind(plottable(df, metric))
    colors = colors or kind_colors(ordered_kinds(data))
    points = points if points is not None else pareto_points(data, metric, colors)
    title = f"{metric}: {'lower' if m.lower_is_better else 'higher'} is better"
    layers = kind_legend(data, metric, colors) * pareto_frontier(data, metric) * points
    if underlay is not None:
        layers = underlay * layers
    return (layers * llama_cpp_labels(data, metric)).opts(
        title=title, legend_position="right", responsive=True, min_height=480, show_grid=True,
        logy=m.log)


def selected_table(df: pd.DataFrame, metric: str = "nmse", extra=()) -> pd.DataFrame:
    """The selection table's rows: a format's description and the metric (then ``extra``
    columns), by bpw."""
    cols = [c for c in TABLE_COLUMNS if c in df.columns] + [metric] + [c for c in extra if c in df.columns]
    return df[cols].sort_values(["bpw", metric]).reset_index(drop=True)


# ------------------------------------------------------------------- the model-level axis
def model_level_rows(whole: pd.DataFrame) -> pd.DataFrame:
    """Whole-model evaluations (``truth.whole_model``: one row per format) as Pareto rows: the
    format columns its name implies (as a sweep stores them, so the format filters apply), the
    evaluation's own bpw, its model-level metrics and the weight error of the same tensors."""
    if whole.empty:
        return pd.DataFrame(columns=["format", "family", "bpw"])
    described = []
    for f, family in zip(whole["format"], whole["family"]):
        try:
            described.append(spec_columns(parse(f)))
        except FormatError:          # a name this version cannot parse: its family only
            described.append({"format": f, "family": family})
    keep = ["format", "bpw", *[c for c in whole.columns if c in MODEL_METRICS or c.startswith("w_")],
            *[c for c in ("fallback_tensors", "applied_types", "n_tensors") if c in whole.columns]]
    out = pd.DataFrame(described).merge(whole[keep], on="format", how="inner")
    out["tensors"] = out.get("n_tensors")
    fb = out["fallback_tensors"].fillna(0) if "fallback_tensors" in out else pd.Series(0, index=out.index)
    out["label"] = [f + ("*" if n else "") for f, n in zip(out["format"], fb)]
    return with_kind(out.sort_values("bpw").reset_index(drop=True))


def _log_range(values) -> tuple[float, float]:
    """A log axis' range around the positive finite ``values``, padded by ~6% of a decade span."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v) & (v > 0)]
    lo, hi = (float(v.min()), float(v.max())) if len(v) else (1e-6, 1.0)
    pad = (hi / lo) ** 0.06 if hi > lo else 2.0
    return lo / pad, hi * pad


def weight_error_layers(df: pd.DataFrame, weight: str = WEIGHT_ERROR) -> hv.Overlay:
    """The same formats' weight error on a second (right, logarithmic) y axis: hollow black
    diamonds and their Pareto frontier as a dashed step line. The axis range is explicit, since
    bokeh cannot derive a log range for a second axis beside a linear one."""
    y = pd.to_numeric(df[weight], errors="coerce").to_numpy(float)
    data = df[np.isfinite(y) & (y > 0)]
    dim = hv.Dimension(weight, label=f"weight error {weight} (right axis, diamonds)", range=_log_range(data[weight]))
    points = hv.Points(data[["bpw", weight, "format"]], [BPW, dim], ["format"]).opts(
        marker="diamond", size=9, color=WEIGHT_COLOR, fill_alpha=0, line_width=1.5, logy=True,
        tools=["hover"], show_legend=False,
        hover_tooltips=[("format", "@format"), ("bpw", "@bpw{0.000}"), (weight, "@{%s}{0.000e}" % weight)])
    front = pareto_front(data, "bpw", weight, lower_is_better=True)
    curve = hv.Curve(front[["bpw", weight]], BPW, dim, label=f"weight-error frontier ({weight})").opts(
        interpolation="steps-post", color=WEIGHT_COLOR, line_dash="dashed", line_width=2, logy=True)
    return points * curve


def model_level_plot(df: pd.DataFrame, metric: str, *, points: hv.Points | None = None,
                     colors: dict[str, str] | None = None, weight: str = WEIGHT_ERROR) -> hv.Overlay:
    """bpw vs a model-level ``metric`` for the evaluated formats with its Pareto frontier (left
    axis), and the same formats' weight error ``weight`` with its own frontier (right axis):
    where the two frontiers hold different formats, weight error picks another format than the
    model's outputs would (``disagreement_note``)."""
    m = ALL_METRICS[metric]
    data = with_kind(plottable(df, metric))
    colors = colors or kind_colors(ordered_kinds(data))
    points = points if points is not None else pareto_points(data, metric, colors)
    layers = (kind_legend(data, metric, colors)
              * pareto_frontier(data, metric, label=f"model-level frontier ({metric})") * points)
    if weight in data.columns and pd.to_numeric(data[weight], errors="coerce").gt(0).any():
        layers = layers * weight_error_layers(data, weight)
    title = f"{metric} (model-level, {'lower' if m.lower_is_better else 'higher'} is better) and {weight}: both frontiers"
    return (layers * llama_cpp_labels(data, metric)).opts(
        multi_y=True, title=title, legend_position="right", responsive=True, min_height=480,
        show_grid=True, logy=m.log)


def disagreement_note(disagree: dict, metric: str, weight: str = WEIGHT_ERROR) -> str:
    """Markdown naming the formats on one frontier but not the other
    (``truth.frontier_disagreements``)."""
    names = lambda fs: ", ".join(f"`{f}`" for f in fs)  # noqa: E731
    w, m = list(disagree.get("weight_only", [])), list(disagree.get("model_only", []))
    if not w and not m:
        return f"**The frontiers agree**: the {weight} and the {metric} frontier hold the same formats."
    parts = ([f"on the weight-error ({weight}) frontier only: {names(w)}"] if w else []) + \
            ([f"on the model-level ({metric}) frontier only: {names(m)}"] if m else [])
    return "**The frontiers disagree** — " + "; ".join(parts) + "."


# ---------------------------------------------------------------------------- filters
SINGLE, DOUBLE = "single", "double"
FORMAT_FILTERS = ("family", "structure", "scale_dtype", "bits", "block", "symmetry")


def structure_of(df: pd.DataFrame) -> pd.Series:
    """'double' for a format with a quantized super-block scale (k-quant-like), else 'single'."""
    double = df["super_bits"].notna() if "super_bits" in df.columns else pd.Series(False, index=df.index)
    return double.map({True: DOUBLE, False: SINGLE})


def symmetry_of(df: pd.DataFrame) -> pd.Series:
    return df["symmetric"].map({True: "symmetric", False: "asymmetric"}).fillna("?")


def filter_values(df: pd.DataFrame) -> dict[str, list]:
    """The values each format filter can take in ``df`` (sorted; what the checkboxes offer)."""
    if df.empty:
        return {k: [] for k in FORMAT_FILTERS}
    enc = [e for e in df["scale_dtype"].dropna().unique()]
    return {"family": sorted(df["family"].dropna().unique()),
            "structure": [s for s in (SINGLE, DOUBLE) if s in set(structure_of(df))],
            "scale_dtype": sorted(enc, key=lambda e: (ENCODING_ORDER.index(e) if e in ENCODING_ORDER
                                                      else len(ENCODING_ORDER), e)),
            "bits": sorted(int(b) for b in df["bits"].dropna().unique()),
            "block": sorted(int(b) for b in df["block"].dropna().unique()),
            "symmetry": sorted(set(symmetry_of(df)))}


def filter_formats(df: pd.DataFrame, **chosen) -> pd.DataFrame:
    """The rows whose format matches every given filter (a list of allowed values per name in
    FORMAT_FILTERS; a filter not given, or None, allows everything; an empty list nothing)."""
    unknown = set(chosen) - set(FORMAT_FILTERS)
    if unknown:
        raise ValueError(f"unknown format filter(s): {', '.join(sorted(unknown))}")
    keep = np.ones(len(df), bool)
    for name, allowed in chosen.items():
        if allowed is None:
            continue
        col = (structure_of(df) if name == "structure" else symmetry_of(df) if name == "symmetry"
               else df[name])
        keep &= col.isin(list(allowed)).to_numpy()
    return df[keep]


def tensors_matching(names, pattern: str = "", kinds=None) -> list[str]:
    """The tensor names that match ``pattern`` (a Python regex, searched; "" matches all) and
    are of one of ``kinds`` (see sources.tensor_kind; None: any). Raises ValueError with one
    line for an invalid pattern."""
    from workbench.sources import tensor_kind
    try:
        rx = re.compile(pattern) if pattern else None
    except re.error as exc:
        raise ValueError(f"tensor regex {pattern!r}: {exc}") from None
    return [n for n in names if (rx is None or rx.search(n))
            and (kinds is None or tensor_kind(n) in kinds)]


# ------------------------------------------------------------------ distance to the frontier
def frontier_at(df: pd.DataFrame, bpw, metric: str = "nmse") -> np.ndarray:
    """The frontier's value at each bpw: the best ``metric`` of any row of ``df`` with at most
    that many bits per weight (NaN below the cheapest row)."""
    m = ALL_METRICS[metric]
    front = pareto_front(df, "bpw", metric, m.lower_is_better)
    xs = front["bpw"].to_numpy(float)
    ys = front[metric].to_numpy(float)
    i = np.searchsorted(xs, np.asarray(bpw, float), side="right") - 1
    return np.where(i >= 0, ys[np.clip(i, 0, None)] if len(ys) else np.nan, np.nan)


def frontier_gap(df: pd.DataFrame, metric: str = "nmse") -> np.ndarray:
    """How far each row is from the frontier at its own bpw: the ratio metric / frontier for a
    logarithmic metric (1 on the frontier, 1.3 = 30% more error), else the difference in the
    metric's unit towards worse (0 on the frontier; e.g. dB of SQNR lost)."""
    m = ALL_METRICS[metric]
    y = pd.to_numeric(df[metric], errors="coerce").to_numpy(float)
    f = frontier_at(df, df["bpw"], metric)
    if m.log:
        with np.errstate(divide="ignore", invalid="ignore"):
            return y / f if m.lower_is_better else f / y
    return y - f if m.lower_is_better else f - y


def gap_label(metric: str) -> str:
    m = ALL_METRICS[metric]
    return "× frontier" if m.log else ("worse than frontier" + (" (dB)" if metric == "sqnr_db" else ""))


# --------------------------------------------------------------------- per-tensor views
def per_tensor_errors(rows: pd.DataFrame, metric: str = "nmse", title: str = "") -> hv.Scatter:
    """One format's error on each tensor, one row per tensor, worst at the top (``rows``:
    store.tensor_results for that format). Dots, not bars: a bar on a log axis has no base."""
    m = METRICS[metric]
    data = plottable(rows, metric).sort_values(metric, ascending=m.lower_is_better)
    data = data.assign(short=[t.removesuffix(".weight") for t in data["tensor"]])
    return hv.Scatter(data, hv.Dimension("short", label="tensor"),
                      [hv.Dimension(metric, label=m.label), "tensor", "bpw"]).opts(
        invert_axes=True, logy=m.log, responsive=True, height=max(220, 16 * len(data) + 70),
        tools=["hover"], color="#4c72b0", size=8, title=title, show_grid=True,
        fontsize={"xticks": "7pt"})


RASTERIZE_ABOVE = 20_000   # (tensor, format) points drawn one by one up to this many


def tensor_cloud(rows: pd.DataFrame, metric: str = "nmse", max_points: int = RASTERIZE_ABOVE,
                 bins: tuple[int, int] = (240, 120)) -> hv.Element:
    """Every (tensor, format) point under the model-level points: small grey dots, or, above
    ``max_points``, a density raster (counts per cell, binned uniformly in log10 of the metric on
    a log axis so that the cells are square on screen)."""
    m = METRICS[metric]
    data = plottable(rows, metric)
    kdims = [BPW, hv.Dimension(metric, label=m.label)]
    if len(data) <= max_points:
        return hv.Points(data[["bpw", metric, "tensor", "format"]], kdims, ["tensor", "format"]).opts(
            color="#9a9a9a", size=3, alpha=0.35, tools=["hover"], logy=m.log, show_legend=False)
    x = data["bpw"].to_numpy(float)
    y = data[metric].to_numpy(float)
    yt = np.log10(y) if m.log else y
    xe = np.linspace(x.min(), x.max() + 1e-9, bins[0] + 1)
    ye = np.linspace(yt.min(), yt.max() + 1e-9 * max(1.0, abs(yt.max())), bins[1] + 1)
    counts, _, _ = np.histogram2d(x, yt, bins=(xe, ye))
    counts = np.where(counts > 0, counts, np.nan).T   # empty cells transparent
    return hv.QuadMesh((xe, 10 ** ye if m.log else ye, counts), kdims, hv.Dimension("points")).opts(
        cmap="Greys", cnorm="log", alpha=0.6, logy=m.log, colorbar=False, tools=[], line_alpha=0)
