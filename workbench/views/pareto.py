"""The Pareto page's pure plot functions: a model-level summary DataFrame in, HoloViews out.

Nothing here touches the store or Panel, so all of it is tested without a browser; the
Panel class that wires widgets to these functions is ``workbench.views.pareto_page.ParetoPage``.
"""
from __future__ import annotations

import functools
import hashlib
import math
import re
import threading

import holoviews as hv
import holoviews.plotting.bokeh  # noqa: F401  (registers the bokeh backend the opts below name)
import numpy as np
import pandas as pd
from bokeh.core.properties import field
from bokeh.models import (Axis, CategoricalAxis, LassoSelectTool, CustomJSHover, CustomJSTicker, CustomJSTickFormatter,
                          HTMLTemplateFormatter, LogAxis)
from bokeh.palettes import Category20

from workbench.formats import FormatError, parse, spec_columns
from workbench.metrics import REGISTRY, Metric, metrics_of  # noqa: F401 (Metric: public here too)

LLAMA_CPP = "llama.cpp"


# The metrics, their labels, directions and axes: ``workbench.metrics.REGISTRY``, the one table.
METRICS = metrics_of("weight", "weighted", plotted=True)
WEIGHTED = tuple(metrics_of("weighted"))
# What a format does to the model's outputs (``model_eval``, whole-model evaluations): offered for
# the formats evaluated with ``workbench eval``.
MODEL_METRICS = metrics_of("model", plotted=True)
# What the Pareto page plots for a metric, where that is not the metric itself: cosine similarity
# sits at 0.99-0.99999 for every format above 4 bpw, so its distance to 1 goes on a log axis.
PLOTTED = {"cosine": REGISTRY["cosine_distance"]}
DERIVED = {"cosine_distance": ("cosine", lambda cos: 1.0 - cos)}
ALL_METRICS = {**METRICS, **MODEL_METRICS, **{m.name: m for m in PLOTTED.values()}}
WEIGHT_ERROR = "w_nmse"     # the weight-error frontier beside a model-level one: same formats, same tensors
WEIGHT_COLOR = "#000000"    # hollow diamonds, dashed: no kind's colour (Category20 holds red, grey)

# Scale encodings in a fixed order, so each keeps its colour whatever a filter leaves.
ENCODING_ORDER = ("f16", "bf16", "f32", "e4m3", "e5m2", "e8m0")
TABLE_COLUMNS = ("format", "same_as", "family", "bits", "block", "scale_dtype", "super_block_weights",
                 "super_scale_dtype", "bpw", "applied_types")
BPW = hv.Dimension("bpw", label="bits per weight")


# ------------------------------------------------------------------------------- data
def llama_cpp(family: pd.Series) -> pd.Series:
    """Which rows are llama.cpp's own types (the families whose plug-in declares ``LLAMA_CPP``):
    labelled on the plot, the budget readout's nearest type, the native-tensors switch."""
    from workbench.families import with_trait
    return family.isin(with_trait("LLAMA_CPP"))


def kind_of(family: str, scale_encoding: str | None, double: bool) -> str:
    """The legend group of a format: 'llama.cpp' for llama.cpp's own types, else 'single' or
    'double' (the uniform grid's one- and two-level formats) and the float scale encoding
    (``scale_encoding_of``): 'single f16', 'double e4m3'; 'codebook f32' … for the codebook
    family, 'codebook dq' for its bitsandbytes double quantization. The same words in the legend, the
    hover, the Tensors page's kind filter and the README; the Family filter's 'uniform grid'
    holds both single and double, as the Single / double filter splits them."""
    return _kind_of(family, scale_encoding, bool(double))


@functools.cache
def _kind_of(family: str, scale_encoding: str | None, double: bool) -> str:
    from workbench.families import trait
    if (kind := trait(family, "KIND")) is not None:    # one group for the family (llama.cpp, ik_llama.cpp)
        return kind
    if (per_format := trait(family, "kind")) is not None:
        return per_format(double, scale_encoding)
    return f"{family} {scale_encoding or '?'}"


def scale_encoding_of(df: pd.DataFrame) -> pd.Series:
    """The float encoding a format's scales are stored in, as a user chooses it: the
    super-scale's in two-level formats (a double format's suffix, Q4_K's f16 over its 6-bit
    sub-block scales), else the scale's (``formats.scale_layout``)."""
    scale = df["scale_dtype"] if "scale_dtype" in df.columns else pd.Series(None, index=df.index, dtype=object)
    if "super_scale_dtype" in df.columns:
        scale = df["super_scale_dtype"].where(df["super_scale_dtype"].notna(), scale)
    return scale


def with_kind(df: pd.DataFrame) -> pd.DataFrame:
    """A copy of ``df`` with a 'kind' column (see ``kind_of``) and 'scale_encoding'
    (``scale_encoding_of``); kept if already there."""
    if "kind" in df.columns and "scale_encoding" in df.columns:
        return df
    out = df.copy()
    out["scale_encoding"] = scale_encoding_of(out)
    double = out["super_bits"].notna() if "super_bits" in out.columns else pd.Series(False, index=out.index)
    if "kind" not in out.columns:
        out["kind"] = [kind_of(f, s if isinstance(s, str) else None, bool(d))
                       for f, s, d in zip(out["family"], out["scale_encoding"], double)]
    return out


def kind_label(kind: str) -> str:
    """What the legend and the hover call a kind: the kind itself ('single f16', 'double
    e4m3', 'llama.cpp'; ``kind_of``)."""
    return kind


# marker shape by structure: single-level uniform, double (two-level) uniform, llama.cpp's types
MARKERS = {"single": "circle", "double": "square", LLAMA_CPP: "triangle"}
OTHER_MARKER = "hex"


def kind_marker(kind: str) -> str:
    if kind == LLAMA_CPP:
        return MARKERS[LLAMA_CPP]
    group = kind.partition(" ")[0]
    return MARKERS[group] if group in ("single", "double") else OTHER_MARKER


def _kind_key(kind: str) -> tuple:
    if kind == LLAMA_CPP:
        return (0, 0, "")
    group, _, enc = kind.partition(" ")
    rank = ENCODING_ORDER.index(enc) if enc in ENCODING_ORDER else len(ENCODING_ORDER)
    return (1 + (group == "double") + 2 * (group not in ("single", "double")), rank, kind)


def ordered_kinds(df: pd.DataFrame) -> list[str]:
    """The kinds present, llama.cpp first, then single and double by scale encoding."""
    return sorted(set(with_kind(df)["kind"]), key=_kind_key) if len(df) else []


def kind_colors(kinds) -> dict[str, str]:
    """A stable colour per kind: one hue per scale encoding, dark for single, light for double."""
    colors, spare = {}, iter(Category20[20][2 * len(ENCODING_ORDER):])
    for kind in kinds:
        if kind == LLAMA_CPP:
            colors[kind] = "#222222"
            continue
        group, _, enc = kind.partition(" ")
        if enc in ENCODING_ORDER and group in ("single", "double"):
            colors[kind] = Category20[20][2 * ENCODING_ORDER.index(enc) + (group == "double")]
        else:
            colors[kind] = next(spare, "#7f7f7f")
    return colors


def plotted(metric: str) -> str:
    """The column the Pareto page draws for ``metric``: ``cosine_distance`` (1 − cosine, on a log
    axis) for cosine, else the metric itself."""
    return PLOTTED[metric].name if metric in PLOTTED else metric


def with_derived(df: pd.DataFrame) -> pd.DataFrame:
    """``df`` with the derived columns (DERIVED: 1 − cosine) its columns allow, if not there yet."""
    missing = {name: f(pd.to_numeric(df[src], errors="coerce")) for name, (src, f) in DERIVED.items()
               if src in df.columns and name not in df.columns}
    return df.assign(**missing) if missing else df


def plottable(df: pd.DataFrame, metric: str = "nmse") -> pd.DataFrame:
    """Rows that can be drawn: finite bpw and metric, and > 0 where the axis is logarithmic.
    A derived metric (``cosine_distance``) is added to the rows when missing."""
    m = ALL_METRICS[metric]
    df = with_derived(df) if metric in DERIVED else df
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


# --------------------------------------------------------------------- readable numbers
# One style for every number the page prints (ticks, hover, table, readout): plain decimals from
# 0.0001 to 999999 (0.0025, 0.007799, 4.500), below and above that a power of ten written with a
# multiplication sign and superscripts (7.8×10⁻⁶), never e-notation. The Python functions are the
# reference; the same rules run in the browser (READABLE_JS), and the UI tests compare the two.
SIG = 4             # significant digits in hover texts, table cells and the readout
BPW_SIG = 5         # bpw: 4.4375, 3.4375 and 4.5000 are exact
PLAIN = (-4, 6)     # decimal exponents printed as plain decimals: 1e-4 <= |x| < 1e6
_SUPERSCRIPT = str.maketrans("0123456789-", "⁰¹²³⁴⁵⁶⁷⁸⁹⁻")


def readable(x, sig: int = SIG) -> str:
    """``x`` to ``sig`` significant digits: a plain decimal for 1e-4 <= |x| < 1e6 (trailing zeros
    kept: 4.500), else ``m×10ⁿ`` (7.799×10⁻⁶). NaN and infinities as 'NaN', '∞', '−∞'."""
    x = float(x)
    if math.isnan(x):
        return "NaN"
    if math.isinf(x):
        return "∞" if x > 0 else "−∞"
    if x == 0:
        return "0"
    mantissa, _, exponent = f"{x:.{sig - 1}e}".partition("e")
    e = int(exponent)
    if PLAIN[0] <= e < PLAIN[1]:
        return f"{x:.{max(sig - 1 - e, 0)}f}"
    return f"{mantissa}×10{str(e).translate(_SUPERSCRIPT)}"


def tick_digits(ticks) -> int:
    """The fewest significant digits (1-12) that write every one of ``ticks`` exactly (to 1e-9),
    so that an axis' labels share one precision: 0.5, 1, 1.5 and not 0.50, 1.00, 1.50."""
    digits = 1
    for t in ticks:
        t = float(t)
        if not math.isfinite(t) or t == 0:
            continue
        while digits < 12 and abs(float(f"{t:.{digits - 1}e}") - t) > 1e-9 * abs(t):
            digits += 1
    return digits


def tick_labels(ticks) -> list[str]:
    """An axis' tick labels: ``readable`` at the precision of ``tick_digits``."""
    digits = tick_digits(ticks)
    return [readable(t, digits) for t in ticks]


# mantissas of the major ticks of a log axis by the decades it spans (fewer decades: more ticks)
LOG_MANTISSAS = ((3.0, (1,)), (1.2, (1, 2, 5)), (0.55, (1, 2, 3, 5, 7)), (0.25, (1, 1.5, 2, 3, 4, 5, 6, 7, 8, 9)))
MAX_DECADE_LABELS = 8


def _nice_step(span: float, n: int) -> float:
    """The largest 1-2-5 step that fits ``n`` times in ``span`` (so n to ~2.5 n + 1 ticks)."""
    raw = span / max(n, 1)
    power = 10.0 ** math.floor(math.log10(raw))
    return next(m * power for m in (5, 2, 1) if m * power <= raw * (1 + 1e-12))


def log_ticks(lo: float, hi: float) -> tuple[list[float], list[float]]:
    """(major, minor) ticks of a log axis over [lo, hi], every major tick inside the range: one
    per decade (every k-th decade for many), 1-2-5, 1-2-3-5-7 or 1-9 per decade as the span
    narrows, and for less than a quarter of a decade evenly spaced 1-2-5 steps. At least two
    major ticks whenever the range is positive and not a single value. READABLE_JS has the same."""
    lo, hi = min(lo, hi), max(lo, hi)
    if not (lo > 0 and hi > lo and math.isfinite(hi)):
        return [], []
    span = math.log10(hi / lo)
    eps = 1e-9
    inside = lambda v: lo * (1 - eps) <= v <= hi * (1 + eps)  # noqa: E731
    decades = range(math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1)
    major: list[float] = []
    for threshold, mantissas in LOG_MANTISSAS:
        if span >= threshold:
            stride = max(1, math.ceil(span / MAX_DECADE_LABELS)) if mantissas == (1,) else 1
            major = [float(f"{m * 10.0 ** d:.12g}") for d in decades if d % stride == 0 for m in mantissas]
            major = [v for v in major if inside(v)]
            break
    if len(major) < 2:                       # less than a quarter of a decade: a linear axis, nearly
        step = _nice_step(hi - lo, 4)
        major = [float(f"{k * step:.12g}") for k in range(math.ceil(lo / step - eps), math.floor(hi / step + eps) + 1)]
        major = [v for v in major if v > 0 and inside(v)]
        return major, []
    every = [float(f"{m * 10.0 ** d:.12g}") for d in decades for m in range(1, 10)]
    minor = [v for v in every if inside(v) and v not in major] if span < 6 else []
    return major, minor


READABLE_JS = r"""
const PLAIN_LO = %d, PLAIN_HI = %d, SUP = {"0": "⁰", "1": "¹", "2": "²", "3": "³", "4": "⁴", "5": "⁵",
      "6": "⁶", "7": "⁷", "8": "⁸", "9": "⁹", "-": "⁻"};
function readable(x, sig) {
  if (x == null || Number.isNaN(x)) return "NaN";
  if (!Number.isFinite(x)) return x > 0 ? "∞" : "−∞";
  if (x === 0) return "0";
  const [mantissa, exponent] = x.toExponential(sig - 1).split("e");
  const e = Number(exponent);
  if (e >= PLAIN_LO && e < PLAIN_HI) return x.toFixed(Math.max(sig - 1 - e, 0));
  return mantissa + "×10" + String(e).split("").map(c => SUP[c]).join("");
}
function tick_digits(ticks) {
  let digits = 1;
  for (const t of ticks) {
    if (!Number.isFinite(t) || t === 0) continue;
    while (digits < 12 && Math.abs(Number(t.toExponential(digits - 1)) - t) > 1e-9 * Math.abs(t)) digits++;
  }
  return digits;
}
""" % PLAIN

LOG_TICKS_JS = READABLE_JS + r"""
const LOG_MANTISSAS = %s, MAX_DECADE_LABELS = %d;
const g = v => Number(v.toPrecision(12));
function log_ticks(lo, hi) {
  [lo, hi] = [Math.min(lo, hi), Math.max(lo, hi)];
  if (!(lo > 0 && hi > lo && Number.isFinite(hi))) return [[], []];
  const span = Math.log10(hi / lo), eps = 1e-9;
  const inside = v => lo * (1 - eps) <= v && v <= hi * (1 + eps);
  const decades = [];
  for (let d = Math.floor(Math.log10(lo)) - 1; d < Math.ceil(Math.log10(hi)) + 1; d++) decades.push(d);
  let major = [];
  for (const [threshold, mantissas] of LOG_MANTISSAS) {
    if (span >= threshold) {
      const one = mantissas.length == 1;
      const stride = one ? Math.max(1, Math.ceil(span / MAX_DECADE_LABELS)) : 1;
      for (const d of decades)
        if (((d %% stride) + stride) %% stride == 0)
          for (const m of mantissas) major.push(g(m * 10 ** d));
      major = major.filter(inside);
      break;
    }
  }
  if (major.length < 2) {
    const raw = (hi - lo) / 4, power = 10 ** Math.floor(Math.log10(raw));
    const step = [5, 2, 1].map(m => m * power).find(s => s <= raw * (1 + 1e-12));
    major = [];
    for (let k = Math.ceil(lo / step - eps); k <= Math.floor(hi / step + eps); k++) major.push(g(k * step));
    return [major.filter(v => v > 0 && inside(v)), []];
  }
  const minor = [];
  if (span < 6)
    for (const d of decades) for (let m = 1; m < 10; m++) {
      const v = g(m * 10 ** d);
      if (inside(v) && !major.includes(v)) minor.push(v);
    }
  return [major, minor];
}
""" % (str([[t, list(m)] for t, m in LOG_MANTISSAS]), MAX_DECADE_LABELS)


def readable_ticker() -> CustomJSTicker:
    """A log axis' ticker (``log_ticks`` in the browser, over the visible range: it follows zoom)."""
    return CustomJSTicker(major_code=LOG_TICKS_JS + "return log_ticks(cb_data.start, cb_data.end)[0];",
                          minor_code=LOG_TICKS_JS + "return log_ticks(cb_data.start, cb_data.end)[1];")


def readable_tick_formatter() -> CustomJSTickFormatter:
    """Tick labels as ``tick_labels`` writes them: one precision per axis, no e-notation."""
    return CustomJSTickFormatter(code=READABLE_JS + "return readable(tick, tick_digits(ticks));")


def readable_axes(plot, element) -> None:
    """A HoloViews hook: every numeric axis of the figure labelled by ``tick_labels`` and every log
    axis ticked by ``log_ticks``, so a log axis labels its data range whatever it spans."""
    fig = plot.state
    for axis in [*fig.left, *fig.right, *fig.below, *fig.above]:
        if not isinstance(axis, Axis) or isinstance(axis, CategoricalAxis):
            continue
        axis.formatter = readable_tick_formatter()
        if isinstance(axis, LogAxis):
            axis.ticker = readable_ticker()


def readable_hover(sig: int = SIG) -> CustomJSHover:
    """A hover formatter (``@{column}{custom}``) writing the value as ``readable(value, sig)``."""
    return CustomJSHover(code=READABLE_JS + f"return readable(value, {int(sig)});")


def hover_fields(*columns: str, sig: int = SIG, bpw: str | None = "bpw") -> dict:
    """``hover_formatters`` for the named columns (and bpw at BPW_SIG digits)."""
    out = {f"@{{{c}}}": readable_hover(sig) for c in columns}
    if bpw:
        out[f"@{{{bpw}}}"] = readable_hover(BPW_SIG)
    return out


def readable_cell(sig: int = SIG) -> HTMLTemplateFormatter:
    """A table cell formatter writing numbers as ``readable(value, sig)`` (the column still sorts
    by value). Panel's Tabulator runs bokeh's cell formatters in the browser."""
    return HTMLTemplateFormatter(template="<%= (function(x) {" + READABLE_JS.replace("\n", " ") +
                                 f" return typeof x === 'number' ? readable(x, {int(sig)}) : x;}})(value) %>")


# ------------------------------------------------------------------------------ plots
def _by_kind(data: pd.DataFrame, llama_cpp_last: bool) -> pd.DataFrame:
    rank = {k: i for i, k in enumerate(ordered_kinds(data))}
    if llama_cpp_last:
        rank[LLAMA_CPP] = len(rank)
    return data.iloc[np.argsort([rank[k] for k in data["kind"]], kind="stable")]


def pareto_points(df: pd.DataFrame, metric: str = "nmse", colors: dict[str, str] | None = None) -> hv.Points:
    """One point per format, coloured by kind and shaped by structure (circle: single-level
    uniform, square: double, triangle: llama.cpp), with box/lasso select and a hover that prints
    every number to 4 significant digits. llama.cpp's types are drawn last: they often sit
    exactly on a uniform format with the same bytes. A selection (``Selection1D`` indices are
    positions in ``.data``) is shown by the browser itself: the rest fade, so brushing costs no
    redraw on the server. The lasso selects on release (bokeh's default sends a selection to
    the server on every mouse move: a table rebuilt per move, and transient empty selections)."""
    metric = plotted(metric)
    m = ALL_METRICS[metric]
    data = _by_kind(with_kind(with_derived(df)), llama_cpp_last=True).reset_index(drop=True)
    colors = colors or kind_colors(ordered_kinds(data))
    data = data.assign(written_as=_written_as(data), kind_label=[kind_label(k) for k in data["kind"]],
                       marker=[kind_marker(k) for k in data["kind"]])
    vdims = [c for c in ("kind", "kind_label", "marker", "format", "family", "bits", "block", "scale_dtype",
                         "written_as") if c in data.columns]
    return hv.Points(data, kdims=[BPW, hv.Dimension(metric, label=m.label)], vdims=vdims).opts(
        color="kind", cmap=colors, marker=hv.dim("marker"), size=9, alpha=0.85, line_color="white", logy=m.log,
        nonselection_alpha=0.12, selection_alpha=1.0, selection_line_color="#222222",
        tools=["hover", "box_select", LassoSelectTool(continuous=False), "tap"],
        active_tools=["box_select", "wheel_zoom"],
        hover_tooltips=[("format", "@format"), ("kind", "@{kind_label}"), ("bpw", "@{bpw}{custom}"),
                        (m.label if metric in DERIVED else metric, "@{%s}{custom}" % metric),
                        ("written as", "@{written_as}")],
        hover_formatters=hover_fields(metric), show_legend=False)


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
    """The legend of kinds (``kind_label``: single …, double …, llama.cpp; each with its colour
    and marker) as its own layer of zero-size markers, so the selectable points carry no legend
    and a legend click cannot hide part of what a brush selects."""
    metric = plotted(metric)
    data = _by_kind(with_kind(with_derived(df)), llama_cpp_last=False)
    colors = colors or kind_colors(ordered_kinds(data))
    data = data.assign(kind=[kind_label(k) for k in data["kind"]], marker=[kind_marker(k) for k in data["kind"]])
    shown = {kind_label(k): c for k, c in colors.items()}
    return hv.Points(data[["bpw", metric, "kind", "marker"]],
                     kdims=[BPW, hv.Dimension(metric, label=ALL_METRICS[metric].label)],
                     vdims=["kind", "marker"]).opts(color="kind", cmap=shown, marker=hv.dim("marker"), size=0, tools=[],
                                                    show_legend=True, logy=ALL_METRICS[metric].log)


def pareto_frontier(df: pd.DataFrame, metric: str = "nmse", label: str = "Pareto frontier") -> hv.Curve:
    """The Pareto frontier as a step line: the best value reachable at or below each bpw."""
    metric = plotted(metric)
    m = ALL_METRICS[metric]
    front = pareto_front(with_derived(df), "bpw", metric, m.lower_is_better)
    return hv.Curve(front[["bpw", metric]], BPW, hv.Dimension(metric, label=m.label),
                    label=label).opts(
        interpolation="steps-post", color="#555555", line_width=2, alpha=0.9, logy=m.log)


# ------------------------------------------------------------------------ label placement
# The plot's data frame as the placement assumes it (px): the page's plot is responsive, about
# 800 × 400 on a 1400-px-wide window; a wider frame only spreads the points further apart, and
# the offsets are in pixels, so zooming in keeps each label beside its point.
LABEL_FRAME = (720, 380)
LABEL_CHAR_PX = 7.0       # 8pt text: an upper-case letter or digit is at most ~7 px wide
LABEL_HEIGHT_PX = 12.0
MARKER_PX = 6.0           # half the box a size-9 marker covers, with a margin
# candidate directions (screen: y down), tried at each radius in this order
LABEL_DIRECTIONS = ((1, 0), (0.75, -0.75), (0.75, 0.75), (-1, 0), (-0.75, -0.75), (-0.75, 0.75), (0, -1), (0, 1))
LABEL_RADII = (8, 14, 22, 30)
LABEL_COLUMNS = ["bpw", "y", "label", "dx", "dy", "align", "baseline", "x0", "y0", "x1", "y1"]


def _screen(df: pd.DataFrame, metric: str, frame, log: bool):
    """Data → frame pixels (x right, y down), each axis over the data range padded by 5%."""
    x = pd.to_numeric(df["bpw"], errors="coerce").to_numpy(float)
    y = pd.to_numeric(df[metric], errors="coerce").to_numpy(float)
    y = np.log10(y) if log else y
    def scale(v, size, flip):
        lo, hi = np.nanmin(v), np.nanmax(v)
        pad = 0.05 * (hi - lo) if hi > lo else 0.5
        t = (v - (lo - pad)) / ((hi + pad) - (lo - pad))
        return (1 - t if flip else t) * size
    return scale(x, frame[0], False), scale(y, frame[1], True)


def _box(ax, ay, width, align, baseline):
    x0 = ax if align == "left" else ax - width if align == "right" else ax - width / 2
    y0 = ay - LABEL_HEIGHT_PX if baseline == "bottom" else ay if baseline == "top" else ay - LABEL_HEIGHT_PX / 2
    return x0, y0, x0 + width, y0 + LABEL_HEIGHT_PX


def _overlaps(a, b) -> bool:
    return a[0] < b[2] and b[0] < a[2] and a[1] < b[3] and b[1] < a[3]


# Answers of the pure functions below that every session asks with the same rows (twenty users
# opening the Pareto page place the same labels and group the same identical formats): keyed
# by the content of the columns they read (an ordered digest of pandas' per-row hashes), so a
# different input can never get an old answer; the last MEMO_SIZE answers are kept, callers
# get copies.
MEMO_SIZE = 32
_MEMO: dict[tuple, object] = {}
_MEMO_LOCK = threading.Lock()


def content_key(df: pd.DataFrame, columns) -> tuple:
    """A key for the values of ``columns`` of ``df``, row order included (which of them exist,
    the row count, and a BLAKE2b digest of pandas' 64-bit hash of each row)."""
    cols = [c for c in columns if c in df.columns]
    h = pd.util.hash_pandas_object(df[cols], index=False).to_numpy(np.uint64) if cols else np.zeros(0, np.uint64)
    return tuple(cols), len(df), hashlib.blake2b(h.tobytes(), digest_size=16).digest()


def _memo(key: tuple, compute, copy):
    with _MEMO_LOCK:
        hit = _MEMO.get(key)
    if hit is None:
        hit = compute()
        with _MEMO_LOCK:
            _MEMO[key] = hit
            while len(_MEMO) > MEMO_SIZE:
                del _MEMO[next(iter(_MEMO))]
    return copy(hit)


def place_labels(df: pd.DataFrame, metric: str = "nmse", frame=LABEL_FRAME) -> tuple[pd.DataFrame, list[str]]:
    """Where the names of llama.cpp's types go: a greedy placement in screen pixels (the data
    range mapped on a ``frame`` of w × h px). Types at the same point share one label
    ('Q4_K*/Q5_0'). Label by label, in bpw order, the nearest candidate position (8 directions
    × 4 radii around the point) whose box stays inside the frame and clear of every label
    placed so far and of every labelled point; at the same distance, the one covering fewest of
    the other formats' points (the text has a white background). A label with no such position
    is left out (its point still has the hover). Returns (placed: LABEL_COLUMNS, with the pixel
    offset dx/dy of the text anchor from its point, its alignment and its box in frame pixels;
    the names left out)."""
    metric = plotted(metric)
    data = plottable(df, metric)
    key = ("place_labels", metric, tuple(frame), content_key(data, ["bpw", metric, "family", "label", "format"]))
    return _memo(key, lambda: _place_labels(data, metric, frame), lambda r: (r[0].copy(), list(r[1])))


def _place_labels(data: pd.DataFrame, metric: str, frame) -> tuple[pd.DataFrame, list[str]]:
    m = ALL_METRICS[metric]
    col = "label" if "label" in data.columns else "format"
    empty = pd.DataFrame(columns=LABEL_COLUMNS)
    if data.empty or not llama_cpp(data["family"]).any():
        return empty, []
    sx, sy = _screen(data, metric, frame, m.log)
    data = data.assign(_sx=sx, _sy=sy)
    ggml = data[llama_cpp(data["family"])]
    others = data[~llama_cpp(data["family"])]
    groups = []
    for (bpw, y), rows in ggml.groupby([ggml["bpw"].round(9), ggml[metric].map(lambda v: float(f"{v:.9g}"))],
                                       sort=True):
        names = sorted(rows[col].astype(str), key=lambda n: (n.endswith("*"), n))
        groups.append((float(rows["bpw"].iloc[0]), float(rows[metric].iloc[0]), "/".join(names),
                       float(rows["_sx"].iloc[0]), float(rows["_sy"].iloc[0])))
    marks = [(x - MARKER_PX, y - MARKER_PX, x + MARKER_PX, y + MARKER_PX) for *_, x, y in groups]
    ox, oy = others["_sx"].to_numpy(float), others["_sy"].to_numpy(float)
    placed, dropped = [], []
    for bpw, y, text, px, py in groups:
        width = LABEL_CHAR_PX * len(text) + 2
        best = None
        for rank, (r, (ux, uy)) in enumerate((r, d) for r in LABEL_RADII for d in LABEL_DIRECTIONS):
            align = "left" if ux > 0 else "right" if ux < 0 else "center"
            baseline = "bottom" if uy < 0 else "top" if uy > 0 else "middle"
            dx, dy = ux * r, uy * r
            box = _box(px + dx, py + dy, width, align, baseline)
            if box[0] < 0 or box[1] < 0 or box[2] > frame[0] or box[3] > frame[1]:
                continue
            if any(_overlaps(box, b) for b in marks) or any(_overlaps(box, p[-4:]) for p in placed):
                continue
            covered = int(np.count_nonzero((ox > box[0] - 4) & (ox < box[2] + 4)
                                           & (oy > box[1] - 4) & (oy < box[3] + 4)))
            key = (r, covered, rank)       # near first (a label far away names nothing): the
            if best is None or key < best[0]:   # text has a white background over other points
                best = (key, (bpw, y, text, dx, dy, align, baseline, *box))
        if best is None:
            dropped.append(text)
        else:
            placed.append(best[1])
    return pd.DataFrame(placed, columns=LABEL_COLUMNS), dropped


def _pixel_offsets(plot, element) -> None:
    """Hook: each label's pixel offset and alignment from its own columns (``place_labels``)."""
    source, glyph = plot.handles["source"], plot.handles["glyph"]
    for name in ("dx", "dy", "align", "baseline"):
        source.data[name] = element.dimension_values(name)
    glyph.x_offset, glyph.y_offset = field("dx"), field("dy")
    glyph.text_align, glyph.text_baseline = field("align"), field("baseline")


def llama_cpp_labels(df: pd.DataFrame, metric: str = "nmse", frame=LABEL_FRAME) -> hv.Labels:
    """The names of llama.cpp's own types (family 'ggml') beside their points, placed so that no
    two labels and no label and labelled point overlap (``place_labels``); a ``*`` marks a type
    that some tensors were written in llama.cpp's fallback type for (hover tells which)."""
    metric = plotted(metric)
    m = ALL_METRICS[metric]
    placed, _ = place_labels(df, metric, frame)
    placed = placed.rename(columns={"y": metric})
    return hv.Labels(placed[["bpw", metric, "label", "dx", "dy", "align", "baseline"]],
                     [BPW, hv.Dimension(metric, label=m.label)], ["label", "dx", "dy", "align", "baseline"]).opts(
        text_font_size="8pt", text_color="#222222", background_fill_color="white", background_fill_alpha=0.75,
        logy=m.log, hooks=[_pixel_offsets])


def pareto_plot(df: pd.DataFrame, metric: str = "nmse", *, points: hv.Points | None = None,
                colors: dict[str, str] | None = None, underlay: hv.Element | None = None) -> hv.Overlay:
    """bpw vs ``metric`` for every format, the Pareto frontier and llama.cpp's types labelled.
    Cosine is drawn as 1 − cosine on a log axis; every axis is labelled by ``tick_labels``
    (log axes ticked by ``log_ticks``). ``points``: the format layer to use (``pareto_points`` of
    the same rows), when the caller attaches a selection stream to it. ``underlay`` (e.g.
    ``tensor_cloud``) is drawn beneath."""
    metric = plotted(metric)
    m = ALL_METRICS[metric]
    data = with_kind(plottable(df, metric))
    colors = colors or kind_colors(ordered_kinds(data))
    points = points if points is not None else pareto_points(data, metric, colors)
    title = f"{m.label if metric in DERIVED else metric}: {'lower' if m.lower_is_better else 'higher'} is better"
    layers = kind_legend(data, metric, colors) * pareto_frontier(data, metric) * points
    if underlay is not None:
        layers = underlay * layers
    return (layers * llama_cpp_labels(data, metric)).opts(
        title=title, legend_position="right", responsive=True, min_height=480, show_grid=True,
        logy=m.log, hooks=[readable_axes])


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
        tools=["hover"], show_legend=False, hover_formatters=hover_fields(weight),
        hover_tooltips=[("format", "@format"), ("bpw", "@{bpw}{custom}"), (weight, "@{%s}{custom}" % weight)])
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
        show_grid=True, logy=m.log, hooks=[readable_axes])


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
FORMAT_FILTERS = ("family", "structure", "scale_encoding", "bits", "block", "symmetry")


def structure_of(df: pd.DataFrame) -> pd.Series:
    """'double' for a two-level format (block scales stored as integer codes of a super-block
    scale: the uniform grid's double formats, the k-quants, IQ4_XS), else 'single'."""
    double = df["super_bits"].notna() if "super_bits" in df.columns else pd.Series(False, index=df.index)
    if "super_block_weights" in df.columns:
        double = double | df["super_block_weights"].notna()
    return double.map({True: DOUBLE, False: SINGLE})


def symmetry_of(df: pd.DataFrame) -> pd.Series:
    return df["symmetric"].map({True: "symmetric", False: "asymmetric"}).fillna("?")


def filter_values(df: pd.DataFrame) -> dict[str, list]:
    """The values each format filter can take in ``df`` (sorted; what the checkboxes offer)."""
    if df.empty:
        return {k: [] for k in FORMAT_FILTERS}
    enc = [e for e in scale_encoding_of(df).dropna().unique()]
    return {"family": sorted(df["family"].dropna().unique()),
            "structure": [s for s in (SINGLE, DOUBLE) if s in set(structure_of(df))],
            "scale_encoding": sorted(enc, key=lambda e: (ENCODING_ORDER.index(e) if e in ENCODING_ORDER
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
               else scale_encoding_of(df) if name == "scale_encoding" else df[name])
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



# ------------------------------------------------------------------------ best at a budget
DEFAULT_BUDGET = 4.5


def metric_name(metric: str) -> str:
    """How the page names a plotted column in text: '1 − cosine' for cosine_distance."""
    return "1 − cosine" if metric == "cosine_distance" else metric


def best_at_budget(df: pd.DataFrame, metric: str = "nmse", budget: float = DEFAULT_BUDGET) -> dict:
    """The formats of ``df`` at or under ``budget`` bpw, best first by ``metric`` (ties: fewer
    bpw, then name): ``best`` (a row, or None), ``same`` (other formats with exactly the best's
    bpw and value: the same numbers, typically the same bytes), ``runner_up`` (the next best
    format after those), ``llama_cpp`` (llama.cpp's type nearest to the budget in bpw, on either
    side: ties to the cheaper, then the better), ``within`` (how many formats fit) and
    ``cheapest`` (the row with the fewest bpw, for a budget nothing fits)."""
    metric = plotted(metric)
    m = ALL_METRICS[metric]
    data = plottable(df, metric)
    out = {"best": None, "same": [], "runner_up": None, "llama_cpp": None, "within": 0, "cheapest": None,
           "metric": metric, "budget": float(budget)}
    if data.empty:
        return out
    y = pd.to_numeric(data[metric], errors="coerce")
    data = data.assign(_cost=y if m.lower_is_better else -y)
    out["cheapest"] = data.sort_values(["bpw", "_cost", "format"]).iloc[0]
    fit = data[data["bpw"] <= budget + 1e-9].sort_values(["_cost", "bpw", "format"])
    out["within"] = len(fit)
    if len(fit):
        best = fit.iloc[0]
        same = (fit["bpw"] == best["bpw"]) & (fit[metric] == best[metric])
        out["best"] = best
        out["same"] = list(fit.loc[same, "format"].iloc[1:])
        rest = fit[~same]
        out["runner_up"] = rest.iloc[0] if len(rest) else None
    ggml = data[llama_cpp(data["family"])]
    if len(ggml):
        ggml = ggml.assign(_dist=(ggml["bpw"] - budget).abs())
        out["llama_cpp"] = ggml.sort_values(["_dist", "bpw", "_cost", "format"]).iloc[0]
    return out


def _versus(value: float, best: float, metric: str) -> str:
    """How far ``value`` is from the best's: a ratio for a log metric, else a difference."""
    m = ALL_METRICS[metric]
    if m.log and best > 0:
        ratio = value / best if m.lower_is_better else best / value
        return f"{readable(ratio)}× the best's {metric_name(metric)}"
    diff = value - best if m.lower_is_better else best - value
    unit = " dB" if metric == "sqnr_db" else ""
    return f"{readable(abs(diff))}{unit} {'worse' if diff > 0 else 'better'} than the best"


def budget_readout(result: dict) -> str:
    """One paragraph of Markdown for ``best_at_budget``'s result, every number to 4
    significant digits (bpw to 5)."""
    metric, budget = result["metric"], result["budget"]
    name = metric_name(metric)
    def describe(row) -> str:
        label = row.get("label") if isinstance(row.get("label"), str) else row["format"]
        return f"`{label}` ({readable(row['bpw'], BPW_SIG)} bpw, {name} {readable(row[metric])})"
    best = result["best"]
    if best is None:
        cheap = result["cheapest"]
        if cheap is None:
            return f"**Budget {budget:g} bpw:** no format is plotted."
        return (f"**Budget {budget:g} bpw:** no plotted format fits; the cheapest is "
                f"{describe(cheap)}.")
    text = (f"**Best at ≤ {budget:g} bpw by {name}: {describe(best)}**"
            + (f", with the same numbers as {', '.join(f'`{f}`' for f in result['same'])}" if result["same"] else "")
            + f" — of {result['within']} formats that fit.")
    runner = result["runner_up"]
    if runner is not None:
        text += f" Runner-up: {describe(runner)}, {_versus(runner[metric], best[metric], metric)}."
    ggml = result["llama_cpp"]
    if ggml is None:
        text += " No llama.cpp type is plotted."
    elif ggml["format"] == best["format"] or ggml["format"] in result["same"]:
        text += f" The nearest llama.cpp type in bpw is the best itself: {describe(ggml)}."
    else:
        over = " (over the budget)" if ggml["bpw"] > budget + 1e-9 else ""
        text += (f" Nearest llama.cpp type in bpw: {describe(ggml)}{over}, "
                 f"{_versus(ggml[metric], best[metric], metric)}.")
    return text


# --------------------------------------------------------------------- per-tensor views
def per_tensor_errors(rows: pd.DataFrame, metric: str = "nmse", title: str = "") -> hv.Scatter:
    """One format's error on each tensor, one row per tensor, worst at the top (``rows``:
    store.tensor_results for that format). Dots, not bars: a bar on a log axis has no base.
    Cosine is shown as 1 − cosine (log axis)."""
    metric = plotted(metric)
    m = ALL_METRICS[metric]
    data = plottable(rows, metric).sort_values(metric, ascending=m.lower_is_better)
    data = data.assign(short=[t.removesuffix(".weight") for t in data["tensor"]], written=written_as(data))
    return hv.Scatter(data, hv.Dimension("short", label="tensor"),
                      [hv.Dimension(metric, label=m.label), "tensor", "bpw", "written"]).opts(
        invert_axes=True, logy=m.log, responsive=True, height=max(220, 16 * len(data) + 70),
        tools=["hover"], color=hv.dim("written").categorize(
            {NATIVE: "#4c72b0"}, default="#dd8452"),
        marker=hv.dim("written").categorize({NATIVE: "circle"}, default="x"), size=8,
        title=title, show_grid=True, fontsize={"xticks": "7pt"}, hooks=[readable_axes],
        hover_formatters=hover_fields(metric),
        hover_tooltips=[("tensor", "@tensor"), ("bpw", "@{bpw}{custom}"), (metric, "@{%s}{custom}" % metric),
                        ("written", "@written")])


NATIVE = "natively"


def written_as(rows: pd.DataFrame) -> list[str]:
    """Per row: 'natively', or 'as Q5_0 (fallback)' where llama.cpp's type fell back on that
    tensor (``applied_type``; the per-tensor view marks those rows with an orange ×)."""
    if "applied_type" not in rows.columns:
        return [NATIVE] * len(rows)
    return [NATIVE if not isinstance(a, str) or a == f else f"as {a} (fallback)"
            for a, f in zip(rows["applied_type"], rows["format"])]


RASTERIZE_ABOVE = 20_000   # (tensor, format) points drawn one by one up to this many


def tensor_cloud(rows: pd.DataFrame, metric: str = "nmse", max_points: int = RASTERIZE_ABOVE,
                 bins: tuple[int, int] = (240, 120)) -> hv.Element:
    """Every (tensor, format) point under the model-level points: small grey dots, or, above
    ``max_points``, a density raster (counts per cell, binned uniformly in log10 of the metric on
    a log axis so that the cells are square on screen)."""
    metric = plotted(metric)
    m = ALL_METRICS[metric]
    data = plottable(rows, metric)
    kdims = [BPW, hv.Dimension(metric, label=m.label)]
    if len(data) <= max_points:
        return hv.Points(data[["bpw", metric, "tensor", "format"]], kdims, ["tensor", "format"]).opts(
            color="#9a9a9a", size=3, alpha=0.35, tools=["hover"], logy=m.log, show_legend=False,
            hover_formatters=hover_fields(metric),
            hover_tooltips=[("tensor", "@tensor"), ("format", "@format"), ("bpw", "@{bpw}{custom}"),
                            (metric, "@{%s}{custom}" % metric)])
    x = data["bpw"].to_numpy(float)
    y = data[metric].to_numpy(float)
    yt = np.log10(y) if m.log else y
    xe = np.linspace(x.min(), x.max() + 1e-9, bins[0] + 1)
    ye = np.linspace(yt.min(), yt.max() + 1e-9 * max(1.0, abs(yt.max())), bins[1] + 1)
    counts, _, _ = np.histogram2d(x, yt, bins=(xe, ye))
    counts = np.where(counts > 0, counts, np.nan).T   # empty cells transparent
    return hv.QuadMesh((xe, 10 ** ye if m.log else ye, counts), kdims, hv.Dimension("points")).opts(
        cmap="Greys", cnorm="log", alpha=0.6, logy=m.log, colorbar=False, tools=[], line_alpha=0)


# ----------------------------------------------------------- identical formats, native tensors
SAME_COLUMNS = ("bpw", "mse", "max_abs_err")


def identical_groups(rows: pd.DataFrame) -> list[list[str]]:
    """Formats whose results are identical on every tensor (``rows``: store.tensor_results over
    one tensor subset): the same tensors, the same size per tensor (bpw), and bit-equal mse and
    max error — the same reconstructions, as a format written twice under two names. Each group
    in name order, llama.cpp's name first; groups of one are left out.

    Vectorised (a session builds it on every tensor subset): each (tensor, values) row is
    hashed, a format's signature is the count and wrapped sum of its rows' hashes, and formats
    sharing a signature are then compared exactly, so a hash collision cannot merge two."""
    if rows.empty or not set(SAME_COLUMNS) <= set(rows.columns):
        return []
    key = ("identical_groups", content_key(rows, ["format", "family", "tensor", *SAME_COLUMNS]))
    return _memo(key, lambda: _identical_groups(rows), lambda groups: [list(g) for g in groups])


def _identical_groups(rows: pd.DataFrame) -> list[list[str]]:
    cols = ["tensor", *SAME_COLUMNS]
    h = pd.util.hash_pandas_object(rows[cols], index=False).to_numpy(np.uint64)
    sig = pd.DataFrame({"format": rows["format"].to_numpy(), "h": h}).groupby("format", sort=True)["h"].agg(
        n="size", s=lambda v: int(np.sum(v.to_numpy(np.uint64), dtype=np.uint64)))
    dup = sig[sig.duplicated(["n", "s"], keep=False)]
    if dup.empty:
        return []
    family = dict(zip(rows["format"], rows["family"])) if "family" in rows.columns else {}
    groups = []
    for _, cand in dup.groupby(["n", "s"], sort=False):
        exact: dict[tuple, list[str]] = {}
        for fmt in cand.index:
            part = rows.loc[rows["format"] == fmt, cols].sort_values("tensor")
            exact.setdefault(tuple(map(tuple, part.to_numpy(object))), []).append(str(fmt))
        groups += [sorted(g, key=lambda f: (family.get(f) != "ggml", f)) for g in exact.values() if len(g) > 1]
    return sorted(groups)


def merge_identical(df: pd.DataFrame, groups: list[list[str]]) -> pd.DataFrame:
    """One row per group of identical formats present in ``df`` (the first present keeps its
    row); ``same_as`` names the others ('' where none), and the label reads 'Q4_0 = Q4s32'."""
    out = df.copy()
    out["same_as"] = ""
    if not groups or out.empty:
        return out
    present = set(out["format"])
    drop = set()
    for group in groups:
        here = [f for f in group if f in present]
        if len(here) < 2:
            continue
        keep, rest = here[0], here[1:]
        drop.update(rest)
        at = out["format"] == keep
        out.loc[at, "same_as"] = ", ".join(rest)
        if "label" in out.columns:
            out.loc[at, "label"] = out.loc[at, "label"].astype(str) + " = " + " = ".join(rest)
    return out[~out["format"].isin(drop)].reset_index(drop=True)


def native_tensors(rows: pd.DataFrame, skipped=()) -> list[str]:
    """The tensors every llama.cpp type in ``rows`` (store.tensor_results) wrote in its own type:
    no fallback on them, and no llama.cpp type skipped on them (``skipped``: tensor names).
    All of them when ``rows`` holds no llama.cpp type."""
    tensors = list(dict.fromkeys(rows["tensor"])) if len(rows) else []
    if rows.empty or not llama_cpp(rows["family"]).any():
        return tensors
    g = rows[llama_cpp(rows["family"])]
    fell = set(g.loc[g["applied_type"].notna() & (g["applied_type"] != g["format"]), "tensor"])
    return [t for t in tensors if t not in fell and t not in set(skipped)]


TAP_SPAN = 0.025   # a tap's reach, as a fraction of each axis' span (a marker is ~1 % of it)


def tapped_point(data: pd.DataFrame, metric: str, index) -> str | None:
    """The format a tap opens: with one point selected, that one; with several all within
    ``TAP_SPAN`` of each other on screen (bpw over its span; the metric over its span, in log10
    on a log axis) — what bokeh's tap selects where formats sit a few pixels apart — the one
    drawn last (on top, as llama.cpp's types are); None for a selection spread wider (a brush)."""
    index = [i for i in index if 0 <= i < len(data)]
    if not index:
        return None
    if len(index) == 1:
        return str(data["format"].iloc[index[0]])
    metric = plotted(metric)
    m = ALL_METRICS[metric]
    if metric not in data.columns:
        data = with_derived(data)
    x = data["bpw"].to_numpy(float)
    y = pd.to_numeric(data[metric], errors="coerce").to_numpy(float)
    ok = np.isfinite(x) & np.isfinite(y) & ((y > 0) if m.log else True)
    if not ok[index].all():
        return None
    if m.log:
        y = np.log10(np.where(ok, y, 1.0))
    sx, sy = max(float(np.ptp(x[ok])), 1e-9), max(float(np.ptp(y[ok])), 1e-9)
    if np.ptp(x[index]) / sx > TAP_SPAN or np.ptp(y[index]) / sy > TAP_SPAN:
        return None
    return str(data["format"].iloc[max(index)])


# ------------------------------------------------------------------ formats, tensor by tensor
COMPARE_MAX = 8       # formats compared tensor by tensor at once (one colour each)
COMPARE_COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#17becf", "#8c564b", "#e377c2")


def tensor_wins(rows: pd.DataFrame, formats, metric: str = "nmse") -> pd.DataFrame:
    """Per tensor, which of ``formats`` does best by ``metric`` (``rows``: store.tensor_results
    holding them): one row per format with the tensors it wins (ties count for each), of those
    all of them were measured on, and its numel-weighted mean of the metric over those tensors."""
    metric = plotted(metric)
    m = ALL_METRICS[metric]
    data = with_derived(rows[rows["format"].isin(list(formats))]) if len(rows) else rows
    wide = data.pivot_table(index="tensor", columns="format", values=metric, aggfunc="first")
    wide = wide.reindex(columns=[f for f in formats if f in wide.columns]).dropna()
    out = pd.DataFrame({"format": list(wide.columns)})
    if wide.empty:
        return out.assign(wins=0, of=0, mean=np.nan)
    best = wide.min(axis=1) if m.lower_is_better else wide.max(axis=1)
    out["wins"] = [int((wide[f] == best).sum()) for f in wide.columns]
    out["of"] = len(wide)
    numel = data.drop_duplicates("tensor").set_index("tensor")["numel"].reindex(wide.index).astype(float)
    out["mean"] = [float((wide[f] * numel).sum() / numel.sum()) for f in wide.columns]
    return out


def compare_tensors_plot(rows: pd.DataFrame, formats, metric: str = "nmse") -> hv.Overlay:
    """Two to ``COMPARE_MAX`` formats side by side on each tensor: one row per tensor (worst,
    by the first format, at the top), one colour per format, an × where llama.cpp's type fell
    back on that tensor; the legend says how many tensors each format wins."""
    metric = plotted(metric)
    m = ALL_METRICS[metric]
    formats = list(formats)[:COMPARE_MAX]
    data = plottable(with_derived(rows[rows["format"].isin(formats)]), metric)
    wins = tensor_wins(rows, formats, metric).set_index("format")
    first = data[data["format"] == formats[0]].sort_values(metric, ascending=m.lower_is_better)
    order = list(first["tensor"]) + sorted(set(data["tensor"]) - set(first["tensor"]))
    short = {t: t.removesuffix(".weight") for t in order}
    layers = []
    for i, f in enumerate(formats):
        part = data[data["format"] == f]
        if part.empty:
            continue
        part = part.assign(short=part["tensor"].map(short), written=written_as(part),
                           rank=part["tensor"].map({t: k for k, t in enumerate(order)})).sort_values("rank")
        w = wins.loc[f] if f in wins.index else None
        label = f"{f} (best on {int(w['wins'])} of {int(w['of'])})" if w is not None and w["of"] else f
        layers.append(hv.Scatter(part, hv.Dimension("short", label="tensor"),
                                 [hv.Dimension(metric, label=m.label), "tensor", "format", "bpw", "written"],
                                 label=label).opts(
            color=COMPARE_COLORS[i % len(COMPARE_COLORS)], size=8, alpha=0.85, invert_axes=True, logy=m.log,
            marker=hv.dim("written").categorize({NATIVE: "circle"}, default="x"),
            tools=["hover"], hover_formatters=hover_fields(metric),
            hover_tooltips=[("format", "@format"), ("tensor", "@tensor"), ("bpw", "@{bpw}{custom}"),
                            (metric, "@{%s}{custom}" % metric), ("written", "@written")]))
    if not layers:
        return hv.Overlay([hv.Scatter([], "short", metric)])
    return hv.Overlay(layers).opts(
        invert_axes=True, logy=m.log, responsive=True, height=max(260, 16 * len(order) + 90),
        legend_position="top", show_grid=True, fontsize={"xticks": "7pt"}, hooks=[readable_axes],
        title=f"{', '.join(formats)}: {metric} on each tensor")
